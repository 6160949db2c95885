//! Certificates the CLI finds by itself: `encrypt --to EMAIL` from the certificate
//! directories ($TOKENMAIL_CERTS), and trust anchors from the configuration's `[trust]`
//! (via $TOKENMAIL_CONFIG). No agent runs; openssl is the peer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Running external programs with a deadline (shared with the other test crates).
#[path = "../../pkcs11-tests/src/process.rs"]
mod process;

const MESSAGE: &[u8] =
    b"From: ann@example.org\r\nTo: bob@example.org\r\nSubject: store\r\nContent-Type: text/plain\r\n\r\nfound by address\r\n";

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().expect("tempdir"))
    }
    fn p(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    fn openssl(&self, args: &[&str]) {
        let o = process::output(
            Command::new("openssl")
                .args(args)
                .current_dir(self.0.path()),
        );
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    /// tokenmail with no agent, no config and no certificate store but what `env` gives.
    fn tokenmail(&self, args: &[&str], env: &[(&str, &Path)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tokenmail"));
        c.args(args)
            .current_dir(self.0.path())
            .env("TOKENMAIL_SOCK", self.p("no-agent.sock"))
            .env("HOME", self.0.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("TOKENMAIL_TRUST")
            .env_remove("TOKENMAIL_CERTS")
            .env_remove("TOKENMAIL_CONFIG");
        for (k, v) in env {
            c.env(k, v);
        }
        process::output(&mut c)
    }

    /// A CA, and an end-entity certificate for `email` (RSA) issued by it, valid `days`.
    fn issue(&self, name: &str, email: &str, days: &str) {
        if !self.p("ca.pem").exists() {
            self.openssl(&[
                "req",
                "-x509",
                "-nodes",
                "-newkey",
                "rsa:2048",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "30",
                "-subj",
                "/CN=store test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        }
        std::fs::write(
            self.p(&format!("{name}.ext")),
            format!("[ee]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\nsubjectAltName=email:{email}\n"),
        )
        .expect("ext");
        self.openssl(&[
            "req",
            "-new",
            "-nodes",
            "-newkey",
            "rsa:2048",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            days,
            "-extfile",
            &format!("{name}.ext"),
            "-extensions",
            "ee",
            "-out",
            &format!("{name}.pem"),
        ]);
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn encrypt_to_an_address_finds_the_certificate_in_the_store() {
    let d = Dir::new();
    d.issue("bob", "bob@example.org", "10");
    let store = d.p("certs");
    std::fs::create_dir(&store).expect("mkdir");
    std::fs::copy(d.p("bob.pem"), store.join("bob.pem")).expect("copy");
    std::fs::write(d.p("m.eml"), MESSAGE).expect("msg");
    let o = d.tokenmail(
        &[
            "encrypt",
            "--no-self",
            "--to",
            "Bob@Example.org",
            "m.eml",
            "-o",
            "enc.eml",
        ],
        &[("TOKENMAIL_CERTS", &store)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    d.openssl(&[
        "cms", "-decrypt", "-in", "enc.eml", "-recip", "bob.pem", "-inkey", "bob.key", "-out",
        "dec.eml",
    ]);
    let dec = std::fs::read(d.p("dec.eml")).expect("plain");
    assert!(
        dec.ends_with(b"found by address\r\n"),
        "{}",
        String::from_utf8_lossy(&dec)
    );

    // the default store is ~/.config/tokenmail/certs
    let home_store = d.p(".config/tokenmail/certs");
    std::fs::create_dir_all(&home_store).expect("mkdir");
    std::fs::copy(d.p("bob.pem"), home_store.join("bob.crt")).expect("copy");
    let o = d.tokenmail(
        &[
            "encrypt",
            "--no-self",
            "--to",
            "bob@example.org",
            "m.eml",
            "-o",
            "enc2.eml",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn unknown_or_unusable_addresses_are_one_line_errors_and_nothing_is_written() {
    let d = Dir::new();
    d.issue("old", "old@example.org", "-1");
    let store = d.p("certs");
    std::fs::create_dir(&store).expect("mkdir");
    std::fs::copy(d.p("old.pem"), store.join("old.pem")).expect("copy");
    std::fs::write(d.p("m.eml"), MESSAGE).expect("msg");
    for (to, why) in [
        ("nobody@example.org", "no certificate"),
        ("old@example.org", "expired"),
        ("not-an-address", "not an email address"),
    ] {
        let o = d.tokenmail(
            &["encrypt", "--no-self", "--to", to, "m.eml", "-o", "enc.eml"],
            &[("TOKENMAIL_CERTS", &store)],
        );
        assert!(!o.status.success(), "{to}");
        let e = stderr(&o);
        assert_eq!(e.trim_end().lines().count(), 1, "one line: {e}");
        assert!(e.contains(why), "{to}: {e}");
        assert!(!d.p("enc.eml").exists(), "nothing written for {to}");
    }
}

/// `--to` takes its certificates through the same recipient checks as `--recipient-cert`:
/// one that does not chain to the trust anchors is refused unless
/// `--allow-untrusted-recipient`, which says so loudly.
#[test]
fn an_untrusted_certificate_found_by_address_is_refused() {
    let d = Dir::new();
    // issued by the test CA; the anchor given is another CA
    d.issue("stranger", "stranger@example.org", "10");
    d.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "10",
        "-subj",
        "/CN=Another Root",
        "-keyout",
        "other.key",
        "-out",
        "other.pem",
    ]);
    let store = d.p("certs");
    std::fs::create_dir(&store).expect("mkdir");
    std::fs::copy(d.p("stranger.pem"), store.join("stranger.pem")).expect("copy");
    std::fs::write(d.p("m.eml"), MESSAGE).expect("msg");
    let ca = d.p("other.pem").display().to_string();
    let args = [
        "encrypt",
        "--no-self",
        "--trust",
        &ca,
        "--to",
        "stranger@example.org",
        "m.eml",
        "-o",
        "enc.eml",
    ];
    let o = d.tokenmail(&args, &[("TOKENMAIL_CERTS", &store)]);
    assert!(!o.status.success(), "accepted: {}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("stranger") && e.contains("does not chain"),
        "{e}"
    );
    assert!(!d.p("enc.eml").exists());
    let mut anyway = args.to_vec();
    anyway.push("--allow-untrusted-recipient");
    let o = d.tokenmail(&anyway, &[("TOKENMAIL_CERTS", &store)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("WARNING"), "{}", stderr(&o));
    assert!(d.p("enc.eml").exists());
}

#[test]
fn verify_takes_trust_anchors_from_the_configuration() {
    let d = Dir::new();
    d.issue("ann", "ann@example.org", "10");
    std::fs::write(d.p("m.eml"), MESSAGE).expect("msg");
    d.openssl(&[
        "cms",
        "-sign",
        "-in",
        "m.eml",
        "-signer",
        "ann.pem",
        "-inkey",
        "ann.key",
        "-out",
        "signed.eml",
    ]);
    // No anchor anywhere: the error says where anchors come from.
    let o = d.tokenmail(&["verify", "signed.eml"], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("[trust]"), "{}", stderr(&o));
    // The configuration's [trust] anchors (relative to the file) are used.
    let cfg_dir = d.p("conf");
    std::fs::create_dir(&cfg_dir).expect("mkdir");
    std::fs::copy(d.p("ca.pem"), cfg_dir.join("root.pem")).expect("copy");
    let cfg = cfg_dir.join("agent.toml");
    std::fs::write(&cfg, "[trust]\nanchors = [\"root.pem\"]\n").expect("cfg");
    let o = d.tokenmail(&["verify", "signed.eml"], &[("TOKENMAIL_CONFIG", &cfg)]);
    assert!(o.status.success(), "{}", stderr(&o));
    // and from the standard place, ~/.config/tokenmail/agent.toml
    let std_dir = d.p(".config/tokenmail");
    std::fs::create_dir_all(&std_dir).expect("mkdir");
    std::fs::copy(d.p("ca.pem"), std_dir.join("root.pem")).expect("copy");
    std::fs::write(
        std_dir.join("agent.toml"),
        "[trust]\nanchors = [\"root.pem\"]\n",
    )
    .expect("cfg");
    let o = d.tokenmail(&["verify", "signed.eml"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}
