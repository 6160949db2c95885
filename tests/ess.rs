//! Timestamps, signed receipts and security labels end to end, with keys on the SoftHSM
//! token: `tokenmail sign --timestamp` against a loopback TSA (`openssl ts -reply` behind
//! tests/data/tsa_server.py), checked by `openssl cms -verify`, `openssl ts -verify` and
//! `tokenmail verify`; `--receipt-request` / `--security-label` shown by verify; receipts
//! both ways with `openssl cms -sign_receipt` / `-verify_receipt`; and the rejections.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tokenmail_e2e::{process, start_tsa, stderr, stdout, Agent};

const MESSAGE: &[u8] = b"From: alice@example.com\r\nTo: dave@example.com\r\nSubject: figures\r\nContent-Type: text/plain\r\n\r\nPlease confirm you read this.\r\n";

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

fn openssl(dir: &Path, args: &[&str]) -> Output {
    process::output(Command::new("openssl").current_dir(dir).args(args))
}

fn verify_json(agent: &Agent, input: &Path) -> (i32, serde_json::Value) {
    let o = agent.cli(&[
        "verify",
        "--json",
        "--revocation",
        "off",
        "--trust",
        s(&agent.fixture.pki("root.pem")),
        s(input),
    ]);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("verify --json: {e}: {} {}", stdout(&o), stderr(&o)));
    (o.status.code().unwrap_or(-1), v)
}

fn check<'a>(v: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    v["signers"][0]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
}

#[test]
fn sign_with_a_timestamp_from_a_loopback_tsa() {
    let agent = Agent::start();
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path();
    let tsa = start_tsa(&agent, dir);
    let url = format!("http://127.0.0.1:{}/tsa", tsa.port);
    let msg = dir.join("m.eml");
    std::fs::write(&msg, MESSAGE).expect("write");

    for (key, from) in [("alice-rsa", "alice"), ("bob-p256", "bob")] {
        let out = dir.join(format!("signed-{key}.eml"));
        let input = dir.join(format!("{from}.eml"));
        let text =
            String::from_utf8_lossy(MESSAGE).replace("From: alice", &format!("From: {from}"));
        std::fs::write(&input, text).expect("write");
        ok(
            &agent.cli(&[
                "sign",
                "--signer",
                key,
                "--timestamp",
                &url,
                s(&input),
                "-o",
                s(&out),
            ]),
            "tokenmail sign --timestamp",
        );
        // openssl verifies the message, the unsigned attribute notwithstanding
        let v = openssl(
            dir,
            &[
                "cms",
                "-verify",
                "-purpose",
                "any",
                "-CAfile",
                s(&agent.fixture.pki("root.pem")),
                "-in",
                s(&out),
                "-out",
                "/dev/null",
            ],
        );
        ok(&v, "openssl cms -verify");
        let (code, j) = verify_json(&agent, &out);
        assert_eq!(code, 0, "{j:#}");
        let c = check(&j, "timestamp").expect("timestamp check");
        assert_eq!(c["ok"], true, "{c}");
        let ts = &j["signers"][0]["timestamp"];
        assert_eq!(ts["tsa"], "CN=tokenmail Test TSA", "{ts}");
        assert!(
            ts["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{ts}"
        );
        assert!(check(&j, "validity_at_timestamp").is_some_and(|c| c["ok"] == true));
    }
    let reqs = std::fs::read_to_string(dir.join("requests.log")).expect("log");
    assert_eq!(
        reqs.lines()
            .filter(|l| *l == "POST /tsa application/timestamp-query")
            .count(),
        2,
        "{reqs}"
    );

    // text output names the time and the TSA
    let out = dir.join("signed-alice-rsa.eml");
    let o = agent.cli(&[
        "verify",
        "--revocation",
        "off",
        "--trust",
        s(&agent.fixture.pki("root.pem")),
        s(&out),
    ]);
    ok(&o, "verify");
    assert!(stdout(&o).contains("  timestamp: "), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("by CN=tokenmail Test TSA"),
        "{}",
        stdout(&o)
    );

    // the token is where openssl looks for it (openssl ts -verify on an extracted token:
    // smime/tests/ess_tsp.rs)
    let sig = dir.join("sig.der");
    ok(
        &agent.cli(&[
            "sign",
            "--detached-der",
            "--signer",
            "alice-rsa",
            "--timestamp",
            &url,
            s(&msg),
            "-o",
            s(&sig),
        ]),
        "detached with timestamp",
    );
    let o = openssl(
        dir,
        &[
            "cms",
            "-cmsout",
            "-print",
            "-inform",
            "DER",
            "-in",
            s(&sig),
            "-noout",
        ],
    );
    ok(&o, "cms -print");
    let printed = stdout(&o);
    assert!(printed.contains("id-smime-aa-timeStampToken"), "{printed}");

    // a TSA that answers garbage, and one that does not exist: nothing written, one line
    for bad in [
        format!("http://127.0.0.1:{}/garbage", tsa.port),
        format!("http://127.0.0.1:{}/missing", tsa.port),
    ] {
        let out = dir.join("never.eml");
        let o = agent.cli(&[
            "sign",
            "--signer",
            "alice-rsa",
            "--timestamp",
            &bad,
            s(&msg),
            "-o",
            s(&out),
        ]);
        assert!(!o.status.success(), "{bad}");
        let e = stderr(&o);
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        assert!(e.contains("timestamp from"), "{e}");
        assert!(!out.exists(), "{bad}: output written");
    }
    let o = agent.cli(&[
        "sign",
        "--signer",
        "alice-rsa",
        "--timestamp",
        "https://tsa.example/",
        s(&msg),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("only http://"), "{}", stderr(&o));

    // [sign] tsa in the configuration is the default
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, format!("[sign]\ntsa = \"{url}\"\n")).expect("config");
    let out = dir.join("configured.eml");
    ok(
        &process::output(
            agent
                .cli_cmd(&["sign", "--signer", "alice-rsa", s(&msg), "-o", s(&out)])
                .env("TOKENMAIL_CONFIG", &cfg),
        ),
        "sign with [sign] tsa",
    );
    let (code, j) = verify_json(&agent, &out);
    assert_eq!(code, 0, "{j:#}");
    assert!(
        check(&j, "timestamp").is_some_and(|c| c["ok"] == true),
        "{j:#}"
    );
}

/// Software peer (dave, not on the token) as openssl sees it.
fn dave(agent: &Agent) -> (PathBuf, PathBuf) {
    (
        agent.fixture.pki("dave-rsa.pem"),
        agent.fixture.pki("dave-rsa.key"),
    )
}

#[test]
fn receipts_and_labels_round_trip_with_openssl() {
    let agent = Agent::start();
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path();
    let msg = dir.join("m.eml");
    std::fs::write(&msg, MESSAGE).expect("write");
    let root = agent.fixture.pki("root.pem");
    let int = agent.fixture.pki("intermediate.pem");
    let (dave_pem, dave_key) = dave(&agent);

    // 1. we request a receipt and label the message; openssl answers; we check the receipt
    let sent = dir.join("sent.eml");
    ok(
        &agent.cli(&[
            "sign",
            "--opaque",
            "--signer",
            "alice@example.com",
            "--receipt-request",
            "--security-label",
            "1.3.6.1.4.1.99999.1:confidential",
            s(&msg),
            "-o",
            s(&sent),
        ]),
        "sign --receipt-request --security-label",
    );
    let (code, j) = verify_json(&agent, &sent);
    assert_eq!(code, 0, "{j:#}");
    let label = &j["signers"][0]["security_label"];
    assert_eq!(label["policy"], "1.3.6.1.4.1.99999.1", "{label}");
    assert_eq!(label["classification"], 3, "{label}");
    assert_eq!(label["classification_name"], "confidential", "{label}");
    let rr = &j["signers"][0]["receipt_request"];
    assert_eq!(rr["receipts_to"][0], "alice@example.com", "{rr}");
    let o = agent.cli(&[
        "verify",
        "--revocation",
        "off",
        "--trust",
        s(&root),
        s(&sent),
    ]);
    ok(&o, "verify text");
    assert!(
        stdout(&o).contains("security label: policy 1.3.6.1.4.1.99999.1, confidential (3)"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("signed receipt requested from all recipients, to alice@example.com")
    );

    let o = openssl(
        dir,
        &[
            "cms",
            "-sign_receipt",
            "-in",
            s(&sent),
            "-signer",
            s(&dave_pem),
            "-inkey",
            s(&dave_key),
            "-certfile",
            s(&int),
            "-out",
            "receipt-by-openssl.eml",
        ],
    );
    ok(&o, "openssl cms -sign_receipt");
    let o = agent.cli(&[
        "verify-receipt",
        "--trust",
        s(&root),
        "--original",
        s(&sent),
        s(&dir.join("receipt-by-openssl.eml")),
    ]);
    ok(&o, "tokenmail verify-receipt (openssl's receipt)");
    assert!(stdout(&o).contains("receipt valid"), "{}", stdout(&o));

    // the receipt checked against another message that also asked for one: refused
    let other = dir.join("other.eml");
    ok(
        &agent.cli(&[
            "sign",
            "--signer",
            "alice@example.com",
            "--receipt-request",
            s(&msg),
            "-o",
            s(&other),
        ]),
        "sign other",
    );
    let o = agent.cli(&[
        "verify-receipt",
        "--json",
        "--trust",
        s(&root),
        "--original",
        s(&other),
        s(&dir.join("receipt-by-openssl.eml")),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(j["valid"], false);
    assert!(
        j["receipt_checks"]
            .as_array()
            .expect("checks")
            .iter()
            .any(|c| c["name"] == "originator_signature" && c["ok"] == false),
        "{j:#}"
    );

    // 2. openssl requests one; we make the receipt on the token; openssl verifies it
    std::fs::write(dir.join("body.txt"), b"Please confirm.\r\n").expect("write");
    let o = openssl(
        dir,
        &[
            "cms",
            "-sign",
            "-in",
            "body.txt",
            "-signer",
            s(&dave_pem),
            "-inkey",
            s(&dave_key),
            "-certfile",
            s(&int),
            "-receipt_request_all",
            "-receipt_request_to",
            "dave@example.com",
            "-out",
            "from-dave.eml",
        ],
    );
    ok(&o, "openssl cms -sign -receipt_request_all");
    let receipt = dir.join("receipt.eml");
    let o = agent.cli(&[
        "receipt",
        "--signer",
        "bob@example.com",
        "--trust",
        s(&root),
        s(&dir.join("from-dave.eml")),
        "-o",
        s(&receipt),
    ]);
    ok(&o, "tokenmail receipt");
    assert!(
        stderr(&o).contains("send it to dave@example.com"),
        "{}",
        stderr(&o)
    );
    let text = std::fs::read_to_string(&receipt).expect("receipt");
    assert!(text.starts_with("To: dave@example.com\r\n"), "{text}");
    assert!(text.contains("smime-type=signed-receipt"), "{text}");
    let o = openssl(
        dir,
        &[
            "cms",
            "-verify_receipt",
            s(&receipt),
            "-in",
            "from-dave.eml",
            "-CAfile",
            s(&root),
            "-purpose",
            "any",
        ],
    );
    ok(&o, "openssl cms -verify_receipt (our receipt)");
    let o = agent.cli(&[
        "verify-receipt",
        "--trust",
        s(&root),
        "--original",
        s(&dir.join("from-dave.eml")),
        s(&receipt),
    ]);
    ok(&o, "tokenmail verify-receipt (our receipt)");

    // no receipt for a message that does not ask for one, nor for a tampered message
    let plain = dir.join("plain.eml");
    ok(
        &agent.cli(&["sign", "--signer", "alice-rsa", s(&msg), "-o", s(&plain)]),
        "sign plain",
    );
    let o = agent.cli(&["receipt", "--signer", "bob@example.com", s(&plain)]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("requests no signed receipt"),
        "{}",
        stderr(&o)
    );
    let tampered = std::fs::read_to_string(&other).expect("read").replace(
        "Please confirm you read this.",
        "Please confirm you read that.",
    );
    let tampered_path = dir.join("tampered.eml");
    std::fs::write(&tampered_path, tampered).expect("write");
    let o = agent.cli(&[
        "receipt",
        "--signer",
        "bob@example.com",
        "--trust",
        s(&root),
        s(&tampered_path),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("does not verify"), "{}", stderr(&o));
}
