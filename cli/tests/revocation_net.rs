//! Revocation over the network against real responders on loopback (issue 12): CRLs made
//! by `openssl ca -gencrl` and OCSP answers made by `openssl ocsp` behind a small Python
//! HTTP server on 127.0.0.1 (cli/tests/data/revocation_server.py). `tokenmail verify` runs
//! in-process with the http fetcher and a private cache. One test: it sets the process's
//! TOKENMAIL_CONFIG (the cache directory) for itself.

use clap::Parser;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../pkcs11-tests/src/process.rs"]
mod process;
use tokenmail_cli::verify::{run_with, VerifyArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: VerifyArgs,
}

fn verify(dir: &Path, extra: &[&str], msg: &str) -> (i32, serde_json::Value) {
    let root = dir.join("root.pem").display().to_string();
    let input = dir.join(msg).display().to_string();
    let mut all = vec!["tokenmail-verify", "--json", "--trust", &root];
    all.extend_from_slice(extra);
    all.push(&input);
    let args = Cli::try_parse_from(all).expect("arguments").args;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_with(args, &mut out, &mut err).expect("verify runs");
    let j = serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("{msg}: json {e}: {}", String::from_utf8_lossy(&out)));
    (code, j)
}

/// The per-certificate revocation entries (end entity first).
fn entries(j: &serde_json::Value) -> Vec<serde_json::Value> {
    j["signers"][0]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "revocation")
        .map(|c| c["certificates"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
}

fn requests(dir: &Path, path: &str) -> usize {
    std::fs::read_to_string(dir.join("requests.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with(path))
        .count()
}

#[test]
fn ocsp_and_crl_distribution_points_over_http() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path();
    let mut server = process::Running::spawn(
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/revocation_server.py"
            ))
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let t = Instant::now();
    let port = loop {
        let out = String::from_utf8_lossy(&server.stdout_so_far()).into_owned();
        if let Some(p) = out
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u16>().ok())
        {
            break p;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "server did not start"
        );
        assert!(
            server.alive(),
            "server exited: {}",
            String::from_utf8_lossy(&server.stderr_so_far())
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = process::run_with_timeout(
        Command::new("bash")
            .arg("-c")
            .arg(include_str!("data/revocation-net-pki.sh"))
            .env("PORT", port.to_string())
            .current_dir(dir),
        None,
        process::long_limit(),
    );
    assert!(
        out.status.success(),
        "PKI: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cache = dir.join("cache");
    std::fs::write(
        dir.join("config.toml"),
        format!("[trust]\ncrl_cache = \"{}\"\n", cache.display()),
    )
    .expect("config");
    std::env::set_var("TOKENMAIL_CONFIG", dir.join("config.toml"));
    let hard = ["--revocation", "hard-fail"];

    // good: the end entity by the intermediate's OCSP responder, the intermediate by the root's
    let (code, j) = verify(dir, &hard, "good.eml");
    assert_eq!(code, 0, "{j:#}");
    let e = entries(&j);
    assert_eq!(e.len(), 2, "{j:#}");
    for x in &e {
        assert_eq!(
            (x["source"].as_str(), x["status"].as_str()),
            (Some("ocsp"), Some("good")),
            "{x:#}"
        );
    }

    // revoked by OCSP: reason and time
    let (code, j) = verify(dir, &[], "revoked.eml");
    assert_eq!(code, 1, "{j:#}");
    let ee = &entries(&j)[0];
    assert_eq!(ee["source"], "ocsp");
    assert_eq!(ee["status"], "revoked");
    assert_eq!(ee["reason"], "keyCompromise");
    assert!(ee["revocation_time"].is_string(), "{ee:#}");

    // revoked by the CRL at the distribution point; the second time from the cache
    let (code, j) = verify(dir, &[], "crl_only.eml");
    assert_eq!(code, 1, "{j:#}");
    let ee = &entries(&j)[0];
    assert_eq!(
        (ee["source"].as_str(), ee["status"].as_str()),
        (Some("crl"), Some("revoked")),
        "{ee:#}"
    );
    assert!(
        ee["detail"]
            .as_str()
            .is_some_and(|d| d.contains("/crl/int.crl")),
        "{ee:#}"
    );
    let fetched = requests(dir, "/crl/int.crl");
    assert_eq!(fetched, 1);
    let (code, _) = verify(dir, &[], "crl_only.eml");
    assert_eq!(code, 1);
    assert_eq!(
        requests(dir, "/crl/int.crl"),
        fetched,
        "the cached CRL is used until its nextUpdate"
    );

    // a responder the CA delegated (id-kp-OCSPSigning, issued by the CA)
    let (code, j) = verify(dir, &hard, "delegated.eml");
    assert_eq!(code, 0, "{j:#}");
    assert!(entries(&j)[0]["detail"]
        .as_str()
        .is_some_and(|d| d.contains("tokenmail Net OCSP Responder")));

    // a responder the CA did not certify: no status; hard-fail refuses, soft-fail accepts
    let (code, j) = verify(dir, &hard, "wrong.eml");
    assert_eq!(code, 1, "{j:#}");
    let ee = &entries(&j)[0];
    assert_eq!(ee["status"], "unknown");
    assert!(
        ee["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not issued by")),
        "{ee:#}"
    );
    let (code, _) = verify(dir, &[], "wrong.eml");
    assert_eq!(code, 0, "soft-fail");

    // responder down
    let (code, j) = verify(dir, &hard, "down.eml");
    assert_eq!(code, 1, "{j:#}");
    let ee = &entries(&j)[0];
    assert!(
        ee["detail"]
            .as_str()
            .is_some_and(|d| d.contains("127.0.0.1:1")),
        "{ee:#}"
    );
    let (code, j) = verify(dir, &[], "down.eml");
    assert_eq!(
        code, 0,
        "soft-fail: an unreachable responder is reported, not fatal"
    );
    // ... and it is not asked again for a while (a blackholed one would cost each message
    // its whole deadline)
    assert!(
        entries(&j)[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("was unreachable") && d.contains("not asked again")),
        "{j:#}"
    );

    // a certificate the responder does not know
    let (code, j) = verify(dir, &hard, "unknown.eml");
    assert_eq!(code, 1, "{j:#}");
    assert!(entries(&j)[0]["detail"]
        .as_str()
        .is_some_and(|d| d.contains("does not know")));

    // a revoked recipient is refused by `tokenmail encrypt` (the certificate with its
    // chain in one file), a good one is not
    for (who, ok) in [("ee_revoked", false), ("ee_good", true)] {
        let mut bundle = std::fs::read(dir.join(format!("{who}.pem"))).expect("cert");
        bundle.extend(std::fs::read(dir.join("int.pem")).expect("int"));
        let b = dir.join(format!("{who}+int.pem"));
        std::fs::write(&b, bundle).expect("bundle");
        let o = process::output(
            Command::new(env!("CARGO_BIN_EXE_tokenmail"))
                .args(["encrypt", "--no-self", "--trust"])
                .arg(dir.join("root.pem"))
                .arg("--recipient-cert")
                .arg(&b)
                .arg("-o")
                .arg(dir.join("enc.eml"))
                .arg(dir.join("msg.txt")),
        );
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.success(), ok, "{who}: {e}");
        if !ok {
            assert!(e.contains("REVOKED") && e.contains("keyCompromise"), "{e}");
        }
    }

    // off: nothing asked
    let before = std::fs::read_to_string(dir.join("requests.log")).unwrap_or_default();
    let (code, _) = verify(dir, &["--revocation", "off"], "revoked.eml");
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read_to_string(dir.join("requests.log")).unwrap_or_default(),
        before,
        "revocation off: no request"
    );
    server.kill();
}
