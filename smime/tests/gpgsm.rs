//! Our SignedData verified by gpgsm (GnuPG's S/MIME tool) with a throw-away GNUPGHOME.
//!
//! And the other direction: keys imported into gpgsm from PKCS#12 (3DES/SHA-1 PBE with an empty
//! passphrase, the only form gpgsm 2.2 imports in batch mode), gpgsm signs, we verify (RSA only:
//! gpgsm 2.2.40 crashes importing EC keys from PKCS#12).

mod common;

use common::{pki, process, scratch};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;
use tokenmail_smime::alg::{HashAlg, SignatureScheme};
use tokenmail_smime::path::{CertEntry, Policy};
use tokenmail_smime::signed::{sign_detached, sign_encapsulated, DigestSigner, SignOptions};
use tokenmail_smime::verify::{verify, ParsedSignedData, VerifyOptions};

/// A GNUPGHOME whose gpg-agent is stopped on drop.
struct GnupgHome {
    dir: tempfile::TempDir,
}

impl GnupgHome {
    fn new() -> Self {
        let dir = scratch();
        let p = pki();
        let home = GnupgHome { dir };
        let out = process::output(
            home.gpgsm()
                .arg("--import")
                .arg(p.path("root.pem"))
                .arg(p.path("int.pem")),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let fp = process::output(
            Command::new("openssl")
                .args(["x509", "-noout", "-fingerprint", "-sha1", "-in"])
                .arg(p.path("root.pem")),
        );
        let fp = String::from_utf8_lossy(&fp.stdout);
        let fp = fp
            .trim()
            .split('=')
            .nth(1)
            .expect("fingerprint")
            .to_string();
        std::fs::write(home.path().join("trustlist.txt"), format!("{fp} S relax\n"))
            .expect("trustlist");
        home
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn gpgsm(&self) -> Command {
        let mut c = Command::new("gpgsm");
        c.env("GNUPGHOME", self.path()).args([
            "--batch",
            "--disable-crl-checks",
            "--status-fd",
            "1",
        ]);
        c
    }
}

impl Drop for GnupgHome {
    fn drop(&mut self) {
        process::kill_gpg_daemons(self.path());
    }
}

fn have_gpgsm() -> bool {
    process::try_run_with_timeout(
        Command::new("gpgsm").arg("--version"),
        None,
        process::limit(),
    )
    .is_ok()
}

const CONTENT: &[u8] = b"signed for gpgsm\n";

#[test]
fn gpgsm_verifies_our_signatures() {
    if !have_gpgsm() {
        eprintln!("gpgsm not installed: skipped");
        return;
    }
    let home = GnupgHome::new();
    let p = pki();
    let content: PathBuf = home.path().join("content");
    std::fs::write(&content, CONTENT).expect("write");
    for (name, scheme) in [
        ("ee_rsa", None),
        ("ee_rsa", Some(SignatureScheme::RsaPss(HashAlg::Sha256))),
        ("ee_p256", None),
        ("ee_p384", None),
    ] {
        let signer = p.signer(name);
        let opts = SignOptions {
            scheme,
            signing_time: Some(SystemTime::now()),
            ..SignOptions::default()
        };
        let hash = opts.scheme_for(signer.key_kind()).expect("scheme").hash();
        let chain = [p.cert("int")];
        let detached = sign_detached(&signer, &p.cert(name), &chain, &hash.digest(CONTENT), &opts)
            .expect("sign");
        let opaque =
            sign_encapsulated(&signer, &p.cert(name), &chain, CONTENT, &opts).expect("sign");
        let sig = home.path().join("sig.p7s");
        std::fs::write(&sig, &detached).expect("write");
        let out = process::output(home.gpgsm().arg("--verify").arg(&sig).arg(&content));
        let status = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && status.contains("GOODSIG") && status.contains("TRUST_FULLY"),
            "{name} {scheme:?} detached: {status}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let p7m = home.path().join("sig.p7m");
        let got = home.path().join("got");
        let _ = std::fs::remove_file(&got);
        std::fs::write(&p7m, &opaque).expect("write");
        let out = process::output(
            home.gpgsm()
                .arg("--output")
                .arg(&got)
                .arg("--verify")
                .arg(&p7m),
        );
        let status = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && status.contains("GOODSIG"),
            "{name} {scheme:?} opaque: {status}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(&got).expect("content"), CONTENT);

        // and a tampered content is refused
        std::fs::write(&content, b"signed for gpgsm?\n").expect("write");
        let out = process::output(home.gpgsm().arg("--verify").arg(&sig).arg(&content));
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("GOODSIG"),
            "gpgsm accepted tampered content"
        );
        std::fs::write(&content, CONTENT).expect("write");
    }
}

#[test]
fn we_verify_gpgsm_signatures() {
    if !have_gpgsm() {
        eprintln!("gpgsm not installed: skipped");
        return;
    }
    let home = GnupgHome::new();
    let p = pki();
    let content = home.path().join("content");
    std::fs::write(&content, CONTENT).expect("write");
    let anchors =
        CertEntry::from_pem_bundle(&std::fs::read(p.path("root.pem")).expect("read")).expect("pem");
    // RSA only: gpgsm 2.2.40 segfaults importing an EC key from PKCS#12
    for (name, cn) in [("ee_rsa", "CN=Alice RSA")] {
        let loopback = |c: &mut Command| {
            c.args(["--pinentry-mode", "loopback", "--passphrase-fd", "0"])
                .stdin(std::process::Stdio::null());
        };
        let gpgsm = || {
            let mut c = home.gpgsm();
            loopback(&mut c);
            c
        };
        if let Err(e) = process::gpgsm_import_key_as_p12(
            &gpgsm,
            &p.path(&format!("{name}.key")),
            &p.path(&format!("{name}.pem")),
            &home.path().join(format!("{name}.p12")),
            4,
        ) {
            panic!("gpgsm imports {name}: {e}");
        }

        for detached in [true, false] {
            let sig = home.path().join(format!("{name}-{detached}.sig"));
            let mut c = home.gpgsm();
            loopback(&mut c);
            c.args(["-u", cn, "--include-certs", "-1", "--output"])
                .arg(&sig);
            c.arg(if detached { "--detach-sign" } else { "--sign" })
                .arg(&content);
            let out = process::output(&mut c);
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let der = std::fs::read(&sig).expect("sig");
            let parsed = ParsedSignedData::parse(&der).expect("parse gpgsm output");
            let data = if detached {
                CONTENT.to_vec()
            } else {
                parsed.encapsulated_content().expect("opaque").to_vec()
            };
            assert_eq!(data, CONTENT);
            let digests =
                tokenmail_smime::alg::ContentDigests::of(&parsed.digest_algorithms(), &data);
            let r = verify(
                &parsed,
                &digests,
                &VerifyOptions {
                    trust_anchors: &anchors,
                    extra_certs: &[],
                    now: SystemTime::now(),
                    sender_email: Some("alice@example.com"),
                    sender_problem: None,
                    policy: Policy::default(),
                    ..VerifyOptions::at(&anchors, SystemTime::now())
                },
            );
            assert!(r.valid, "{name} detached={detached}: {r:?}");
        }
    }
}
