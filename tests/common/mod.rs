//! End-to-end test support: find the built binaries, provision a token, run an agent.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use tokenmail_pkcs11_tests::process::{self, Running};
pub use tokenmail_pkcs11_tests::{provision, workspace, Fixture};

/// A built binary of the workspace (`cargo build --workspace` must have run; the test
/// script does it).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace` before the tests",
        p.display()
    );
    p
}

/// A running agent on a private token (killed when dropped).
#[derive(Debug)]
pub struct Agent {
    /// The agent process (its stderr is collected).
    pub child: Option<Running>,
    /// Its socket.
    pub socket: PathBuf,
    /// The token directory and PKI.
    pub fixture: Fixture,
    /// Scratch directory (socket lives in `dir/run/`).
    pub dir: tempfile::TempDir,
}

impl Agent {
    /// Provisions a token and starts `tokenmail-agent --foreground` with `--pin-file`.
    pub fn start() -> Agent {
        Self::start_with(&[], true)
    }

    /// As `start`, with extra flags; `pin_file` adds `--pin-file`.
    pub fn start_with(extra: &[&str], pin_file: bool) -> Agent {
        Self::start_configured(extra, pin_file, |_| None)
    }

    /// [`Agent::start_with`], plus `--config FILE` with the text `config` makes from the
    /// fresh fixture (its PKI paths), when it makes one.
    pub fn start_configured(
        extra: &[&str],
        pin_file: bool,
        config: impl FnOnce(&Fixture) -> Option<String>,
    ) -> Agent {
        let fixture = provision("tokenmail-e2e");
        let dir = tempfile::tempdir().expect("tempdir");
        let config_file = config(&fixture).map(|text| {
            let p = dir.path().join("agent.toml");
            std::fs::write(&p, text).expect("write the agent's configuration");
            p
        });
        let socket = dir.path().join("run").join("agent.sock");
        let mut cmd = Command::new(bin("tokenmail-agent"));
        cmd.arg("--foreground")
            .arg("--socket")
            .arg(&socket)
            .arg("--pkcs11-module")
            .arg(&fixture.module)
            .arg("--token-label")
            .arg(&fixture.label)
            .args(extra)
            .args(
                config_file
                    .iter()
                    .flat_map(|p| [std::ffi::OsStr::new("--config"), p.as_os_str()]),
            )
            .env("SOFTHSM2_CONF", fixture.dir.join("softhsm2.conf"))
            // the audit log (and any other state) of this agent stays in its scratch dir
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if pin_file {
            cmd.arg("--pin-file").arg(fixture.pin_file());
        }
        let child = Running::spawn(&mut cmd);
        let agent = Agent {
            child: Some(child),
            socket,
            fixture,
            dir,
        };
        agent.wait_ready();
        agent
    }

    fn wait_ready(&self) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "agent did not listen on {} within 20 s",
            self.socket.display()
        );
    }

    /// Runs `tokenmail --socket S ARGS`.
    pub fn cli(&self, args: &[&str]) -> Output {
        process::output(&mut self.cli_cmd(args))
    }

    /// The command for `tokenmail --socket S ARGS`.
    pub fn cli_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("tokenmail"));
        c.arg("--socket").arg(&self.socket).args(args);
        // the signer cache of this agent's tests stays in its scratch directory
        c.env("XDG_CACHE_HOME", self.dir.path().join("cache"));
        c.stdin(Stdio::null());
        c
    }

    /// The agent's audit log (in its scratch directory).
    pub fn audit_log(&self) -> PathBuf {
        self.dir
            .path()
            .join("state")
            .join("tokenmail")
            .join("audit.log")
    }

    /// The agent's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Sends SIGTERM and waits; returns the exit status and stderr.
    pub fn stop(&mut self) -> (std::process::ExitStatus, String) {
        let child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("kill");
        let o = child.wait(Duration::from_secs(10));
        (o.status, stderr(&o))
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(Running::alive)
    }
}

/// Waits for a child with a deadline; kills it (and what it started) when it expires.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    process::kill_with_descendants(child);
    let _ = child.wait();
    None
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The test PKI (root and intermediate CA with their keys) of the process-wide
/// provisioned token, for issuing certificates to other keys (PIV cards).
pub fn fixture_pki() -> PathBuf {
    tokenmail_pkcs11_tests::fixture().dir.join("pki")
}

/// The TSA's PKI (issued by the fixture's intermediate) and its http server.
#[derive(Debug)]
pub struct TsaServer {
    server: Option<Running>,
    /// Its port on 127.0.0.1 (`http://127.0.0.1:PORT/tsa`).
    pub port: u16,
}

impl Drop for TsaServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.kill();
        }
    }
}

/// A TSA issued by the fixture's intermediate (its PKI made in `dir`) answering
/// `openssl ts -reply` over http on a free loopback port.
pub fn start_tsa(agent: &Agent, dir: &Path) -> TsaServer {
    let out = process::run_with_timeout(
        Command::new("bash")
            .arg("-c")
            .arg(include_str!("../../smime/tests/data/tsa-pki.sh"))
            .env("CA_PEM", agent.fixture.pki("intermediate.pem"))
            .env("CA_KEY", agent.fixture.pki("intermediate.key"))
            .current_dir(dir),
        None,
        process::long_limit(),
    );
    assert!(out.status.success(), "TSA PKI: {}", stderr(&out));
    let mut server = Running::spawn(
        Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/data/tsa_server.py"))
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let port = server.first_line_port("TSA");
    TsaServer {
        server: Some(server),
        port,
    }
}
