//! MIME: our multipart/signed and pkcs7-mime verified by openssl, openssl's by us.

mod common;

use common::{pki, run, scratch};
use std::process::Command;
use std::time::SystemTime;
use tokenmail_smime::alg::HashAlg;
use tokenmail_smime::mime::{
    boundary_from_random, parse_smime, sign_multipart, sign_opaque, split_message, verify_smime,
    BodyPlan, MessageVerification, MultipartSigned, SevenBitScanner, SmimeInput,
};
use tokenmail_smime::path::{CertEntry, Policy};
use tokenmail_smime::reencode::qp_decode;
use tokenmail_smime::signed::{sign_detached, DigestSigner, SignOptions};
use tokenmail_smime::verify::VerifyOptions;

const MSG_7BIT: &[u8] = b"From: Alice <alice@example.com>\n\
To: Bob <bob@example.org>\n\
Subject: signed test\n\
Date: Mon, 23 Nov 2026 12:00:00 +0000\n\
MIME-Version: 1.0\n\
Content-Type: text/plain; charset=us-ascii\n\
\n\
Hello Bob,\n\
\n\
this line is plain ASCII.\n\
From here on, nothing special.\n";

const MSG_8BIT: &[u8] = "From: alice@example.com\r\n\
To: bob@example.org\r\n\
Subject: =?utf-8?q?caf=C3=A9?=\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Un café, s'il vous plaît.\r\n"
    .as_bytes();

fn opts() -> SignOptions {
    SignOptions {
        signing_time: Some(SystemTime::now()),
        ..SignOptions::default()
    }
}

fn anchors() -> Vec<CertEntry> {
    CertEntry::from_pem_bundle(&std::fs::read(pki().path("root.pem")).expect("read")).expect("pem")
}

fn our_verify(input: &[u8], sig: Option<&[u8]>) -> MessageVerification {
    let a = anchors();
    verify_smime(
        input,
        sig,
        &VerifyOptions {
            trust_anchors: &a,
            extra_certs: &[],
            now: SystemTime::now(),
            sender_email: None,
            sender_problem: None,
            policy: Policy::default(),
            ..VerifyOptions::at(&a, SystemTime::now())
        },
    )
    .expect("verify runs")
}

fn openssl_verify_eml(eml: &[u8]) -> (bool, Vec<u8>, String) {
    let d = scratch();
    std::fs::write(d.path().join("msg.eml"), eml).expect("write");
    run(Command::new("openssl")
        .current_dir(d.path())
        .args([
            "cms",
            "-verify",
            "-purpose",
            "smimesign",
            "-in",
            "msg.eml",
            "-CAfile",
        ])
        .arg(pki().path("root.pem"))
        .args(["-out", "/dev/stdout"]))
}

fn body_of(entity: &[u8]) -> Vec<u8> {
    split_message(entity).expect("split").1.to_vec()
}

#[test]
fn multipart_signed_verifies_with_openssl_and_us() {
    let p = pki();
    let pss = SignOptions {
        scheme: Some(tokenmail_smime::alg::SignatureScheme::RsaPss(
            HashAlg::Sha256,
        )),
        ..opts()
    };
    for (name, o) in [
        ("ee_rsa", opts()),
        ("ee_rsa", pss),
        ("ee_p256", opts()),
        ("ee_p384", opts()),
    ] {
        for msg in [MSG_7BIT, MSG_8BIT] {
            let out = sign_multipart(
                msg,
                &p.signer(name),
                &p.cert(name),
                &[p.cert("int")],
                &o,
                &boundary_from_random(&[1, 2, 3, 4, 5, 6, 7, 8]),
            )
            .expect("sign");
            let text = String::from_utf8_lossy(&out);
            assert!(text.starts_with("From: "), "top-level headers stay outside");
            assert!(text.contains("Subject: "));
            assert!(text.contains("multipart/signed; protocol=\"application/pkcs7-signature\""));
            let micalg = if name == "ee_p384" {
                "micalg=sha-384"
            } else {
                "micalg=sha-256"
            };
            assert!(text.contains(micalg), "{name}: {micalg}");
            assert!(text.contains("application/pkcs7-signature; name=smime.p7s"));
            assert!(out.iter().all(|b| *b < 0x80), "output is 7-bit");
            for line in text.split("\r\n") {
                assert!(line.len() <= 998);
            }

            let (ok, content, err) = openssl_verify_eml(&out);
            assert!(
                ok,
                "{name}: openssl rejected our multipart/signed: {err}\n{text}"
            );
            let ours = our_verify(&out, None);
            assert!(ours.report.valid, "{name}: {:?}", ours.report);
            assert_eq!(ours.form, "multipart/signed");
            assert_eq!(ours.sender.as_deref(), Some("alice@example.com"));
            // both extracted the same signed entity
            assert_eq!(content, ours.content, "{name}");

            if msg == MSG_8BIT {
                // a text body: quoted-printable, readable, decoding to the text made CRLF
                assert!(text.contains("Content-Transfer-Encoding: quoted-printable"));
                assert!(!text.contains("8bit"));
                let decoded = qp_decode(&body_of(&ours.content));
                assert_eq!(decoded, body_of(MSG_8BIT).replace_lf());
            } else {
                assert_eq!(body_of(&ours.content), body_of(MSG_7BIT).replace_lf());
            }
        }
    }
}

trait ReplaceLf {
    fn replace_lf(&self) -> Vec<u8>;
}
impl ReplaceLf for Vec<u8> {
    fn replace_lf(&self) -> Vec<u8> {
        tokenmail_smime::mime::canonicalize(self)
    }
}

#[test]
fn streaming_multipart_equals_whole() {
    let p = pki();
    let signer = p.signer("ee_p256");
    let o = SignOptions::default();
    let hash = o.scheme_for(signer.key_kind()).expect("scheme").hash();
    let (headers, body) = split_message(MSG_8BIT).expect("split");
    let mut scan = SevenBitScanner::default();
    for c in body.chunks(5) {
        scan.update(c);
    }
    assert!(scan.needs_encoding());
    let body_plan = BodyPlan::of(&headers, body).expect("body plan");
    let plan = MultipartSigned::new(&headers, &body_plan, "b0undary", hash).expect("plan");
    let mut out = plan.preamble();
    let mut hasher = tokenmail_smime::alg::ContentHasher::new(hash);
    let ph = plan.part_header();
    hasher.update(&ph);
    out.extend_from_slice(&ph);
    let mut enc = plan.body_encoder().expect("encoder");
    for c in body.chunks(3) {
        let e = enc.update(c).expect("encode");
        hasher.update(&e);
        out.extend_from_slice(&e);
    }
    let e = enc.finish().expect("encode");
    hasher.update(&e);
    out.extend_from_slice(&e);
    let sig = sign_detached(
        &signer,
        &p.cert("ee_p256"),
        &[p.cert("int")],
        &hasher.finalize(),
        &o,
    )
    .expect("sign");
    out.extend_from_slice(&plan.trailer(&sig));
    let (ok, _, err) = openssl_verify_eml(&out);
    assert!(ok, "{err}");
    assert!(our_verify(&out, None).report.valid);
}

#[test]
fn lf_converted_message_still_verifies() {
    let p = pki();
    let out = sign_multipart(
        MSG_7BIT,
        &p.signer("ee_rsa"),
        &p.cert("ee_rsa"),
        &[p.cert("int")],
        &opts(),
        "simple-boundary",
    )
    .expect("sign");
    let lf: Vec<u8> = String::from_utf8(out)
        .expect("ascii")
        .replace("\r\n", "\n")
        .into_bytes();
    let r = our_verify(&lf, None);
    assert!(r.report.valid, "{:?}", r.report);
}

#[test]
fn opaque_verifies_with_openssl_and_us() {
    let p = pki();
    for name in ["ee_rsa", "ee_p384"] {
        let out = sign_opaque(
            MSG_8BIT,
            &p.signer(name),
            &p.cert(name),
            &[p.cert("int")],
            &opts(),
        )
        .expect("sign");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("application/pkcs7-mime; smime-type=signed-data; name=smime.p7m"));
        let (ok, content, err) = openssl_verify_eml(&out);
        assert!(ok, "{name}: {err}");
        let ours = our_verify(&out, None);
        assert!(ours.report.valid, "{:?}", ours.report);
        assert_eq!(ours.form, "pkcs7-mime");
        assert_eq!(content, ours.content);
        assert!(matches!(
            parse_smime(&out).expect("parse"),
            SmimeInput::Opaque { .. }
        ));
    }
}

#[test]
fn openssl_smime_outputs_verify_with_us() {
    let p = pki();
    let d = scratch();
    // an entity with LF line endings, as a mail client would hand it over
    std::fs::write(
        d.path().join("msg.txt"),
        b"Content-Type: text/plain\n\nhello from openssl\n",
    )
    .expect("write");
    for (args, form) in [
        (vec![], "multipart/signed"),
        (vec!["-nodetach"], "pkcs7-mime"),
        (vec!["-stream"], "multipart/signed"),
        (vec!["-nodetach", "-stream"], "pkcs7-mime"),
        (
            vec!["-md", "sha512", "-keyopt", "rsa_padding_mode:pss"],
            "multipart/signed",
        ),
    ] {
        let (ok, _, err) = run(Command::new("openssl")
            .current_dir(d.path())
            .args(["cms", "-sign", "-in", "msg.txt", "-out", "msg.eml"])
            .arg("-signer")
            .arg(p.path("ee_rsa.pem"))
            .arg("-inkey")
            .arg(p.path("ee_rsa.key"))
            .arg("-certfile")
            .arg(p.path("int.pem"))
            .args(["-from", "Alice <alice@example.com>", "-subject", "t"])
            .args(&args));
        assert!(ok, "{err}");
        let eml = std::fs::read(d.path().join("msg.eml")).expect("read");
        let r = our_verify(&eml, None);
        assert!(
            r.report.valid,
            "{args:?}: {}",
            serde_json::to_string_pretty(&r.report).expect("json")
        );
        assert_eq!(r.form, form);
        assert_eq!(r.sender.as_deref(), Some("alice@example.com"));
        assert!(String::from_utf8_lossy(&r.content).contains("hello from openssl"));
    }
}

#[test]
fn detached_der_and_pem_with_signature_argument() {
    let p = pki();
    let content = b"arbitrary bytes\n\x00\xff not even MIME";
    let o = opts();
    let sig = sign_detached(
        &p.signer("ee_rsa"),
        &p.cert("ee_rsa"),
        &[p.cert("int")],
        &HashAlg::Sha256.digest(content),
        &o,
    )
    .expect("sign");
    let r = our_verify(content, Some(&sig));
    assert!(r.report.valid, "{:?}", r.report);
    assert_eq!(r.form, "detached");
    use base64::Engine;
    let pem = format!(
        "-----BEGIN CMS-----\n{}\n-----END CMS-----\n",
        base64::engine::general_purpose::STANDARD.encode(&sig)
    );
    assert!(our_verify(content, Some(pem.as_bytes())).report.valid);
    let r = our_verify(b"arbitrary bytes, changed", Some(&sig));
    assert!(!r.report.valid);
}

#[test]
fn tampered_mime_and_wrong_sender_rejected() {
    let p = pki();
    let out = sign_multipart(
        MSG_7BIT,
        &p.signer("ee_rsa"),
        &p.cert("ee_rsa"),
        &[p.cert("int")],
        &opts(),
        "bnd",
    )
    .expect("sign");
    let text = String::from_utf8(out).expect("ascii");
    let tampered = text.replace("Hello Bob", "Hello Eve");
    let r = our_verify(tampered.as_bytes(), None);
    let failed: Vec<_> = r.report.signers[0]
        .failures()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(failed, vec!["message_digest"]);
    let (ok, _, _) = openssl_verify_eml(tampered.as_bytes());
    assert!(!ok);

    let spoofed = text.replace(
        "From: Alice <alice@example.com>",
        "From: Mallory <mallory@example.com>",
    );
    let r = our_verify(spoofed.as_bytes(), None);
    let failed: Vec<_> = r.report.signers[0]
        .failures()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(failed, vec!["sender_email"]);
}

#[test]
fn unsigned_input_is_an_error() {
    let a = anchors();
    let o = VerifyOptions {
        trust_anchors: &a,
        extra_certs: &[],
        now: SystemTime::now(),
        sender_email: None,
        sender_problem: None,
        policy: Policy::default(),
        ..VerifyOptions::at(&a, SystemTime::now())
    };
    assert!(verify_smime(MSG_7BIT, None, &o).is_err());
    assert!(verify_smime(b"", None, &o).is_err());
}

#[test]
fn streaming_opaque_equals_openssl_view() {
    // header → BER SignedData around the streamed entity, all through base64 lines
    use tokenmail_smime::alg::ContentHasher;
    use tokenmail_smime::mime::{opaque_header, Base64Lines};
    use tokenmail_smime::signed::OpaqueStream;
    let p = pki();
    let signer = p.signer("ee_rsa");
    let o = opts();
    let hash = o.scheme_for(signer.key_kind()).expect("scheme").hash();
    let (headers, body) = split_message(MSG_8BIT).expect("split");
    let mut scan = SevenBitScanner::default();
    scan.update(body);
    assert!(scan.needs_encoding());
    let body_plan = BodyPlan::of(&headers, body).expect("body plan");
    let plan = MultipartSigned::new(&headers, &body_plan, "unused", hash).expect("plan");
    let stream = OpaqueStream::new(hash);
    let mut b64 = Base64Lines::default();
    let mut hasher = ContentHasher::new(hash);
    let mut out = opaque_header(&headers);
    out.extend(b64.update(&stream.header().expect("header")));
    let mut emit = |bytes: &[u8], out: &mut Vec<u8>, b64: &mut Base64Lines| {
        hasher.update(bytes);
        out.extend(b64.update(&OpaqueStream::chunk_header(bytes.len())));
        out.extend(b64.update(bytes));
    };
    emit(&plan.part_header(), &mut out, &mut b64);
    let mut enc = plan.body_encoder().expect("encoder");
    for c in body.chunks(4) {
        let e = enc.update(c).expect("encode");
        emit(&e, &mut out, &mut b64);
    }
    let e = enc.finish().expect("encode");
    emit(&e, &mut out, &mut b64);
    let trailer = stream
        .trailer(
            &signer,
            &p.cert("ee_rsa"),
            &[p.cert("int")],
            &hasher.finalize(),
            &o,
        )
        .expect("trailer");
    out.extend(b64.update(&trailer));
    out.extend(b64.finish());

    let (ok, content, err) = openssl_verify_eml(&out);
    assert!(ok, "{err}");
    let ours = our_verify(&out, None);
    assert!(ours.report.valid, "{:?}", ours.report);
    assert_eq!(ours.content, content);
    assert_eq!(
        ours.content,
        tokenmail_smime::mime::signed_entity(MSG_8BIT).expect("entity")
    );
}

#[test]
fn streaming_writers_verify_with_openssl() {
    use tokenmail_smime::mime::{MultipartSignedWriter, OpaqueWriter};
    let p = pki();
    let signer = p.signer("ee_p384");
    let cert = p.cert("ee_p384");
    let chain = [p.cert("int")];
    let o = opts();
    let hash = o.scheme_for(signer.key_kind()).expect("scheme").hash();
    for msg in [MSG_7BIT, MSG_8BIT] {
        let (headers, body) = split_message(msg).expect("split");
        {
            let needs = BodyPlan::of(&headers, body).expect("plan");
            let (mut w, mut out) =
                MultipartSignedWriter::new(&headers, &needs, "stream-b", hash).expect("writer");
            for c in body.chunks(5) {
                out.extend(w.update(c).expect("update"));
            }
            out.extend(w.finish(&signer, &cert, &chain, &o).expect("finish"));
            let (ok, _, err) = openssl_verify_eml(&out);
            assert!(ok, "multipart {needs:?}: {err}");
            assert!(our_verify(&out, None).report.valid);

            let (mut w, mut out) = OpaqueWriter::new(&headers, &needs, hash).expect("writer");
            for c in body.chunks(5) {
                out.extend(w.update(c).expect("update"));
            }
            out.extend(w.finish(&signer, &cert, &chain, &o).expect("finish"));
            let (ok, content, err) = openssl_verify_eml(&out);
            assert!(ok, "opaque {needs:?}: {err}");
            let ours = our_verify(&out, None);
            assert!(ours.report.valid);
            assert_eq!(ours.content, content);
        }
    }
}

const MSG_MULTI_8BIT: &[u8] = b"From: Alice <alice@example.com>\n\
To: bob@example.org\n\
Subject: multipart, 8-bit\n\
MIME-Version: 1.0\n\
Content-Type: multipart/mixed; boundary=\"outer\"\n\
Content-Transfer-Encoding: 8bit\n\
\n\
preamble\n\
--outer\n\
Content-Type: multipart/alternative; boundary=inner\n\
\n\
--inner\n\
Content-Type: text/plain; charset=utf-8\n\
Content-Transfer-Encoding: 8bit\n\
\n\
Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\n\
zweite Zeile\n\
--inner\n\
Content-Type: text/html; charset=utf-8\n\
\n\
<p>Gr\xc3\xbc\xc3\x9fe</p>\n\
--inner--\n\
--outer\n\
Content-Type: application/octet-stream\n\
Content-Transfer-Encoding: binary\n\
Content-Disposition: attachment; filename=blob.bin\n\
\n\
\x00\x01\x02\xff\xfe binary\n\
--outer\n\
Content-Type: text/plain\n\
\n\
plain ascii part\n\
--outer--\n";

#[test]
fn multipart_with_8bit_parts_is_reencoded_part_by_part() {
    use base64::Engine;
    let p = pki();
    let out = sign_multipart(
        MSG_MULTI_8BIT,
        &p.signer("ee_rsa"),
        &p.cert("ee_rsa"),
        &[p.cert("int")],
        &opts(),
        "sig-boundary",
    )
    .expect("sign");
    assert!(out.iter().all(|b| *b < 0x80), "output is 7-bit");
    let text = String::from_utf8(out.clone()).expect("ascii");
    assert!(!text.contains("Content-Transfer-Encoding: 8bit"));
    assert!(!text.contains("Content-Transfer-Encoding: binary"));
    assert!(
        text.contains("plain ascii part\r\n"),
        "7-bit parts stay readable"
    );
    let (ok, content, err) = openssl_verify_eml(&out);
    assert!(ok, "{err}\n{text}");
    let ours = our_verify(&out, None);
    assert!(ours.report.valid);
    assert_eq!(ours.content, content);

    // every re-encoded leaf decodes back to the original bytes (text made CRLF): text
    // parts as quoted-printable, the others as base64
    let entity = String::from_utf8(content).expect("ascii");
    let leaf = |chunk: &str| -> String {
        // the re-encoding header is the last one: the blank line follows
        let body = chunk
            .strip_prefix("\r\n")
            .expect("blank line after the header");
        body.split("\r\n--")
            .next()
            .expect("body before the delimiter")
            .to_string()
    };
    let qp: Vec<Vec<u8>> = entity
        .split("Content-Transfer-Encoding: quoted-printable\r\n")
        .skip(1)
        .map(|c| qp_decode(leaf(c).as_bytes()))
        .collect();
    let b64: Vec<Vec<u8>> = entity
        .split("Content-Transfer-Encoding: base64\r\n")
        .skip(1)
        .map(|c| {
            let text: String = leaf(c).split_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .expect("base64")
        })
        .collect();
    assert_eq!(qp.len(), 2, "{entity}");
    assert_eq!(qp[0], "Grüße aus Köln\r\nzweite Zeile".as_bytes());
    assert_eq!(qp[1], "<p>Grüße</p>".as_bytes());
    assert_eq!(b64, vec![b"\x00\x01\x02\xff\xfe binary".to_vec()]);

    let opaque = sign_opaque(
        MSG_MULTI_8BIT,
        &p.signer("ee_p256"),
        &p.cert("ee_p256"),
        &[p.cert("int")],
        &opts(),
    )
    .expect("opaque");
    let (ok, _, err) = openssl_verify_eml(&opaque);
    assert!(ok, "{err}");
}

/// A valid signature by alice's certificate, From a field that a mail client shows as
/// someone else (or as several senders): never "signed by the sender".
#[test]
fn a_from_field_that_names_someone_else_or_several_is_not_the_signer() {
    let p = pki();
    for (from, why) in [
        (
            "mallory@example.net (<alice@example.com>)",
            "does not match",
        ),
        (
            "\"Mallory\" <mallory@example.net>, <alice@example.com>",
            "2 mailboxes",
        ),
        ("friends: alice@example.com;", "group"),
    ] {
        let msg = format!("From: {from}\r\nSubject: s\r\nContent-Type: text/plain\r\n\r\nhi\r\n");
        let out = sign_multipart(
            msg.as_bytes(),
            &p.signer("ee_rsa"),
            &p.cert("ee_rsa"),
            &[p.cert("int")],
            &opts(),
            "b",
        )
        .expect("sign");
        let r = our_verify(&out, None);
        assert!(!r.report.valid, "{from}: reported valid");
        let sender = r.report.signers[0]
            .checks
            .iter()
            .find(|c| c.name == "sender_email")
            .expect("sender check");
        assert!(
            !sender.ok && sender.reason.contains(why),
            "{from}: {}",
            sender.reason
        );
    }
    // two From fields
    let msg = b"From: alice@example.com\r\nFrom: mallory@example.net\r\n\r\nhi\r\n";
    let out = sign_multipart(
        msg,
        &p.signer("ee_rsa"),
        &p.cert("ee_rsa"),
        &[p.cert("int")],
        &opts(),
        "b",
    )
    .expect("sign");
    assert!(!our_verify(&out, None).report.valid);
}
