//! The agent's `verify` operation and revocation: it never goes to the network while it
//! holds a worker, but it reads the revocation cache `tokenmail verify` fills (`[trust]
//! crl_cache`), so a signer revoked on a cached CRL is revoked through the agent too. The
//! PKI's certificates point at a port nothing listens on, and the cache is filled by hand
//! under the names the CLI gives its entries.

use std::process::Command;

use tokenmail_e2e::{process, Agent};
use tokenmail_proto::v1::{Request, Response};
use tokenmail_proto::Client;
use tokenmail_smime::revcache;

fn verify(agent: &Agent, msg: &[u8]) -> (bool, serde_json::Value) {
    let mut c = Client::connect(&agent.socket, "agent-revocation").expect("connect");
    let req = Request::Verify {
        trust: vec![],
        signature: None,
    };
    match c.call_stream(&req, msg, &mut Vec::new()).expect("verify") {
        Response::Verified { valid, report } => (valid, report),
        other => panic!("{other:?}"),
    }
}

fn revocation_entries(report: &serde_json::Value) -> Vec<(String, String)> {
    report["signers"][0]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "revocation")
        .and_then(|c| c["certificates"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap_or_default().to_string(),
                e["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_agent_reads_the_revocation_cache_the_cli_fills() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path().to_path_buf();
    let out = process::run_with_timeout(
        Command::new("bash")
            .arg("-c")
            .arg(include_str!("../cli/tests/data/revocation-net-pki.sh"))
            .env("PORT", "9")
            .current_dir(&dir),
        None,
        process::long_limit(),
    );
    assert!(
        out.status.success(),
        "PKI: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cache = dir.join("cache");
    std::fs::create_dir(&cache).expect("cache dir");
    let config = format!(
        "[trust]\nanchors = [\"{}\"]\nrevocation = \"hard-fail\"\nrevocation_sources = \"crl-only\"\ncrl_cache = \"{}\"\n",
        dir.join("root.pem").display(),
        cache.display()
    );
    let agent = Agent::start_configured(&[], true, |_| Some(config));
    let good = std::fs::read(dir.join("good.eml")).expect("good.eml");
    let revoked = std::fs::read(dir.join("revoked.eml")).expect("revoked.eml");

    // nothing cached: the status is unknown, and hard-fail refuses
    let (valid, report) = verify(&agent, &good);
    assert!(!valid, "no CRL anywhere, hard-fail: {report:#}");
    assert!(
        report.to_string().contains("does not fetch"),
        "the reason says why: {report:#}"
    );

    // the CRLs the CLI would have fetched, under its names
    for (url, file) in [
        ("http://127.0.0.1:9/crl/int.crl", "int.crl"),
        ("http://127.0.0.1:9/crl/root.crl", "root.crl"),
    ] {
        std::fs::copy(dir.join(file), cache.join(revcache::file_name("crl", url)))
            .expect("fill the cache");
    }
    let (valid, report) = verify(&agent, &good);
    assert!(valid, "{report:#}");
    assert_eq!(
        revocation_entries(&report),
        vec![("crl".into(), "good".into()), ("crl".into(), "good".into())],
        "{report:#}"
    );
    let (valid, report) = verify(&agent, &revoked);
    assert!(!valid, "a revoked signer through the agent: {report:#}");
    assert_eq!(
        revocation_entries(&report)[0],
        ("crl".to_string(), "revoked".to_string()),
        "{report:#}"
    );
}
