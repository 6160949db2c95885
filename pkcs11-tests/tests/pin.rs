//! PIN handling of the token layer: required, wrong (never retried by itself), cached,
//! locked, expired. Own test binary, tests serialised: login state is per process.

use std::time::Duration;

use secrecy::SecretString;
use serial_test::serial;
use sha2::{Digest, Sha256};
use tokenmail_agent::pin::PinSource;
use tokenmail_agent::token::pkcs11::Pkcs11Store;
use tokenmail_agent::token::{KeyStore, TokenError};
use tokenmail_pkcs11_tests::fixture;
use tokenmail_smime::alg::{HashAlg, SignatureScheme};

fn sign(store: &Pkcs11Store) -> Result<Vec<u8>, TokenError> {
    store.sign_digest(
        &[1],
        SignatureScheme::RsaPkcs1v15(HashAlg::Sha256),
        &Sha256::digest(b"pin test"),
    )
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

#[test]
#[serial]
fn no_pin_then_wrong_pin_then_right_pin_then_lock() {
    let f = fixture();
    let store = Pkcs11Store::new(f.config(PinSource::None)).expect("module");
    // Before login the keys are listed from their public halves.
    let labels: Vec<String> = store
        .keys()
        .expect("public listing")
        .into_iter()
        .map(|k| k.label)
        .collect();
    assert_eq!(labels, ["alice-rsa", "bob-p256", "carol-p384"]);
    let e = sign(&store).expect_err("needs a PIN");
    assert!(matches!(e, TokenError::PinRequired(_)), "{e}");
    assert!(
        e.to_string().contains("tokenmail login"),
        "says what to do: {e}"
    );

    let e = store
        .login(Some(secret("00000000")))
        .expect_err("wrong PIN");
    assert!(matches!(e, TokenError::PinIncorrect { .. }), "{e}");
    assert!(e.to_string().starts_with("wrong PIN for token"), "{e}");
    // Nothing is retried by itself: the next operation asks for a PIN again.
    let e = sign(&store).expect_err("still no PIN");
    assert!(matches!(e, TokenError::PinRequired(_)), "{e}");
    assert!(!store.status().logged_in);

    store.login(Some(secret(&f.pin()))).expect("right PIN");
    sign(&store).expect("signs after login");
    let st = store.status();
    assert!(st.logged_in);
    assert_eq!(st.pin_source, "client");

    store.lock();
    let e = sign(&store).expect_err("locked");
    assert!(matches!(e, TokenError::PinRequired(_)), "{e}");
    let st = store.status();
    assert!(st.locked && !st.logged_in, "{st:?}");
}

#[test]
#[serial]
fn wrong_pin_file_is_tried_once_then_login_rereads_it() {
    let f = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, "11111111\n").expect("write");
    std::fs::set_permissions(
        &pin_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod 600");
    let store = Pkcs11Store::new(f.config(PinSource::File(pin_file.clone()))).expect("module");
    // the file's PIN is refused: the error names the file (no PIN was typed)
    let e = sign(&store).expect_err("wrong PIN in file");
    assert!(matches!(e, TokenError::PinSourceRefused { .. }), "{e}");
    assert!(
        e.to_string().contains(&pin_file.display().to_string()),
        "{e}"
    );
    let e = sign(&store).expect_err("not retried");
    assert!(
        matches!(e, TokenError::PinSourceRefused { .. }),
        "the file is not read again by itself: {e}"
    );
    std::fs::write(&pin_file, format!("{}\n", f.pin())).expect("fix the file");
    std::fs::set_permissions(
        &pin_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod 600");
    let e = sign(&store).expect_err("still waits for a login");
    assert!(matches!(e, TokenError::PinSourceRefused { .. }), "{e}");
    store.login(None).expect("login re-reads the PIN file");
    sign(&store).expect("signs");
    assert_eq!(store.status().pin_source, "file");
}

#[test]
#[serial]
fn lock_stops_the_pin_file_until_login() {
    let f = fixture();
    let store = f.store();
    sign(&store).expect("logs in from the file");
    store.lock();
    assert!(matches!(sign(&store), Err(TokenError::PinRequired(_))));
    store
        .login(None)
        .expect("explicit login reads the file again");
    sign(&store).expect("signs");
}

#[test]
#[serial]
fn client_pin_expires_after_its_cache_time() {
    let f = fixture();
    let mut cfg = f.config(PinSource::None);
    cfg.pin_ttl = Some(Duration::from_millis(300));
    let store = Pkcs11Store::new(cfg).expect("module");
    store.login(Some(secret(&f.pin()))).expect("login");
    sign(&store).expect("signs while cached");
    std::thread::sleep(Duration::from_millis(400));
    store.expire_pin();
    assert!(!store.status().logged_in);
    assert!(matches!(sign(&store), Err(TokenError::PinRequired(_))));
}

/// A status poll that notices the expiry logs out as well: the timer then finds nothing to
/// expire, and the token must not stay logged in (issue 11 defect 3).
#[test]
#[serial]
fn a_status_poll_at_expiry_logs_out() {
    let f = fixture();
    let mut cfg = f.config(PinSource::None);
    cfg.pin_ttl = Some(Duration::from_millis(300));
    let store = Pkcs11Store::new(cfg).expect("module");
    store.login(Some(secret(&f.pin()))).expect("login");
    sign(&store).expect("signs while cached");
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        !store.status().logged_in,
        "the poll expired the PIN and logged out"
    );
    store.expire_pin();
    assert!(!store.status().logged_in);
    assert!(matches!(sign(&store), Err(TokenError::PinRequired(_))));
}
