//! `tokenmail audit`: the agent's audit log of private-key operations, newest last.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};

const EXAMPLES: &str = "\
Examples:
  tokenmail audit                       # the last 20 operations
  tokenmail audit --last 100 --op sign  # the last 100 signatures
  tokenmail audit --json | jq -c 'select(.result != \"ok\")'
  tokenmail audit --file /var/log/tokenmail/audit.log

The agent writes one JSON line per private-key operation (sign, decrypt, derive) and per
key change (keygen, import-key, import-cert): time, who asked (uid, pid, program,
client), token, key id, algorithm, the digest signed, result. Never content, PINs or
keys. Where: [audit] file, default $XDG_STATE_HOME/tokenmail/audit.log.";

/// `tokenmail audit`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct AuditArgs {
    /// Show the last N records (0: all).
    #[arg(long, value_name = "N", default_value_t = 20)]
    last: usize,
    /// Only this operation: sign, decrypt, derive, keygen, import-key, import-cert.
    #[arg(long, value_name = "OP")]
    op: Option<String>,
    /// Only operations with this key id (hex) or on this token.
    #[arg(long, value_name = "ID|TOKEN")]
    key: Option<String>,
    /// The log file (default: [audit] file of the configuration, else the default path).
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// JSON lines, as in the file.
    #[arg(long)]
    json: bool,
}

/// The log file: [audit] file, else `$XDG_STATE_HOME/tokenmail/audit.log`.
fn log_path() -> Result<PathBuf> {
    if let Some((p, cfg)) = crate::store::config_value("audit", "file")? {
        let p = PathBuf::from(p);
        return Ok(match (p.is_relative(), cfg.parent()) {
            (true, Some(dir)) => dir.join(p),
            _ => p,
        });
    }
    tokenmail_proto::state_dir()
        .map(|d| d.join("audit.log"))
        .ok_or_else(|| anyhow!("no audit log path: give --file"))
}

/// Runs `tokenmail audit`.
pub fn run(args: AuditArgs, out: &mut dyn Write) -> Result<i32> {
    let path = match args.file.clone() {
        Some(p) => p,
        None => log_path()?,
    };
    let f = std::fs::File::open(&path).with_context(|| {
        format!(
            "cannot read the audit log {} (the agent writes it after its first private-key operation; [audit] file names another)",
            path.display()
        )
    })?;
    let mut records: std::collections::VecDeque<serde_json::Value> = Default::default();
    for line in BufReader::new(f).lines() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        let Ok(r) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if args.op.as_deref().is_some_and(|op| r["op"] != op) {
            continue;
        }
        if args
            .key
            .as_deref()
            .is_some_and(|k| r["key_id"] != k && r["token"] != k && r["label"] != k)
        {
            continue;
        }
        records.push_back(r);
        if args.last > 0 && records.len() > args.last {
            records.pop_front();
        }
    }
    for r in records {
        if args.json {
            writeln!(out, "{r}")?;
            continue;
        }
        let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
        let who = format!(
            "{}{}",
            s(&r["peer"]["program"]),
            r["peer"]["pid"]
                .as_i64()
                .map(|p| format!("[{p}]"))
                .unwrap_or_default()
        );
        let key = match r["label"].as_str() {
            Some(l) => format!("{l} ({})", s(&r["key_id"])),
            None => s(&r["key_id"]),
        };
        let result = match r["error"].as_str() {
            Some(e) => format!("error: {e}"),
            None => s(&r["result"]),
        };
        writeln!(
            out,
            "{}  {:<11} {:<14} {:<24} {:<20} {}",
            s(&r["time"]),
            s(&r["op"]),
            s(&r["token"]),
            key,
            who,
            result
        )?;
    }
    Ok(0)
}
