//! Where the CLI finds certificates it was not given on the command line:
//! recipients' certificates for `encrypt --to EMAIL`, and trust anchors from the
//! configuration file.
//!
//! Recipients: the certificate directories (`$TOKENMAIL_CERTS`, directories separated by
//! `:`, else `~/.config/tokenmail/certs/`; every `.pem`, `.crt`, `.cer` or `.der` file,
//! bundles allowed), then the certificates on the agent's tokens (your own addresses),
//! then the configured LDAP directories (`[[directory]]`, see [`crate::ldap`]): what they
//! have for the address is kept in the store ([`crate::certs::fetch`]). Among several certificates for an address, a currently valid one that may encrypt
//! wins, the one that expires last.
//!
//! Configuration: `$TOKENMAIL_CONFIG`, else `$XDG_CONFIG_HOME/tokenmail/agent.toml`
//! (`~/.config/tokenmail/agent.toml`), the agent's file; the CLI reads its `[trust]`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
use tokenmail_proto::v1::{KeyInfo, Request, Response};
use tokenmail_smime::path::{email_matches, CertEntry};
use tokenmail_smime::trust::TrustConfig;

/// The configuration file the CLI reads, if any is named or exists in the standard place
/// (one rule for every client: [`tokenmail_proto::autostart::config_path`]).
pub fn config_path() -> Option<PathBuf> {
    tokenmail_proto::autostart::config_path()
}

/// `p` made absolute against the current directory.
pub fn absolute(p: &Path) -> PathBuf {
    tokenmail_proto::autostart::absolute(p)
}

fn config_dir() -> Option<PathBuf> {
    config_path().and_then(|p| p.parent().map(Path::to_path_buf))
}

/// The configuration file, parsed, with its path (`None`: there is none).
pub fn config_table() -> Result<Option<(toml::Table, PathBuf)>> {
    let Some(cfg) = config_path().filter(|p| p.exists()) else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(&cfg).with_context(|| format!("cannot read {}", cfg.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| anyhow!("{}: {}", cfg.display(), e.message()))?;
    Ok(Some((table, cfg)))
}

/// A string setting `[table] key` of the configuration file, with the file's path.
pub fn config_value(table: &str, key: &str) -> Result<Option<(String, PathBuf)>> {
    let Some((t, cfg)) = config_table()? else {
        return Ok(None);
    };
    match t.get(table).and_then(|t| t.get(key)) {
        None => Ok(None),
        Some(v) => match v.as_str() {
            Some(s) => Ok(Some((s.to_string(), cfg))),
            None => bail!("{}: [{table}] {key} must be a string", cfg.display()),
        },
    }
}

/// `[trust]` of the configuration file, validated, with relative paths made relative to
/// the file; and the file's path (`None`: no configuration file).
pub fn trust_config() -> Result<(TrustConfig, Option<PathBuf>)> {
    let Some((table, cfg)) = config_table()? else {
        return Ok((TrustConfig::default(), None));
    };
    let Some(t) = table.get("trust") else {
        return Ok((TrustConfig::default(), Some(cfg)));
    };
    let mut tc: TrustConfig = t
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| anyhow!("{}: [trust]: {}", cfg.display(), e.message()))?;
    tc.validate()
        .map_err(|e| anyhow!("{}: {e}", cfg.display()))?;
    if let Some(dir) = cfg.parent() {
        tc.resolve_paths(dir);
    }
    Ok((tc, Some(cfg)))
}

/// Why a secret file (a password file) was not read.
#[derive(Debug)]
pub enum SecretFileError {
    /// It could not be read.
    Io(std::io::Error),
    /// Its mode gives others access the caller does not allow (the mode, `0o777` bits).
    Exposed(u32),
}

/// The first line of a secret file (a password), zeroized on drop; refused when its mode
/// has any of the `forbidden` bits (`0o077`: group or others, `0o007`: others). The
/// caller words the refusal and decides about an empty line.
pub fn read_secret_line(
    path: &Path,
    forbidden: u32,
) -> std::result::Result<zeroize::Zeroizing<String>, SecretFileError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(SecretFileError::Io)?
        .permissions()
        .mode();
    if mode & forbidden != 0 {
        return Err(SecretFileError::Exposed(mode & 0o777));
    }
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(SecretFileError::Io)?);
    Ok(zeroize::Zeroizing::new(
        text.lines().next().unwrap_or("").to_string(),
    ))
}

/// `[policy]` of the configuration file, validated, with relative paths made relative to
/// the file; and the file's path (`None`: no configuration file).
pub fn org_policy() -> Result<(tokenmail_smime::policy::OrgPolicy, Option<PathBuf>)> {
    use tokenmail_smime::policy::OrgPolicy;
    let Some((table, cfg)) = config_table()? else {
        return Ok((OrgPolicy::default(), None));
    };
    let Some(t) = table.get("policy") else {
        return Ok((OrgPolicy::default(), Some(cfg)));
    };
    let mut p: OrgPolicy = t
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| anyhow!("{}: [policy]: {}", cfg.display(), e.message()))?;
    p.validate()
        .map_err(|e| anyhow!("{}: {e}", cfg.display()))?;
    if let Some(dir) = cfg.parent() {
        p.resolve_paths(dir);
    }
    Ok((p, Some(cfg)))
}

/// `[trust] anchors` of the configuration file: (paths, "where from"), or empty.
pub fn config_anchor_paths() -> Result<(Vec<PathBuf>, Option<String>)> {
    let (tc, cfg) = trust_config()?;
    match cfg {
        Some(cfg) if !tc.anchors.is_empty() => Ok((
            tc.anchors,
            Some(format!("[trust] anchors in {}", cfg.display())),
        )),
        _ => Ok((Vec::new(), None)),
    }
}

/// Trust anchor paths in contract order after the command line: `$TOKENMAIL_TRUST`,
/// then the configuration's `[trust] anchors`. Empty when there is none.
pub fn default_anchor_paths() -> Result<(Vec<PathBuf>, Option<String>)> {
    if let Some(v) = std::env::var_os("TOKENMAIL_TRUST") {
        let paths: Vec<PathBuf> = std::env::split_paths(&v)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !paths.is_empty() {
            return Ok((paths, Some("TOKENMAIL_TRUST".into())));
        }
    }
    config_anchor_paths()
}

/// Reads certificate files (PEM bundles or DER).
pub fn load_certs(paths: &[PathBuf], what: &str) -> Result<Vec<CertEntry>> {
    let mut out = Vec::new();
    for p in paths {
        let data =
            std::fs::read(p).with_context(|| format!("cannot read {what} {}", p.display()))?;
        let certs = CertEntry::from_pem_or_der(&data).map_err(|e| {
            anyhow!(
                "{what} {} is not a PEM or DER certificate: {e}",
                p.display()
            )
        })?;
        out.extend(certs);
    }
    Ok(out)
}

/// The certificate directories, in search order.
pub fn cert_dirs() -> Vec<PathBuf> {
    if let Some(v) = std::env::var_os("TOKENMAIL_CERTS").filter(|v| !v.is_empty()) {
        return std::env::split_paths(&v)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
    }
    config_dir()
        .map(|d| vec![d.join("certs")])
        .unwrap_or_default()
}

/// Every certificate in the files of `dirs` (.pem, .crt, .cer, .der; bundles allowed), with
/// the file it is in; unreadable files and directories are skipped.
pub fn dir_cert_files(dirs: &[PathBuf]) -> Vec<(PathBuf, CertEntry)> {
    let mut out = Vec::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(d) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files {
            let ext = f
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            if !matches!(ext.as_deref(), Some("pem" | "crt" | "cer" | "der")) {
                continue;
            }
            if let Ok(data) = std::fs::read(&f) {
                if let Ok(certs) = CertEntry::from_pem_or_der(&data) {
                    out.extend(certs.into_iter().map(|c| (f.clone(), c)));
                }
            }
        }
    }
    out
}

fn dir_certs(dirs: &[PathBuf]) -> Vec<CertEntry> {
    dir_cert_files(dirs).into_iter().map(|(_, c)| c).collect()
}

/// May this certificate's key be used to encrypt to (keyUsage keyEncipherment or
/// keyAgreement when the extension is present; no CA certificates)?
fn can_encrypt(c: &CertEntry) -> bool {
    use der::Decode;
    use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
    let mut ok = true;
    for ext in c.cert.tbs_certificate().extensions().into_iter().flatten() {
        if ext.extn_id == der::oid::db::rfc5280::ID_CE_KEY_USAGE {
            if let Ok(ku) = KeyUsage::from_der(ext.extn_value.as_bytes()) {
                ok &= ku.0.contains(KeyUsages::KeyEncipherment)
                    || ku.0.contains(KeyUsages::KeyAgreement);
            }
        }
        if ext.extn_id == der::oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS {
            if let Ok(bc) = BasicConstraints::from_der(ext.extn_value.as_bytes()) {
                ok &= !bc.ca;
            }
        }
    }
    ok
}

fn not_after(c: &CertEntry) -> SystemTime {
    c.cert
        .tbs_certificate()
        .validity()
        .not_after
        .to_system_time()
}

/// Is `email` one of a certificate's addresses, for looking recipients up? Case is
/// ignored: people type addresses as they like.
pub fn email_fits(email: &str, cert_emails: &[String]) -> bool {
    email_matches(email, cert_emails)
        || cert_emails
            .iter()
            .any(|e| e.eq_ignore_ascii_case(email.trim()))
}

/// The best certificate for `email` among `certs`, or why there is none.
fn pick(email: &str, certs: &[CertEntry]) -> std::result::Result<CertEntry, String> {
    let now = SystemTime::now();
    let mut matching: Vec<&CertEntry> = certs
        .iter()
        .filter(|c| email_fits(email, &c.emails()))
        .collect();
    if matching.is_empty() {
        return Err("no certificate".into());
    }
    matching.retain(|c| can_encrypt(c));
    if matching.is_empty() {
        return Err("certificates that may not be used for encryption (keyUsage)".into());
    }
    matching.retain(|c| c.validity_problem(now).is_none());
    matching
        .into_iter()
        .max_by_key(|c| not_after(c))
        .cloned()
        .ok_or_else(|| "only certificates that are expired or not yet valid".into())
}

/// Resolves `--to` addresses to certificate files written into `dir`.
pub fn recipients_for(
    emails: &[String],
    socket: Option<&Path>,
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    let dirs = cert_dirs();
    let from_dirs = dir_certs(&dirs);
    let mut from_agent: Option<Vec<CertEntry>> = None;
    let mut out = Vec::new();
    for (i, email) in emails.iter().enumerate() {
        if !email.contains('@') {
            bail!("--to {email:?} is not an email address");
        }
        let found = match pick(email, &from_dirs) {
            Ok(c) => Ok(c),
            Err(dir_reason) => {
                let agent = from_agent.get_or_insert_with(|| agent_certs(socket));
                pick(email, agent).map_err(|_| dir_reason)
            }
        };
        let found = match found {
            Ok(c) => Ok(c),
            Err(why) => from_ldap(email).map_err(|ldap| match ldap {
                Some(ldap) => format!("{why} ({ldap})"),
                None => why,
            }),
        };
        let cert = found.map_err(|why| {
            let where_ = if dirs.is_empty() {
                "no certificate directory (set TOKENMAIL_CERTS)".to_string()
            } else {
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            };
            anyhow!(
                "--to {email}: {why} for this address in {where_} or on the agent's tokens; add the recipient's certificate there or pass --recipient-cert FILE"
            )
        })?;
        let path = dir.join(format!("to-{i}.der"));
        std::fs::write(&path, &cert.der)?;
        out.push(path);
    }
    Ok(out)
}

/// Asks the configured LDAP directories for `email` and picks among what they have (kept
/// in the store). `Err(None)`: no directory is configured; `Err(Some(why))`: what the
/// directories said.
fn from_ldap(email: &str) -> std::result::Result<CertEntry, Option<String>> {
    let report = crate::certs::fetch(email).map_err(|e| Some(format!("{e:#}")))?;
    if report.directories == 0 {
        return Err(None);
    }
    for s in report.stored.iter().filter(|s| s.new) {
        eprintln!(
            "tokenmail: note: {email}: certificate '{}' fetched from the LDAP directory, stored in {}",
            s.cert.subject,
            s.cert.file.display()
        );
    }
    let certs: Vec<CertEntry> = report.stored.iter().map(|s| s.entry.clone()).collect();
    match pick(email, &certs) {
        Ok(c) => Ok(c),
        Err(_) if !report.errors.is_empty() => Err(Some(report.errors.join("; "))),
        Err(why) if !certs.is_empty() => Err(Some(format!("the LDAP directories have {why}"))),
        Err(_) if !report.skipped.is_empty() => Err(Some(format!(
            "the LDAP directories have no usable one: {}",
            report
                .skipped
                .iter()
                .map(|s| s.reason.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ))),
        Err(_) => Err(Some("nor in the LDAP directories".into())),
    }
}

/// CA certificates at hand for building recipients' paths: those in the certificate
/// directories and the chains the agent's tokens hold (none when no agent runs).
pub fn known_ca_certificates(socket: Option<&Path>) -> Vec<CertEntry> {
    use x509_cert::ext::pkix::BasicConstraints;
    let mut out: Vec<CertEntry> = dir_certs(&cert_dirs())
        .into_iter()
        .filter(|c| {
            matches!(
                c.cert.tbs_certificate().get_extension::<BasicConstraints>(),
                Ok(Some((_, bc))) if bc.ca
            )
        })
        .collect();
    for k in agent_keys(socket).unwrap_or_default() {
        for der in k.chain {
            if let Ok(e) = CertEntry::from_der(der.0) {
                if !out.contains(&e) {
                    out.push(e);
                }
            }
        }
    }
    out
}

/// The agent's keys, best effort: `None` when no agent answers.
pub fn agent_keys(socket: Option<&Path>) -> Option<Vec<KeyInfo>> {
    let mut c = crate::agentkey::connect(socket).ok()?;
    match c.call(&Request::ListKeys) {
        Ok(Response::Keys { keys }) => Some(keys),
        _ => None,
    }
}

/// The certificates on the agent's tokens (none when no agent runs).
fn agent_certs(socket: Option<&Path>) -> Vec<CertEntry> {
    agent_keys(socket)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|k| k.certificate)
        .filter_map(|c| CertEntry::from_der(c.der.0).ok())
        .collect()
}
