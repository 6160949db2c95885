//! The stream operations of the agent (docs/protocol.md §12: `sign`, `verify`, `encrypt`,
//! `decrypt` of whole messages over the socket), end to end against a SoftHSM token:
//! with the Rust client (`Client::call_stream`) and the Python standard-library client,
//! checked against openssl both ways, with tampering, and with a 64 MiB message in
//! bounded agent memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tokenmail_e2e::{process, stderr, stdout, Agent};
use tokenmail_proto::v1::{Bytes, ErrorCode, Request, Response, SignForm, OPERATIONS};
use tokenmail_proto::{Client, ClientError};

const MESSAGE: &[u8] = b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: quarterly figures\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello Bob,\r\nthe figures are attached. Gr\xc3\xbc\xc3\x9fe\r\n";

const ASCII_MESSAGE: &[u8] = b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: plain\r\nContent-Type: text/plain\r\n\r\nHello Bob,\r\nplain ASCII.\r\n";

fn entity(msg: &[u8]) -> Vec<u8> {
    let pos = msg
        .windows(13)
        .position(|w| w == b"Content-Type:")
        .expect("content-type");
    msg[pos..].to_vec()
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed:\nstdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn connect(agent: &Agent) -> Client {
    Client::connect(&agent.socket, "stream-e2e").expect("connect")
}

fn pem(agent: &Agent, name: &str) -> String {
    std::fs::read_to_string(agent.fixture.pki(name)).expect("pem")
}

/// Runs a stream; returns the final response (or the agent's error) and the output.
fn stream(c: &mut Client, req: &Request, input: &[u8]) -> (Result<Response, ClientError>, Vec<u8>) {
    let mut out = Vec::new();
    let r = c.call_stream(req, input, &mut out);
    (r, out)
}

fn sign_req(key: &str, form: SignForm) -> Request {
    Request::Sign {
        key: key.into(),
        form,
        digest: None,
        pss: None,
        crlf: None,
        receipt_request: None,
        security_label: None,
    }
}

fn verify_req(agent: &Agent, signature: Option<Vec<u8>>) -> Request {
    Request::Verify {
        trust: vec![pem(agent, "root.pem")],
        signature: signature.map(Bytes),
    }
}

/// (With the long limit: one call verifies a 64 MiB message.)
fn openssl_verify(agent: &Agent, args: &[&str]) -> Output {
    process::run_with_timeout(
        Command::new("openssl")
            .args(["cms", "-verify", "-purpose", "smimesign", "-CAfile"])
            .arg(agent.fixture.pki("root.pem"))
            .args(args),
        None,
        process::long_limit(),
    )
}

fn python(agent: &Agent, args: &[&str]) -> Output {
    process::output(
        Command::new("python3")
            .arg(tokenmail_e2e::workspace().join("docs/examples/tokenmail_client.py"))
            .arg("--socket")
            .arg(&agent.socket)
            .args(args),
    )
}

#[test]
fn hello_lists_the_stream_operations() {
    let agent = Agent::start();
    let mut c = connect(&agent);
    let Response::Hello { operations, .. } = c
        .call(&Request::Hello {
            client: "t".into(),
            pin_prompt: false,
        })
        .expect("hello")
    else {
        panic!("not hello")
    };
    for op in ["sign", "verify", "encrypt", "decrypt"] {
        assert!(operations.iter().any(|o| o == op), "{op} in {operations:?}");
    }
    assert_eq!(operations.len(), OPERATIONS.len());
}

#[test]
fn signs_over_the_socket_for_openssl_in_every_form() {
    let agent = Agent::start();
    let mut c = connect(&agent);
    let dir = tempfile::tempdir().expect("tempdir");
    let content = dir.path().join("content");
    for key in ["alice-rsa", "bob-p256", "carol-p384"] {
        for form in [
            SignForm::Multipart,
            SignForm::Opaque,
            SignForm::DetachedDer,
            SignForm::DetachedPem,
        ] {
            let (r, out) = stream(&mut c, &sign_req(key, form), MESSAGE);
            match r.expect("sign") {
                Response::Signed { key: k, bytes } => {
                    assert_eq!(k, key);
                    assert_eq!(bytes, out.len() as u64);
                }
                other => panic!("{other:?}"),
            }
            let signed = dir.path().join("signed");
            std::fs::write(&signed, &out).expect("write");
            let v = match form {
                SignForm::Multipart | SignForm::Opaque => {
                    openssl_verify(&agent, &["-in", s(&signed), "-out", s(&content)])
                }
                _ => {
                    let msg = dir.path().join("msg");
                    std::fs::write(&msg, MESSAGE).expect("write");
                    let inform = if form == SignForm::DetachedDer {
                        "DER"
                    } else {
                        "PEM"
                    };
                    openssl_verify(
                        &agent,
                        &[
                            "-binary",
                            "-inform",
                            inform,
                            "-in",
                            s(&signed),
                            "-content",
                            s(&msg),
                            "-out",
                            s(&content),
                        ],
                    )
                }
            };
            ok(&v, &format!("openssl verifies {key} {form:?}"));
            let got = std::fs::read(&content).expect("content");
            match form {
                // 8-bit body: the signed entity is the same text in quoted-printable
                SignForm::Multipart | SignForm::Opaque => assert!(
                    got.starts_with(
                        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                    ),
                    "{key} {form:?}"
                ),
                _ => assert_eq!(got, MESSAGE, "{key} {form:?}"),
            }
        }
    }
    // PSS and an explicit digest.
    let (r, out) = stream(
        &mut c,
        &Request::Sign {
            key: "alice@example.com".into(),
            form: SignForm::Multipart,
            digest: Some(tokenmail_proto::v1::HashAlgorithm::Sha512),
            pss: Some(true),
            crlf: None,
            receipt_request: None,
            security_label: None,
        },
        MESSAGE,
    );
    r.expect("pss sign");
    let signed = dir.path().join("pss");
    std::fs::write(&signed, &out).expect("write");
    ok(
        &openssl_verify(&agent, &["-in", s(&signed), "-out", "/dev/null"]),
        "openssl verifies PSS/SHA-512",
    );
    assert!(String::from_utf8_lossy(&out).contains("micalg=sha-512"));
}

#[test]
fn errors_answer_after_the_input_and_keep_the_connection() {
    let agent = Agent::start();
    let mut c = connect(&agent);
    let big = vec![b'x'; 300 * 1024];
    // Rejected before any data: the agent drains the input, answers End + error.
    let (r, out) = stream(&mut c, &sign_req("nobody", SignForm::Multipart), &big);
    assert_eq!(r.expect_err("no key").code(), Some(ErrorCode::NoSuchKey));
    assert!(out.is_empty());
    let (r, out) = stream(
        &mut c,
        &Request::Verify {
            trust: vec![],
            signature: None,
        },
        &big,
    );
    let e = r.expect_err("no trust");
    assert_eq!(e.code(), Some(ErrorCode::BadRequest));
    assert!(e.to_string().contains("no trust anchor: pass trust"), "{e}");
    assert!(out.is_empty());
    let (r, _) = stream(
        &mut c,
        &Request::Encrypt {
            recipients: vec![pem(&agent, "dave-rsa.pem")],
            cipher: Some("rc2".into()),
        },
        &big,
    );
    assert_eq!(r.expect_err("cipher").code(), Some(ErrorCode::BadRequest));
    let (r, _) = stream(
        &mut c,
        &Request::Decrypt,
        b"not a message at all\r\n\r\nbody",
    );
    assert_eq!(r.expect_err("garbage").code(), Some(ErrorCode::BadRequest));
    let (r, _) = stream(&mut c, &sign_req("alice-rsa", SignForm::Multipart), b"");
    assert_eq!(r.expect_err("empty").code(), Some(ErrorCode::BadRequest));
    // The same connection still serves.
    assert!(matches!(
        c.call(&Request::ListKeys).expect("list-keys"),
        Response::Keys { .. }
    ));
    let (r, _) = stream(&mut c, &sign_req("bob-p256", SignForm::Opaque), MESSAGE);
    r.expect("sign after errors");
}

/// (what, input, detached signature, the content expected back)
type VerifyCase = (String, Vec<u8>, Option<Vec<u8>>, Vec<u8>);

#[test]
fn a_message_frame_inside_the_input_closes_the_connection() {
    use std::io::Write as _;
    use tokenmail_proto::frame::{encode_frame, read_frame, FrameKind};
    use tokenmail_proto::{decode_message, encode_message};
    let agent = Agent::start();
    let mut sock = std::os::unix::net::UnixStream::connect(&agent.socket).expect("connect");
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let msg = |r: &Request| {
        encode_frame(FrameKind::Message, &encode_message(r).expect("encode")).expect("frame")
    };
    sock.write_all(&msg(&Request::Hello {
        client: "t".into(),
        pin_prompt: false,
    }))
    .expect("write");
    read_frame(&mut sock).expect("read").expect("hello");
    sock.write_all(&msg(&sign_req("alice-rsa", SignForm::Multipart)))
        .expect("write");
    sock.write_all(&encode_frame(FrameKind::Data, MESSAGE).expect("frame"))
        .expect("write");
    sock.write_all(&msg(&Request::Status)).expect("write");
    let (h, p) = read_frame(&mut sock)
        .expect("read")
        .expect("an error frame");
    assert_eq!(h.kind, FrameKind::Message);
    match decode_message::<Response>(&p).expect("decode") {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains("inside a stream"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        read_frame(&mut sock).map(|f| f.is_none()).unwrap_or(true),
        "closed"
    );
    // The agent still serves others.
    let mut c = connect(&agent);
    let (r, _) = stream(&mut c, &sign_req("alice-rsa", SignForm::Opaque), MESSAGE);
    r.expect("sign");
}

#[test]
fn verifies_our_and_openssl_signatures_and_rejects_tampering() {
    let agent = Agent::start();
    let f = &agent.fixture;
    let mut c = connect(&agent);
    let dir = tempfile::tempdir().expect("tempdir");
    let msg = dir.path().join("m.eml");
    std::fs::write(&msg, MESSAGE).expect("write");
    let mut cases: Vec<VerifyCase> = Vec::new();
    // ours
    for form in [SignForm::Multipart, SignForm::Opaque] {
        // the signer must match the message's From (alice) for a valid report
        let (r, out) = stream(&mut c, &sign_req("alice-rsa", form), ASCII_MESSAGE);
        r.expect("sign");
        cases.push((format!("ours {form:?}"), out, None, entity(ASCII_MESSAGE)));
    }
    let (r, sig) = stream(
        &mut c,
        &sign_req("alice@example.com", SignForm::DetachedDer),
        MESSAGE,
    );
    r.expect("sign detached");
    cases.push((
        "ours detached".into(),
        MESSAGE.to_vec(),
        Some(sig),
        MESSAGE.to_vec(),
    ));
    // openssl's, with a software key under the same CA
    for (what, extra) in [
        ("openssl multipart", &[][..]),
        ("openssl opaque", &["-nodetach"][..]),
    ] {
        let out = dir.path().join("o.eml");
        ok(
            &process::output(
                Command::new("openssl")
                    .args(["cms", "-sign", "-in", s(&msg), "-out", s(&out)])
                    .arg("-signer")
                    .arg(f.pki("dave-rsa.pem"))
                    .arg("-inkey")
                    .arg(f.pki("dave-rsa.key"))
                    .arg("-certfile")
                    .arg(f.pki("intermediate.pem"))
                    .args(extra),
            ),
            what,
        );
        // openssl signs the whole input as the entity
        cases.push((
            what.into(),
            std::fs::read(&out).expect("read"),
            None,
            MESSAGE.to_vec(),
        ));
    }
    for (what, input, sig, content) in &cases {
        let (r, out) = stream(&mut c, &verify_req(&agent, sig.clone()), input);
        match r.unwrap_or_else(|e| panic!("{what}: {e}")) {
            Response::Verified { valid, report } => {
                assert!(valid, "{what}: {report}");
                assert_eq!(report["valid"], true);
                assert!(report["signers"].as_array().is_some_and(|a| a.len() == 1));
            }
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(&out, content, "{what}: the verified content");
        // Tampered: one letter of the signed text changed.
        let (tampered, sig2) = match sig {
            Some(s) => (
                [&input[..input.len() - 3], b"X\r\n"].concat(),
                Some(s.clone()),
            ),
            None => {
                let text = String::from_utf8_lossy(input).into_owned();
                let t = if text.contains("Hello Bob") {
                    text.replacen("Hello Bob", "Hello Rob", 1)
                } else {
                    // opaque: flip a letter inside the base64 of the encapsulated content
                    let start = text
                        .find("\r\n\r\n")
                        .or_else(|| text.find("\n\n"))
                        .expect("body");
                    let mut b = text.into_bytes();
                    let i = start + 60;
                    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
                    String::from_utf8(b).expect("ascii")
                };
                (t.into_bytes(), None)
            }
        };
        let (r, out) = stream(&mut c, &verify_req(&agent, sig2), &tampered);
        match r {
            Ok(Response::Verified { valid, report }) => {
                assert!(!valid, "{what} tampered: {report}")
            }
            // A flipped base64 letter can also break the structure: an error, no content.
            Err(ClientError::Agent(e)) => assert_eq!(e.code, ErrorCode::BadRequest, "{what}"),
            other => panic!("{what}: {other:?}"),
        }
        assert!(out.is_empty(), "{what}: no content when not valid");
    }
}

#[test]
fn encrypts_for_openssl_and_decrypts_openssl_messages_on_the_token() {
    let agent = Agent::start();
    let f = &agent.fixture;
    let mut c = connect(&agent);
    let dir = tempfile::tempdir().expect("tempdir");
    // encrypt over the socket → openssl decrypts with the software key
    for cipher in ["aes256-gcm", "aes128-cbc"] {
        let (r, out) = stream(
            &mut c,
            &Request::Encrypt {
                recipients: vec![pem(&agent, "dave-rsa.pem"), pem(&agent, "erin-p256.pem")],
                cipher: Some(cipher.into()),
            },
            MESSAGE,
        );
        match r.expect("encrypt") {
            Response::Encrypted { bytes } => assert_eq!(bytes, out.len() as u64),
            other => panic!("{other:?}"),
        }
        assert!(out.starts_with(b"From: alice@example.com\r\n"));
        let enc = dir.path().join("enc.eml");
        std::fs::write(&enc, &out).expect("write");
        let o = process::output(
            Command::new("openssl")
                .args(["cms", "-decrypt", "-in", s(&enc)])
                .arg("-inkey")
                .arg(f.pki("dave-rsa.key"))
                .arg("-recip")
                .arg(f.pki("dave-rsa.pem")),
        );
        ok(&o, &format!("openssl decrypts {cipher}"));
        assert_eq!(o.stdout, entity(MESSAGE), "{cipher}");
    }
    // openssl encrypts to the token's certificates → decrypt over the socket
    let msg = dir.path().join("m.eml");
    std::fs::write(&msg, MESSAGE).expect("write");
    for (key, cipher) in [
        ("alice-rsa", "-aes-256-gcm"),
        ("bob-p256", "-aes-128-gcm"),
        ("carol-p384", "-aes-256-cbc"),
    ] {
        let enc = dir.path().join("o.eml");
        ok(
            &process::output(
                Command::new("openssl")
                    .args(["cms", "-encrypt", cipher, "-in", s(&msg), "-out", s(&enc)])
                    .arg(f.pki(&format!("{key}.pem"))),
            ),
            "openssl encrypt",
        );
        let input = std::fs::read(&enc).expect("read");
        let (r, out) = stream(&mut c, &Request::Decrypt, &input);
        match r.unwrap_or_else(|e| panic!("{key}: {e}")) {
            Response::Decrypted {
                key: k,
                authenticated,
                bytes,
                cipher: named,
            } => {
                assert_eq!(k, key);
                assert_eq!(authenticated, cipher.contains("gcm"));
                assert_eq!(
                    named.expect("the cipher is named").to_ascii_lowercase(),
                    cipher.trim_start_matches('-'),
                );
                assert_eq!(bytes, out.len() as u64);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out, MESSAGE, "{key}: exact bytes");
    }
    // Not a recipient: only dave (software) can read it.
    let enc = dir.path().join("dave.eml");
    ok(
        &process::output(
            Command::new("openssl")
                .args([
                    "cms",
                    "-encrypt",
                    "-aes-256-gcm",
                    "-in",
                    s(&msg),
                    "-out",
                    s(&enc),
                ])
                .arg(f.pki("dave-rsa.pem")),
        ),
        "openssl encrypt to dave",
    );
    let (r, out) = stream(
        &mut c,
        &Request::Decrypt,
        &std::fs::read(&enc).expect("read"),
    );
    assert_eq!(r.expect_err("not ours").code(), Some(ErrorCode::NoSuchKey));
    assert!(out.is_empty());
}

#[test]
fn tampered_gcm_is_decrypt_failed_with_no_plaintext_frames() {
    let agent = Agent::start();
    let f = &agent.fixture;
    let mut c = connect(&agent);
    let dir = tempfile::tempdir().expect("tempdir");
    // Large enough that plaintext would flow in many frames if it were not withheld.
    let mut msg = b"Content-Type: text/plain\r\n\r\n".to_vec();
    while msg.len() < 1 << 20 {
        msg.extend_from_slice(b"secret line of the plaintext that must not leak\r\n");
    }
    let m = dir.path().join("m.eml");
    std::fs::write(&m, &msg).expect("write");
    for key in ["alice-rsa", "bob-p256"] {
        let der = dir.path().join("enc.der");
        ok(
            &process::output(
                Command::new("openssl")
                    .args([
                        "cms",
                        "-encrypt",
                        "-aes-256-gcm",
                        "-binary",
                        "-outform",
                        "DER",
                    ])
                    .args(["-in", s(&m), "-out", s(&der)])
                    .arg(f.pki(&format!("{key}.pem"))),
            ),
            "encrypt",
        );
        let good = std::fs::read(&der).expect("der");
        let (r, out) = stream(&mut c, &Request::Decrypt, &good);
        r.expect("untampered decrypts");
        assert_eq!(out, msg);
        for (what, pos) in [("ciphertext", good.len() / 2), ("tag", good.len() - 5)] {
            let mut bad = good.clone();
            bad[pos] ^= 0x01;
            let (r, out) = stream(&mut c, &Request::Decrypt, &bad);
            let e = r.expect_err("tampered");
            assert_eq!(
                e.code(),
                Some(ErrorCode::DecryptFailed),
                "{key} {what}: {e}"
            );
            assert_eq!(e.to_string(), "decryption failed");
            assert!(out.is_empty(), "{key} {what}: no plaintext data frames");
        }
    }
}

#[test]
fn python_client_signs_verifies_encrypts_and_decrypts() {
    let agent = Agent::start();
    let f = &agent.fixture;
    let dir = tempfile::tempdir().expect("tempdir");
    let msg = dir.path().join("m.eml");
    std::fs::write(&msg, ASCII_MESSAGE).expect("write");
    let o = python(&agent, &["hello"]);
    ok(&o, "hello");
    assert!(
        stdout(&o).contains("sign verify encrypt decrypt"),
        "{}",
        stdout(&o)
    );
    // sign, three forms → openssl
    for (form, key) in [
        // the From is alice: her key, so that the sender check passes in verify
        ("multipart", "alice-rsa"),
        ("opaque", "alice@example.com"),
        ("detached-der", "alice-rsa"),
    ] {
        let out = dir.path().join(format!("signed-{form}"));
        ok(
            &python(
                &agent,
                &[
                    "sign",
                    "--key",
                    key,
                    "--form",
                    form,
                    "--out",
                    s(&out),
                    s(&msg),
                ],
            ),
            &format!("python sign {form}"),
        );
        let v = if form == "detached-der" {
            openssl_verify(
                &agent,
                &[
                    "-binary",
                    "-inform",
                    "DER",
                    "-in",
                    s(&out),
                    "-content",
                    s(&msg),
                    "-out",
                    "/dev/null",
                ],
            )
        } else {
            openssl_verify(&agent, &["-in", s(&out), "-out", "/dev/null"])
        };
        ok(&v, &format!("openssl verifies python {form}"));
        // and verify over the socket
        let content = dir.path().join("content");
        let root = f.pki("root.pem");
        let mut args = vec!["verify", "--trust", s(&root), "--out", s(&content)];
        if form == "detached-der" {
            args.extend(["--signature", s(&out), s(&msg)]);
        } else {
            args.push(s(&out));
        }
        let o = python(&agent, &args);
        ok(&o, &format!("python verify {form}"));
        let want = if form == "detached-der" {
            ASCII_MESSAGE.to_vec()
        } else {
            entity(ASCII_MESSAGE)
        };
        assert_eq!(std::fs::read(&content).expect("content"), want);
    }
    // tampered → exit 1, no content
    let signed = std::fs::read_to_string(dir.path().join("signed-multipart")).expect("read");
    let bad = dir.path().join("bad.eml");
    std::fs::write(&bad, signed.replacen("Hello Bob", "Hello Rob", 1)).expect("write");
    let content = dir.path().join("bad-content");
    let root = f.pki("root.pem");
    let o = python(
        &agent,
        &["verify", "--trust", s(&root), "--out", s(&content), s(&bad)],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!content.exists());
    // encrypt to dave and to alice; openssl decrypts dave's; python decrypts alice's
    let enc = dir.path().join("enc.eml");
    let dave = f.pki("dave-rsa.pem");
    let alice = f.pki("alice-rsa.pem");
    ok(
        &python(
            &agent,
            &[
                "encrypt",
                "--recipient",
                s(&dave),
                "--recipient",
                s(&alice),
                "--out",
                s(&enc),
                s(&msg),
            ],
        ),
        "python encrypt",
    );
    let o = process::output(
        Command::new("openssl")
            .args(["cms", "-decrypt", "-in", s(&enc)])
            .arg("-inkey")
            .arg(f.pki("dave-rsa.key"))
            .arg("-recip")
            .arg(&dave),
    );
    ok(&o, "openssl decrypts python's");
    assert_eq!(o.stdout, entity(ASCII_MESSAGE));
    let dec = dir.path().join("dec.eml");
    let o = python(&agent, &["decrypt", "--out", s(&dec), s(&enc)]);
    ok(&o, "python decrypt");
    assert!(stderr(&o).contains("alice-rsa"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&dec).expect("dec"), ASCII_MESSAGE);
    let o = python(&agent, &["decrypt", s(&enc)]);
    ok(&o, "python decrypt to stdout");
    assert_eq!(o.stdout, ASCII_MESSAGE);
    // tampered GCM: decrypt-failed, nothing written, one error line
    let mut bytes = std::fs::read(&enc).expect("enc");
    let n = bytes.len();
    // flip a base64 letter near the end (inside the ciphertext or tag)
    let i = (0..n - 10)
        .rev()
        .find(|&i| bytes[i].is_ascii_alphabetic())
        .expect("letter");
    bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
    let bad = dir.path().join("bad-enc.eml");
    std::fs::write(&bad, &bytes).expect("write");
    let out = dir.path().join("bad-dec.eml");
    let o = python(&agent, &["decrypt", "--out", s(&out), s(&bad)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("error: decrypt-failed"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tokenmail-"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files left");
}

fn vm_hwm_kib(pid: i32) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    st.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

fn big_message(path: &Path, size: usize) {
    let mut w = BufWriter::new(File::create(path).expect("create"));
    w.write_all(b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: big\r\nContent-Type: text/plain\r\n\r\n")
        .expect("write");
    let line = b"0123456789 the quick brown fox jumps over the lazy dog 0123456789\r\n";
    let mut n = 0;
    let mut i: u64 = 0;
    while n < size {
        write!(w, "{i:08} ").expect("write");
        w.write_all(line).expect("write");
        n += 9 + line.len();
        i += 1;
    }
    w.flush().expect("flush");
}

fn stream_files(c: &mut Client, req: &Request, input: &Path, output: &PathBuf) -> Response {
    let inp = File::open(input).expect("open");
    let out = BufWriter::new(File::create(output).expect("create"));
    c.call_stream(req, inp, out).expect("stream")
}

#[test]
fn a_64_mib_message_is_signed_verified_and_decrypted_in_bounded_agent_memory() {
    let agent = Agent::start();
    let pid = agent.pid();
    let dir = tempfile::tempdir().expect("tempdir");
    let msg = dir.path().join("big.eml");
    big_message(&msg, 64 << 20);
    let mut c = connect(&agent);
    let before = vm_hwm_kib(pid);

    let t = std::time::Instant::now();
    let signed = dir.path().join("big.signed");
    let r = stream_files(
        &mut c,
        &sign_req("alice-rsa", SignForm::Multipart),
        &msg,
        &signed,
    );
    assert!(matches!(r, Response::Signed { .. }), "{r:?}");
    eprintln!("sign 64 MiB: {:?}", t.elapsed());
    ok(
        &openssl_verify(&agent, &["-in", s(&signed), "-out", "/dev/null"]),
        "openssl verifies the 64 MiB signature",
    );

    let t = std::time::Instant::now();
    let content = dir.path().join("big.content");
    let r = stream_files(&mut c, &verify_req(&agent, None), &signed, &content);
    assert!(matches!(r, Response::Verified { valid: true, .. }), "{r:?}");
    eprintln!("verify 64 MiB: {:?}", t.elapsed());
    assert!(std::fs::metadata(&content).expect("content").len() > 64 << 20);
    std::fs::remove_file(&content).expect("rm");

    let t = std::time::Instant::now();
    let enc = dir.path().join("big.enc");
    let r = stream_files(
        &mut c,
        &Request::Encrypt {
            recipients: vec![pem(&agent, "bob-p256.pem")],
            cipher: None,
        },
        &msg,
        &enc,
    );
    assert!(matches!(r, Response::Encrypted { .. }), "{r:?}");
    eprintln!("encrypt 64 MiB: {:?}", t.elapsed());

    let t = std::time::Instant::now();
    let dec = dir.path().join("big.dec");
    let r = stream_files(&mut c, &Request::Decrypt, &enc, &dec);
    assert!(
        matches!(
            r,
            Response::Decrypted {
                authenticated: true,
                ..
            }
        ),
        "{r:?}"
    );
    eprintln!("decrypt 64 MiB: {:?}", t.elapsed());
    assert_eq!(
        std::fs::metadata(&dec).expect("dec").len(),
        std::fs::metadata(&msg).expect("msg").len()
    );
    assert!(
        std::fs::read(&dec).expect("dec") == std::fs::read(&msg).expect("msg"),
        "64 MiB round trip is exact"
    );

    let after = vm_hwm_kib(pid);
    eprintln!("agent VmHWM: {before} kB before, {after} kB after");
    assert!(
        after < 64 * 1024,
        "the agent's peak RSS stays under 64 MiB: {after} kB"
    );
}

/// The spool limit (`--max-spool`): a message larger than it is refused with one clear
/// error that names the limit and the way out, the connection keeps serving, and a
/// message under the limit signs; an output past it (encryption grows the message) is
/// refused the same way.
#[test]
fn the_spool_limit_is_configurable_and_refuses_larger_messages_plainly() {
    let agent = Agent::start_with(&["--max-spool", "1M"], true);
    let mut c = connect(&agent);
    let mut big = b"Content-Type: text/plain\r\n\r\n".to_vec();
    while big.len() < (1 << 20) + 4096 {
        big.extend_from_slice(b"a line of an over-large message, 7-bit and short\r\n");
    }
    let (r, out) = stream(&mut c, &sign_req("alice-rsa", SignForm::Multipart), &big);
    let e = r.expect_err("over the limit");
    assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{e}");
    let m = e.to_string();
    assert!(
        m.contains("spool limit (1 MiB)") && m.contains("max_spool"),
        "{m}"
    );
    assert!(out.is_empty(), "no output for a refused message");
    // Under the limit input, over the limit output: base64 of an encryption grows it.
    let mid = &big[..(900 << 10)];
    let (r, _) = stream(
        &mut c,
        &Request::Encrypt {
            recipients: vec![pem(&agent, "dave-rsa.pem")],
            cipher: None,
        },
        mid,
    );
    let e = r.expect_err("output over the limit");
    assert!(e.to_string().contains("spool limit (1 MiB)"), "{e}");
    // The connection still serves, and a message under the limit signs.
    let (r, out) = stream(&mut c, &sign_req("alice-rsa", SignForm::Multipart), MESSAGE);
    r.expect("a small message signs");
    assert!(!out.is_empty());
    // A bad size is refused at start, in one line.
    let o = process::output(
        Command::new(tokenmail_e2e::bin("tokenmail-agent"))
            .args(["--foreground", "--max-spool", "lots", "--socket"])
            .arg(agent.dir.path().join("other.sock")),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("K, M or G"), "{}", stderr(&o));
}

/// `[trust]` in the agent's configuration (issue 12): a `verify` request that sends no
/// anchors uses the configured ones, and the configured policy applies (revocation =
/// hard-fail: no CRL for the signer, so not valid); anchors sent with the request still win.
#[test]
fn verify_uses_the_configured_trust_anchors_and_policy() {
    let with = |extra: &'static str| {
        Agent::start_configured(&[], true, move |f| {
            Some(format!(
                "[trust]\nanchors = [\"{}\"]\n{extra}",
                f.pki("root.pem").display()
            ))
        })
    };
    let no_anchors = Request::Verify {
        trust: vec![],
        signature: None,
    };
    let agent = with("");
    let mut c = connect(&agent);
    let (r, signed) = stream(
        &mut c,
        &sign_req("alice-rsa", SignForm::Multipart),
        ASCII_MESSAGE,
    );
    r.expect("sign");
    let (r, content) = stream(&mut c, &no_anchors, &signed);
    match r.expect("verified with the configured anchors") {
        Response::Verified { valid, report } => assert!(valid, "{report}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(content, entity(ASCII_MESSAGE));
    // encrypt checks its recipients against the same anchors
    let enc = |pem: String| Request::Encrypt {
        recipients: vec![pem],
        cipher: None,
    };
    let bundle = pem(&agent, "dave-rsa.pem") + &pem(&agent, "intermediate.pem");
    let (r, _) = stream(&mut c, &enc(bundle), ASCII_MESSAGE);
    r.expect("a recipient (with its chain) under the configured root");
    let dir = tempfile::tempdir().expect("tempdir");
    let o = process::output(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=stranger", "-keyout", "k.pem", "-out", "c.pem"])
            .current_dir(dir.path()),
    );
    ok(&o, "self-signed certificate");
    let stranger = std::fs::read_to_string(dir.path().join("c.pem")).expect("cert");
    let (r, out) = stream(&mut c, &enc(stranger), ASCII_MESSAGE);
    let e = r.expect_err("not under the configured anchors");
    assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{e}");
    assert!(
        e.to_string().contains("does not chain to a trust anchor"),
        "{e}"
    );
    assert!(out.is_empty());

    let agent = with("revocation = \"hard-fail\"\n");
    let mut c = connect(&agent);
    let (r, signed) = stream(
        &mut c,
        &sign_req("alice-rsa", SignForm::Multipart),
        ASCII_MESSAGE,
    );
    r.expect("sign");
    let (r, content) = stream(&mut c, &no_anchors, &signed);
    match r.expect("answered") {
        Response::Verified { valid, report } => {
            assert!(!valid, "hard-fail without a CRL");
            assert!(
                report.to_string().contains("revocation = hard-fail"),
                "{report}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(content.is_empty(), "no content for an invalid signature");
}

/// The streamed `sign` asks for ESS receipts and carries a security label, like `tokenmail
/// sign --receipt-request --security-label`: `tokenmail verify` shows both, openssl makes a
/// receipt for the message and `tokenmail verify-receipt` accepts it; a bad label is a
/// `bad-request` and nothing is output.
#[test]
fn streamed_sign_requests_receipts_and_labels() {
    let agent = Agent::start();
    let mut c = connect(&agent);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let req = |label: &str| Request::Sign {
        key: "alice@example.com".into(),
        form: SignForm::Opaque,
        digest: None,
        pss: None,
        crlf: None,
        receipt_request: Some(true),
        security_label: Some(label.into()),
    };
    let (r, out) = stream(&mut c, &req("1.3.6.1.4.1.99999.1:secret"), MESSAGE);
    assert!(
        matches!(r, Ok(Response::Signed { .. })),
        "{r:?} {}",
        String::from_utf8_lossy(&out)
    );
    let sent = d.join("sent.eml");
    std::fs::write(&sent, &out).expect("write");
    let root = agent.fixture.pki("root.pem");
    let verify_json = |signed: &Path| -> serde_json::Value {
        let o = agent.cli(&[
            "verify",
            "--json",
            "--revocation",
            "off",
            "--trust",
            s(&root),
            s(signed),
        ]);
        ok(&o, "tokenmail verify");
        serde_json::from_slice(&o.stdout).expect("json")
    };
    let j = verify_json(&sent);
    let label = &j["signers"][0]["security_label"];
    assert_eq!(label["policy"], "1.3.6.1.4.1.99999.1", "{label}");
    assert_eq!(label["classification_name"], "secret", "{label}");
    let rr = &j["signers"][0]["receipt_request"];
    assert_eq!(rr["receipts_to"][0], "alice@example.com", "{rr}");
    assert_eq!(rr["receipts_from"], "all recipients", "{rr}");

    // a peer answers with a signed receipt, which matches what the agent signed
    let o = process::output(
        Command::new("openssl")
            .args(["cms", "-sign_receipt", "-in"])
            .arg(&sent)
            .arg("-signer")
            .arg(agent.fixture.pki("dave-rsa.pem"))
            .arg("-inkey")
            .arg(agent.fixture.pki("dave-rsa.key"))
            .arg("-certfile")
            .arg(agent.fixture.pki("intermediate.pem"))
            .arg("-out")
            .arg(d.join("receipt.eml")),
    );
    ok(&o, "openssl cms -sign_receipt");
    let o = agent.cli(&[
        "verify-receipt",
        "--trust",
        s(&root),
        "--original",
        s(&sent),
        s(&d.join("receipt.eml")),
    ]);
    ok(&o, "tokenmail verify-receipt");
    assert!(stdout(&o).contains("receipt valid"), "{}", stdout(&o));

    // the Python client asks the same
    let input = d.join("m.eml");
    std::fs::write(&input, MESSAGE).expect("write");
    let by_python = d.join("python.eml");
    let o = python(
        &agent,
        &[
            "sign",
            "--key",
            "alice@example.com",
            "--form",
            "multipart",
            "--receipt-request",
            "--security-label",
            "1.3.6.1.4.1.99999.1:confidential",
            "--out",
            s(&by_python),
            s(&input),
        ],
    );
    ok(&o, "python sign --receipt-request --security-label");
    let j = verify_json(&by_python);
    assert_eq!(
        j["signers"][0]["security_label"]["classification_name"], "confidential",
        "{j:#}"
    );
    assert_eq!(
        j["signers"][0]["receipt_request"]["receipts_to"][0], "alice@example.com",
        "{j:#}"
    );

    // a label that does not parse: bad-request, no output, the connection still usable
    let (r, out) = stream(&mut c, &req("not-an-oid:secret"), MESSAGE);
    match r {
        Err(ClientError::Agent(e)) => {
            assert_eq!(e.code, ErrorCode::BadRequest, "{}", e.message);
            assert!(
                e.message
                    .starts_with("security_label: \"not-an-oid:secret\": ")
                    && !e.message.contains("--security-label"),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(out.is_empty(), "output for a refused request");
    let (r, _) = stream(&mut c, &sign_req("alice-rsa", SignForm::Multipart), MESSAGE);
    assert!(matches!(r, Ok(Response::Signed { .. })), "{r:?}");
}
