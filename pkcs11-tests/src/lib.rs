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
