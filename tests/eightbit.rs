//! Real mail signs: a `multipart/mixed` message with an 8-bit UTF-8 text part, an HTML
//! alternative, a binary part, a line over 998 octets, a bare CR and a NUL — signed by the
//! CLI and through the socket, as multipart/signed and opaque; openssl and gpgsm verify each,
//! the decoded text is unchanged, and the CLI and the socket sign the same entity.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tokenmail_e2e::process::{self, GpgDaemons};
use tokenmail_e2e::{stderr, stdout, Agent};
use tokenmail_proto::v1::{Request, Response, SignForm};
use tokenmail_proto::Client;

const TEXT: &str = "Grüße aus München!\nÄrger mit Öl, Straße 5 — 20 €\n";

fn message() -> Vec<u8> {
    let long = "ü".repeat(700); // 1400 octets on one line
    let mut m = format!(
        "From: alice@example.com\n\
To: bob@example.com\n\
Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n\
MIME-Version: 1.0\n\
Content-Type: multipart/mixed; boundary=\"mix\"\n\
\n\
This is a multi-part message in MIME format.\n\
--mix\n\
Content-Type: multipart/alternative; boundary=\"alt\"\n\
\n\
--alt\n\
Content-Type: text/plain; charset=utf-8\n\
Content-Transfer-Encoding: 8bit\n\
\n\
{TEXT}--alt\n\
Content-Type: text/html; charset=utf-8\n\
Content-Transfer-Encoding: 8bit\n\
\n\
<p>{long}</p>\rbare CR\n\
--alt--\n\
\n\
--mix\n\
Content-Type: application/pdf; name=\"report.pdf\"\n\
Content-Disposition: attachment; filename=\"report.pdf\"\n\
Content-Transfer-Encoding: base64\n\
\n\
JVBERi0xLjQKJcOkw7zDtsOfCg==\n\
--mix\n\
Content-Type: application/octet-stream\n\
Content-Transfer-Encoding: binary\n\
\n\
"
    )
    .into_bytes();
    m.extend_from_slice(b"\x00\x01\xfe\xff raw bytes\n--mix--\n");
    m
}

/// Every external program runs with a deadline (killed and reported on expiry).
fn run(cmd: &mut Command) -> Output {
    process::output(cmd.stdin(Stdio::null()))
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

/// Quoted-printable decoding by an independent peer: Python's `quopri`.
fn qp_decode(data: &[u8]) -> Vec<u8> {
    let o = process::output_with_input(
        Command::new("python3").args([
            "-c",
            "import quopri,sys; sys.stdout.buffer.write(quopri.decodestring(sys.stdin.buffer.read()))",
        ]),
        data,
    );
    ok(&o, "python3 quopri");
    o.stdout
}

/// The signed entity and the DER signature of a multipart/signed message, cut out by hand
/// (independently of our parser).
fn split_multipart_signed(msg: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let text = String::from_utf8(msg.to_vec()).expect("7-bit output");
    let b = text
        .split("boundary=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("boundary");
    let delim = format!("\r\n--{b}");
    let first = text.find(&format!("--{b}\r\n")).expect("first delimiter") + b.len() + 4;
    let end = first + text[first..].find(&delim).expect("second delimiter");
    let entity = text.as_bytes()[first..end].to_vec();
    let sig_part = &text[end + delim.len() + 2..];
    let sig_body = sig_part.split("\r\n\r\n").nth(1).expect("signature body");
    let b64: String = sig_body
        .split(&delim)
        .next()
        .expect("signature")
        .split_whitespace()
        .collect();
    use base64::Engine;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64 signature");
    (entity, sig)
}

/// The text/plain part of the signed entity, decoded: the text, line breaks CRLF.
fn text_part(entity: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(entity);
    let part = text
        .split("Content-Type: text/plain; charset=utf-8\r\n")
        .nth(1)
        .expect("text part");
    assert!(
        part.starts_with("Content-Transfer-Encoding: quoted-printable\r\n\r\n"),
        "{part}"
    );
    let body = &part["Content-Transfer-Encoding: quoted-printable\r\n\r\n".len()..];
    let body = body.split("\r\n--alt").next().expect("body");
    qp_decode(body.as_bytes())
}

struct Gpgsm {
    home: PathBuf,
    /// kills gpg-agent even when the test panics
    _daemons: GpgDaemons,
}

impl Gpgsm {
    fn new(dir: &Path, agent: &Agent) -> Self {
        let home = dir.join("gnupg");
        std::fs::create_dir(&home).expect("mkdir");
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod");
        let g = Gpgsm {
            _daemons: GpgDaemons::new(&home),
            home,
        };
        let o = g.run(&[
            "--import",
            s(&agent.fixture.pki("root.pem")),
            s(&agent.fixture.pki("intermediate.pem")),
        ]);
        ok(&o, "gpgsm import");
        let fp = stdout(&run(Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha1", "-in"])
            .arg(agent.fixture.pki("root.pem"))));
        let fp = fp
            .trim()
            .split('=')
            .nth(1)
            .expect("fingerprint")
            .to_string();
        std::fs::write(g.home.join("trustlist.txt"), format!("{fp} S relax\n")).expect("trustlist");
        g
    }

    fn run(&self, args: &[&str]) -> Output {
        run(Command::new("gpgsm")
            .env("GNUPGHOME", &self.home)
            .args(["--batch", "--disable-crl-checks", "--status-fd", "1"])
            .args(args))
    }

    fn verify(&self, dir: &Path, what: &str, sig_der: &[u8], content: Option<&[u8]>) {
        let sig = dir.join(format!("{what}.sig"));
        std::fs::write(&sig, sig_der).expect("write");
        let o = match content {
            Some(c) => {
                let p = dir.join(format!("{what}.content"));
                std::fs::write(&p, c).expect("write");
                self.run(&["--verify", s(&sig), s(&p)])
            }
            None => self.run(&["--verify", s(&sig)]),
        };
        ok(&o, &format!("gpgsm --verify {what}"));
        assert!(
            stdout(&o).contains("[GNUPG:] GOODSIG"),
            "{what}: {}",
            stdout(&o)
        );
    }
}

/// openssl verifies `signed` (a MIME message); returns the content it extracted.
fn openssl_verify(agent: &Agent, dir: &Path, what: &str, signed: &[u8]) -> Vec<u8> {
    let p = dir.join(format!("{what}.eml"));
    std::fs::write(&p, signed).expect("write");
    let o = run(Command::new("openssl")
        .args(["cms", "-verify", "-purpose", "smimesign", "-CAfile"])
        .arg(agent.fixture.pki("root.pem"))
        .args(["-in", s(&p)]));
    ok(&o, &format!("openssl cms -verify {what}"));
    o.stdout
}

/// The CMS of an opaque signed message, DER, cut out by openssl.
fn opaque_cms(dir: &Path, what: &str, signed: &[u8]) -> Vec<u8> {
    let p = dir.join(format!("{what}.p7m"));
    std::fs::write(&p, signed).expect("write");
    let o = run(Command::new("openssl").args(["cms", "-cmsout", "-outform", "DER", "-in", s(&p)]));
    ok(&o, "openssl cms -cmsout");
    o.stdout
}

#[test]
fn an_8bit_multipart_message_signs_by_cli_and_socket_and_verifies_with_openssl_and_gpgsm() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let msg_path = d.join("m.eml");
    std::fs::write(&msg_path, message()).expect("write");
    let gpgsm = Gpgsm::new(d, &agent);
    // (the line break before a delimiter belongs to the delimiter, RFC 2046 §5.1.1)
    let want_text = TEXT.trim_end().replace('\n', "\r\n").into_bytes();

    let mut entities = Vec::new();
    for (key, opaque) in [
        ("alice-rsa", false),
        ("bob-p256", false),
        ("alice-rsa", true),
    ] {
        let what = format!("{key}-{}", if opaque { "opaque" } else { "multipart" });
        // the CLI
        let out = d.join(format!("{what}.cli"));
        let mut args = vec!["sign", "--signer", key];
        if opaque {
            args.push("--opaque");
        }
        args.extend([s(&msg_path), "-o", s(&out)]);
        ok(&agent.cli(&args), &format!("tokenmail sign {what}"));
        let cli = std::fs::read(&out).expect("read");
        // the socket
        let mut c = Client::connect(&agent.socket, "eightbit-e2e").expect("connect");
        let mut sock = Vec::new();
        let r = c.call_stream(
            &Request::Sign {
                key: key.into(),
                form: if opaque {
                    SignForm::Opaque
                } else {
                    SignForm::Multipart
                },
                digest: None,
                pss: None,
                crlf: None,
                receipt_request: None,
                security_label: None,
            },
            message().as_slice(),
            &mut sock,
        );
        assert!(matches!(r, Ok(Response::Signed { .. })), "{what}: {r:?}");

        for (who, signed) in [("cli", &cli), ("socket", &sock)] {
            let what = format!("{what}-{who}");
            assert!(signed.iter().all(|b| *b < 0x80 && *b != 0), "{what}: 7-bit");
            let content = openssl_verify(&agent, d, &what, signed);
            assert_eq!(
                text_part(&content),
                want_text,
                "{what}: the text is unchanged"
            );
            assert!(
                String::from_utf8_lossy(&content).contains("JVBERi0xLjQKJcOkw7zDtsOfCg==\r\n"),
                "{what}: the base64 attachment is untouched"
            );
            if opaque {
                gpgsm.verify(d, &what, &opaque_cms(d, &what, signed), None);
            } else {
                let (entity, sig) = split_multipart_signed(signed);
                assert_eq!(entity, content, "{what}: openssl saw the entity we cut out");
                gpgsm.verify(d, &what, &sig, Some(&entity));
            }
            entities.push(content);
        }
    }
    // One engine: the CLI and the socket sign the same entity, in both forms.
    assert!(
        entities.windows(2).all(|w| w[0] == w[1]),
        "CLI and socket sign the same bytes"
    );
}
