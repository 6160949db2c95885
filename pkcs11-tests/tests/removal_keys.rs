//! A deleted SoftHSM token leaves its sessions valid: they list no keys, without an error.
//! A key then missing from the store's key list must be answered "not present" (the token
//! is gone), not "no such key" (found by the soak, docs/reliability.md), and once the token
//! is back the key is found again. Own test binary: it deletes the process's token.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;

use tokenmail_agent::service::Service;
use tokenmail_agent::token::{KeyStore, TokenError};
use tokenmail_pkcs11_tests::{fixture, run};

#[test]
fn a_key_missing_from_a_deleted_tokens_list_is_not_present() {
    let f = fixture();
    let store = Arc::new(f.store());
    let labels: Vec<String> = store
        .keys()
        .expect("keys")
        .into_iter()
        .map(|k| k.label)
        .collect();
    assert!(labels.iter().any(|l| l == "alice-rsa"), "{labels:?}");
    store.check_present().expect("present");
    let svc = Service::new(vec![store.clone() as Arc<dyn KeyStore>], HashMap::new());
    let e = svc.find_key("nobody").expect_err("no such key");
    assert!(matches!(e, TokenError::NoSuchKey(_)), "{e}");

    let backup = tempfile::tempdir().expect("tempdir");
    run(Command::new("cp")
        .arg("-a")
        .arg(f.dir.join("tokens"))
        .arg(backup.path()));
    run(Command::new("softhsm2-util")
        .args(["--delete-token", "--token", &f.label])
        .env("SOFTHSM2_CONF", f.dir.join("softhsm2.conf")));
    // The store's key list was dropped by the check above: SoftHSM would now list no
    // keys at all, without an error, from the session that outlived the token.
    let e = svc.find_key("nobody").expect_err("gone");
    assert!(matches!(e, TokenError::NotPresent(_)), "clear error: {e}");
    let e = svc.find_key("alice-rsa").expect_err("gone");
    assert!(matches!(e, TokenError::NotPresent(_)), "clear error: {e}");
    assert!(matches!(store.keys(), Err(TokenError::NotPresent(_))));
    assert!(matches!(
        store.check_present(),
        Err(TokenError::NotPresent(_))
    ));
    assert!(!store.status().present);

    // Back (the same token): the key is found again, by the same service.
    std::fs::remove_dir_all(f.dir.join("tokens")).ok();
    run(Command::new("cp")
        .arg("-a")
        .arg(backup.path().join("tokens"))
        .arg(&f.dir));
    let (_, k) = svc.find_key("alice-rsa").expect("found again");
    assert_eq!(k.label, "alice-rsa");
    store.check_present().expect("present again");
}
