//! The signer cache of `tokenmail sign`: the key a `--signer` name selected last time, with
//! its certificate and chain, so that the next signature needs one request to the agent
//! (`sign-digest-cert`, docs/protocol.md §6.4.1) instead of `status` + `sign-digest`.
//!
//! One file per (socket, signer name) under `$XDG_CACHE_HOME/tokenmail/signers/` (else
//! `~/.cache/tokenmail/signers/`), directory 0700, files 0600, replaced atomically (a
//! temporary file renamed over the old one). It holds only public data (the `KeyInfo` of
//! `status`: label, id, token, algorithm, certificate, chain). It is a hint, never trusted
//! for the signature: the agent signs only if the key the name selects still has the
//! cached certificate, and answers `certificate-changed` otherwise; then `tokenmail sign`
//! looks the key up again and rewrites the entry. Entries older than an hour are not used
//! (the chain, which the agent does not check, is refreshed so). A damaged or foreign
//! entry is ignored.
//! `TOKENMAIL_NO_SIGNER_CACHE=1` turns the cache off (neither read nor written).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenmail_proto::v1::KeyInfo;
use tokenmail_smime::alg::HashAlg;

/// Format of the entries; a file of another version is ignored (and replaced).
const VERSION: u32 = 1;

/// Entries older than this are not used: the status path runs again and rewrites them, so
/// the chain (CA certificates on the token, which the agent does not check) is at most an
/// hour old.
const MAX_AGE_SECS: u64 = 3600;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    version: u32,
    /// When it was written, seconds since the epoch.
    saved: u64,
    /// The agent's socket, as the CLI named it.
    socket: String,
    /// The `--signer` name, as given.
    signer: String,
    key: KeyInfo,
}

fn disabled() -> bool {
    std::env::var_os("TOKENMAIL_NO_SIGNER_CACHE").is_some_and(|v| !v.is_empty() && v != "0")
}

fn cache_dir() -> Option<PathBuf> {
    tokenmail_proto::cache_dir().map(|d| d.join("signers"))
}

fn entry_path(socket: &Path, signer: &str) -> Option<PathBuf> {
    let mut id = socket.as_os_str().as_encoded_bytes().to_vec();
    id.push(0);
    id.extend_from_slice(signer.as_bytes());
    let name = hex::encode(&HashAlg::Sha256.digest(&id)[..16]);
    Some(cache_dir()?.join(format!("{name}.json")))
}

/// The key `signer` selected last time on the agent at `socket`, if cached (with a
/// certificate: only such keys are cached).
pub fn load(socket: &Path, signer: &str) -> Option<KeyInfo> {
    if disabled() {
        return None;
    }
    let data = std::fs::read(entry_path(socket, signer)?).ok()?;
    let e: Entry = serde_json::from_slice(&data).ok()?;
    let now = now_secs();
    let same = e.version == VERSION
        && e.socket.as_bytes() == socket.as_os_str().as_encoded_bytes()
        && e.signer == signer
        && e.saved <= now.saturating_add(60)
        && now.saturating_sub(e.saved) <= MAX_AGE_SECS;
    (same && e.key.certificate.is_some()).then_some(e.key)
}

/// Remembers that `signer` selects `key` (best effort: errors are ignored, the cache is
/// only a shortcut). Keys without a certificate are not cached.
pub fn store(socket: &Path, signer: &str, key: &KeyInfo) {
    if disabled() || key.certificate.is_none() {
        return;
    }
    let Some(path) = entry_path(socket, signer) else {
        return;
    };
    let Some(socket) = socket.to_str() else {
        return;
    };
    let entry = Entry {
        version: VERSION,
        saved: now_secs(),
        socket: socket.to_string(),
        signer: signer.to_string(),
        key: key.clone(),
    };
    let Ok(json) = serde_json::to_vec(&entry) else {
        return;
    };
    let _ = write_atomically(&path, &json);
}

/// Drops the entry (its certificate is no longer the key's).
pub fn forget(socket: &Path, signer: &str) {
    if let Some(p) = entry_path(socket, signer) {
        let _ = std::fs::remove_file(p);
    }
}

fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no directory"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // A temporary file is created 0600; renamed over the entry only when complete. No
    // fsync: a cache entry lost or emptied by a crash is ignored and written again.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    tmp.write_all(data)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_per_socket_and_signer() {
        let Some(a) = entry_path(Path::new("/run/a.sock"), "alice") else {
            return; // neither XDG_CACHE_HOME nor HOME: no cache
        };
        let b = entry_path(Path::new("/run/b.sock"), "alice").expect("path");
        let c = entry_path(Path::new("/run/a.sock"), "alice@example.com").expect("path");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            a,
            entry_path(Path::new("/run/a.sock"), "alice").expect("path")
        );
    }
}
