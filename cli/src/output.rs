//! Human-readable output and safe file writing.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use tokenmail_proto::v1::{AgentStatus, KeyInfo};

/// Writes `data` to `path` through a temporary file in the same directory and a rename,
/// so a failure never leaves a half-written file; `None` writes to standard output.
pub fn write_output(path: Option<&Path>, data: &[u8]) -> Result<()> {
    match path {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(data)?;
            out.flush()?;
            Ok(())
        }
        Some(p) => {
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot write in {}", dir.display()))?;
            tmp.write_all(data)?;
            tmp.as_file().sync_all()?;
            tmp.persist(p)
                .with_context(|| format!("cannot write {}", p.display()))?;
            Ok(())
        }
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `tokenmail status` as text.
pub fn status_text(st: &AgentStatus) -> String {
    let mut s = format!("agent: {} (protocol {})\n", st.agent_version, st.protocol);
    s.push_str("tokens:\n");
    for t in &st.tokens {
        s.push_str(&format!(
            "  {:<20} serial {:<18} present: {:<3} logged in: {:<3} PIN from: {}{}\n",
            t.label,
            if t.serial.is_empty() { "-" } else { &t.serial },
            yes(t.present),
            yes(t.logged_in),
            t.pin_source,
            if t.locked { " (locked)" } else { "" }
        ));
        if !t.pin_warnings.is_empty() {
            s.push_str(&format!(
                "    PIN warnings: {}\n",
                t.pin_warnings.join(", ")
            ));
        }
    }
    s.push_str(&keys_text(&st.keys));
    if !st.emails.is_empty() {
        s.push_str("email selects:\n");
        for e in &st.emails {
            s.push_str(&format!(
                "  {:<28} -> {} (id {} on {}, {})\n",
                e.email, e.key, e.id, e.token, e.reason
            ));
        }
    }
    s
}

/// `tokenmail keys` as text.
pub fn keys_text(keys: &[KeyInfo]) -> String {
    let mut s = String::from("keys:\n");
    if keys.is_empty() {
        s.push_str("  (none visible: is the token present, or does it need `tokenmail login`?)\n");
    }
    for k in keys {
        s.push_str(&format!(
            "  {:<16} id {:<8} {:<9} [{}] on {}\n",
            k.label,
            k.id,
            k.algorithm,
            k.usage.join(","),
            k.token
        ));
        if k.touch.is_some() || k.pin_policy.is_some() {
            s.push_str(&format!(
                "    policy:  PIN {}, touch {}\n",
                k.pin_policy.as_deref().unwrap_or("-"),
                k.touch.as_deref().unwrap_or("-")
            ));
        }
        if let Some(c) = &k.certificate {
            s.push_str(&format!("    subject: {}\n", c.subject));
            s.push_str(&format!("    emails:  {}\n", c.emails.join(", ")));
            s.push_str(&format!("    expires: {}\n", c.not_after));
        } else {
            s.push_str("    (no certificate with this id)\n");
        }
    }
    s
}

/// An output that may be able to start over: a temporary file can, standard output cannot.
pub trait RestartableWrite: Write {
    /// Discards everything written so far and starts again from the beginning; `false` (and
    /// nothing done) when this output cannot.
    fn restart(&mut self) -> std::io::Result<bool>;
}

/// [`RestartableWrite`] for an output that cannot start over.
#[derive(Debug)]
pub struct NoRestart<W>(pub W);

impl<W: Write> Write for NoRestart<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> RestartableWrite for NoRestart<W> {
    fn restart(&mut self) -> std::io::Result<bool> {
        Ok(false)
    }
}

impl RestartableWrite for EarlySync {
    fn restart(&mut self) -> std::io::Result<bool> {
        use std::io::Seek;
        self.file.set_len(0)?;
        self.file.seek(std::io::SeekFrom::Start(0))?;
        self.since = 0;
        Ok(true)
    }
}

/// Streams output produced by `produce` to `path` through a temporary file in the same
/// directory, renamed over `path` only when `produce` succeeded; `None` streams to
/// standard output.
pub fn write_streaming(
    path: Option<&Path>,
    produce: impl FnOnce(&mut dyn RestartableWrite) -> Result<()>,
) -> Result<()> {
    match path {
        None => {
            let stdout = std::io::stdout();
            let mut out = NoRestart(stdout.lock());
            produce(&mut out)?;
            out.flush()?;
            Ok(())
        }
        Some(p) => {
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot write in {}", dir.display()))?;
            let mut w = EarlySync::new(tmp.as_file())?;
            produce(&mut w)?;
            w.finish()?;
            tmp.persist(p)
                .with_context(|| format!("cannot write {}", p.display()))?;
            Ok(())
        }
    }
}

/// The background thread helpers are tokenmail_smime::pipeline's (one copy for the CLI
/// and the agent); the early-syncing file writer is verify.rs's.
pub use crate::verify::EarlySync;
pub use tokenmail_smime::pipeline::{BackgroundFeed, ChunkSink, Feed, WriteFeed};
