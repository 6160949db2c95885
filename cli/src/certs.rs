//! The certificate store: `tokenmail certs fetch | list | remove`, and what fills it by
//! itself — `encrypt --to` asking the LDAP directories, and signers' certificates harvested
//! from verified messages (`[certs] harvest`).
//!
//! The store is the first certificate directory (`store::cert_dirs()`: the first of
//! `$TOKENMAIL_CERTS`, else `~/.config/tokenmail/certs/`), created 0700 when missing. A
//! certificate is written as `<address>-<sha256 prefix>.pem`, never over an existing file,
//! and not at all when any certificate directory already holds the same DER.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokenmail_smime::path::CertEntry;

/// `tokenmail certs --help` examples.
pub const EXAMPLES: &str = "\
Examples:
  tokenmail certs fetch bob@example.org          # ask the [[directory]] entries, keep what fits
  tokenmail certs fetch --json bob@example.org | jq '.stored[].file'
  tokenmail certs list                           # file, subject, emails, notAfter, sha256
  tokenmail certs list --json
  tokenmail certs remove 3f2a9c1d                # by sha256 fingerprint (or a unique prefix of it)
  tokenmail certs remove bob@example.org-3f2a9c1d0b7e4a55.pem   # by file

Exit status: 0 found / stored / removed, 1 nothing found, 2 errors (no directory configured,
a directory unreachable and nothing found elsewhere, a bad argument).";

/// Arguments of `tokenmail certs`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

/// `tokenmail certs` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CertsCommand {
    /// Look EMAIL up in the configured LDAP directories ([[directory]]) and keep the valid
    /// certificates for that address in the certificate store.
    #[command(after_help = EXAMPLES)]
    Fetch {
        /// The address.
        #[arg(value_name = "EMAIL")]
        email: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The certificates in the certificate directories.
    #[command(after_help = EXAMPLES)]
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Remove a certificate from the store, named by its SHA-256 fingerprint (hex, colons
    /// allowed, a unique prefix of at least 8 digits) or by its file.
    #[command(after_help = EXAMPLES)]
    Remove {
        /// Fingerprint or file.
        #[arg(value_name = "FINGERPRINT-or-FILE")]
        what: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `[certs]` of the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertsConfig {
    /// Keep the signer's certificate of every message that verified (default false: the
    /// store is also what `tokenmail expiry` watches, and correspondents' certificates
    /// expiring there would make it report; turn it on where that is wanted).
    #[serde(default)]
    pub harvest: bool,
}

/// Parses `[certs]` of a configuration table.
pub fn parse_certs_config(table: &toml::Table) -> std::result::Result<CertsConfig, String> {
    match table.get("certs") {
        None => Ok(CertsConfig::default()),
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| format!("[certs]: {}", e.message())),
    }
}

/// `[certs]` of the configuration file (defaults without one).
pub fn certs_config() -> Result<CertsConfig> {
    let Some((table, cfg)) = crate::store::config_table()? else {
        return Ok(CertsConfig::default());
    };
    parse_certs_config(&table).map_err(|e| anyhow!("{}: {e}", cfg.display()))
}

/// SHA-256 of the DER, lower-case hex.
pub fn fingerprint(c: &CertEntry) -> String {
    hex::encode(Sha256::digest(&c.der))
}

/// One certificate of the store, for `certs list`.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// The file it is in.
    pub file: PathBuf,
    /// Subject (RFC 4514).
    pub subject: String,
    /// Addresses.
    pub emails: Vec<String>,
    /// notAfter.
    pub not_after: String,
    /// SHA-256 of the DER.
    pub sha256: String,
}

fn listed(file: &Path, c: &CertEntry) -> Listed {
    Listed {
        file: file.to_path_buf(),
        subject: c.subject(),
        emails: c.emails(),
        not_after: c.cert.tbs_certificate().validity().not_after.to_string(),
        sha256: fingerprint(c),
    }
}

/// The store directory (the first certificate directory), created 0700 when missing.
pub fn store_dir() -> Result<PathBuf> {
    let Some(d) = crate::store::cert_dirs().into_iter().next() else {
        bail!("no certificate directory: set TOKENMAIL_CERTS or HOME");
    };
    if !d.is_dir() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .with_context(|| format!("cannot create the certificate directory {}", d.display()))?;
    }
    Ok(d)
}

/// What storing one certificate did.
#[derive(Debug, Clone, Serialize)]
pub struct Stored {
    /// Written now (`false`: the store had it already, in `file`).
    pub new: bool,
    #[serde(flatten)]
    /// The certificate and its file.
    pub cert: Listed,
    /// The certificate itself.
    #[serde(skip)]
    pub entry: CertEntry,
}

/// A file name for a certificate: its first address (or "cert"), made safe, and the start
/// of its fingerprint.
fn file_name(c: &CertEntry) -> String {
    let who: String = c
        .emails()
        .first()
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_else(|| "cert".into())
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || matches!(ch, '@' | '.' | '-' | '_' | '+') {
                ch
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let who = who.trim_start_matches('.');
    format!("{who}-{}.pem", &fingerprint(c)[..16])
}

/// Stores `certs` in the store unless a certificate directory holds the same DER already;
/// never overwrites a file.
pub fn store(certs: &[CertEntry]) -> Result<Vec<Stored>> {
    let existing = crate::store::dir_cert_files(&crate::store::cert_dirs());
    let mut out: Vec<Stored> = Vec::new();
    let mut dir: Option<PathBuf> = None;
    for c in certs {
        if out.iter().any(|s| s.cert.sha256 == fingerprint(c)) {
            continue;
        }
        if let Some((file, _)) = existing.iter().find(|(_, e)| e.der == c.der) {
            out.push(Stored {
                new: false,
                cert: listed(file, c),
                entry: c.clone(),
            });
            continue;
        }
        let d = match &dir {
            Some(d) => d.clone(),
            None => dir.insert(store_dir()?).clone(),
        };
        let path = d.join(file_name(c));
        let pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &c.der)
            .map_err(|e| anyhow!("cannot encode the certificate as PEM: {e}"))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&d)
            .with_context(|| format!("cannot write in {}", d.display()))?;
        tmp.write_all(pem.as_bytes())
            .with_context(|| format!("cannot write in {}", d.display()))?;
        tmp.persist_noclobber(&path)
            .map_err(|e| anyhow!("cannot store {}: {}", path.display(), e.error))?;
        out.push(Stored {
            new: true,
            cert: listed(&path, c),
            entry: c.clone(),
        });
    }
    Ok(out)
}

/// What `certs fetch` (and `encrypt --to`) found for an address.
#[derive(Debug, Default, Serialize)]
pub struct FetchReport {
    /// The address asked for.
    pub email: String,
    /// Certificates kept (new or already in the store).
    pub stored: Vec<Stored>,
    /// Certificates found and not kept, with why.
    pub skipped: Vec<Skipped>,
    /// Directories that could not be asked (one line each).
    pub errors: Vec<String>,
    /// Remarks (limits reached, values that were not certificates).
    pub notes: Vec<String>,
    /// How many directories were asked.
    pub directories: usize,
}

/// A certificate found and not kept.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// Where it was (the entry's DN).
    pub dn: String,
    /// Subject.
    pub subject: String,
    /// Why.
    pub reason: String,
}

/// Asks every configured directory for `email`, keeps the currently valid end-entity
/// certificates whose addresses match it (compared without case, as `encrypt --to` looks
/// addresses up) in the store.
pub fn fetch(email: &str) -> Result<FetchReport> {
    let dirs = crate::ldap::directories()?;
    let email = email.trim();
    crate::ldap::mail_filter(email).map_err(|e| anyhow!(e))?;
    let mut report = FetchReport {
        email: email.to_string(),
        directories: dirs.len(),
        ..FetchReport::default()
    };
    if dirs.is_empty() {
        return Ok(report);
    }
    let now = SystemTime::now();
    let mut keep: Vec<CertEntry> = Vec::new();
    for d in &dirs {
        let res = match crate::ldap::lookup(d, email) {
            Ok(r) => r,
            Err(e) => {
                report.errors.push(format!("{e:#}"));
                continue;
            }
        };
        report.notes.extend(res.notes);
        for f in res.found {
            let c = f.cert;
            let emails = c.emails();
            let reason = if is_ca(&c) {
                Some("a CA certificate: not kept".to_string())
            } else if !crate::store::email_fits(email, &emails) {
                Some(if emails.is_empty() {
                    "no email address in the certificate".to_string()
                } else {
                    format!("for {}, not {email}", emails.join(", "))
                })
            } else {
                c.validity_problem(now)
            };
            match reason {
                Some(reason) => report.skipped.push(Skipped {
                    dn: f.dn,
                    subject: c.subject(),
                    reason,
                }),
                None => {
                    if !keep.contains(&c) {
                        keep.push(c);
                    }
                }
            }
        }
    }
    report.stored = store(&keep)?;
    Ok(report)
}

fn is_ca(c: &CertEntry) -> bool {
    use x509_cert::ext::pkix::BasicConstraints;
    matches!(
        c.cert.tbs_certificate().get_extension::<BasicConstraints>(),
        Ok(Some((_, bc))) if bc.ca
    )
}

/// Stores the signers' certificates of a verified message when `[certs] harvest` is on;
/// returns a note for each certificate newly stored. Never fails the caller: problems
/// become notes.
pub fn harvest(certs: &[Vec<u8>]) -> Vec<String> {
    if certs.is_empty() {
        return Vec::new();
    }
    match certs_config() {
        Ok(c) if c.harvest => {}
        Ok(_) => return Vec::new(),
        Err(e) => return vec![format!("certificates not harvested: {e:#}")],
    }
    let parsed: Vec<CertEntry> = certs
        .iter()
        .filter_map(|d| CertEntry::from_der(d.clone()).ok())
        .filter(|c| !c.emails().is_empty())
        .collect();
    match store(&parsed) {
        Ok(stored) => stored
            .into_iter()
            .filter(|s| s.new)
            .map(|s| {
                format!(
                    "stored the signer's certificate '{}' in {}",
                    s.cert.subject,
                    s.cert.file.display()
                )
            })
            .collect(),
        Err(e) => vec![format!("the signer's certificate was not stored: {e:#}")],
    }
}

/// Runs `tokenmail certs`; returns the exit status (errors: 2, said on stderr).
pub fn run(args: CertsArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match run_inner(args, out, err) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            let _ = writeln!(err, "tokenmail: {}", msg.lines().next().unwrap_or("failed"));
            2
        }
    }
}

fn run_inner(args: CertsArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<i32> {
    match args.command {
        CertsCommand::Fetch { email, json } => {
            if !email.contains('@') {
                bail!("{email:?} is not an email address");
            }
            let report = fetch(&email)?;
            if report.directories == 0 {
                bail!("no [[directory]] in the configuration: add one (url, base; docs/configuration.md)");
            }
            let code = if !report.stored.is_empty() {
                0
            } else if !report.errors.is_empty() {
                2
            } else {
                1
            };
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                for s in &report.stored {
                    writeln!(
                        out,
                        "{}: '{}' <{}>, notAfter {}, sha256 {}",
                        if s.new { "stored" } else { "already stored" },
                        s.cert.subject,
                        s.cert.emails.join(">, <"),
                        s.cert.not_after,
                        s.cert.sha256,
                    )?;
                    writeln!(out, "  {}", s.cert.file.display())?;
                }
                for s in &report.skipped {
                    writeln!(out, "skipped: '{}' ({}): {}", s.subject, s.dn, s.reason)?;
                }
                if report.stored.is_empty() && report.errors.is_empty() {
                    writeln!(
                        out,
                        "no certificate for {} in {} director{}",
                        report.email,
                        report.directories,
                        if report.directories == 1 { "y" } else { "ies" }
                    )?;
                }
            }
            for n in &report.notes {
                writeln!(err, "tokenmail: note: {n}")?;
            }
            for e in &report.errors {
                writeln!(err, "tokenmail: {e}")?;
            }
            Ok(code)
        }
        CertsCommand::List { json } => {
            let dirs = crate::store::cert_dirs();
            let all: Vec<Listed> = crate::store::dir_cert_files(&dirs)
                .iter()
                .map(|(f, c)| listed(f, c))
                .collect();
            if json {
                let j = serde_json::json!({ "directories": dirs, "certificates": all });
                writeln!(out, "{}", serde_json::to_string_pretty(&j)?)?;
            } else {
                for l in &all {
                    writeln!(
                        out,
                        "{}\n  subject {}\n  emails  {}\n  notAfter {}\n  sha256  {}",
                        l.file.display(),
                        l.subject,
                        l.emails.join(", "),
                        l.not_after,
                        l.sha256
                    )?;
                }
                writeln!(
                    out,
                    "{} certificate(s) in {}",
                    all.len(),
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                )?;
            }
            Ok(if all.is_empty() { 1 } else { 0 })
        }
        CertsCommand::Remove { what, json } => {
            let removed = remove(&what)?;
            if removed.is_empty() {
                writeln!(
                    err,
                    "tokenmail: no certificate in the store matches {what:?}"
                )?;
                return Ok(1);
            }
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&removed)?)?;
            } else {
                for r in &removed {
                    writeln!(
                        out,
                        "removed '{}' (sha256 {}) from {}",
                        r.subject,
                        r.sha256,
                        r.file.display()
                    )?;
                }
            }
            Ok(0)
        }
    }
}

/// Removes the certificates `what` names (a fingerprint or prefix, or a file of a
/// certificate directory). A bundle loses only the named certificate.
fn remove(what: &str) -> Result<Vec<Listed>> {
    let dirs = crate::store::cert_dirs();
    let all = crate::store::dir_cert_files(&dirs);
    let hexed: String = what
        .trim()
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    let looks_hex = hexed.len() >= 8 && hexed.chars().all(|c| c.is_ascii_hexdigit());
    let as_path = PathBuf::from(what);
    let mut chosen: Vec<(PathBuf, CertEntry)> = if looks_hex && !as_path.exists() {
        let m: Vec<_> = all
            .iter()
            .filter(|(_, c)| fingerprint(c).starts_with(&hexed))
            .cloned()
            .collect();
        let distinct: std::collections::HashSet<String> =
            m.iter().map(|(_, c)| fingerprint(c)).collect();
        if distinct.len() > 1 {
            bail!(
                "{what:?} is the start of {} fingerprints: give more digits (tokenmail certs list)",
                distinct.len()
            );
        }
        m
    } else {
        // a file: as given, or by name in a certificate directory
        let candidates: Vec<PathBuf> = if as_path.components().count() == 1 {
            dirs.iter().map(|d| d.join(&as_path)).collect()
        } else {
            vec![as_path.clone()]
        };
        let Some(file) = candidates.into_iter().find(|p| p.is_file()) else {
            if looks_hex {
                return Ok(Vec::new());
            }
            bail!("{what:?} is neither a fingerprint (8 hex digits or more) nor a file of the certificate store");
        };
        let canon = file.canonicalize()?;
        let in_store = dirs.iter().any(|d| {
            d.canonicalize()
                .is_ok_and(|d| canon.parent() == Some(d.as_path()))
        });
        if !in_store {
            bail!(
                "{} is not in a certificate directory ({}): remove it yourself",
                file.display(),
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            );
        }
        all.iter()
            .filter(|(f, _)| f.canonicalize().is_ok_and(|f| f == canon))
            .cloned()
            .collect()
    };
    chosen.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    let mut removed = Vec::new();
    let mut files: Vec<PathBuf> = chosen.iter().map(|(f, _)| f.clone()).collect();
    files.dedup();
    for f in files {
        let gone: Vec<&CertEntry> = chosen
            .iter()
            .filter(|(p, _)| *p == f)
            .map(|(_, c)| c)
            .collect();
        let rest: Vec<&CertEntry> = all
            .iter()
            .filter(|(p, c)| *p == f && !gone.contains(&c))
            .map(|(_, c)| c)
            .collect();
        if rest.is_empty() {
            std::fs::remove_file(&f).with_context(|| format!("cannot remove {}", f.display()))?;
        } else {
            // a bundle: the others stay
            let mut pem = String::new();
            for c in &rest {
                pem.push_str(
                    &der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &c.der)
                        .map_err(|e| anyhow!("cannot encode PEM: {e}"))?,
                );
            }
            let dir = f.parent().unwrap_or(Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            tmp.write_all(pem.as_bytes())?;
            tmp.persist(&f)
                .map_err(|e| anyhow!("cannot rewrite {}: {}", f.display(), e.error))?;
        }
        removed.extend(gone.into_iter().map(|c| listed(&f, c)));
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certs_config_defaults_and_typos() {
        let t: toml::Table = toml::from_str("").unwrap_or_default();
        assert!(parse_certs_config(&t).is_ok_and(|c| !c.harvest));
        let t: toml::Table = toml::from_str("[certs]\nharvest = true\n").unwrap_or_default();
        assert!(parse_certs_config(&t).is_ok_and(|c| c.harvest));
        let t: toml::Table = toml::from_str("[certs]\nharvset = false\n").unwrap_or_default();
        assert!(parse_certs_config(&t).is_err());
    }
}
