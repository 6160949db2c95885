//! Shared fixtures for the envelope tests: software keys and certificates made
//! with the `openssl` command line in a temporary directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Running external programs with a deadline (shared with the other test crates).
// pipeline.rs includes both common and envelope_common: two copies there, on purpose.
#[allow(clippy::duplicate_mod)]
#[path = "../../../pkcs11-tests/src/process.rs"]
pub mod process;
use std::sync::OnceLock;

use tokenmail_smime::envelope::{
    DecryptError, EncryptRecipient, MessageDecryptor, RecipientKey, SoftwareKey,
};

pub struct Fixture {
    pub dir: tempfile::TempDir,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Rsa,
    P256,
    P384,
    /// Another RSA key that no message is encrypted to.
    Other,
}

pub const ALL: [Who; 3] = [Who::Rsa, Who::P256, Who::P384];

impl Who {
    pub fn name(self) -> &'static str {
        match self {
            Who::Rsa => "rsa",
            Who::P256 => "p256",
            Who::P384 => "p384",
            Who::Other => "other",
        }
    }
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

pub fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, newkey, ku) in [
            ("rsa", vec!["-newkey", "rsa:2048"], "keyEncipherment"),
            ("other", vec!["-newkey", "rsa:2048"], "keyEncipherment"),
            (
                "p256",
                vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
                "keyAgreement",
            ),
            (
                "p384",
                vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
                "keyAgreement",
            ),
        ] {
            let key = dir.path().join(format!("{name}.key"));
            let cert = dir.path().join(format!("{name}.pem"));
            let subj = format!("/CN=tokenmail test {name}/emailAddress={name}@example.org");
            let ku = format!("keyUsage=critical,{ku}");
            let mut args = vec!["req", "-x509", "-nodes", "-days", "30", "-subj", &subj];
            args.extend(newkey.iter().copied());
            let key_s = key.to_str().expect("utf8 path");
            let cert_s = cert.to_str().expect("utf8 path");
            args.extend(["-keyout", key_s, "-out", cert_s, "-addext", &ku]);
            let out = process::output(Command::new("openssl").args(&args));
            assert!(
                out.status.success(),
                "openssl req failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Fixture { dir }
    })
}

impl Fixture {
    pub fn key_path(&self, who: Who) -> PathBuf {
        self.dir.path().join(format!("{}.key", who.name()))
    }
    pub fn cert_path(&self, who: Who) -> PathBuf {
        self.dir.path().join(format!("{}.pem", who.name()))
    }
    pub fn software_key(&self, who: Who) -> SoftwareKey {
        let key = std::fs::read_to_string(self.key_path(who)).expect("read key");
        let cert = std::fs::read_to_string(self.cert_path(who)).expect("read cert");
        SoftwareKey::from_pem(&key, &cert).expect("software key")
    }
    pub fn recipient(&self, who: Who) -> EncryptRecipient {
        let pem = std::fs::read(self.cert_path(who)).expect("read cert");
        EncryptRecipient::from_pem_or_der(&pem).expect("recipient")
    }
}

/// Runs openssl (with [`process::limit`]); returns (success, stdout, stderr).
pub fn openssl(args: &[&str], stdin: Option<&[u8]>) -> (bool, Vec<u8>, String) {
    let out =
        process::run_with_timeout(Command::new("openssl").args(args), stdin, process::limit());
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// `openssl cms -decrypt` with the given recipient; returns the plaintext.
pub fn openssl_decrypt(f: &Fixture, who: Who, input: &[u8], inform: &str) -> Vec<u8> {
    let (ok, out, err) = openssl(
        &[
            "cms",
            "-decrypt",
            "-binary",
            "-inform",
            inform,
            "-inkey",
            path_str(&f.key_path(who)),
            "-recip",
            path_str(&f.cert_path(who)),
        ],
        Some(input),
    );
    assert!(ok, "openssl cms -decrypt ({who:?}) failed: {err}");
    out
}

/// Streams `input` (any form: MIME, PEM, DER/BER) through
/// [`MessageDecryptor`] in `chunk`-sized pieces. Returns the plaintext and
/// whether it was authenticated.
pub fn stream_decrypt(
    input: &[u8],
    key: &dyn RecipientKey,
    chunk: usize,
) -> Result<(Vec<u8>, bool), DecryptError> {
    let mut md = MessageDecryptor::new();
    let mut plaintext = Vec::new();
    let mut unlocked = false;
    for piece in input.chunks(chunk.max(1)) {
        plaintext.extend(md.push(piece)?.into_unverified_bytes());
        if !unlocked && md.envelope().is_some() {
            plaintext.extend(md.unlock(key)?.into_unverified_bytes());
            unlocked = true;
        }
    }
    if !unlocked && md.envelope().is_some() {
        plaintext.extend(md.unlock(key)?.into_unverified_bytes());
    }
    let outcome = md.finish()?;
    plaintext.extend(outcome.final_plaintext);
    Ok((plaintext, outcome.authenticated))
}

pub fn sample_content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 % 251) as u8).collect()
}
