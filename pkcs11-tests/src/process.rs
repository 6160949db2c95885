//! External programs run by tests, with a deadline.
//!
//! Every program a test runs goes through [`run_with_timeout`] (or [`Running`] for a child
//! the test talks to while it runs): stdout and stderr are drained on threads (no pipe
//! deadlock), and a program that outlives its limit is killed, together with the
//! processes it started (found through /proc), and the test fails with the command line
//! and what the program printed so far. [`Running`] also kills its process when dropped,
//! so a daemon a test starts dies when the test panics.
//!
//! The limit is [`limit`] (60 s) or [`long_limit`] (120 s, big interop steps); the
//! environment variable `TOKENMAIL_TEST_TIMEOUT` (seconds) replaces the 60 s, and the
//! long limit is twice it.
//!
//! Std only: the smime and cli test crates include this file with `#[path]`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The environment variable that sets [`limit`], in seconds.
pub const TIMEOUT_ENV: &str = "TOKENMAIL_TEST_TIMEOUT";

/// How long one program may run: `TOKENMAIL_TEST_TIMEOUT` seconds, default 60.
pub fn limit() -> Duration {
    let secs = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// The limit for big interop steps (PKI generation, whole-message interop): twice [`limit`].
pub fn long_limit() -> Duration {
    limit() * 2
}

/// Runs `cmd` to completion like [`Command::output`] (stdin from `stdin`, or empty),
/// killing it after `timeout`. Panics, with the command line and its output so far, when
/// it cannot be started, times out, or leaves its output pipes open after exiting.
pub fn run_with_timeout(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    match try_run_with_timeout(cmd, stdin, timeout) {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    }
}

/// [`run_with_timeout`] with [`limit`] and no input: a drop-in for `cmd.output()`.
pub fn output(cmd: &mut Command) -> Output {
    run_with_timeout(cmd, None, limit())
}

/// [`run_with_timeout`] with [`limit`], feeding `input` on stdin.
pub fn output_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    run_with_timeout(cmd, Some(input), limit())
}

/// As [`run_with_timeout`], returning the failure instead of panicking (for `Drop`, and
/// for probing whether a program is installed).
pub fn try_run_with_timeout(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, String> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut running = Running::try_spawn(cmd)?;
    let writer = match (running.take_stdin(), stdin) {
        (Some(mut pipe), Some(data)) => {
            let data = data.to_vec();
            // The child may exit without reading everything: a broken pipe is its business.
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            }))
        }
        _ => None,
    };
    let out = running.try_wait_output(timeout);
    if let Some(w) = writer {
        if out.is_ok() {
            let _ = w.join();
        }
    }
    out
}

/// A spawned program: its stdout and stderr, when piped, are read on threads; it is
/// killed (with the processes it started) when dropped while still running.
#[derive(Debug)]
pub struct Running {
    child: Child,
    cmd: String,
    out: Option<Drain>,
    err: Option<Drain>,
    reaped: Option<ExitStatus>,
}

#[derive(Debug)]
struct Drain {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: JoinHandle<()>,
}

impl Drain {
    fn start(mut from: impl Read + Send + 'static) -> Drain {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let to = Arc::clone(&buf);
        let thread = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match from.read(&mut chunk) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Ok(0) | Err(_) => break,
                    Ok(n) => match to.lock() {
                        Ok(mut b) => b.extend_from_slice(&chunk[..n]),
                        Err(_) => break,
                    },
                }
            }
        });
        Drain { buf, thread }
    }

    fn done(d: &Option<Drain>) -> bool {
        d.as_ref().is_none_or(|d| d.thread.is_finished())
    }

    fn snapshot(d: &Option<Drain>) -> Vec<u8> {
        d.as_ref()
            .and_then(|d| d.buf.lock().ok().map(|b| b.clone()))
            .unwrap_or_default()
    }

    fn take(d: &Option<Drain>) -> Vec<u8> {
        d.as_ref()
            .and_then(|d| d.buf.lock().ok().map(|mut b| std::mem::take(&mut *b)))
            .unwrap_or_default()
    }
}

impl Running {
    /// Spawns `cmd` with the stdio it was given (like [`Command::spawn`]). Panics with the
    /// command line when it cannot be started.
    pub fn spawn(cmd: &mut Command) -> Running {
        match Self::try_spawn(cmd) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    /// As [`Running::spawn`], returning the failure instead of panicking.
    pub fn try_spawn(cmd: &mut Command) -> Result<Running, String> {
        let desc = format!("{cmd:?}");
        let mut child = cmd.spawn().map_err(|e| format!("cannot run {desc}: {e}"))?;
        let out = child.stdout.take().map(Drain::start);
        let err = child.stderr.take().map(Drain::start);
        Ok(Running {
            child,
            cmd: desc,
            out,
            err,
            reaped: None,
        })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its stdin, when piped and not taken yet.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            self.reaped = self.child.try_wait().ok().flatten();
        }
        self.reaped
    }

    /// Waits at most `limit` for it to exit; its status, or `None` when it still runs
    /// (it is not killed: dropping it does that).
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let t = Instant::now();
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if t.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// True while it runs.
    pub fn alive(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// What it printed on stdout so far (when piped).
    pub fn stdout_so_far(&self) -> Vec<u8> {
        Drain::snapshot(&self.out)
    }

    /// What it printed on stderr so far (when piped).
    pub fn stderr_so_far(&self) -> Vec<u8> {
        Drain::snapshot(&self.err)
    }

    /// The port a loopback server (`what`, for messages) prints as the first line of its
    /// piped stdout once it listens; panics with its stderr when it exits first or when
    /// 20 s pass.
    pub fn first_line_port(&mut self, what: &str) -> u16 {
        let t = Instant::now();
        loop {
            let out = String::from_utf8_lossy(&self.stdout_so_far()).into_owned();
            if let Some(p) = out
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<u16>().ok())
            {
                return p;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{what} did not start"
            );
            assert!(
                self.alive(),
                "{what} exited: {}",
                String::from_utf8_lossy(&self.stderr_so_far())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for it to exit and for its output, at most `timeout` from now; panics (after
    /// killing it) with the command line and its output so far.
    pub fn wait(self, timeout: Duration) -> Output {
        match self.try_wait_output(timeout) {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        }
    }

    /// Kills it and the processes it started, then returns its status and output (whatever its
    /// pipes held when it died).
    pub fn kill(mut self) -> Output {
        self.kill_tree();
        let status = self.reap();
        self.collect(status, Duration::from_secs(2))
    }

    fn try_wait_output(mut self, timeout: Duration) -> Result<Output, String> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = self.try_wait() {
                break st;
            }
            if Instant::now() >= deadline {
                let what = format!(
                    "did not finish within {} s and was killed",
                    timeout.as_secs_f32()
                );
                return Err(self.fail(&what));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        while !(Drain::done(&self.out) && Drain::done(&self.err)) {
            if Instant::now() >= deadline {
                let what = format!(
                    "exited ({status}) but a process it started kept its stdout/stderr open \
                     past {} s",
                    timeout.as_secs_f32()
                );
                return Err(self.fail(&what));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(self.collect(status, Duration::ZERO))
    }

    /// Kills it (if it still runs) and builds the failure message.
    fn fail(&mut self, what: &str) -> String {
        self.kill_tree();
        self.reap();
        // Give the readers a moment to take what is left in the pipes.
        let t = Instant::now();
        while !(Drain::done(&self.out) && Drain::done(&self.err))
            && t.elapsed() < Duration::from_millis(500)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        format!(
            "{} {what} (set {TIMEOUT_ENV}=<seconds> to allow more)\n\
             --- stdout so far ---\n{}\n--- stderr so far ---\n{}",
            self.cmd,
            tail(&self.stdout_so_far()),
            tail(&self.stderr_so_far()),
        )
    }

    fn collect(&mut self, status: ExitStatus, grace: Duration) -> Output {
        let t = Instant::now();
        while !(Drain::done(&self.out) && Drain::done(&self.err)) && t.elapsed() < grace {
            std::thread::sleep(Duration::from_millis(10));
        }
        Output {
            status,
            stdout: Drain::take(&self.out),
            stderr: Drain::take(&self.err),
        }
    }

    fn kill_tree(&mut self) {
        if self.try_wait().is_none() {
            kill_with_descendants(&mut self.child);
        }
    }

    fn reap(&mut self) -> ExitStatus {
        if let Some(st) = self.reaped {
            return st;
        }
        match self.child.wait() {
            Ok(st) => {
                self.reaped = Some(st);
                st
            }
            Err(e) => panic!("waiting for {}: {e}", self.cmd),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            self.kill_tree();
            let _ = self.child.wait();
        }
    }
}

/// Kills `child` (SIGKILL) and the processes it started, found while it still runs: once
/// it is gone they belong to init. Does not wait for it.
pub fn kill_with_descendants(child: &mut Child) {
    let pids: Vec<String> = descendants(child.id()).iter().map(u32::to_string).collect();
    if !pids.is_empty() {
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.kill();
}

/// The processes below `pid` (children, their children, ...), from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            if let Some(pp) = ppid {
                parent_of.push((p, pp));
            }
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// The last 16 KiB of `bytes`, as text.
fn tail(bytes: &[u8]) -> String {
    const MAX: usize = 16 * 1024;
    let s = String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(MAX)..]);
    if bytes.len() > MAX {
        format!("[... {} bytes before]\n{s}", bytes.len() - MAX)
    } else {
        s.into_owned()
    }
}

/// Stops the GnuPG daemons (gpg-agent, dirmngr, ...) of the GnuPG home `home`:
/// `gpgconf --homedir HOME --kill all`, itself with a deadline. Never panics (for `Drop`).
pub fn kill_gpg_daemons(home: &Path) {
    let _ = try_run_with_timeout(
        Command::new("gpgconf")
            .arg("--homedir")
            .arg(home)
            .args(["--kill", "all"]),
        None,
        Duration::from_secs(20),
    );
}

/// A GnuPG home whose daemons a test may start: dropping it runs [`kill_gpg_daemons`],
/// so gpg-agent dies even when the test panics.
#[derive(Debug)]
pub struct GpgDaemons {
    home: PathBuf,
}

impl GpgDaemons {
    /// Guards the daemons of `home`.
    pub fn new(home: impl Into<PathBuf>) -> GpgDaemons {
        GpgDaemons { home: home.into() }
    }
}

impl Drop for GpgDaemons {
    fn drop(&mut self) {
        kill_gpg_daemons(&self.home);
    }
}

/// Imports a software key into gpgsm as a PKCS#12 file without a passphrase (3DES, SHA-1 MAC:
/// what gpgsm 2.2 reads), made afresh by `openssl pkcs12` for every attempt.
///
/// `gpgsm` builds the base command (home, batch, loopback pinentry, stdin). Two failures are
/// retried, up to `attempts` times: gpg-agent, started on demand, can lose a race with the
/// first import on a loaded machine; and gpgsm 2.2.40's own PKCS#12 parser rejects about one
/// in forty files openssl makes (random salt and IV; openssl reads the rejected file back),
/// so a retry must not reuse the same file. Returns what gpgsm printed last on failure.
pub fn gpgsm_import_key_as_p12(
    gpgsm: &dyn Fn() -> Command,
    key: &Path,
    cert: &Path,
    p12: &Path,
    attempts: usize,
) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..attempts.max(1) {
        let made = output(
            Command::new("openssl")
                .args(["pkcs12", "-export", "-passout", "pass:"])
                .args(["-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES"])
                .args(["-macalg", "sha1", "-inkey"])
                .arg(key)
                .arg("-in")
                .arg(cert)
                .arg("-out")
                .arg(p12),
        );
        if !made.status.success() {
            return Err(format!(
                "openssl pkcs12: {}",
                String::from_utf8_lossy(&made.stderr)
            ));
        }
        let o = output(gpgsm().arg("--import").arg(p12));
        if o.status.success() {
            return Ok(());
        }
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(last)
}
