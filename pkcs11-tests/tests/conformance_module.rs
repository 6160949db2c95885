//! The same conformance cases (tests/conformance/cases.rs) against tokenmail's own PKCS#11
//! module, libtokenmail_pkcs11.so: the agent's token layer loads the module, which forwards
//! every call to a tokenmail-agent that holds the provisioned SoftHSM token. Both are taken
//! from the target directory (`cargo build --workspace` first, as scripts/test.sh does).

use tokenmail_pkcs11_tests::Fixture;

fn fixture() -> &'static Fixture {
    tokenmail_pkcs11_tests::fixture_through_module()
}

#[path = "conformance/cases.rs"]
mod cases;

#[test]
fn the_module_under_test_is_tokenmails_own() {
    let f = fixture();
    assert_eq!(
        f.module.file_name().and_then(|n| n.to_str()),
        Some("libtokenmail_pkcs11.so")
    );
    assert!(std::env::var_os("TOKENMAIL_SOCK").is_some());
}
