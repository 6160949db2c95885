//! `tokenmail verify` (cli/src/verify.rs) run in-process against openssl-made messages.

use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Running external programs with a deadline (shared with the other test crates).
#[path = "../../pkcs11-tests/src/process.rs"]
mod process;
use tokenmail_cli::verify;
use verify::{run, run_with, VerifyArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: VerifyArgs,
}

fn args(v: &[&str]) -> VerifyArgs {
    let mut all = vec!["tokenmail-verify"];
    all.extend_from_slice(v);
    Cli::try_parse_from(all).expect("arguments parse").args
}

/// (With the long limit: the scripts generate test PKIs.)
fn sh(dir: &Path, script: &str) {
    let out = process::run_with_timeout(
        Command::new("bash").arg("-c").arg(script).current_dir(dir),
        None,
        process::long_limit(),
    );
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn p(dir: &Path, f: &str) -> String {
    dir.join(f).display().to_string()
}

#[test]
fn verify_command() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path();
    sh(dir, include_str!("../../smime/tests/pki.sh"));
    std::fs::write(
        dir.join("msg.txt"),
        "Content-Type: text/plain\n\nhello from the CLI test\n",
    )
    .expect("write");
    let sign = |signer: &str, out: &str, extra: &str| {
        sh(
            dir,
            &format!(
                "openssl cms -sign -in msg.txt -signer {signer}.pem -inkey {signer}.key -certfile int.pem \
                 -from 'Alice <alice@example.com>' -subject test {extra} -out {out}"
            ),
        )
    };
    sign("ee_rsa", "good.eml", "");
    sign("ee_server", "wrong_eku.eml", "");
    sign("ee_rsa", "detached.p7s", "-binary -outform PEM");

    // valid message, content written atomically
    let out = dir.join("out.txt");
    let code = run(args(&[
        "--trust",
        &p(dir, "root.pem"),
        &p(dir, "good.eml"),
        "-o",
        &out.display().to_string(),
    ]))
    .expect("runs");
    assert_eq!(code, 0);
    let content = std::fs::read_to_string(&out).expect("content written");
    assert!(content.contains("hello from the CLI test"));

    // --json: the report on stdout
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_with(
        args(&[
            "--json",
            "--trust",
            &p(dir, "root.pem"),
            &p(dir, "good.eml"),
        ]),
        &mut out,
        &mut err,
    )
    .expect("runs");
    assert_eq!(code, 0);
    let j: serde_json::Value = serde_json::from_slice(&out).expect("JSON report");
    assert_eq!(j["valid"], true);
    assert_eq!(j["form"], "multipart/signed");
    assert_eq!(j["sender"], "alice@example.com");
    assert_eq!(j["signers"][0]["subject"], "CN=Alice RSA");
    assert!(j["signers"][0]["checks"].as_array().expect("checks").len() > 10);

    // text: the signer and one line per failed check; -o - puts the content on stdout and
    // the report on stderr
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_with(
        args(&["--trust", &p(dir, "root.pem"), &p(dir, "wrong_eku.eml")]),
        &mut out,
        &mut err,
    )
    .expect("runs");
    assert_eq!(code, 1);
    let text = String::from_utf8(out).expect("utf8");
    assert!(
        text.contains("BAD signature from \"CN=Alice Server EKU\""),
        "{text}"
    );
    assert_eq!(text.matches("FAILED ").count(), 1, "{text}");
    assert!(text.contains("FAILED extended_key_usage:"), "{text}");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_with(
        args(&[
            "--trust",
            &p(dir, "root.pem"),
            &p(dir, "good.eml"),
            "-o",
            "-",
        ]),
        &mut out,
        &mut err,
    )
    .expect("runs");
    assert_eq!(code, 0);
    assert!(String::from_utf8_lossy(&out).contains("hello from the CLI test"));
    assert!(String::from_utf8_lossy(&err).contains("Good signature from"));

    // wrong EKU: exit 1, no content written
    let out2 = dir.join("out2.txt");
    let code = run(args(&[
        "--trust",
        &p(dir, "root.pem"),
        &p(dir, "wrong_eku.eml"),
        "-o",
        &out2.display().to_string(),
    ]))
    .expect("runs");
    assert_eq!(code, 1);
    assert!(!out2.exists());

    // --at: verified as of another time (far in the future: every certificate has
    // expired); --max-intermediates 0: the one intermediate is one too many
    let failed = |extra: &[&str]| {
        let mut v = vec!["--json", "--trust"];
        let root = p(dir, "root.pem");
        let good = p(dir, "good.eml");
        v.push(&root);
        v.extend_from_slice(extra);
        v.push(&good);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(args(&v), &mut out, &mut err).expect("runs");
        let j: serde_json::Value = serde_json::from_slice(&out).expect("JSON report");
        let failed: Vec<String> = j["signers"][0]["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .filter(|c| c["ok"] != true)
            .map(|c| c["name"].as_str().unwrap_or_default().to_string())
            .collect();
        (code, failed)
    };
    let (code, f) = failed(&["--at", "2199-01-01T00:00:00Z"]);
    assert_eq!(code, 1);
    assert!(f.contains(&"validity_now".to_string()), "{f:?}");
    assert_eq!(failed(&["--at", "2000-01-01T00:00:00Z"]).0, 1);
    assert_eq!(failed(&["--max-intermediates", "1"]), (0, vec![]));
    assert_eq!(
        failed(&["--max-intermediates", "0"]),
        (1, vec!["path_length".to_string()])
    );
    for bad in [
        &["--at", "yesterday"][..],
        &["--at", "1950-01-01T00:00:00Z"],
        &["--max-intermediates", "9"],
    ] {
        let mut v = vec!["tokenmail-verify"];
        v.extend_from_slice(bad);
        assert!(Cli::try_parse_from(v).is_err(), "{bad:?}");
    }

    // untrusted root: exit 1
    assert_eq!(
        run(args(&[
            "--trust",
            &p(dir, "other_root.pem"),
            &p(dir, "good.eml")
        ]))
        .expect("runs"),
        1
    );

    // detached PEM signature over the exact bytes of IN
    assert_eq!(
        run(args(&[
            "--trust",
            &p(dir, "root.pem"),
            "--signature",
            &p(dir, "detached.p7s"),
            &p(dir, "msg.txt"),
        ]))
        .expect("runs"),
        0
    );

    // trust anchors from TOKENMAIL_TRUST, then none at all (one test: the environment is global)
    std::env::set_var(
        "TOKENMAIL_TRUST",
        format!("{}:{}", p(dir, "other_root.pem"), p(dir, "root.pem")),
    );
    assert_eq!(run(args(&[&p(dir, "good.eml")])).expect("runs"), 0);
    std::env::remove_var("TOKENMAIL_TRUST");
    // (and no configuration file with [trust] anchors either)
    std::env::set_var("TOKENMAIL_CONFIG", dir.join("no-such-config.toml"));
    let err = run(args(&[&p(dir, "good.eml")])).expect_err("no anchor is an error");
    assert_eq!(
        err.to_string(),
        "no trust anchor: pass --trust CA.pem, set TOKENMAIL_TRUST, or list anchors under [trust] in the configuration"
    );

    // not a signed message: an error, not exit 1
    let err = run(args(&["--trust", &p(dir, "root.pem"), &p(dir, "msg.txt")]))
        .expect_err("unsigned input");
    assert!(err.to_string().contains("cannot verify"));
    let _ = PathBuf::new();

    // a large multipart/signed message, streamed through the splitter into -o
    let big: String = (0..200_000)
        .map(|i| format!("line {i} of a big message\n"))
        .collect();
    std::fs::write(
        dir.join("big.txt"),
        format!("Content-Type: text/plain\n\n{big}"),
    )
    .expect("write");
    sh(
        dir,
        "openssl cms -sign -stream -in big.txt -signer ee_p384.pem -inkey ee_p384.key -certfile int.pem \
         -md sha384 -from alice@example.com -out big.eml && \
         openssl cms -verify -in big.eml -CAfile root.pem -out big.openssl 2>/dev/null",
    );
    let out3 = dir.join("big.out");
    let code = run(args(&[
        "--trust",
        &p(dir, "root.pem"),
        &p(dir, "big.eml"),
        "-o",
        &out3.display().to_string(),
    ]))
    .expect("runs");
    assert_eq!(code, 0);
    let got = std::fs::read(&out3).expect("written");
    assert!(got.len() > 5_000_000);
    assert_eq!(
        got,
        std::fs::read(dir.join("big.openssl")).expect("openssl output")
    );

    // tampered in the middle: exit 1 and -o is not created
    let eml = std::fs::read_to_string(dir.join("big.eml")).expect("read");
    std::fs::write(
        dir.join("bad.eml"),
        eml.replacen("line 100000 of", "line 100001 of", 1),
    )
    .expect("write");
    let out4 = dir.join("bad.out");
    let code = run(args(&[
        "--trust",
        &p(dir, "root.pem"),
        &p(dir, "bad.eml"),
        "-o",
        &out4.display().to_string(),
    ]))
    .expect("runs");
    assert_eq!(code, 1);
    assert!(!out4.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");

    // opaque forms, streamed: pkcs7-mime (BER inside base64) and bare DER; PEM read whole
    sh(
        dir,
        "openssl cms -sign -nodetach -stream -in big.txt -signer ee_rsa.pem -inkey ee_rsa.key \
           -certfile int.pem -from alice@example.com -out big.p7m.eml && \
         openssl cms -sign -nodetach -binary -in big.txt -signer ee_rsa.pem -inkey ee_rsa.key \
           -certfile int.pem -outform DER -out big.p7m && \
         openssl cms -sign -nodetach -binary -in msg.txt -signer ee_rsa.pem -inkey ee_rsa.key \
           -certfile int.pem -outform PEM -out small.pem",
    );
    let big_txt = std::fs::read(dir.join("big.txt")).expect("read");
    for (input, canonical) in [("big.p7m.eml", true), ("big.p7m", false)] {
        let o = dir.join(format!("{input}.out"));
        let code = run(args(&[
            "--trust",
            &p(dir, "root.pem"),
            &p(dir, input),
            "-o",
            &o.display().to_string(),
        ]))
        .expect("runs");
        assert_eq!(code, 0, "{input}");
        let got = std::fs::read(&o).expect("written");
        if canonical {
            // S/MIME mode signs the CRLF-canonical text
            let text = String::from_utf8(big_txt.clone())
                .expect("utf8")
                .replace('\n', "\r\n");
            assert_eq!(got, text.into_bytes(), "{input}");
        } else {
            assert_eq!(got, big_txt, "{input}");
        }
    }
    assert_eq!(
        run(args(&[
            "--trust",
            &p(dir, "root.pem"),
            &p(dir, "small.pem")
        ]))
        .expect("runs"),
        0
    );
    // a flipped byte inside the opaque content
    let mut der = std::fs::read(dir.join("big.p7m")).expect("read");
    let mid = der.len() / 2;
    der[mid] ^= 1;
    std::fs::write(dir.join("bad.p7m"), der).expect("write");
    assert_eq!(
        run(args(&["--trust", &p(dir, "root.pem"), &p(dir, "bad.p7m")])).expect("runs"),
        1
    );
}

/// `verify --crl`, `--revocation`, `--untrusted` (issue 12): a revoked signer exits 1 and
/// the text says who, when and why; `--json` carries the per-certificate entries;
/// hard-fail without a CRL fails; an intermediate given with `--untrusted` completes a
/// path the message does not carry.
#[test]
fn verify_checks_crls_and_reports_revocation() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path();
    sh(dir, include_str!("../../smime/tests/revocation-pki.sh"));
    let run_args = |v: &[&str]| {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(args(v), &mut out, &mut err).expect("runs");
        (
            code,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    };
    let root = p(dir, "root.pem");
    let (int_crl, root_crl) = (p(dir, "int.crl"), p(dir, "root.crl"));
    let (code, out, _) = run_args(&[
        "--trust",
        &root,
        "--crl",
        &int_crl,
        "--crl",
        &root_crl,
        &p(dir, "good.eml"),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("revocation: not revoked: 2 certificate(s) checked"),
        "{out}"
    );

    let (code, out, _) = run_args(&[
        "--trust",
        &root,
        "--crl",
        &int_crl,
        "--crl",
        &root_crl,
        &p(dir, "revoked.eml"),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAILED revocation: REVOKED: 'CN=Alice Revoked'")
            && out.contains("keyCompromise"),
        "{out}"
    );

    let (code, out, _) = run_args(&[
        "--json",
        "--trust",
        &root,
        "--crl",
        &int_crl,
        &p(dir, "revoked.eml"),
    ]);
    assert_eq!(code, 1);
    let j: serde_json::Value = serde_json::from_str(&out).expect("json");
    let rev = j["signers"][0]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "revocation")
        .expect("revocation check")
        .clone();
    assert_eq!(rev["ok"], false);
    assert_eq!(rev["certificates"][0]["status"], "revoked");
    assert_eq!(rev["certificates"][0]["reason"], "keyCompromise");
    assert_eq!(
        rev["certificates"][1]["status"], "unknown",
        "no root CRL given"
    );

    // no CRL: soft-fail (default) accepts and says so; hard-fail refuses
    let (code, out, _) = run_args(&["--trust", &root, &p(dir, "revoked.eml")]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("revocation: revocation status unknown, accepted (revocation = soft-fail)"),
        "{out}"
    );
    let (code, out, _) = run_args(&[
        "--trust",
        &root,
        "--revocation",
        "hard-fail",
        &p(dir, "revoked.eml"),
    ]);
    assert_eq!(code, 1, "{out}");

    // --untrusted: a message without its intermediate
    sh(
        dir,
        "openssl cms -sign -in msg.txt -signer ee_good.pem -inkey ee_good.key \
         -from alice@example.com -out eeonly.eml",
    );
    let (code, out, _) = run_args(&["--trust", &root, &p(dir, "eeonly.eml")]);
    assert_eq!(code, 1, "no path without the intermediate: {out}");
    let (code, out, _) = run_args(&[
        "--trust",
        &root,
        "--untrusted",
        &p(dir, "int.pem"),
        &p(dir, "eeonly.eml"),
    ]);
    assert_eq!(code, 0, "{out}");

    // bad input: one line
    let e = run_with(
        args(&["--trust", &root, "--crl", &root, &p(dir, "good.eml")]),
        &mut Vec::new(),
        &mut Vec::new(),
    )
    .expect_err("a certificate is not a CRL");
    assert!(format!("{e:#}").contains("no X509 CRL block"), "{e:#}");
}
