//! A deleted SoftHSM token leaves its sessions valid and the agent's key list cached: a key
//! that is not in that list must be answered "not present" (the token is gone), not
//! "no such key" (found by the soak, docs/reliability.md). Own test binary: it deletes the
//! process's token.

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

    run(Command::new("softhsm2-util")
        .args(["--delete-token", "--token", &f.label])
        .env("SOFTHSM2_CONF", f.dir.join("softhsm2.conf")));
    // the cached list still answers...
    assert_eq!(store.keys().expect("cached").len(), labels.len());
    // ...but a key it lacks is not "no such key": the token is gone
    let e = svc.find_key("nobody").expect_err("gone");
    assert!(matches!(e, TokenError::NotPresent(_)), "clear error: {e}");
    assert!(matches!(
        store.check_present(),
        Err(TokenError::NotPresent(_))
    ));
    assert!(!store.status().present);
}
