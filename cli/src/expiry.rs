//! `tokenmail expiry`: which certificates expire soon, and which have expired — on the
//! agent's tokens, in the certificate directories and, with `--ldap`, under the base of
//! every configured LDAP directory (`[[directory]]`). Exit 0 nothing due, 1 something due
//! within the window, 2 something expired: made for cron and monitoring.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};
use tokenmail_smime::expiry::{expiry, Expiry, ExpiryStatus};
use tokenmail_smime::path::CertEntry;

/// Arguments of `tokenmail expiry`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  tokenmail expiry                      # due within 30 days, or expired\n  tokenmail expiry --days 60 --all      # every certificate, 60-day window\n  tokenmail expiry --json --certs /srv/certs | jq '.certificates[] | select(.status != \"ok\")'\n  tokenmail expiry --ldap                # and every certificate in the [[directory]] entries\n\nExit status: 0 nothing due, 1 something expires within the window, 2 something has expired.\nWith --ldap, a directory that cannot be searched is an error (exit 1, said on stderr)."
)]
pub struct ExpiryArgs {
    /// The warning window in days.
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub days: u64,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// A certificate directory to scan (repeatable; default: $TOKENMAIL_CERTS, else
    /// ~/.config/tokenmail/certs/).
    #[arg(long = "certs", value_name = "DIR")]
    pub certs: Vec<PathBuf>,
    /// Also check every certificate under the base of the configured LDAP directories
    /// ([[directory]] in the configuration).
    #[arg(long)]
    pub ldap: bool,
    /// List every certificate, not only those due or expired.
    #[arg(long)]
    pub all: bool,
}

/// The certificates on the agent's tokens; `None` when no agent answers.
fn token_certificates(socket: Option<&Path>) -> Option<Vec<(String, CertEntry)>> {
    Some(
        crate::store::agent_keys(socket)?
            .into_iter()
            .filter_map(|k| {
                let der = k.certificate?.der.0;
                let cert = CertEntry::from_der(der).ok()?;
                Some((format!("token {:?}, key {:?}", k.token, k.label), cert))
            })
            .collect(),
    )
}

/// Runs `tokenmail expiry`; returns the exit status.
pub fn run(args: ExpiryArgs, socket: Option<&Path>, out: &mut dyn Write) -> Result<i32> {
    let ldap_dirs = if args.ldap {
        let d = crate::ldap::directories()?;
        if d.is_empty() {
            bail!("--ldap: no [[directory]] in the configuration: add one (url, base; docs/configuration.md) or run without --ldap");
        }
        d
    } else {
        Vec::new()
    };
    let now = SystemTime::now();
    let window = Duration::from_secs(args.days.saturating_mul(86400));
    let mut found: Vec<Expiry> = Vec::new();
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut add = |source: String, c: &CertEntry| {
        let key = (c.subject(), c.serial_hex());
        if seen.contains(&key) {
            return;
        }
        seen.push(key);
        found.push(expiry(c, &source, now, window));
    };
    let tokens = token_certificates(socket);
    for (source, c) in tokens.iter().flatten() {
        add(source.clone(), c);
    }
    let dirs = if args.certs.is_empty() {
        crate::store::cert_dirs()
    } else {
        args.certs.clone()
    };
    for d in &dirs {
        if !args.certs.is_empty() && !d.is_dir() {
            bail!("--certs {}: not a directory", d.display());
        }
        for (path, c) in crate::store::dir_cert_files(std::slice::from_ref(d)) {
            add(path.display().to_string(), &c);
        }
    }
    let mut notes = Vec::new();
    for d in &ldap_dirs {
        let res = crate::ldap::scan(d)?;
        notes.extend(res.notes);
        for f in res.found {
            add(format!("{} {}", d.url.trim(), f.dn), &f.cert);
        }
    }
    found.sort_by(|a, b| b.status.cmp(&a.status).then(a.days_left.cmp(&b.days_left)));
    let expired = found
        .iter()
        .filter(|e| e.status == ExpiryStatus::Expired)
        .count();
    let due = found
        .iter()
        .filter(|e| e.status == ExpiryStatus::Due)
        .count();
    let code = if expired > 0 {
        2
    } else if due > 0 {
        1
    } else {
        0
    };
    if args.json {
        let report = serde_json::json!({
            "days": args.days,
            "agent": tokens.is_some(),
            "directories": dirs,
            "ldap": ldap_dirs.iter().map(|d| d.url.trim()).collect::<Vec<_>>(),
            "notes": notes,
            "checked": found.len(),
            "expired": expired,
            "due": due,
            "certificates": found,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(code);
    }
    for n in &notes {
        writeln!(out, "note: {n}")?;
    }
    if tokens.is_none() {
        writeln!(
            out,
            "note: no agent answered: the tokens' certificates are not checked"
        )?;
    }
    for e in &found {
        let what = match e.status {
            ExpiryStatus::Expired => format!("EXPIRED {} days ago", -e.days_left),
            ExpiryStatus::Due => format!("expires in {} days", e.days_left),
            ExpiryStatus::NotYetValid => "not yet valid".to_string(),
            ExpiryStatus::Ok if args.all => format!("ok, {} days left", e.days_left),
            ExpiryStatus::Ok => continue,
        };
        let emails = if e.emails.is_empty() {
            String::new()
        } else {
            format!(" <{}>", e.emails.join(">, <"))
        };
        writeln!(
            out,
            "{what}: '{}'{emails}, notAfter {} ({})",
            e.subject, e.not_after, e.source
        )?;
    }
    writeln!(
        out,
        "{} certificate(s) checked: {expired} expired, {due} due within {} days",
        found.len(),
        args.days
    )?;
    Ok(code)
}
