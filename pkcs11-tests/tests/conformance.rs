//! Conformance of the PKCS#11 token layer against a real module: SoftHSM by default, or
//! the module `TOKENMAIL_PKCS11_MODULE` names (it must serve the token that
//! softhsm/provision.sh provisions). Signatures are checked with RustCrypto; ciphertexts
//! and ECDH peers come from openssl.

use tokenmail_pkcs11_tests::Fixture;

fn fixture() -> &'static Fixture {
    tokenmail_pkcs11_tests::fixture()
}

#[path = "conformance/cases.rs"]
mod cases;
