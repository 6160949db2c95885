//! S/MIME end to end with keys on a SoftHSM token, interop both ways:
//! tokenmail sign → openssl cms -verify and gpgsm --verify;
//! openssl (pkcs11 engine, same token key) signs → tokenmail verify;
//! openssl cms -encrypt to the token's certificates → tokenmail decrypt (on the token);
//! tokenmail encrypt → openssl cms -decrypt with software keys;
//! and the rejections that must happen.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tokenmail_e2e::{process, stderr, stdout, Agent};

const MESSAGE: &[u8] = b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: quarterly figures\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello Bob,\r\nthe figures are attached. Gr\xc3\xbc\xc3\x9fe\r\n";

fn entity(msg: &[u8]) -> Vec<u8> {
    // The MIME entity of a message: from Content-Type on (what encryption/signing covers).
    let pos = msg
        .windows(13)
        .position(|w| w == b"Content-Type:")
        .expect("content-type");
    msg[pos..].to_vec()
}

fn run(cmd: &mut Command) -> Output {
    process::output(cmd)
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed:\nstdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Self {
        Work {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, data).expect("write");
        p
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn openssl_verify(agent: &Agent, args: &[&str]) -> Output {
    run(Command::new("openssl")
        .args(["cms", "-verify", "-purpose", "smimesign", "-CAfile"])
        .arg(agent.fixture.pki("root.pem"))
        .args(args))
}

#[test]
fn our_signatures_verify_with_openssl_for_every_key_and_form() {
    let agent = Agent::start();
    let w = Work::new();
    let msg = w.write("m.eml", MESSAGE);
    for (key, extra) in [
        ("alice-rsa", &[][..]),
        ("alice-rsa", &["--pss"][..]),
        ("alice-rsa", &["--digest", "sha512"][..]),
        ("bob-p256", &[][..]),
        ("carol-p384", &[][..]),
    ] {
        // multipart/signed
        let out = w.path("signed.eml");
        let mut args = vec!["sign", "--signer", key];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[s(&msg), "-o", s(&out)]);
        ok(&agent.cli(&args), "tokenmail sign");
        let text = std::fs::read_to_string(&out).expect("utf-8 output");
        assert!(
            text.starts_with("From: alice@example.com"),
            "headers kept outside"
        );
        assert!(text.contains("multipart/signed; protocol=\"application/pkcs7-signature\""));
        let v = openssl_verify(&agent, &["-in", s(&out), "-out", s(&w.path("content"))]);
        ok(&v, &format!("openssl verify multipart {key} {extra:?}"));
        // the verified content is the entity, 8-bit body re-encoded to base64 before signing
        let content = std::fs::read(w.path("content")).expect("content");
        assert!(content.starts_with(b"Content-Type: text/plain; charset=utf-8"));

        // opaque
        let mut args = vec!["sign", "--opaque", "--signer", key];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[s(&msg), "-o", s(&out)]);
        ok(&agent.cli(&args), "tokenmail sign --opaque");
        assert!(std::fs::read_to_string(&out)
            .expect("text")
            .contains("smime-type=signed-data"));
        ok(
            &openssl_verify(&agent, &["-in", s(&out), "-out", "/dev/null"]),
            "openssl opaque",
        );

        // detached DER and PEM over the exact bytes
        let der = w.path("sig.der");
        let mut args = vec!["sign", "--detached-der", "--signer", key];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[s(&msg), "-o", s(&der)]);
        ok(&agent.cli(&args), "tokenmail sign --detached-der");
        ok(
            &openssl_verify(
                &agent,
                &[
                    "-binary",
                    "-inform",
                    "DER",
                    "-in",
                    s(&der),
                    "-content",
                    s(&msg),
                    "-out",
                    "/dev/null",
                ],
            ),
            "openssl detached DER",
        );
        let pem = w.path("sig.pem");
        ok(
            &agent.cli(&[
                "sign",
                "--detached-pem",
                "--signer",
                key,
                s(&msg),
                "-o",
                s(&pem),
            ]),
            "tokenmail sign --detached-pem",
        );
        ok(
            &openssl_verify(
                &agent,
                &[
                    "-binary",
                    "-inform",
                    "PEM",
                    "-in",
                    s(&pem),
                    "-content",
                    s(&msg),
                    "-out",
                    "/dev/null",
                ],
            ),
            "openssl detached PEM",
        );
        // and our own verifier agrees, with --signature
        let mut v = agent.cli_cmd(&[
            "verify",
            "--trust",
            s(&agent.fixture.pki("root.pem")),
            "--signature",
            s(&der),
            s(&msg),
        ]);
        let o = run(&mut v);
        // The sender check reads the content's From (alice): only alice's key passes it.
        let expected = if key == "alice-rsa" { 0 } else { 1 };
        assert_eq!(o.status.code(), Some(expected), "{key}: {}", stdout(&o));
    }
}

#[test]
fn gpgsm_verifies_our_signatures() {
    let agent = Agent::start();
    let w = Work::new();
    let home = w.path("gnupg");
    std::fs::create_dir(&home).expect("mkdir");
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    let _daemons = process::GpgDaemons::new(&home);
    let gpgsm = |args: &[&str]| -> Output {
        run(Command::new("gpgsm")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--disable-crl-checks", "--status-fd", "1"])
            .args(args)
            .stdin(Stdio::null()))
    };
    let o = gpgsm(&[
        "--import",
        s(&agent.fixture.pki("root.pem")),
        s(&agent.fixture.pki("intermediate.pem")),
    ]);
    ok(&o, "gpgsm import of the test root and intermediate");
    let fp = stdout(&run(Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha1", "-in"])
        .arg(agent.fixture.pki("root.pem"))));
    let fp = fp
        .trim()
        .split('=')
        .nth(1)
        .expect("fingerprint")
        .to_string();
    std::fs::write(home.join("trustlist.txt"), format!("{fp} S relax\n")).expect("trustlist");
    let msg = w.write("m.eml", MESSAGE);
    for key in ["alice-rsa", "bob-p256", "carol-p384"] {
        let der = w.path(&format!("{key}.sig"));
        ok(
            &agent.cli(&[
                "sign",
                "--detached-der",
                "--signer",
                key,
                s(&msg),
                "-o",
                s(&der),
            ]),
            "sign",
        );
        let o = gpgsm(&["--verify", s(&der), s(&msg)]);
        ok(&o, &format!("gpgsm --verify {key}"));
        assert!(
            stdout(&o).contains("[GNUPG:] GOODSIG"),
            "{key}: {}",
            stdout(&o)
        );
        assert!(
            stdout(&o).contains("[GNUPG:] TRUST_FULLY") || stdout(&o).contains("VALIDSIG"),
            "{key}: {}",
            stdout(&o)
        );
        // opaque too
        let opaque = w.path(&format!("{key}.p7m"));
        ok(
            &agent.cli(&[
                "sign",
                "--opaque",
                "--signer",
                key,
                s(&msg),
                "-o",
                s(&opaque),
            ]),
            "sign opaque",
        );
        // gpgsm reads CMS, not MIME: take the structure out with openssl.
        let cms = w.path(&format!("{key}.cms"));
        let o = run(Command::new("openssl").args([
            "cms",
            "-cmsout",
            "-in",
            s(&opaque),
            "-outform",
            "DER",
            "-out",
            s(&cms),
        ]));
        ok(&o, "extract CMS");
        let o = gpgsm(&["--verify", s(&cms)]);
        ok(&o, &format!("gpgsm --verify opaque {key}"));
        assert!(
            stdout(&o).contains("[GNUPG:] GOODSIG"),
            "{key}: {}",
            stdout(&o)
        );
    }
}

#[test]
fn openssl_signatures_with_the_same_token_key_verify_with_tokenmail() {
    let agent = Agent::start();
    let w = Work::new();
    let msg = w.write("m.eml", MESSAGE);
    let f = &agent.fixture;
    for (key, md, extra) in [
        ("alice-rsa", "sha256", &[][..]),
        (
            "alice-rsa",
            "sha384",
            &["-keyopt", "rsa_padding_mode:pss"][..],
        ),
        ("bob-p256", "sha256", &[][..]),
        ("carol-p384", "sha512", &[][..]),
    ] {
        let out = w.path("osig.eml");
        let uri = format!(
            "pkcs11:token={};object={key};type=private?pin-source=file:{}",
            f.label,
            f.pin_file().display()
        );
        let o = run(Command::new("openssl")
            .env("OPENSSL_CONF", f.dir.join("openssl-pkcs11.cnf"))
            .env("SOFTHSM2_CONF", f.dir.join("softhsm2.conf"))
            .args([
                "cms", "-sign", "-engine", "pkcs11", "-keyform", "engine", "-md", md,
            ])
            .arg("-signer")
            .arg(f.pki(&format!("{key}.pem")))
            .arg("-inkey")
            .arg(&uri)
            .args(extra)
            .arg("-certfile")
            .arg(f.pki("intermediate.pem"))
            .args(["-in", s(&msg), "-out", s(&out)]));
        ok(&o, &format!("openssl cms -sign with the token key {key}"));
        // openssl signs the whole input; the From it signs is inside. Ours reads the outer From.
        let o = agent.cli(&[
            "verify",
            "--json",
            "--trust",
            s(&f.pki("root.pem")),
            s(&out),
        ]);
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
        let checks = report["signers"][0]["checks"].as_array().expect("checks");
        for c in checks {
            if c["name"] != "sender_email" {
                assert_eq!(c["ok"], true, "{key} {md}: {c}");
            }
        }
        if key == "alice-rsa" {
            assert!(o.status.success(), "{key}: {}", stdout(&o));
            assert_eq!(report["valid"], true);
        }
    }
}

#[test]
fn openssl_encrypts_to_token_certificates_and_tokenmail_decrypts_on_the_token() {
    let agent = Agent::start();
    let w = Work::new();
    let msg = w.write("m.eml", MESSAGE);
    let f = &agent.fixture;
    // (what, cipher, recipients, key options given after each -recip)
    let oaep256: &[&str] = &[
        "-keyopt",
        "rsa_padding_mode:oaep",
        "-keyopt",
        "rsa_oaep_md:sha256",
    ];
    let oaep1: &[&str] = &["-keyopt", "rsa_padding_mode:oaep"];
    let cases: &[(&str, &str, &[&str], &[&str])] = &[
        (
            "aes-256-gcm, RSA PKCS#1",
            "-aes-256-gcm",
            &["alice-rsa"],
            &[],
        ),
        (
            "aes-128-cbc, RSA OAEP-SHA256",
            "-aes-128-cbc",
            &["alice-rsa"],
            oaep256,
        ),
        (
            "aes-256-cbc, RSA OAEP-SHA1",
            "-aes-256-cbc",
            &["alice-rsa"],
            oaep1,
        ),
        (
            "aes-128-gcm, ECDH P-256",
            "-aes-128-gcm",
            &["bob-p256"],
            &[],
        ),
        (
            "aes-256-cbc, ECDH P-384",
            "-aes-256-cbc",
            &["carol-p384"],
            &[],
        ),
        ("3des (legacy), RSA", "-des3", &["alice-rsa"], &[]),
        (
            "aes-256-gcm, three recipients",
            "-aes-256-gcm",
            &["dave-rsa", "carol-p384", "erin-p256"],
            &[],
        ),
    ];
    for (what, cipher, recips, keyopts) in cases {
        let enc = w.path("enc.eml");
        let mut c = Command::new("openssl");
        c.args(["cms", "-encrypt", cipher, "-in", s(&msg), "-out", s(&enc)]);
        for r in *recips {
            c.arg("-recip")
                .arg(f.pki(&format!("{r}.pem")))
                .args(*keyopts);
        }
        ok(&run(&mut c), &format!("openssl encrypt {what}"));
        let dec = w.path("dec.eml");
        let o = agent.cli(&["decrypt", "--json", s(&enc), "-o", s(&dec)]);
        ok(&o, &format!("tokenmail decrypt {what}"));
        assert_eq!(
            std::fs::read(&dec).expect("plaintext"),
            MESSAGE,
            "{what}: exact bytes"
        );
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        assert_eq!(
            report["authenticated"],
            what.contains("gcm"),
            "{what}: {report}"
        );
    }
    // DER and PEM bare CMS, -stream BER
    for form in [
        &["-outform", "DER"][..],
        &["-outform", "PEM"][..],
        &["-stream", "-outform", "DER"][..],
    ] {
        let enc = w.path("enc.bin");
        let o = run(Command::new("openssl")
            .args(["cms", "-encrypt", "-aes-256-gcm"])
            .args(form)
            .args(["-in", s(&msg), "-out", s(&enc)])
            .arg(f.pki("bob-p256.pem")));
        ok(&o, "openssl encrypt bare");
        let dec = w.path("dec.bin");
        ok(
            &agent.cli(&["decrypt", s(&enc), "-o", s(&dec)]),
            &format!("decrypt {form:?}"),
        );
        assert_eq!(std::fs::read(&dec).expect("plaintext"), MESSAGE);
    }
}

#[test]
fn tokenmail_encryption_decrypts_with_openssl_for_every_cipher_and_recipient_kind() {
    let agent = Agent::start();
    let w = Work::new();
    let msg = w.write("m.eml", MESSAGE);
    let f = &agent.fixture;
    for cipher in ["aes256-gcm", "aes128-gcm", "aes256-cbc", "aes128-cbc"] {
        for (recip, key) in [("dave-rsa", "dave-rsa.key"), ("erin-p256", "erin-p256.key")] {
            let enc = w.path("enc.eml");
            // encrypt needs no agent at all
            let o = run(Command::new(tokenmail_e2e::bin("tokenmail"))
                .args([
                    "--socket",
                    "/nonexistent/agent.sock",
                    "encrypt",
                    "--cipher",
                    cipher,
                    "--recipient-cert",
                ])
                .arg(f.pki(&format!("{recip}.pem")))
                .args([s(&msg), "-o", s(&enc)]));
            ok(&o, &format!("tokenmail encrypt {cipher} {recip}"));
            let head = std::fs::read_to_string(&enc).expect("text");
            assert!(
                head.starts_with("From: alice@example.com"),
                "outer headers kept"
            );
            let dec = w.path("dec.eml");
            let o = run(Command::new("openssl")
                .args(["cms", "-decrypt", "-in", s(&enc), "-out", s(&dec), "-inkey"])
                .arg(f.pki(key))
                .arg("-recip")
                .arg(f.pki(&format!("{recip}.pem"))));
            ok(&o, &format!("openssl decrypt {cipher} {recip}"));
            assert_eq!(
                std::fs::read(&dec).expect("plaintext"),
                entity(MESSAGE),
                "{cipher} {recip}"
            );
        }
    }
    // and round trip through the token for the token's own certificates, several recipients at once
    let enc = w.path("multi.eml");
    let mut c = Command::new(tokenmail_e2e::bin("tokenmail"));
    c.args([
        "encrypt",
        "--recipient-cert",
        s(&f.pki("alice-rsa.pem")),
        "--recipient-cert",
        s(&f.pki("bob-p256.pem")),
        "--recipient-cert",
        s(&f.pki("carol-p384.pem")),
        s(&msg),
        "-o",
        s(&enc),
    ]);
    ok(&run(&mut c), "encrypt to three");
    let dec = w.path("multi.dec");
    ok(
        &agent.cli(&["decrypt", s(&enc), "-o", s(&dec)]),
        "decrypt on the token",
    );
    // The outer headers (From, To, Subject) travel outside the encryption and are put back:
    // the whole message comes back, byte for byte.
    assert_eq!(std::fs::read(&dec).expect("plaintext"), MESSAGE);
    ok(
        &agent.cli(&["decrypt", "--entity-only", s(&enc), "-o", s(&dec)]),
        "decrypt --entity-only",
    );
    assert_eq!(std::fs::read(&dec).expect("plaintext"), entity(MESSAGE));
}

#[test]
fn tampered_wrong_recipient_and_truncated_input_fail_cleanly() {
    let agent = Agent::start();
    let w = Work::new();
    let msg = w.write("m.eml", MESSAGE);
    let f = &agent.fixture;
    // Tampered GCM: one ciphertext byte flipped in the DER.
    let der = w.path("enc.der");
    ok(
        &run(Command::new("openssl")
            .args([
                "cms",
                "-encrypt",
                "-aes-256-gcm",
                "-outform",
                "DER",
                "-in",
                s(&msg),
                "-out",
                s(&der),
            ])
            .arg(f.pki("alice-rsa.pem"))),
        "encrypt",
    );
    let mut bytes = std::fs::read(&der).expect("der");
    let n = bytes.len();
    bytes[n - 40] ^= 0x01;
    let bad = w.write("bad.der", &bytes);
    let out = w.path("out.txt");
    let o = agent.cli(&["decrypt", s(&bad), "-o", s(&out)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("decryption failed"), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1);
    assert!(!out.exists(), "no plaintext released when the tag fails");
    // to stdout too: nothing printed
    let o = agent.cli(&["decrypt", s(&bad)]);
    assert!(!o.status.success());
    assert!(o.stdout.is_empty(), "no unverified plaintext on stdout");
    // Tampered CBC padding area: uniform error.
    ok(
        &run(Command::new("openssl")
            .args([
                "cms",
                "-encrypt",
                "-aes-128-cbc",
                "-outform",
                "DER",
                "-in",
                s(&msg),
                "-out",
                s(&der),
            ])
            .arg(f.pki("bob-p256.pem"))),
        "encrypt",
    );
    let mut bytes = std::fs::read(&der).expect("der");
    let n = bytes.len();
    bytes[n - 1] ^= 0x55;
    let bad = w.write("bad2.der", &bytes);
    let o = agent.cli(&["decrypt", s(&bad), "-o", s(&out)]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("decryption failed") || stderr(&o).contains("not a readable"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    // Wrong recipient (dave is not on the token).
    ok(
        &run(Command::new("openssl")
            .args([
                "cms",
                "-encrypt",
                "-aes-256-gcm",
                "-in",
                s(&msg),
                "-out",
                s(&w.path("dave.eml")),
            ])
            .arg(f.pki("dave-rsa.pem"))),
        "encrypt to dave",
    );
    let o = agent.cli(&["decrypt", s(&w.path("dave.eml")), "-o", s(&out)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is a recipient"), "{}", stderr(&o));
    assert!(!out.exists());
    // Truncated.
    let full = std::fs::read(w.path("dave.eml")).expect("read");
    let cut = w.write("cut.eml", &full[..full.len() / 2]);
    let o = agent.cli(&["decrypt", s(&cut), "-o", s(&out)]);
    assert!(!o.status.success());
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    // Garbage.
    let junk = w.write("junk", b"this is not a message at all");
    let o = agent.cli(&["decrypt", s(&junk), "-o", s(&out)]);
    assert!(!o.status.success());
    assert!(!out.exists());
}

#[test]
fn verify_rejects_a_tampered_body_and_a_wrong_sender() {
    let agent = Agent::start();
    let w = Work::new();
    let msg = w.write("m.eml", MESSAGE);
    let signed = w.path("s.eml");
    ok(
        &agent.cli(&[
            "sign",
            "--signer",
            "alice@example.com",
            s(&msg),
            "-o",
            s(&signed),
        ]),
        "sign",
    );
    let root = agent.fixture.pki("root.pem");
    let o = agent.cli(&["verify", "--trust", s(&root), s(&signed)]);
    ok(&o, "verify");
    assert!(stdout(&o).contains("alice@example.com"));
    // The body is quoted-printable (8-bit text input): change one character of it.
    let text = std::fs::read_to_string(&signed).expect("text");
    let idx = text
        .find("Content-Transfer-Encoding: quoted-printable\r\n\r\n")
        .expect("encoded part");
    let body_at = text[idx..]
        .find("\n\n")
        .or_else(|| text[idx..].find("\r\n\r\n"))
        .expect("body")
        + idx
        + 4;
    let mut bytes = text.into_bytes();
    bytes[body_at] = if bytes[body_at] == b'A' { b'B' } else { b'A' };
    let bad = w.write("bad.eml", &bytes);
    let o = agent.cli(&["verify", "--trust", s(&root), s(&bad)]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("FAILED message_digest"),
        "{}",
        stdout(&o)
    );
    // Sender mismatch: bob's key signing a message From alice.
    ok(
        &agent.cli(&["sign", "--signer", "bob-p256", s(&msg), "-o", s(&signed)]),
        "sign",
    );
    let o = agent.cli(&["verify", "--trust", s(&root), s(&signed)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("FAILED sender_email"), "{}", stdout(&o));
    // No trust anchor at all: a clear error.
    let o = run(Command::new(tokenmail_e2e::bin("tokenmail"))
        .args(["verify", s(&signed)])
        .env_remove("TOKENMAIL_TRUST"));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no trust anchor"), "{}", stderr(&o));
}

#[test]
fn sign_then_encrypt_and_triple_wrap_interoperate() {
    let agent = Agent::start();
    let w = Work::new();
    let f = &agent.fixture;
    let msg = w.write(
        "m.eml",
        b"From: alice@example.com\r\nTo: alice@example.com\r\nSubject: note to self\r\nContent-Type: text/plain\r\n\r\nsigned, sealed, delivered\r\n",
    );
    let root = f.pki("root.pem");
    // Signed then encrypted: decrypt verifies and reports the inner signature.
    let se = w.path("se.eml");
    ok(
        &agent.cli(&[
            "encrypt",
            "--sign",
            "--signer",
            "alice-rsa",
            "--recipient-cert",
            s(&f.pki("alice-rsa.pem")),
            s(&msg),
            "-o",
            s(&se),
        ]),
        "encrypt --sign",
    );
    // a recipient refused before anything is signed: no signature in the audit log
    let signing_only = w.path("signing-only.pem");
    let o = process::output(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=Signing Only",
                "-addext",
                "keyUsage=critical,digitalSignature",
                "-keyout",
            ])
            .arg(w.path("signing-only.key"))
            .arg("-out")
            .arg(&signing_only),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let signatures = || {
        std::fs::read_to_string(agent.audit_log())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"op\":\"sign"))
            .count()
    };
    let before = signatures();
    let o = agent.cli(&[
        "encrypt",
        "--sign",
        "--signer",
        "alice-rsa",
        "--recipient-cert",
        s(&signing_only),
        s(&msg),
        "-o",
        s(&w.path("refused.eml")),
    ]);
    assert!(!o.status.success(), "a signing-only recipient accepted");
    assert!(stderr(&o).contains("Signing Only"), "{}", stderr(&o));
    assert_eq!(
        signatures(),
        before,
        "signed before the recipient was refused"
    );
    assert!(before > 0, "the audit log records signatures");

    let out = w.path("out.eml");
    let o = agent.cli(&[
        "decrypt",
        "--json",
        "--trust",
        s(&root),
        s(&se),
        "-o",
        s(&out),
    ]);
    ok(&o, "decrypt signed+encrypted");
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(report["signature"]["checked"], true, "{report}");
    assert_eq!(report["signature"]["valid"], true, "{report}");
    let text = std::fs::read_to_string(&out).expect("text");
    assert!(
        text.starts_with("From: alice@example.com\r\n"),
        "outer headers restored: {text}"
    );
    assert!(text.contains("multipart/signed"));
    // openssl decrypts it with the same token key (pkcs11 engine) and verifies the inner signature.
    let uri = format!(
        "pkcs11:token={};object=alice-rsa;type=private?pin-source=file:{}",
        f.label,
        f.pin_file().display()
    );
    let inner = w.path("inner.eml");
    ok(
        &run(Command::new("openssl")
            .env("OPENSSL_CONF", f.dir.join("openssl-pkcs11.cnf"))
            .env("SOFTHSM2_CONF", f.dir.join("softhsm2.conf"))
            .args([
                "cms", "-decrypt", "-engine", "pkcs11", "-keyform", "engine", "-inkey", &uri,
                "-recip",
            ])
            .arg(f.pki("alice-rsa.pem"))
            .args(["-in", s(&se), "-out", s(&inner)])),
        "openssl decrypts with the token key",
    );
    ok(
        &openssl_verify(&agent, &["-in", s(&inner), "-out", "/dev/null"]),
        "openssl verifies the inner signature",
    );

    // Triple wrap: openssl verifies the outer signature; we check both and decrypt.
    let tw = w.path("tw.eml");
    ok(
        &agent.cli(&[
            "encrypt",
            "--triple-wrap",
            "--signer",
            "alice@example.com",
            "--recipient-cert",
            s(&f.pki("alice-rsa.pem")),
            s(&msg),
            "-o",
            s(&tw),
        ]),
        "encrypt --triple-wrap",
    );
    let enveloped = w.path("enveloped.eml");
    ok(
        &openssl_verify(&agent, &["-in", s(&tw), "-out", s(&enveloped)]),
        "openssl verifies the outer signature",
    );
    assert!(std::fs::read_to_string(&enveloped)
        .expect("text")
        .to_ascii_lowercase()
        .contains("enveloped-data"));
    let out2 = w.path("out2.eml");
    let o = agent.cli(&["decrypt", "--trust", s(&root), s(&tw), "-o", s(&out2)]);
    ok(&o, "decrypt triple wrap");
    assert!(
        stderr(&o).contains("outer signature valid"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("inner signature valid"),
        "{}",
        stderr(&o)
    );
    let o = agent.cli(&["verify", "--trust", s(&root), s(&out2)]);
    ok(&o, "the decrypted inner message verifies");
}

#[test]
fn encrypt_to_self_by_default_and_no_self() {
    let agent = Agent::start();
    let w = Work::new();
    let f = &agent.fixture;
    let msg = w.write("m.eml", MESSAGE); // From: alice@example.com, whose key is on the token
    let enc = w.path("enc.eml");
    ok(
        &agent.cli(&[
            "encrypt",
            "--recipient-cert",
            s(&f.pki("dave-rsa.pem")),
            s(&msg),
            "-o",
            s(&enc),
        ]),
        "encrypt to dave (+ self)",
    );
    // The sender can read what she sent: the token has alice's key.
    let dec = w.path("dec.eml");
    ok(
        &agent.cli(&["decrypt", s(&enc), "-o", s(&dec)]),
        "sender decrypts her own copy",
    );
    assert_eq!(std::fs::read(&dec).expect("plaintext"), MESSAGE);
    // dave still can, with openssl.
    let o = run(Command::new("openssl")
        .args(["cms", "-decrypt", "-in", s(&enc), "-inkey"])
        .arg(f.pki("dave-rsa.key"))
        .arg("-recip")
        .arg(f.pki("dave-rsa.pem")));
    ok(&o, "dave decrypts with openssl");
    // --no-self: only dave.
    ok(
        &agent.cli(&[
            "encrypt",
            "--no-self",
            "--recipient-cert",
            s(&f.pki("dave-rsa.pem")),
            s(&msg),
            "-o",
            s(&enc),
        ]),
        "encrypt --no-self",
    );
    let o = agent.cli(&["decrypt", s(&enc), "-o", s(&dec)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is a recipient"), "{}", stderr(&o));
    // No agent: encryption still works, and says there is no self copy.
    let o = run(Command::new(tokenmail_e2e::bin("tokenmail"))
        .args([
            "--socket",
            "/nonexistent/agent.sock",
            "encrypt",
            "--recipient-cert",
        ])
        .arg(f.pki("dave-rsa.pem"))
        .args([s(&msg), "-o", s(&enc)]));
    ok(&o, "encrypt without an agent");
    assert!(
        stderr(&o).contains("not encrypted to self"),
        "{}",
        stderr(&o)
    );
}

/// A throwaway GNUPGHOME trusting the test root; gpg-agent stopped on drop.
struct Gpgsm {
    home: PathBuf,
}

impl Gpgsm {
    fn new(w: &Work, agent: &Agent) -> Gpgsm {
        let home = w.path("gnupg-enc");
        std::fs::create_dir(&home).expect("mkdir");
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod");
        let g = Gpgsm { home };
        let f = &agent.fixture;
        ok(
            &g.run(&[
                "--import",
                s(&f.pki("root.pem")),
                s(&f.pki("intermediate.pem")),
            ]),
            "gpgsm import CAs",
        );
        let fp = stdout(&run(Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha1", "-in"])
            .arg(f.pki("root.pem"))));
        let fp = fp
            .trim()
            .split('=')
            .nth(1)
            .expect("fingerprint")
            .to_string();
        std::fs::write(g.home.join("trustlist.txt"), format!("{fp} S relax\n")).expect("trustlist");
        g
    }

    /// gpgsm on this home: batch, no CRL checks, empty loopback passphrase, status on stdout.
    fn command(&self) -> Command {
        let mut c = Command::new("gpgsm");
        c.env("GNUPGHOME", &self.home)
            .args([
                "--batch",
                "--disable-crl-checks",
                "--pinentry-mode",
                "loopback",
                "--passphrase-fd",
                "0",
                "--status-fd",
                "1",
            ])
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        run(self.command().args(args))
    }
}

impl Drop for Gpgsm {
    fn drop(&mut self) {
        process::kill_gpg_daemons(&self.home);
    }
}

#[test]
fn gpgsm_encryption_interoperates_both_ways() {
    let agent = Agent::start();
    let w = Work::new();
    let f = &agent.fixture;
    let g = Gpgsm::new(&w, &agent);
    let msg = w.write("m.eml", MESSAGE);
    // gpgsm encrypts to alice's certificate (her key is on the token); we decrypt on the token.
    ok(
        &g.run(&["--import", s(&f.pki("alice-rsa.pem"))]),
        "gpgsm import alice",
    );
    let enc = w.path("gpgsm.p7m");
    ok(
        &g.run(&[
            "--encrypt",
            "-r",
            "alice@example.com",
            "--output",
            s(&enc),
            s(&msg),
        ]),
        "gpgsm --encrypt",
    );
    let dec = w.path("dec.eml");
    ok(
        &agent.cli(&["decrypt", s(&enc), "-o", s(&dec)]),
        "tokenmail decrypts gpgsm's message on the token",
    );
    assert_eq!(
        std::fs::read(&dec).expect("plaintext"),
        MESSAGE,
        "exact bytes"
    );
    // … and with gpgsm's armor (-----BEGIN ENCRYPTED MESSAGE-----)
    let armored = w.path("gpgsm.pem");
    ok(
        &g.run(&[
            "--armor",
            "--encrypt",
            "-r",
            "alice@example.com",
            "--output",
            s(&armored),
            s(&msg),
        ]),
        "gpgsm --armor --encrypt",
    );
    let text = std::fs::read_to_string(&armored).expect("armored");
    assert!(
        text.starts_with("-----BEGIN ENCRYPTED MESSAGE-----"),
        "{text}"
    );
    let dec = w.path("dec-armored.eml");
    ok(
        &agent.cli(&["decrypt", s(&armored), "-o", s(&dec)]),
        "tokenmail decrypts gpgsm's armored message",
    );
    assert_eq!(std::fs::read(&dec).expect("plaintext"), MESSAGE);
    // We encrypt to dave (software key imported into gpgsm as PKCS#12); gpgsm decrypts.
    let gpgsm = || {
        // gpg-agent (needed for a private key) starts on demand; under a loaded test run its
        // start can outlast gpgsm's wait: start it explicitly before each attempt.
        let _ = run(Command::new("gpgconf")
            .env("GNUPGHOME", &g.home)
            .args(["--launch", "gpg-agent"]));
        g.command()
    };
    if let Err(e) = process::gpgsm_import_key_as_p12(
        &gpgsm,
        &f.pki("dave-rsa.key"),
        &f.pki("dave-rsa.pem"),
        &w.path("dave.p12"),
        6,
    ) {
        panic!("gpgsm imports dave's key: {e}");
    }
    for cipher in ["aes256-cbc", "aes128-cbc", "aes256-gcm"] {
        let ours = w.path("ours.eml");
        ok(
            // gpgsm 2.2 cannot read RSA-OAEP (checked: it fails on openssl's OAEP too).
            &agent.cli(&[
                "encrypt",
                "--no-self",
                "--rsa-padding",
                "pkcs1",
                "--cipher",
                cipher,
                "--recipient-cert",
                s(&f.pki("dave-rsa.pem")),
                s(&msg),
                "-o",
                s(&ours),
            ]),
            "tokenmail encrypt to dave",
        );
        let der = w.path("ours.der");
        ok(
            &run(Command::new("openssl").args([
                "cms",
                "-cmsout",
                "-in",
                s(&ours),
                "-outform",
                "DER",
                "-out",
                s(&der),
            ])),
            "extract CMS",
        );
        let out = w.path("gpgsm-dec.eml");
        let _ = std::fs::remove_file(&out);
        let o = g.run(&["--decrypt", "--output", s(&out), s(&der)]);
        if cipher.ends_with("gcm") {
            // gpgsm 2.2 reads AuthEnvelopedData only from 2.2.? on; accept either outcome but never garbage.
            if o.status.success() {
                assert_eq!(std::fs::read(&out).expect("plaintext"), entity(MESSAGE));
            }
            continue;
        }
        ok(&o, &format!("gpgsm --decrypt {cipher}"));
        assert_eq!(
            std::fs::read(&out).expect("plaintext"),
            entity(MESSAGE),
            "{cipher}"
        );
    }
    // gpgsm signs with dave's key, armored, opaque and detached; tokenmail verifies both
    let from_dave = String::from_utf8_lossy(MESSAGE).replace("From: alice", "From: dave");
    let dave_msg = w.write("dave.eml", from_dave.as_bytes());
    let opaque = w.path("gpgsm-opaque.pem");
    let detached = w.path("gpgsm-detached.pem");
    for (extra, out) in [
        (&["--sign"][..], &opaque),
        (&["--detach-sign"][..], &detached),
    ] {
        let mut args = vec!["--armor", "-u", "dave@example.com", "--output", s(out)];
        args.extend_from_slice(extra);
        args.push(s(&dave_msg));
        ok(&g.run(&args), "gpgsm --armor --sign");
        let text = std::fs::read_to_string(out).expect("armored");
        assert!(text.starts_with("-----BEGIN SIGNED MESSAGE-----"), "{text}");
    }
    let root = f.pki("root.pem");
    for args in [
        vec![
            "verify",
            "--revocation",
            "off",
            "--trust",
            s(&root),
            s(&opaque),
        ],
        vec![
            "verify",
            "--revocation",
            "off",
            "--trust",
            s(&root),
            "--signature",
            s(&detached),
            s(&dave_msg),
        ],
    ] {
        let o = agent.cli(&args);
        ok(&o, "tokenmail verifies gpgsm's armored signature");
        assert!(
            stdout(&o).contains("Good signature from \"EMAIL=dave@example.com,CN=Dave Example\"")
                && stdout(&o).contains("signature valid"),
            "{}",
            stdout(&o)
        );
    }
}

#[test]
fn default_cipher_follows_the_recipients_announced_capabilities() {
    let agent = Agent::start();
    let w = Work::new();
    let f = &agent.fixture;
    let msg = w.write("m.eml", MESSAGE);
    // Two recipients' certificates with an smimeCapabilities extension (RFC 4262): one that
    // lists only AES-256-CBC, one that lists AES-256-GCM too.
    let cbc_only = "DER:300D300B060960864801650304012A";
    let with_gcm = "DER:301A300B060960864801650304012E300B060960864801650304012A";
    for (name, caps, expect_gcm) in [("frank", cbc_only, false), ("grace", with_gcm, true)] {
        let key = w.path(&format!("{name}.key"));
        ok(
            &run(Command::new("openssl").args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                s(&key),
            ])),
            "key",
        );
        let csr = w.path(&format!("{name}.csr"));
        ok(
            &run(Command::new("openssl").args([
                "req",
                "-new",
                "-key",
                s(&key),
                "-subj",
                &format!("/CN={name}"),
                "-out",
                s(&csr),
            ])),
            "csr",
        );
        let ext = w.write(
            &format!("{name}.ext"),
            format!("keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\nsubjectAltName=email:{name}@example.com\n1.2.840.113549.1.9.15={caps}\n").as_bytes(),
        );
        let cert = w.path(&format!("{name}.pem"));
        ok(
            &run(Command::new("openssl")
                .args(["x509", "-req", "-in", s(&csr), "-days", "30", "-CA"])
                .arg(f.pki("intermediate.pem"))
                .arg("-CAkey")
                .arg(f.pki("intermediate.key"))
                .args(["-set_serial", "7", "-extfile", s(&ext), "-out", s(&cert)])),
            "issue",
        );
        let enc = w.path(&format!("{name}.eml"));
        ok(
            &agent.cli(&[
                "encrypt",
                "--no-self",
                "--recipient-cert",
                s(&cert),
                s(&msg),
                "-o",
                s(&enc),
            ]),
            "encrypt",
        );
        let text = std::fs::read_to_string(&enc).expect("text");
        assert_eq!(
            text.contains("smime-type=authEnveloped-data"),
            expect_gcm,
            "{name}: {text}"
        );
        assert_eq!(
            text.contains("smime-type=enveloped-data"),
            !expect_gcm,
            "{name}"
        );
        // and it decrypts with openssl either way
        let dec = w.path("dec");
        ok(
            &run(Command::new("openssl").args([
                "cms",
                "-decrypt",
                "-in",
                s(&enc),
                "-inkey",
                s(&key),
                "-recip",
                s(&cert),
                "-out",
                s(&dec),
            ])),
            "openssl decrypt",
        );
        assert_eq!(std::fs::read(&dec).expect("plaintext"), entity(MESSAGE));
    }
}

/// `encrypt --to EMAIL` finds the certificate on the agent's tokens (bob's P-256 key:
/// ECDH) and in the certificate directory (dave, a software key openssl holds).
#[test]
fn encrypt_to_addresses_from_the_tokens_and_the_certificate_store() {
    let agent = Agent::start();
    let w = Work::new();
    let msg = w.write("m.eml", MESSAGE);
    let store = w.path("certs");
    std::fs::create_dir(&store).expect("mkdir");
    std::fs::copy(agent.fixture.pki("dave-rsa.pem"), store.join("dave.pem")).expect("copy");
    let enc = w.path("enc.eml");
    let o = run(agent
        .cli_cmd(&[
            "encrypt",
            "--no-self",
            "--to",
            "bob@example.com",
            "--to",
            "dave@example.com",
            s(&msg),
            "-o",
            s(&enc),
        ])
        .env("TOKENMAIL_CERTS", &store));
    ok(&o, "encrypt --to");
    let dec = w.path("dec.eml");
    ok(
        &agent.cli(&["decrypt", s(&enc), "-o", s(&dec)]),
        "bob's token key decrypts",
    );
    assert_eq!(std::fs::read(&dec).expect("plain"), MESSAGE);
    ok(
        &run(Command::new("openssl")
            .args([
                "cms",
                "-decrypt",
                "-in",
                s(&enc),
                "-out",
                s(&w.path("dave.eml")),
            ])
            .arg("-recip")
            .arg(agent.fixture.pki("dave-rsa.pem"))
            .arg("-inkey")
            .arg(agent.fixture.pki("dave-rsa.key"))),
        "openssl decrypts for dave",
    );
}

/// The decrypt cipher policy. By default 3DES and AES-CBC messages decrypt with a warning
/// naming the cipher; `--accept aes` refuses 3DES and `--accept authenticated` (or the
/// configuration's `[decrypt] accept`) refuses CBC, in one line, with no output file and
/// no key operation; the agent's `decrypt` stream follows its own `[decrypt] accept`.
#[test]
fn decrypt_cipher_policy_warns_or_refuses_3des_and_cbc() {
    let w = Work::new();
    let cfg = w.write("agent.toml", b"[decrypt]\naccept = \"aes\"\n");
    let agent = Agent::start_with(&["--config", s(&cfg)], true);
    let msg = w.write("m.eml", MESSAGE);
    let f = &agent.fixture;
    let encrypt = |cipher: &str| {
        let out = w.path(&format!("m{cipher}.eml"));
        ok(
            &run(Command::new("openssl")
                .args(["cms", "-encrypt", cipher, "-in", s(&msg), "-out", s(&out)])
                .arg(f.pki("alice-rsa.pem"))),
            &format!("openssl {cipher}"),
        );
        out
    };
    let des3 = encrypt("-des3");
    let cbc = encrypt("-aes-128-cbc");
    let gcm = encrypt("-aes-256-gcm");
    let dec = w.path("out.eml");

    // default: decrypts, says so
    let o = agent.cli(&["decrypt", s(&des3), "-o", s(&dec)]);
    ok(&o, "3DES decrypts by default");
    assert!(
        stderr(&o).contains("3DES-CBC is a legacy cipher"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&dec).expect("plaintext"), MESSAGE);
    std::fs::remove_file(&dec).expect("rm");
    let o = agent.cli(&["decrypt", "--json", s(&cbc), "-o", s(&dec)]);
    ok(&o, "CBC decrypts by default");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(j["cipher"], "AES-128-CBC");
    assert_eq!(j["authenticated"], false);
    std::fs::remove_file(&dec).expect("rm");

    // --accept aes: 3DES refused, AES-CBC still decrypts
    let o = agent.cli(&["decrypt", "--accept", "aes", s(&des3), "-o", s(&dec)]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("3DES-CBC") && e.contains("ask the sender"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(!dec.exists(), "nothing written");
    ok(
        &agent.cli(&["decrypt", "--accept", "aes", s(&cbc), "-o", s(&dec)]),
        "AES-CBC under aes",
    );
    std::fs::remove_file(&dec).expect("rm");

    // [decrypt] accept = "authenticated" in the configuration; --accept overrides it
    let strict = w.write("strict.toml", b"[decrypt]\naccept = \"authenticated\"\n");
    let o = process::output(
        agent
            .cli_cmd(&["decrypt", s(&cbc), "-o", s(&dec)])
            .env("TOKENMAIL_CONFIG", &strict),
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("AES-128-CBC, which does not protect its integrity"),
        "{}",
        stderr(&o)
    );
    assert!(!dec.exists());
    ok(
        &process::output(
            agent
                .cli_cmd(&["decrypt", s(&gcm), "-o", s(&dec)])
                .env("TOKENMAIL_CONFIG", &strict),
        ),
        "GCM under authenticated",
    );
    ok(
        &process::output(
            agent
                .cli_cmd(&["decrypt", "--accept", "any", s(&cbc), "-o", s(&dec)])
                .env("TOKENMAIL_CONFIG", &strict),
        ),
        "--accept any overrides the configuration",
    );
    let bad = w.write("bad.toml", b"[decrypt]\naccept = \"rot13\"\n");
    let o = process::output(
        agent
            .cli_cmd(&["decrypt", s(&cbc)])
            .env("TOKENMAIL_CONFIG", &bad),
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("[decrypt] accept = \"rot13\""),
        "{}",
        stderr(&o)
    );

    // the agent's stream operation follows the agent's [decrypt] accept = "aes"
    let mut c = tokenmail_proto::Client::connect(&agent.socket, "policy-test").expect("connect");
    let mut out = Vec::new();
    let e = c
        .call_stream(
            &tokenmail_proto::v1::Request::Decrypt,
            &std::fs::read(&des3).expect("read")[..],
            &mut out,
        )
        .expect_err("3DES refused by the agent");
    assert_eq!(
        e.code(),
        Some(tokenmail_proto::v1::ErrorCode::MechanismUnsupported),
        "{e}"
    );
    assert!(e.to_string().contains("3DES-CBC"), "{e}");
    assert!(out.is_empty());
    out.clear();
    c.call_stream(
        &tokenmail_proto::v1::Request::Decrypt,
        &std::fs::read(&cbc).expect("read")[..],
        &mut out,
    )
    .expect("AES-CBC through the agent under aes");
    // and an agent configuration with a bad value does not start
    let o = process::output(
        Command::new(tokenmail_e2e::bin("tokenmail-agent"))
            .args(["--foreground", "--config", s(&bad), "--socket"])
            .arg(w.path("x.sock")),
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("use \"any\", \"aes\" or \"authenticated\""),
        "{}",
        stderr(&o)
    );
}
