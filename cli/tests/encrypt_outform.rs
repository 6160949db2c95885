//! `tokenmail encrypt --outform der|pem|smime` (what NeoMutt's smime_encrypt_command
//! expects: the bare CMS in DER), read back by `openssl cms -decrypt`.

use std::path::Path;
use std::process::{Command, Output};

/// Running external programs with a deadline (shared with the other test crates).
#[path = "../../pkcs11-tests/src/process.rs"]
mod process;

const ENTITY: &[u8] = b"Content-Type: text/plain; charset=utf-8\n\nHello Bob,\nthe figures.\n";
const CANONICAL: &[u8] =
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello Bob,\r\nthe figures.\r\n";

fn tokenmail(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    // A command that fails on its arguments may exit without reading its input: fine.
    process::output_with_input(
        Command::new(env!("CARGO_BIN_EXE_tokenmail"))
            .args(args)
            .current_dir(dir)
            .env("TOKENMAIL_SOCK", dir.join("no-agent.sock")),
        stdin,
    )
}

fn openssl(dir: &Path, args: &[&str]) -> Output {
    process::output(Command::new("openssl").args(args).current_dir(dir))
}

fn keypair(dir: &Path, name: &str, newkey: &[&str]) {
    let o = openssl(
        dir,
        &[
            &[
                "req",
                "-x509",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=outform test",
            ][..],
            newkey,
            &[
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
            ][..],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn der_and_pem_decrypt_with_openssl() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path();
    keypair(dir, "rsa", &["-newkey", "rsa:2048"]);
    keypair(
        dir,
        "ec",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    std::fs::write(dir.join("entity.txt"), ENTITY).expect("write");
    for key in ["rsa", "ec"] {
        for cipher in ["aes256-gcm", "aes128-cbc"] {
            for (form, inform) in [("der", "DER"), ("pem", "PEM")] {
                for from_stdin in [false, true] {
                    let out = format!("out-{key}-{cipher}.{form}");
                    let mut args = vec![
                        "encrypt",
                        "--no-self",
                        "--outform",
                        form,
                        "--cipher",
                        cipher,
                        "--recipient-cert",
                    ];
                    let cert = format!("{key}.pem");
                    args.push(&cert);
                    if !from_stdin {
                        args.push("entity.txt");
                    }
                    args.extend(["-o", &out]);
                    let o = tokenmail(dir, &args, if from_stdin { ENTITY } else { b"" });
                    assert!(
                        o.status.success(),
                        "{args:?}: {}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                    // no header fields outside the entity: no note
                    assert!(
                        o.stderr.is_empty(),
                        "{}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                    let data = std::fs::read(dir.join(&out)).expect("output");
                    if form == "der" {
                        assert_eq!(data[0], 0x30, "a bare ContentInfo");
                        // DER, not just BER: openssl re-encodes it to the same bytes
                        let o = openssl(
                            dir,
                            &[
                                "cms", "-cmsout", "-inform", "DER", "-in", &out, "-outform", "DER",
                                "-out", "re.der",
                            ],
                        );
                        assert!(o.status.success());
                        assert_eq!(std::fs::read(dir.join("re.der")).expect("re"), data);
                    } else {
                        assert!(data.starts_with(b"-----BEGIN CMS-----\n"));
                        assert!(data.ends_with(b"-----END CMS-----\n"));
                        assert!(String::from_utf8_lossy(&data)
                            .lines()
                            .all(|l| l.len() <= 64));
                    }
                    let o = openssl(
                        dir,
                        &[
                            "cms",
                            "-decrypt",
                            "-inform",
                            inform,
                            "-in",
                            &out,
                            "-recip",
                            &cert,
                            "-inkey",
                            &format!("{key}.key"),
                            "-binary",
                        ],
                    );
                    assert!(
                        o.status.success(),
                        "openssl {inform} {key} {cipher}: {}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                    assert_eq!(o.stdout, CANONICAL, "{key} {cipher} {form}");
                }
            }
        }
    }

    // smime stays the default (a message), and is what --outform smime gives
    for args in [vec![], vec!["--outform", "smime"]] {
        let mut a = vec!["encrypt", "--no-self", "--recipient-cert", "rsa.pem"];
        a.extend(args);
        a.push("entity.txt");
        let o = tokenmail(dir, &a, b"");
        assert!(o.status.success());
        assert!(String::from_utf8_lossy(&o.stdout)
            .contains("Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data"));
    }

    // a whole message: the header fields outside the entity are left out, with a note
    let o = tokenmail(
        dir,
        &[
            "encrypt",
            "--no-self",
            "--outform",
            "der",
            "--recipient-cert",
            "rsa.pem",
            "-o",
            "msg.der",
        ],
        &[
            b"From: alice@example.com\nTo: bob@example.com\n".as_slice(),
            ENTITY,
        ]
        .concat(),
    );
    assert!(o.status.success());
    let note = String::from_utf8_lossy(&o.stderr);
    assert!(note.contains("left out: From, To"), "{note}");
    let o = openssl(
        dir,
        &[
            "cms", "-decrypt", "-inform", "DER", "-in", "msg.der", "-recip", "rsa.pem", "-inkey",
            "rsa.key", "-binary",
        ],
    );
    assert_eq!(o.stdout, CANONICAL);

    // atomic: a failure leaves no output and no temporary file
    let before = std::fs::read_dir(dir).expect("ls").count();
    let o = tokenmail(
        dir,
        &[
            "encrypt",
            "--no-self",
            "--outform",
            "der",
            "--recipient-cert",
            "missing.pem",
            "entity.txt",
            "-o",
            "never.der",
        ],
        b"",
    );
    assert!(!o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1);
    assert!(!dir.join("never.der").exists());
    assert_eq!(std::fs::read_dir(dir).expect("ls").count(), before);

    // bad values: one line
    let o = tokenmail(
        dir,
        &["encrypt", "--outform", "p7m", "--recipient-cert", "rsa.pem"],
        b"",
    );
    assert!(!o.status.success());
    let o = tokenmail(
        dir,
        &[
            "encrypt",
            "--no-self",
            "--outform",
            "der",
            "--triple-wrap",
            "--signer",
            "a@b",
            "--recipient-cert",
            "rsa.pem",
            "entity.txt",
        ],
        b"",
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--outform smime"));
}
