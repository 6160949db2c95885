//! The audit log: one JSON line per private-key operation (sign, decrypt, derive) and per
//! change of a token's keys (keygen, import-key, import-cert), with who asked (uid, pid,
//! program, client), which token and key, the algorithm, the digest that was signed, the
//! result and the time. Append-only, 0600 in a 0700 directory, rotated by size. Never a
//! plaintext, a PIN, a wrapped or unwrapped key, or a shared secret.
//!
//! Every key store of a connection is wrapped in an [`AuditedStore`] that knows the peer,
//! so nothing that reaches a token escapes the log: the streamed `sign` and `decrypt` go
//! through the same stores as `sign-digest` and `decrypt-key`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use secrecy::SecretString;
use serde::Serialize;
use tokenmail_proto::v1::TokenStatus;
use tokenmail_smime::alg::SignatureScheme;
use tokenmail_smime::envelope::KeyTransport;
use tracing::error;
use zeroize::Zeroizing;

use crate::token::{KeyAlgorithm, KeyEntry, KeyStore, PivAdmin, PrivateKeyParts, TokenError};

/// Default size at which the file is rotated.
pub const DEFAULT_MAX_SIZE: u64 = 10 << 20;
/// Default number of rotated files kept.
pub const DEFAULT_KEEP: u32 = 5;

/// The default file: `$XDG_STATE_HOME/tokenmail/audit.log`, else
/// `~/.local/state/tokenmail/audit.log`.
pub fn default_path() -> Option<PathBuf> {
    tokenmail_proto::state_dir().map(|d| d.join("audit.log"))
}

/// Who asked: the connection's peer.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Peer {
    /// The peer's uid (always the agent's own: others are refused).
    pub uid: u32,
    /// Its pid, when the kernel says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Its program name (/proc/PID/comm).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// What the client called itself in `hello`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client: String,
}

impl Peer {
    /// The peer `pid` of uid `uid` that said `client` in its hello.
    pub fn new(uid: u32, pid: Option<i32>, client: &str) -> Peer {
        let program = pid
            .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
            .map(|c| c.trim().to_string());
        Peer {
            uid,
            pid,
            program,
            client: client.chars().take(128).collect(),
        }
    }
}

/// One line of the log.
#[derive(Debug, Serialize)]
struct Record<'a> {
    time: String,
    op: &'a str,
    token: &'a str,
    key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    algorithm: Option<String>,
    /// The digest that was signed (hex): what was signed, not the content.
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    result: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    peer: &'a Peer,
}

/// The log file, shared by every connection.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    max_size: u64,
    keep: u32,
    file: Mutex<Option<File>>,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl AuditLog {
    /// Opens (creates) the log at `path`; checked at start so that a bad path fails then.
    pub fn open(path: PathBuf, max_size: u64, keep: u32) -> std::io::Result<AuditLog> {
        let f = open_append(&path)?;
        Ok(AuditLog {
            path,
            max_size: max_size.max(4096),
            keep: keep.max(1),
            file: Mutex::new(Some(f)),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames audit.log → .1 → .2 …, dropping the oldest.
    fn rotate(&self) -> std::io::Result<()> {
        let name = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = std::fs::remove_file(name(self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(name(n), name(n + 1));
        }
        std::fs::rename(&self.path, name(1))
    }

    fn write_line(&self, line: &[u8]) -> std::io::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let size = guard
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.len())
            .unwrap_or(0);
        if size + line.len() as u64 > self.max_size && size > 0 {
            *guard = None;
            self.rotate()?;
        }
        if guard.is_none() {
            *guard = Some(open_append(&self.path)?);
        }
        match guard.as_mut() {
            Some(f) => {
                // one write per line: O_APPEND keeps lines whole
                f.write_all(line)?;
                f.sync_data()
            }
            None => Ok(()),
        }
    }

    fn record(&self, r: &Record<'_>) {
        let mut line = match serde_json::to_vec(r) {
            Ok(l) => l,
            Err(e) => {
                error!("audit record not encoded: {e}");
                return;
            }
        };
        line.push(b'\n');
        if let Err(e) = self.write_line(&line) {
            // The operation has happened: say loudly that it went unrecorded.
            error!(file = %self.path.display(), "audit log not written: {e}");
        }
    }
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    crate::token::cert::rfc3339(secs)
}

/// A key store whose operations are written to the audit log with the peer that asked.
pub struct AuditedStore {
    inner: Arc<dyn KeyStore>,
    log: Arc<AuditLog>,
    peer: Peer,
}

impl std::fmt::Debug for AuditedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditedStore")
            .field("inner", &self.inner)
            .finish()
    }
}

impl AuditedStore {
    /// Wraps `inner` for the connection of `peer`.
    pub fn new(inner: Arc<dyn KeyStore>, log: Arc<AuditLog>, peer: Peer) -> AuditedStore {
        AuditedStore { inner, log, peer }
    }

    #[allow(clippy::too_many_arguments)]
    fn note<T>(
        &self,
        op: &str,
        id: &[u8],
        label: Option<&str>,
        algorithm: Option<String>,
        digest: Option<&[u8]>,
        result: &Result<T, TokenError>,
    ) {
        let (result, error) = match result {
            Ok(_) => ("ok", None),
            // the uniform decryption error stays uniform here too
            Err(e) => ("error", Some(e.to_string())),
        };
        self.log.record(&Record {
            time: now_rfc3339(),
            op,
            token: self.inner.name(),
            key_id: hex::encode(id),
            label,
            algorithm,
            digest: digest.map(hex::encode),
            result,
            error,
            peer: &self.peer,
        });
    }
}

impl KeyStore for AuditedStore {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn status(&self) -> TokenStatus {
        self.inner.status()
    }
    fn keys(&self) -> Result<Vec<KeyEntry>, TokenError> {
        self.inner.keys()
    }
    fn login(&self, pin: Option<SecretString>) -> Result<(), TokenError> {
        self.inner.login(pin)
    }
    fn lock(&self) {
        self.inner.lock()
    }
    fn release(&self) {
        self.inner.release()
    }
    fn expire_pin(&self) {
        self.inner.expire_pin()
    }
    fn check_present(&self) -> Result<(), TokenError> {
        self.inner.check_present()
    }
    fn piv(&self) -> Option<&dyn PivAdmin> {
        self.inner.piv()
    }
    fn audit_admin(&self, op: &str, id: &[u8], label: Option<&str>, result: Result<(), String>) {
        let r: Result<(), TokenError> = result.map_err(TokenError::Invalid);
        self.note(op, id, label, None, None, &r);
    }
    fn sign_digest(
        &self,
        id: &[u8],
        scheme: SignatureScheme,
        digest: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        let r = self.inner.sign_digest(id, scheme, digest);
        self.note("sign", id, None, Some(scheme.name()), Some(digest), &r);
        r
    }
    fn decrypt(
        &self,
        id: &[u8],
        alg: KeyTransport,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        let r = self.inner.decrypt(id, alg, wrapped);
        self.note("decrypt", id, None, Some(format!("{alg:?}")), None, &r);
        r
    }
    fn derive(&self, id: &[u8], peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        let r = self.inner.derive(id, peer_point);
        self.note("derive", id, None, Some("ECDH".into()), None, &r);
        r
    }
    fn generate_key(
        &self,
        label: &str,
        alg: KeyAlgorithm,
        id: Option<&[u8]>,
    ) -> Result<KeyEntry, TokenError> {
        let r = self.inner.generate_key(label, alg, id);
        let kid = r.as_ref().map(|k| k.id.clone()).unwrap_or_default();
        self.note("keygen", &kid, Some(label), Some(alg.name()), None, &r);
        r
    }
    fn store_certificate(
        &self,
        key: &KeyEntry,
        certificate: &[u8],
        chain: &[Vec<u8>],
    ) -> Result<Vec<String>, TokenError> {
        use sha2::Digest;
        let r = self.inner.store_certificate(key, certificate, chain);
        let fp = sha2::Sha256::digest(certificate);
        self.note(
            "import-cert",
            &key.id,
            Some(&key.label),
            None,
            Some(&fp),
            &r,
        );
        r
    }
    fn create_key(
        &self,
        label: &str,
        id: Option<&[u8]>,
        key: &PrivateKeyParts,
        certificate: &[u8],
        chain: &[Vec<u8>],
    ) -> Result<KeyEntry, TokenError> {
        let r = self.inner.create_key(label, id, key, certificate, chain);
        let kid = r.as_ref().map(|k| k.id.clone()).unwrap_or_default();
        self.note("import-key", &kid, Some(label), None, None, &r);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_rotated_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("dir");
        let path = d.path().join("sub").join("audit.log");
        let log = AuditLog::open(path.clone(), 4096, 2).expect("open");
        let peer = Peer::new(0, Some(std::process::id() as i32), "test");
        for i in 0..100u32 {
            log.record(&Record {
                time: now_rfc3339(),
                op: "sign",
                token: "t",
                key_id: format!("{i:04x}"),
                label: None,
                algorithm: Some("ECDSA/SHA-256".into()),
                digest: Some("00".repeat(32)),
                result: "ok",
                error: None,
                peer: &peer,
            });
        }
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("dir")), 0o700);
        let rotated = PathBuf::from(format!("{}.1", path.display()));
        assert!(rotated.exists(), "rotated at 4 KiB");
        assert!(
            !PathBuf::from(format!("{}.3", path.display())).exists(),
            "keeps 2"
        );
        for p in [&path, &rotated] {
            let text = std::fs::read_to_string(p).expect("read");
            assert!(std::fs::metadata(p).expect("m").len() <= 4096);
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("whole JSON lines");
                assert_eq!(v["peer"]["client"], "test");
            }
        }
        // the newest record is in the current file
        assert!(std::fs::read_to_string(&path)
            .expect("read")
            .contains("\"0063\""));
    }
}
