//! `libtokenmail_pkcs11.so`: a PKCS#11 (v2.40) module that forwards to `tokenmail-agent`.
//!
//! Applications that load PKCS#11 modules (Thunderbird, Firefox, NSS tools, OpenSSL's
//! pkcs11 engine, pkcs11-tool) see one slot per agent token, its certificates, public
//! keys and private keys (without values), and sign, decrypt and derive through the
//! agent's socket (`TOKENMAIL_SOCK`, else the standard path). The module never loads
//! another PKCS#11 module: the keys stay behind the agent. See docs/thunderbird.md.

// This crate is a C ABI: every entry point receives raw pointers from the application,
// so unsafe code cannot be avoided here (the workspace denies it elsewhere). Each unsafe
// block carries a `// SAFETY:` comment; entry points catch panics so that none unwinds
// into C.
#![allow(unsafe_code)]
#![allow(non_snake_case)]

mod asn1;
mod backend;
mod ffi;
mod objects;
mod state;
mod table;

pub use ffi::C_GetFunctionList;
