//! Byte-exact round trips of every message over the checked-in frames in
//! tests/fixtures (written by `cargo run -p tokenmail-proto --example gen-fixtures`).
#![allow(missing_docs)]

use std::path::PathBuf;

use tokenmail_proto::frame::{encode_frame, read_frame, FrameKind};
use tokenmail_proto::{decode_message, encode_message};

include!("common/cases.rs");

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.bin"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn check<T>(name: &str, expected: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = fixture(name);
    let mut r = &bytes[..];
    let (header, payload) = read_frame(&mut r).expect("frame").expect("one frame");
    assert!(r.is_empty(), "{name}: one frame exactly");
    assert_eq!(header.kind, FrameKind::Message, "{name}");
    assert_eq!((header.ver_major, header.ver_minor), (1, 0), "{name}");
    let decoded: T = decode_message(&payload).expect("decodes");
    assert_eq!(&decoded, expected, "{name}: decodes to the expected value");
    let again = encode_frame(
        FrameKind::Message,
        &encode_message(&decoded).expect("encodes"),
    )
    .expect("frame");
    assert_eq!(again, bytes, "{name}: re-encodes byte for byte");
}

#[test]
fn requests_round_trip_byte_for_byte() {
    let cases = requests();
    assert_eq!(cases.len(), 21);
    for (name, req) in &cases {
        check(name, req);
    }
}

#[test]
fn responses_round_trip_byte_for_byte() {
    for (name, resp) in &responses() {
        check(name, resp);
    }
}

#[test]
fn wire_names_are_stable() {
    // What other-language clients rely on (docs/protocol.md).
    let s = String::from_utf8(fixture("req-sign-digest")[12..].to_vec()).expect("utf8");
    assert_eq!(
        s,
        r#"{"op":"sign-digest","key":"alice@example.com","algorithm":"rsa-pss-sha256","digest":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}"#
    );
    let s = String::from_utf8(fixture("resp-error-pin-required")[12..].to_vec()).expect("utf8");
    assert!(
        s.starts_with(r#"{"type":"error","code":"pin-required","#),
        "{s}"
    );
    assert_eq!(
        &fixture("req-status")[..12],
        b"TKML\x01\x00\x01\x00\x00\x00\x00\x0f"
    );
}

#[test]
fn secrets_are_not_printed_by_debug() {
    let login = &requests()[6].1;
    assert!(!format!("{login:?}").contains("123456"));
    let secret = &responses()[4].1;
    assert!(!format!("{secret:?}").contains("QkJC"));
}
