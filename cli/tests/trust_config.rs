//! `[trust]` in the configuration drives `tokenmail verify` (issue 12): anchors,
//! intermediates, revocation, max_path_length; bad values are refused in one line naming
//! the key; `tokenmail policy show` says what is in force and where it comes from. Own test
//! binary: it sets TOKENMAIL_CONFIG for the process.

use clap::Parser;
use std::path::Path;
use std::process::Command;

#[path = "../../pkcs11-tests/src/process.rs"]
mod process;
use tokenmail_cli::policy::{self, PolicyArgs};
use tokenmail_cli::verify::{run_with, VerifyArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: VerifyArgs,
}

#[derive(Parser)]
struct PolicyCli {
    #[command(flatten)]
    args: PolicyArgs,
}

fn verify(v: &[&str]) -> anyhow::Result<(i32, String)> {
    let mut all = vec!["tokenmail-verify"];
    all.extend_from_slice(v);
    let args = Cli::try_parse_from(all).expect("arguments").args;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_with(args, &mut out, &mut err)?;
    Ok((code, String::from_utf8_lossy(&out).into_owned()))
}

fn config(dir: &Path, text: &str) {
    std::fs::write(dir.join("agent.toml"), text).expect("config");
    std::env::set_var("TOKENMAIL_CONFIG", dir.join("agent.toml"));
}

#[test]
fn the_trust_table_drives_verify_and_policy_show_explains_it() {
    std::env::remove_var("TOKENMAIL_TRUST");
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path();
    let out = process::run_with_timeout(
        Command::new("bash")
            .arg("-c")
            .arg(include_str!("../../smime/tests/revocation-pki.sh"))
            .current_dir(dir),
        None,
        process::long_limit(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // a message without its intermediate: [trust] intermediates completes the path
    let o = process::output(
        Command::new("openssl")
            .args([
                "cms",
                "-sign",
                "-in",
                "msg.txt",
                "-signer",
                "ee_good.pem",
                "-inkey",
            ])
            .args([
                "ee_good.key",
                "-from",
                "alice@example.com",
                "-out",
                "eeonly.eml",
            ])
            .current_dir(dir),
    );
    assert!(o.status.success());
    let msg = dir.join("eeonly.eml").display().to_string();
    let revoked = dir.join("revoked.eml").display().to_string();

    config(dir, "[trust]\nanchors = [\"root.pem\"]\n");
    let (code, out) = verify(&[&msg]).expect("runs");
    assert_eq!(code, 1, "no intermediate: {out}");
    config(
        dir,
        "[trust]\nanchors = [\"root.pem\"]\nintermediates = [\"int.pem\"]\nrevocation = \"hard-fail\"\n",
    );
    let (code, out) = verify(&[&msg]).expect("runs");
    assert_eq!(code, 1, "hard-fail from the configuration, no CRL: {out}");
    assert!(out.contains("revocation = hard-fail"), "{out}");
    let (code, out) = verify(&["--revocation", "soft-fail", &msg]).expect("runs");
    assert_eq!(code, 0, "the flag overrides the configuration: {out}");
    let int_crl = dir.join("int.crl").display().to_string();
    let root_crl = dir.join("root.crl").display().to_string();
    let (code, out) = verify(&["--crl", &int_crl, "--crl", &root_crl, &msg]).expect("runs");
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&["--crl", &int_crl, "--crl", &root_crl, &revoked]).expect("runs");
    assert_eq!(code, 1, "{out}");

    // max_path_length = 0: one intermediate is too many
    config(
        dir,
        "[trust]\nanchors = [\"root.pem\"]\nmax_path_length = 0\nrevocation = \"off\"\n",
    );
    let (code, out) = verify(&[&dir.join("good.eml").display().to_string()]).expect("runs");
    assert_eq!(code, 1, "{out}");

    // certificate policies: the test CA asserts none, so a required one fails the path
    config(
        dir,
        "[trust]\nanchors = [\"root.pem\"]\nrevocation = \"off\"\npolicies = [\"1.2.3.4\"]\n",
    );
    let good = dir.join("good.eml").display().to_string();
    let (code, out) = verify(&[&good]).expect("runs");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("1.2.3.4"), "{out}");
    let mut out = Vec::new();
    let args = PolicyCli::try_parse_from(["policy", "show", "--json"])
        .expect("args")
        .args;
    assert_eq!(policy::run(args, &mut out).expect("runs"), 0);
    let j: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(j["trust"]["policies"]["value"][0], "1.2.3.4");
    assert_eq!(j["trust"]["require_explicit_policy"]["value"], true);
    config(
        dir,
        "[trust]\nanchors = [\"root.pem\"]\nrevocation = \"off\"\n",
    );
    let (code, out) = verify(&[&good]).expect("runs");
    assert_eq!(code, 0, "any policy by default: {out}");
    let (code, out) = verify(&["--policy", "1.2.3.4", &good]).expect("runs");
    assert_eq!(code, 1, "--policy: {out}");
    let e = verify(&["--policy", "1.2.x", &good]).expect_err("not an OID");
    assert!(format!("{e:#}").contains("1.2.x"), "{e:#}");

    // policy show
    config(
        dir,
        "[trust]\nanchors = [\"root.pem\"]\nrevocation = \"hard-fail\"\nclock_skew = 60\n",
    );
    let mut out = Vec::new();
    let args = PolicyCli::try_parse_from(["policy", "show", "--json"])
        .expect("args")
        .args;
    assert_eq!(policy::run(args, &mut out).expect("runs"), 0);
    let j: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(j["trust"]["revocation"]["value"], "hard-fail");
    assert!(j["trust"]["revocation"]["from"]
        .as_str()
        .is_some_and(|f| f.contains("agent.toml")));
    assert_eq!(j["trust"]["max_path_length"]["value"], 3);
    assert_eq!(j["trust"]["max_path_length"]["from"], "default");
    assert_eq!(j["trust"]["clock_skew_seconds"]["value"], 60);
    assert_eq!(j["trust"]["revocation_sources"]["value"], "ocsp-first");
    assert_eq!(j["trust"]["revocation_sources"]["from"], "default");
    assert_eq!(j["trust"]["anchors"]["value"][0], "CN=tokenmail Rev Root");

    // bad values: one line naming the key
    for (text, says) in [
        (
            "[trust]\nrevocaton = \"off\"\n",
            "unknown field `revocaton`",
        ),
        (
            "[trust]\nrevocation = \"sometimes\"\n",
            "unknown variant `sometimes`",
        ),
        ("[trust]\nmax_path_length = 50\n", "max_path_length = 50"),
        ("[trust]\nmin_rsa_bits = 512\n", "min_rsa_bits = 512"),
        ("[trust]\npolicies = [\"1.2.x\"]\n", "[trust] policies"),
    ] {
        config(dir, text);
        let e = verify(&["--trust", &dir.join("root.pem").display().to_string(), &msg])
            .expect_err("refused");
        let m = format!("{e:#}");
        assert!(m.contains(says) && m.contains("agent.toml"), "{m}");
    }
}
