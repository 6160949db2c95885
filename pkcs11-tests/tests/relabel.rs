//! A token replaced by another under the same label does not get the PIN typed for the
//! first one. (Own test binary: it deletes the process's token.)

use std::process::Command;

use secrecy::SecretString;
use sha2::{Digest, Sha256};
use tokenmail_agent::pin::PinSource;
use tokenmail_agent::token::pkcs11::Pkcs11Store;
use tokenmail_agent::token::{KeyStore, TokenError};
use tokenmail_pkcs11_tests::{fixture, run};
use tokenmail_smime::alg::{HashAlg, SignatureScheme};

/// The PIN typed for one token is not sent to another token that comes back under the same
/// label (issue 11 defect 6): it would cost that token a try, or log into it unasked.
#[test]
fn another_token_under_the_same_label_does_not_get_the_cached_pin() {
    let f = fixture();
    let conf = f.dir.join("softhsm2.conf");
    let store = Pkcs11Store::new(f.config(PinSource::None)).expect("module");
    store
        .login(Some(SecretString::from(f.pin())))
        .expect("the user types the PIN");
    let d = Sha256::digest(b"x").to_vec();
    let id = vec![1u8];
    store
        .sign_digest(&id, SignatureScheme::RsaPkcs1v15(HashAlg::Sha256), &d)
        .expect("signs");

    run(Command::new("softhsm2-util")
        .args(["--delete-token", "--token", &f.label])
        .env("SOFTHSM2_CONF", &conf));
    // another token, same label, same PIN (the worst case: a silent login)
    run(Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            &f.label,
            "--so-pin",
            "87654321",
        ])
        .args(["--pin", &f.pin()])
        .env("SOFTHSM2_CONF", &conf));
    // (the store may first notice that the old token went away)
    let mut e = TokenError::NotPresent(String::new());
    for _ in 0..3 {
        e = store
            .sign_digest(&id, SignatureScheme::RsaPkcs1v15(HashAlg::Sha256), &d)
            .expect_err("no silent login into the other token");
        if !matches!(e, TokenError::NotPresent(_)) {
            break;
        }
    }
    assert!(matches!(e, TokenError::PinRequired(_)), "{e}");
    assert!(!store.status().logged_in);
}
