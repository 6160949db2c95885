//! Token removal and return: the store answers "not present" while the token is gone,
//! then reconnects and logs in again by itself once it is back.
//! (Own test binary: it deletes and restores the process's token.)

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};
use tokenmail_agent::token::{KeyStore, TokenError};
use tokenmail_pkcs11_tests::{fixture, run};
use tokenmail_smime::alg::{HashAlg, SignatureScheme};

fn copy_dir(from: &Path, to: &Path) {
    run(Command::new("cp").arg("-a").arg(from).arg(to));
}

#[test]
fn token_removed_then_returned() {
    let f = fixture();
    let store = f.store();
    let d = Sha256::digest(b"before").to_vec();
    let id = vec![1u8];
    store
        .sign_digest(&id, SignatureScheme::RsaPkcs1v15(HashAlg::Sha256), &d)
        .expect("signs while present");
    assert!(store.status().logged_in);

    // Remove: keep a copy of the token's files, then delete the token as a user would.
    let backup = tempfile::tempdir().expect("tempdir");
    copy_dir(&f.dir.join("tokens"), backup.path());
    run(Command::new("softhsm2-util")
        .args(["--delete-token", "--token", &f.label])
        .env("SOFTHSM2_CONF", f.dir.join("softhsm2.conf")));

    let e = store
        .sign_digest(&id, SignatureScheme::RsaPkcs1v15(HashAlg::Sha256), &d)
        .expect_err("no token, no signature");
    assert!(matches!(e, TokenError::NotPresent(_)), "clear error: {e}");
    assert!(e.to_string().contains("not present"), "{e}");
    let st = store.status();
    assert!(!st.present && !st.logged_in, "{st:?}");

    // Return: the same token comes back.
    std::fs::remove_dir_all(f.dir.join("tokens")).ok();
    copy_dir(&backup.path().join("tokens"), &f.dir);
    let sig = store
        .sign_digest(&id, SignatureScheme::RsaPkcs1v15(HashAlg::Sha256), &d)
        .expect("signs again after the token returned, logging in by itself");
    assert_eq!(sig.len(), 256);
    let st = store.status();
    assert!(st.present && st.logged_in, "{st:?}");
}
