//! Human-readable output, and where `-o` writes.
//!
//! `-o` respects what it names:
//! * a regular file, or a path that does not exist yet: written to a private temporary file
//!   in the same directory and renamed over it only when complete (never half-written; an
//!   existing file keeps its permissions);
//! * a character device (`/dev/null`, a terminal), a FIFO or a socket: written through, in
//!   place — no temporary file, no rename, no fsync;
//! * a symbolic link: the file it points to, by the rules above (the link stays);
//! * a directory, a block device, or a link to nothing: refused, said plainly.
//!
//! Output that must not be seen before it is complete and checked (decrypted plaintext,
//! verified content) is staged ([`Staged`]): renamed over a regular file, or copied through
//! to a device or standard output only after the check.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use tokenmail_proto::v1::{AgentStatus, KeyInfo};

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
        if t.present && !t.logged_in {
            s.push_str(&format!(
                "    {}\n",
                tokenmail_proto::pin_required_message(&t.label)
            ));
        }
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
        s.push_str(
            "  (none visible: a token is absent, or needs its PIN; `tokenmail status` says which)\n",
        );
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
        if k.exportable {
            s.push_str("    WARNING: the token reports this private key extractable or not sensitive: its value can be read off the token\n");
        }
        if let Some(c) = &k.certificate {
            s.push_str(&format!("    subject: {}\n", c.subject));
            s.push_str(&format!("    emails:  {}\n", c.emails.join(", ")));
            s.push_str(&format!(
                "    expires: {}{}\n",
                c.not_after,
                days_left(&c.der.0)
            ));
        } else {
            s.push_str("    (no certificate with this id)\n");
        }
    }
    s
}

/// ` (in 12 days)` / ` (EXPIRED 3 days ago)` for a certificate's notAfter.
fn days_left(der_bytes: &[u8]) -> String {
    let Ok(c) = tokenmail_smime::path::CertEntry::from_der(der_bytes.to_vec()) else {
        return String::new();
    };
    let na = c
        .cert
        .tbs_certificate()
        .validity()
        .not_after
        .to_system_time();
    match na.duration_since(std::time::SystemTime::now()) {
        Ok(d) => format!(" (in {} days)", d.as_secs() / 86_400),
        Err(e) => format!(" (EXPIRED {} days ago)", e.duration().as_secs() / 86_400),
    }
}

/// Where an output goes.
#[derive(Debug)]
pub enum Target {
    /// standard output
    Stdout,
    /// a character device, FIFO or socket, opened for writing: written in place
    Through {
        /// as given
        path: PathBuf,
        /// open for writing
        file: File,
    },
    /// a regular file or a new path (a symbolic link resolved): temporary file + rename
    Replace {
        /// the file to replace (symbolic links resolved)
        path: PathBuf,
        /// the permissions of the file replaced, if it existed
        mode: Option<u32>,
    },
}

impl Target {
    /// Classifies `-o PATH` (`None`: standard output) without changing anything.
    pub fn of(path: Option<&Path>) -> Result<Self> {
        let Some(p) = path else {
            return Ok(Target::Stdout);
        };
        let link = std::fs::symlink_metadata(p).ok();
        let resolved = match &link {
            Some(m) if m.file_type().is_symlink() => match std::fs::canonicalize(p) {
                Ok(r) => r,
                Err(_) => bail!(
                    "{} is a symbolic link to a file that does not exist ({}); give the real path",
                    p.display(),
                    std::fs::read_link(p)
                        .map(|t| t.display().to_string())
                        .unwrap_or_else(|_| "?".into())
                ),
            },
            _ => p.to_path_buf(),
        };
        let meta = match std::fs::metadata(&resolved) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Target::Replace {
                    path: resolved,
                    mode: None,
                })
            }
            Err(e) => return Err(anyhow!("cannot write {}: {e}", p.display())),
        };
        let ft = meta.file_type();
        if ft.is_file() {
            return Ok(Target::Replace {
                path: resolved,
                mode: Some(meta.permissions().mode() & 0o7777),
            });
        }
        if ft.is_dir() {
            bail!("{} is a directory; give a file name", p.display());
        }
        if ft.is_block_device() {
            bail!(
                "{} is a block device; refusing to write a message onto it",
                p.display()
            );
        }
        // character device, FIFO, socket: through it, as a shell redirection would
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&resolved)
            .with_context(|| format!("cannot open {} for writing", p.display()))?;
        Ok(Target::Through {
            path: p.to_path_buf(),
            file,
        })
    }
}

/// A temporary file beside `path` (0600, deleted unless persisted).
fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = dir_of(path);
    tempfile::Builder::new()
        .prefix(".tokenmail-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))
}

/// Renames `tmp` over `path`, keeping the replaced file's permissions.
fn persist(tmp: tempfile::NamedTempFile, path: &Path, mode: Option<u32>) -> Result<()> {
    if let Some(mode) = mode {
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the permissions of {}", path.display()))?;
    }
    tmp.persist(path)
        .map_err(|e| anyhow!("cannot write {}: {}", path.display(), e.error))?;
    Ok(())
}

/// Writes `data` to `path` by the rules of the module; `None` writes to standard output.
pub fn write_output(path: Option<&Path>, data: &[u8]) -> Result<()> {
    write_streaming(path, |out| Ok(out.write_all(data)?))
}

/// Streams what `produce` writes to `path` by the rules of the module (a regular file is
/// replaced only when `produce` succeeded); `None` streams to standard output.
pub fn write_streaming(
    path: Option<&Path>,
    produce: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    match Target::of(path)? {
        Target::Stdout => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            produce(&mut out)?;
            out.flush().context("cannot write to standard output")?;
        }
        Target::Through { path, mut file } => {
            produce(&mut file)?;
            file.flush()
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Target::Replace { path, mode } => {
            let tmp = temp_beside(&path)?;
            let mut w = EarlySync::new(tmp.as_file())?;
            produce(&mut w)?;
            w.finish()
                .with_context(|| format!("cannot write {}", path.display()))?;
            persist(tmp, &path, mode)?;
        }
    }
    Ok(())
}

/// Output held back until it is complete and checked: an *unnamed* private temporary file
/// (`O_TMPFILE`, 0600) that is linked in and renamed over a regular target, or copied
/// through to a device, a FIFO or standard output, by [`Staged::release`]. Until then it has
/// no name: Ctrl-C, a kill or a crash leaves no plaintext behind.
#[derive(Debug)]
pub struct Staged {
    file: File,
    target: Target,
}

impl Staged {
    /// Stages output for `path` (`None`: standard output).
    pub fn new(path: Option<&Path>) -> Result<Self> {
        let target = Target::of(path)?;
        let file = match &target {
            Target::Replace { path, .. } => {
                let dir = dir_of(path);
                tempfile::tempfile_in(dir).with_context(|| {
                    format!("cannot create a temporary file in {}", dir.display())
                })?
            }
            _ => tempfile::tempfile().context("cannot create a temporary file in $TMPDIR")?,
        };
        Ok(Staged { file, target })
    }

    /// The temporary file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// A path that opens the temporary file (`/proc/self/fd/N`: it has no name of its own),
    /// valid in this process until it is released.
    pub fn path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    /// Opens the temporary file again for reading, from its start.
    pub fn reopen(&self) -> std::io::Result<File> {
        File::open(self.path())
    }

    /// Whether the temporary file becomes the output itself (then it is worth syncing to
    /// disk before [`Staged::release`]); a scratch file is not.
    pub fn durable(&self) -> bool {
        matches!(self.target, Target::Replace { .. })
    }

    /// Releases the output: link in and rename, or copy through.
    pub fn release(self) -> Result<()> {
        match &self.target {
            Target::Replace { path, mode } => self.link_over(path, *mode),
            Target::Stdout => {
                let mut f = self.reopen()?;
                let stdout = std::io::stdout();
                let mut out = stdout.lock();
                std::io::copy(&mut f, &mut out).context("cannot write to standard output")?;
                out.flush().context("cannot write to standard output")?;
                Ok(())
            }
            Target::Through { path, file } => {
                let mut f = self.reopen()?;
                let mut file = file;
                std::io::copy(&mut f, &mut file)
                    .and_then(|_| file.flush())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(())
            }
        }
    }

    /// Gives the unnamed file a name beside `path` (linkat of `/proc/self/fd/N`), then
    /// renames it over `path`; where the file system cannot link an unnamed file, its
    /// content is copied to a named temporary file first.
    fn link_over(&self, path: &Path, mode: Option<u32>) -> Result<()> {
        use nix::fcntl::AtFlags;
        self.file
            .set_permissions(std::fs::Permissions::from_mode(mode.unwrap_or(0o600)))
            .with_context(|| format!("cannot set the permissions of {}", path.display()))?;
        let dir = dir_of(path);
        for _ in 0..8 {
            let mut random = [0u8; 8];
            getrandom::fill(&mut random).map_err(|e| anyhow!("no randomness: {e}"))?;
            let name = dir.join(format!(".tokenmail-{}", hex::encode(random)));
            match nix::unistd::linkat(
                None,
                self.path().as_path(),
                None,
                name.as_path(),
                AtFlags::AT_SYMLINK_FOLLOW,
            ) {
                Ok(()) => {
                    return std::fs::rename(&name, path).map_err(|e| {
                        let _ = std::fs::remove_file(&name);
                        anyhow!("cannot write {}: {e}", path.display())
                    });
                }
                Err(nix::errno::Errno::EEXIST) => continue,
                Err(_) => break,
            }
        }
        // no O_TMPFILE linking here: a named copy, renamed over the target
        let tmp = temp_beside(path)?;
        std::io::copy(&mut self.reopen()?, &mut tmp.as_file())
            .and_then(|_| tmp.as_file().sync_all())
            .with_context(|| format!("cannot write {}", path.display()))?;
        persist(tmp, path, mode)
    }
}

/// The directory a path is in (`.` for a bare name).
fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

// ---------------------------------------------------------------------------
// The file writer of sign, encrypt, decrypt and verify.

/// Bytes written between two background flushes.
const EARLY_SYNC_EVERY: u64 = 32 << 20;

/// A file writer that starts writing big outputs to disk while they are produced: every
/// [`EARLY_SYNC_EVERY`] bytes a second thread calls `fdatasync` on the file, so the final
/// `fsync` (which makes the rename durable) only waits for the last part instead of the whole
/// file. Without it, a 256 MiB output spends ~0.1 s in that last `fsync`.
#[derive(Debug)]
pub struct EarlySync {
    file: std::fs::File,
    /// whether to flush in the background at all
    early: bool,
    since: u64,
    tick: Option<std::sync::mpsc::SyncSender<()>>,
    handle: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl EarlySync {
    /// Wraps a handle on `file` (writes go straight through).
    pub fn new(file: &std::fs::File) -> std::io::Result<Self> {
        Ok(Self {
            early: true,
            file: file.try_clone()?,
            since: 0,
            tick: None,
            handle: None,
        })
    }

    fn kick(&mut self) -> std::io::Result<()> {
        if self.tick.is_none() {
            let clone = self.file.try_clone()?;
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
            self.handle = Some(std::thread::spawn(move || {
                for () in rx {
                    clone.sync_data()?;
                }
                Ok(())
            }));
            self.tick = Some(tx);
        }
        if let Some(tx) = &self.tick {
            // one waiting request is enough: a flush covers everything written before it
            let _ = tx.try_send(());
        }
        Ok(())
    }

    /// Wraps a handle on a scratch file that is never synced: writes go straight through.
    pub fn scratch(file: &std::fs::File) -> std::io::Result<Self> {
        Ok(Self {
            early: false,
            ..Self::new(file)?
        })
    }

    /// Waits for the background flushes (for a scratch file that is never synced).
    pub fn finish_unsynced(mut self) -> anyhow::Result<()> {
        drop(self.tick.take());
        if let Some(h) = self.handle.take() {
            h.join()
                .map_err(|_| anyhow::anyhow!("the flushing thread panicked"))??;
        }
        Ok(())
    }

    /// Waits for the background flushes, then `fsync`s the file.
    pub fn finish(mut self) -> anyhow::Result<()> {
        drop(self.tick.take());
        if let Some(h) = self.handle.take() {
            h.join()
                .map_err(|_| anyhow::anyhow!("the flushing thread panicked"))??;
        }
        self.file.sync_all()?;
        Ok(())
    }
}

impl std::io::Write for EarlySync {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.since += n as u64;
        if self.early && self.since >= EARLY_SYNC_EVERY {
            self.since = 0;
            self.kick()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// The background thread helpers are tokenmail_smime::pipeline's (one copy for the CLI
/// and the agent).
pub use tokenmail_smime::pipeline::{BackgroundFeed, ChunkSink, Feed, WriteFeed};
