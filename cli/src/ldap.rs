//! LDAP directories: the configuration's `[[directory]]` entries, asked for recipients'
//! certificates (`tokenmail certs fetch`, `encrypt --to`) and scanned by `expiry --ldap`.
//!
//! ```toml
//! [[directory]]
//! url = "ldaps://ldap.example.com"     # or ldap://…, with starttls = true for StartTLS
//! base = "ou=people,dc=example,dc=com"
//! bind_dn = "cn=tokenmail,ou=services,dc=example,dc=com"   # optional, with password_file
//! password_file = "ldap.pw"            # read at use; refused when others may read it
//! timeout = 10                         # seconds, connect and each operation (default 10)
//! ```
//!
//! Client: `ldap3` (sync API over its own tokio runtime; TLS by rustls with the system's
//! CA store). Every search is bounded: a size limit and a time limit sent to the server,
//! the same limits enforced here while the entries arrive (entries, bytes, wall time), the
//! search abandoned past them. Entries are read from the protocol structure without
//! `SearchEntry::construct` (which panics on a malformed entry).
//!
//! Address searches use `(mail=<address>)`, the address escaped as RFC 4515 says, and ask
//! for `userCertificate;binary` (a DER certificate) and `userSMIMECertificate` (a
//! certs-only CMS SignedData, RFC 2798), from which the certificates are taken.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use ldap3::asn1::{StructureTag, PL};
use ldap3::{LdapConn, LdapConnSettings, Scope, SearchOptions};
use serde::Deserialize;
use tokenmail_smime::path::CertEntry;
use zeroize::Zeroizing;

/// Default seconds for connecting and for each operation.
pub const DEFAULT_TIMEOUT: u64 = 10;
/// Most seconds a `timeout` may say.
pub const MAX_TIMEOUT: u64 = 300;

/// The attributes asked for.
pub const ATTRIBUTES: [&str; 2] = ["userCertificate;binary", "userSMIMECertificate"];

/// Limits of one search.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most entries.
    pub entries: usize,
    /// Most bytes of attribute values, all entries together.
    pub bytes: usize,
    /// Most certificates taken from one `userSMIMECertificate` value or one entry.
    pub certs_per_entry: usize,
}

/// For one address: a person rarely has more than a few entries.
pub const ADDRESS_LIMITS: Limits = Limits {
    entries: 20,
    bytes: 1 << 20,
    certs_per_entry: 32,
};

/// For `expiry --ldap`: every certificate under the base.
pub const SCAN_LIMITS: Limits = Limits {
    entries: 10_000,
    bytes: 64 << 20,
    certs_per_entry: 32,
};

/// One `[[directory]]` entry as written in the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    /// `ldap://host[:port]` or `ldaps://host[:port]`.
    pub url: String,
    /// The search base (subtree).
    pub base: String,
    /// Simple bind DN (with `password_file`); anonymous without.
    pub bind_dn: Option<String>,
    /// File holding the bind password (first line), relative to the configuration file.
    pub password_file: Option<PathBuf>,
    /// StartTLS on an `ldap://` URL.
    #[serde(default)]
    pub starttls: bool,
    /// Seconds for connecting and for each operation (default 10).
    pub timeout: Option<u64>,
}

impl Directory {
    /// Why this entry cannot be used (`Ok` when it can).
    pub fn validate(&self) -> std::result::Result<(), String> {
        let url = self.url.trim();
        let scheme_ok = url.starts_with("ldap://") || url.starts_with("ldaps://");
        if !scheme_ok {
            return Err(format!(
                "url = {:?}: use ldap://host[:port] or ldaps://host[:port]",
                self.url
            ));
        }
        if host_of(url).is_empty() {
            return Err(format!("url = {:?}: no host", self.url));
        }
        if self.starttls && url.starts_with("ldaps://") {
            return Err(format!(
                "url = {:?}: starttls = true is for ldap:// URLs (ldaps:// is TLS already)",
                self.url
            ));
        }
        if self.base.trim().is_empty() {
            return Err(format!("{}: base is empty", self.url));
        }
        match (&self.bind_dn, &self.password_file) {
            (Some(_), None) => {
                return Err(format!(
                    "{}: bind_dn needs password_file (or remove bind_dn for an anonymous search)",
                    self.url
                ))
            }
            (None, Some(_)) => {
                return Err(format!(
                    "{}: password_file needs bind_dn (the DN to bind as)",
                    self.url
                ))
            }
            _ => {}
        }
        if self.bind_dn.is_some() && !self.starttls && url.starts_with("ldap://") {
            let host = host_of(url);
            let loopback = host == "localhost" || host.starts_with("127.") || host == "[::1]";
            if !loopback {
                return Err(format!(
                    "{}: a password would cross the network in clear: use ldaps:// or starttls = true",
                    self.url
                ));
            }
        }
        match self.timeout {
            Some(0) => return Err(format!("{}: timeout must be at least 1 second", self.url)),
            Some(t) if t > MAX_TIMEOUT => {
                return Err(format!(
                    "{}: timeout = {t}: at most {MAX_TIMEOUT} seconds",
                    self.url
                ))
            }
            _ => {}
        }
        Ok(())
    }

    /// The deadline for connecting and for each operation.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout.unwrap_or(DEFAULT_TIMEOUT))
    }
}

/// `host[:port]` of an LDAP URL.
fn host_of(url: &str) -> &str {
    let rest = url
        .strip_prefix("ldaps://")
        .or_else(|| url.strip_prefix("ldap://"))
        .unwrap_or(url);
    let hostport = rest.split(['/', '?']).next().unwrap_or("");
    if hostport.starts_with('[') {
        return hostport.split_inclusive(']').next().unwrap_or(hostport);
    }
    hostport.split(':').next().unwrap_or("")
}

/// Parses and validates `[[directory]]` of a configuration table; relative
/// `password_file`s are made relative to `config_dir`.
pub fn parse_directories(
    table: &toml::Table,
    config_dir: Option<&Path>,
) -> std::result::Result<Vec<Directory>, String> {
    let Some(v) = table.get("directory") else {
        return Ok(Vec::new());
    };
    let Some(list) = v.as_array() else {
        return Err("directory must be written [[directory]]".into());
    };
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let mut d: Directory = item
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| format!("[[directory]] #{}: {}", i + 1, e.message()))?;
        d.validate()
            .map_err(|e| format!("[[directory]] #{}: {e}", i + 1))?;
        if let (Some(p), Some(dir)) = (&d.password_file, config_dir) {
            if p.is_relative() {
                d.password_file = Some(dir.join(p));
            }
        }
        out.push(d);
    }
    Ok(out)
}

/// The configured directories (empty: none configured), validated.
pub fn directories() -> Result<Vec<Directory>> {
    let Some((table, cfg)) = crate::store::config_table()? else {
        return Ok(Vec::new());
    };
    parse_directories(&table, cfg.parent()).map_err(|e| anyhow!("{}: {e}", cfg.display()))
}

/// The bind password: the first line of the file; refused when others may read or write
/// the file, or when it is empty (an empty password is an anonymous bind, RFC 4513 §5.1.2).
fn read_password(path: &Path) -> std::result::Result<Zeroizing<String>, String> {
    use crate::store::SecretFileError;
    let line = crate::store::read_secret_line(path, 0o007).map_err(|e| match e {
        SecretFileError::Io(e) => format!("password_file {}: {e}", path.display()),
        SecretFileError::Exposed(mode) => format!(
            "password_file {} is readable by other users (mode {mode:o}): chmod o-rwx {}",
            path.display(),
            path.display()
        ),
    })?;
    if line.is_empty() {
        return Err(format!(
            "password_file {} is empty (an empty password would bind anonymously)",
            path.display()
        ));
    }
    Ok(line)
}

/// The search filter for an address: `(mail=…)` with the address escaped as RFC 4515 §3
/// says (`*`, `(`, `)`, `\` and NUL as `\XX`), so that no address can add filter syntax.
pub fn mail_filter(email: &str) -> std::result::Result<String, String> {
    let email = email.trim();
    if email.len() > 320 || email.chars().any(|c| c.is_control()) || !email.contains('@') {
        return Err(format!("{email:?} is not an email address"));
    }
    Ok(format!("(mail={})", escape_filter_value(email)))
}

/// RFC 4515 §3 escaping of an assertion value.
pub fn escape_filter_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '*' | '(' | ')' | '\\' | '\0' => out.push_str(&format!("\\{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The filter of `expiry --ldap`: every entry with a certificate.
pub const SCAN_FILTER: &str = "(|(userCertificate;binary=*)(userSMIMECertificate=*))";

/// A certificate found in a directory entry.
#[derive(Debug, Clone)]
pub struct Found {
    /// The entry's DN.
    pub dn: String,
    /// The certificate.
    pub cert: CertEntry,
}

/// What a search yields: the certificates, and notes on what was skipped.
#[derive(Debug, Default)]
pub struct SearchResult {
    /// Certificates, in directory order.
    pub found: Vec<Found>,
    /// Values that were not certificates, limits reached (one line each).
    pub notes: Vec<String>,
}

/// Certificates of `email`'s entries in `dir` (not yet filtered by address).
pub fn lookup(dir: &Directory, email: &str) -> Result<SearchResult> {
    let filter = mail_filter(email).map_err(|e| anyhow!(e))?;
    search(dir, &filter, ADDRESS_LIMITS)
}

/// Every certificate under `dir`'s base (`expiry --ldap`).
pub fn scan(dir: &Directory) -> Result<SearchResult> {
    search(dir, SCAN_FILTER, SCAN_LIMITS)
}

fn connect(dir: &Directory) -> std::result::Result<LdapConn, String> {
    let settings = LdapConnSettings::new()
        .set_conn_timeout(dir.timeout())
        .set_starttls(dir.starttls);
    let mut conn = LdapConn::with_settings(settings, dir.url.trim())
        .map_err(|e| format!("cannot connect: {}", describe(&e, dir)))?;
    if let (Some(dn), Some(pf)) = (&dir.bind_dn, &dir.password_file) {
        let pw = read_password(pf)?;
        conn.with_timeout(dir.timeout())
            .simple_bind(dn, &pw)
            .map_err(|e| format!("bind as {dn:?}: {}", describe(&e, dir)))?
            .success()
            .map_err(|e| format!("bind as {dn:?} refused: {}", describe(&e, dir)))?;
    }
    Ok(conn)
}

fn describe(e: &ldap3::LdapError, dir: &Directory) -> String {
    match e {
        ldap3::LdapError::Timeout { .. } => {
            format!("no answer within {} s", dir.timeout().as_secs())
        }
        ldap3::LdapError::LdapResult { result } => {
            let text = result.text.trim();
            if text.is_empty() {
                format!("result code {}", result.rc)
            } else {
                format!("result code {} ({text})", result.rc)
            }
        }
        other => {
            let s = other.to_string().lines().next().unwrap_or("").to_string();
            if s.contains("invalid peer certificate") {
                format!("{s}: the server's TLS certificate does not chain to the system's CA store (SSL_CERT_FILE may name the CA's file)")
            } else {
                s
            }
        }
    }
}

/// One bounded subtree search.
fn search(dir: &Directory, filter: &str, limits: Limits) -> Result<SearchResult> {
    let ctx = |e: String| anyhow!("directory {}: {e}", dir.url.trim());
    let started = Instant::now();
    // the whole search: connection, bind and every entry
    let deadline = dir.timeout() * 3;
    let mut conn = connect(dir).map_err(ctx)?;
    let time_limit = i32::try_from(dir.timeout().as_secs()).unwrap_or(i32::MAX);
    let size_limit = i32::try_from(limits.entries).unwrap_or(i32::MAX);
    conn.with_search_options(
        SearchOptions::new()
            .sizelimit(size_limit)
            .timelimit(time_limit),
    );
    conn.with_timeout(dir.timeout());
    let mut stream = conn
        .streaming_search(dir.base.trim(), Scope::Subtree, filter, ATTRIBUTES.to_vec())
        .map_err(|e| ctx(format!("search: {}", describe(&e, dir))))?;
    let mut out = SearchResult::default();
    let mut entries = 0usize;
    let mut bytes = 0usize;
    let mut stopped: Option<String> = None;
    loop {
        if started.elapsed() > deadline {
            stopped = Some(format!(
                "the search took longer than {} s: stopped",
                deadline.as_secs()
            ));
            break;
        }
        let entry = match stream.next() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => {
                return Err(ctx(format!("search: {}", describe(&e, dir))));
            }
        };
        if entry.is_ref() || entry.is_intermediate() {
            continue;
        }
        entries += 1;
        if entries > limits.entries {
            stopped = Some(format!("more than {} entries: stopped", limits.entries));
            break;
        }
        let Some((dn, values)) = entry_values(&entry.0) else {
            out.notes.push("a malformed entry was skipped".into());
            continue;
        };
        bytes += values.iter().map(|(_, v)| v.len()).sum::<usize>();
        if bytes > limits.bytes {
            stopped = Some(format!(
                "more than {} bytes of certificates: stopped",
                limits.bytes
            ));
            break;
        }
        let mut n = 0;
        for (attr, value) in values {
            for c in certs_from_value(&attr, &value, &dn, &mut out.notes) {
                n += 1;
                if n > limits.certs_per_entry {
                    break;
                }
                out.found.push(Found {
                    dn: dn.clone(),
                    cert: c,
                });
            }
        }
    }
    match stopped {
        Some(why) => {
            // the rest is not wanted: the search is abandoned and the connection closed
            out.notes
                .push(format!("directory {}: {why}", dir.url.trim()));
            let id = stream.last_id();
            drop(stream);
            let _ = conn.abandon(id);
        }
        None => {
            let res = stream.result();
            // 4 = sizeLimitExceeded, 3 = timeLimitExceeded: what arrived is kept
            match res.rc {
                0 | 32 => {}
                3 | 4 => out.notes.push(format!(
                    "directory {}: the server's limit was reached (result code {}): the answer may be incomplete",
                    dir.url.trim(),
                    res.rc
                )),
                _ => {
                    let text = res.text.trim().to_string();
                    return Err(ctx(format!(
                        "search under {:?}: result code {}{}",
                        dir.base.trim(),
                        res.rc,
                        if text.is_empty() {
                            String::new()
                        } else {
                            format!(" ({text})")
                        }
                    )));
                }
            }
        }
    }
    let _ = conn.unbind();
    Ok(out)
}

/// An attribute's name and one of its values.
type AttrValue = (String, Vec<u8>);

/// The DN and the (attribute, value) pairs of a SearchResultEntry (RFC 4511 §4.5.2), or
/// `None` when it is not one.
fn entry_values(tag: &StructureTag) -> Option<(String, Vec<AttrValue>)> {
    if tag.id != 4 {
        return None;
    }
    let PL::C(parts) = &tag.payload else {
        return None;
    };
    let [dn, attrs, ..] = parts.as_slice() else {
        return None;
    };
    let PL::P(dn) = &dn.payload else {
        return None;
    };
    let dn = String::from_utf8_lossy(dn).into_owned();
    let PL::C(attrs) = &attrs.payload else {
        return None;
    };
    let mut out = Vec::new();
    for a in attrs {
        let PL::C(av) = &a.payload else {
            return None;
        };
        let [name, vals, ..] = av.as_slice() else {
            return None;
        };
        let PL::P(name) = &name.payload else {
            return None;
        };
        let name = String::from_utf8_lossy(name).into_owned();
        let PL::C(vals) = &vals.payload else {
            return None;
        };
        for v in vals {
            let PL::P(v) = &v.payload else {
                return None;
            };
            out.push((name.clone(), v.clone()));
        }
    }
    Some((dn, out))
}

/// The certificates of one attribute value: a DER certificate (`userCertificate`), or the
/// certificates of a certs-only SignedData (`userSMIMECertificate`). What does not parse
/// is noted and skipped.
fn certs_from_value(attr: &str, value: &[u8], dn: &str, notes: &mut Vec<String>) -> Vec<CertEntry> {
    let base = attr.split(';').next().unwrap_or("").to_ascii_lowercase();
    match base.as_str() {
        "usercertificate" => match CertEntry::from_der(value.to_vec()) {
            Ok(c) => vec![c],
            Err(e) => {
                notes.push(format!(
                    "{dn}: a userCertificate is not a certificate ({e})"
                ));
                Vec::new()
            }
        },
        "usersmimecertificate" => match smime_capabilities_certs(value) {
            Ok(v) => v,
            Err(e) => {
                notes.push(format!("{dn}: a userSMIMECertificate is unreadable ({e})"));
                Vec::new()
            }
        },
        _ => Vec::new(),
    }
}

/// The certificates in a `userSMIMECertificate` value: a CMS ContentInfo holding a
/// SignedData (usually certs-only, RFC 2798 §9.1.2), DER or BER. Other
/// CertificateChoices (attribute certificates, …) are skipped.
pub fn smime_capabilities_certs(value: &[u8]) -> std::result::Result<Vec<CertEntry>, String> {
    use cms::cert::CertificateChoices;
    use cms::content_info::ContentInfo;
    use cms::signed_data::SignedData;
    use der::{Decode, Encode};
    let der = tokenmail_smime::ber::ber_to_der(value).map_err(|e| e.to_string())?;
    let ci = ContentInfo::from_der(&der).map_err(|e| format!("not a CMS ContentInfo: {e}"))?;
    if ci.content_type != der::oid::db::rfc5911::ID_SIGNED_DATA {
        return Err(format!(
            "content type {} is not signedData",
            ci.content_type
        ));
    }
    let sd: SignedData = ci
        .content
        .decode_as()
        .map_err(|e| format!("not a SignedData: {e}"))?;
    let mut out = Vec::new();
    for choice in sd.certificates.iter().flat_map(|s| s.0.iter()) {
        if let CertificateChoices::Certificate(c) = choice {
            let der = c.to_der().map_err(|e| e.to_string())?;
            out.push(CertEntry::from_der(der).map_err(|e| e.to_string())?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_escaped() {
        assert_eq!(
            mail_filter("bob@example.org").as_deref(),
            Ok("(mail=bob@example.org)")
        );
        assert_eq!(
            mail_filter("*)(mail=*@x").as_deref(),
            Ok("(mail=\\2a\\29\\28mail=\\2a@x)")
        );
        assert_eq!(escape_filter_value("a\\b\0"), "a\\5cb\\00");
        assert!(mail_filter("no-at-sign").is_err());
        assert!(mail_filter("a@b\r\n").is_ok(), "trimmed");
        assert!(mail_filter("a\n@b").is_err());
        // what ldap3's own filter parser makes of it: one equality assertion
        let f = mail_filter("*)(|(mail=*)@x").unwrap_or_default();
        assert!(ldap3::parse_filter(&f).is_ok(), "{f}");
    }

    fn dir(url: &str) -> Directory {
        Directory {
            url: url.into(),
            base: "dc=example,dc=org".into(),
            bind_dn: None,
            password_file: None,
            starttls: false,
            timeout: None,
        }
    }

    #[test]
    fn directories_are_validated() {
        assert!(dir("ldap://ldap.example.org").validate().is_ok());
        assert!(dir("ldaps://ldap.example.org:636/").validate().is_ok());
        assert!(dir("http://ldap.example.org").validate().is_err());
        assert!(dir("ldap://").validate().is_err());
        let mut d = dir("ldaps://h");
        d.starttls = true;
        assert!(d.validate().is_err());
        let mut d = dir("ldap://ldap.example.org");
        d.bind_dn = Some("cn=x".into());
        assert!(d
            .validate()
            .expect_err("an error")
            .contains("password_file"));
        d.password_file = Some("pw".into());
        assert!(d.validate().expect_err("an error").contains("in clear"));
        d.starttls = true;
        assert!(d.validate().is_ok());
        let mut d = dir("ldap://127.0.0.1:3890");
        d.bind_dn = Some("cn=x".into());
        d.password_file = Some("pw".into());
        assert!(d.validate().is_ok(), "loopback");
        let mut d = dir("ldap://h");
        d.timeout = Some(0);
        assert!(d.validate().is_err());
        assert_eq!(host_of("ldap://[::1]:389/x"), "[::1]");
        assert_eq!(host_of("ldaps://h.example:636"), "h.example");
    }

    #[test]
    fn unknown_keys_and_relative_password_files() {
        let t: toml::Table = toml::from_str(
            "[[directory]]\nurl = \"ldap://127.0.0.1\"\nbase = \"dc=x\"\nbind_dn = \"cn=a\"\npassword_file = \"pw\"\n",
        )
        .unwrap_or_default();
        let d = parse_directories(&t, Some(Path::new("/etc/tm"))).unwrap_or_default();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].password_file.as_deref(), Some(Path::new("/etc/tm/pw")));
        let t: toml::Table =
            toml::from_str("[[directory]]\nurl = \"ldap://h\"\nbase = \"dc=x\"\nbsae = 1\n")
                .unwrap_or_default();
        let e = parse_directories(&t, None).expect_err("an error");
        assert!(e.contains("bsae"), "{e}");
        let t: toml::Table =
            toml::from_str("[directory]\nurl = \"ldap://h\"\n").unwrap_or_default();
        assert!(parse_directories(&t, None).is_err());
    }

    #[test]
    fn world_readable_password_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = d.path().join("pw");
        std::fs::write(&p, "secret\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{e}"));
        let e = read_password(&p).expect_err("an error");
        assert!(e.contains("chmod o-rwx"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read_password(&p).map(|s| s.to_string()),
            Ok("secret".into())
        );
        std::fs::write(&p, "\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(read_password(&p).expect_err("an error").contains("empty"));
    }
}
