//! Test support: a private SoftHSM token provisioned by `softhsm/provision.sh`.
//!
//! The PKCS#11 module comes from `TOKENMAIL_PKCS11_MODULE` (default: Debian's SoftHSM).
//! Each test binary provisions one token into a temporary directory and points
//! `SOFTHSM2_CONF` at it before the module is first initialised, so the system's
//! tokens are never touched.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tokenmail_agent::pin::PinSource;

pub mod process;
use tokenmail_agent::token::pkcs11::{Pkcs11Config, Pkcs11Store};

/// A provisioned token.
#[derive(Debug)]
pub struct Fixture {
    /// The directory (softhsm2.conf, tokens/, pin, pki/).
    pub dir: PathBuf,
    /// PKCS#11 module.
    pub module: PathBuf,
    /// Token label.
    pub label: String,
    _tmp: tempfile::TempDir,
}

impl Fixture {
    /// The PIN file.
    pub fn pin_file(&self) -> PathBuf {
        self.dir.join("pin")
    }
    /// The user PIN.
    pub fn pin(&self) -> String {
        std::fs::read_to_string(self.pin_file())
            .expect("pin file")
            .trim()
            .to_string()
    }
    /// A PKI file (certificates, keys of software peers).
    pub fn pki(&self, name: &str) -> PathBuf {
        self.dir.join("pki").join(name)
    }
    /// A store configuration for this token.
    pub fn config(&self, pin: PinSource) -> Pkcs11Config {
        Pkcs11Config {
            module: self.module.clone(),
            label: Some(self.label.clone()),
            serial: None,
            pin_source: pin,
            pin_ttl: None,
            max_sessions: 4,
        }
    }
    /// A store logged in with the PIN file.
    pub fn store(&self) -> Pkcs11Store {
        Pkcs11Store::new(self.config(PinSource::File(self.pin_file()))).expect("module loads")
    }
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Provisions a token into a fresh directory with `softhsm/provision.sh`.
pub fn provision(label: &str) -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("token");
    let out = process::run_with_timeout(
        Command::new("bash")
            .arg(workspace().join("softhsm/provision.sh"))
            .arg(&dir)
            .args(["--label", label]),
        None,
        process::long_limit(),
    );
    assert!(
        out.status.success(),
        "provision.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let module = std::env::var_os("TOKENMAIL_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let env = std::fs::read_to_string(dir.join("env")).expect("env file");
            env.lines()
                .find_map(|l| l.strip_prefix("export TOKENMAIL_PKCS11_MODULE="))
                .map(PathBuf::from)
                .expect("module in env file")
        });
    Fixture {
        dir,
        module,
        label: label.to_string(),
        _tmp: tmp,
    }
}

/// The process-wide fixture: provisioned once, `SOFTHSM2_CONF` set before any module init.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let f = provision("tokenmail-test");
        std::env::set_var("SOFTHSM2_CONF", f.dir.join("softhsm2.conf"));
        f
    })
}

/// A file the workspace builds into the target directory of this test binary
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`).
pub fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace` before the tests",
        p.display()
    );
    p
}

/// The process-wide fixture for tokenmail's own module: the token provisioned on SoftHSM,
/// served by a `tokenmail-agent` (started here, stopped within a second of this process's
/// end by a watchdog shell), and `module` = `libtokenmail_pkcs11.so`, which finds that
/// agent through `TOKENMAIL_SOCK` (set before any module init).
pub fn fixture_through_module() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut f = provision("tokenmail-test");
        let softhsm = std::mem::replace(&mut f.module, built("libtokenmail_pkcs11.so"));
        let socket = f.dir.join("run").join("agent.sock");
        // the watchdog: runs the agent, and stops it when this process or the agent ends
        let script = r#""$0" "$@" & a=$!
while kill -0 "$WATCH" 2>/dev/null && kill -0 "$a" 2>/dev/null; do sleep 0.5; done
kill "$a" 2>/dev/null; wait "$a""#;
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(built("tokenmail-agent"))
            .arg("--foreground")
            .arg("--socket")
            .arg(&socket)
            .arg("--pkcs11-module")
            .arg(&softhsm)
            .arg("--token-label")
            .arg(&f.label)
            .arg("--pin-file")
            .arg(f.pin_file())
            .env("WATCH", std::process::id().to_string())
            .env("SOFTHSM2_CONF", f.dir.join("softhsm2.conf"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start tokenmail-agent");
        // reaped here if the agent ends early; else it ends after this process
        std::thread::spawn(move || watchdog.wait());
        let t = std::time::Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(20),
                "tokenmail-agent did not listen on {} within 20 s",
                socket.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::env::set_var("TOKENMAIL_SOCK", &socket);
        std::env::set_var("SOFTHSM2_CONF", f.dir.join("softhsm2.conf"));
        f
    })
}

/// Runs a command (with [`process::limit`]), asserting success; returns stdout.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = process::output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
