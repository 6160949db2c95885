//! A small test PKI generated with the `openssl` command line, once per test binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Running external programs with a deadline (shared with the other test crates).
// pipeline.rs includes both common and envelope_common: two copies there, on purpose.
#[allow(clippy::duplicate_mod)]
#[path = "../../../pkcs11-tests/src/process.rs"]
pub mod process;
use std::sync::OnceLock;
use tokenmail_smime::signed::SoftwareSigner;
use x509_cert::der::{Decode, DecodePem};
use x509_cert::Certificate;

const SCRIPT: &str = include_str!("../pki.sh");

/// The generated PKI.
pub struct Pki {
    dir: tempfile::TempDir,
}

static PKI: OnceLock<Pki> = OnceLock::new();

/// The PKI for this test binary.
pub fn pki() -> &'static Pki {
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = process::run_with_timeout(
            Command::new("bash")
                .arg("-c")
                .arg(SCRIPT)
                .current_dir(dir.path()),
            None,
            process::long_limit(),
        );
        assert!(
            out.status.success(),
            "PKI script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Pki { dir }
    })
}

impl Pki {
    /// The directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of NAME.pem / NAME.key.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Certificate NAME.pem.
    pub fn cert(&self, name: &str) -> Certificate {
        let pem = std::fs::read(self.path(&format!("{name}.pem"))).expect("read cert");
        Certificate::from_pem(&pem).expect("parse cert")
    }

    /// Software signer for NAME.key.
    pub fn signer(&self, name: &str) -> SoftwareSigner {
        let pem = std::fs::read_to_string(self.path(&format!("{name}.key"))).expect("read key");
        SoftwareSigner::from_pkcs8_pem(&pem).expect("parse key")
    }
}

/// A fresh scratch directory.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Run a command (with [`process::limit`]); returns (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, Vec<u8>, String) {
    let out = process::output(cmd);
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// DER from a certificate.
pub fn der_of(cert: &Certificate) -> Vec<u8> {
    use x509_cert::der::Encode;
    cert.to_der().expect("encode")
}

/// Parse a DER certificate.
pub fn cert_from_der(der: &[u8]) -> Certificate {
    Certificate::from_der(der).expect("parse cert")
}
