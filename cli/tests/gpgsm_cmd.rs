//! `tokenmail-gpgsm` as git runs it, without an agent: verifying openssl-made detached
//! signatures (good, tampered, untrusted, wrong or codeSigning EKU, expired), the status
//! lines git parses, and one-line errors for bad arguments and a missing agent.

use std::path::Path;
use std::process::{Command, Output};

/// Running external programs with a deadline (shared with the other test crates).
#[path = "../../pkcs11-tests/src/process.rs"]
mod process;

const PAYLOAD: &[u8] = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\
author Alice <alice@example.com> 1700000000 +0000\n\
committer Alice <alice@example.com> 1700000000 +0000\n\nsigned commit\n";

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

/// Runs tokenmail-gpgsm with `args`, `stdin` as input and TOKENMAIL_TRUST = `trust`.
fn gpgsm(dir: &Path, args: &[&str], stdin: &[u8], trust: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tokenmail-gpgsm"));
    c.args(args)
        .current_dir(dir)
        .env_remove("TOKENMAIL_TRUST")
        // no agent configuration and no agent here
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("TOKENMAIL_SOCK", dir.join("no-agent.sock"));
    if let Some(t) = trust {
        c.env("TOKENMAIL_TRUST", dir.join(t));
    }
    // A command that fails on its arguments exits without reading its input: fine.
    process::output_with_input(&mut c, stdin)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The lines git's parse_gpg_output looks at, keyword first.
fn status_keywords(out: &Output) -> Vec<String> {
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("[GNUPG:] "))
        .map(|l| l.split(' ').next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn verifies_like_gpgsm_for_git() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path();
    sh(dir, include_str!("../../smime/tests/pki.sh"));
    sh(
        dir,
        "cat >> ext.cnf <<'X'
[ee_code]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = codeSigning
subjectAltName = email:alice@example.com
X
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out ee_code.key 2>/dev/null
openssl req -new -key ee_code.key -subj '/CN=Alice Code Signing' -out ee_code.csr -config ext.cnf
openssl x509 -req -in ee_code.csr -CA int.pem -CAkey int.key -set_serial 4242 -days 30 \
  -extfile ext.cnf -extensions ee_code -out ee_code.pem 2>/dev/null",
    );
    std::fs::write(dir.join("payload"), PAYLOAD).expect("write");
    for (name, signer) in [
        ("good", "ee_rsa"),
        ("server", "ee_server"),
        ("code", "ee_code"),
        ("expired", "ee_expired"),
    ] {
        sh(
            dir,
            &format!(
                "openssl cms -sign -binary -in payload -signer {signer}.pem -inkey {signer}.key \
                 -certfile int.pem -outform DER -out {name}.der && \
                 {{ echo '-----BEGIN SIGNED MESSAGE-----'; base64 -w 64 {name}.der; \
                    echo '-----END SIGNED MESSAGE-----'; }} > {name}.sig"
            ),
        );
    }
    let fpr = text(
        &process::output(
            Command::new("openssl")
                .args(["x509", "-noout", "-fingerprint", "-sha1", "-in"])
                .arg(dir.join("ee_rsa.pem")),
        )
        .stdout,
    );
    let fpr = fpr
        .trim()
        .split('=')
        .nth(1)
        .expect("fingerprint")
        .replace(':', "");

    // good: exactly what git parses (GOODSIG after a newline, one exclusive status, a
    // VALIDSIG with the SHA-1 fingerprint, TRUST_FULLY), exit 0
    let o = gpgsm(
        dir,
        &["--status-fd=1", "--verify", "good.sig", "-"],
        PAYLOAD,
        Some("root.pem"),
    );
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    assert!(out.contains(&format!("\n[GNUPG:] GOODSIG {fpr} ")), "{out}");
    assert!(out.contains(&format!("[GNUPG:] VALIDSIG {fpr} ")), "{out}");
    assert_eq!(
        status_keywords(&o),
        ["NEWSIG", "GOODSIG", "VALIDSIG", "TRUST_FULLY"]
    );
    assert!(
        text(&o.stderr).contains("Good signature from \"/CN=Alice RSA"),
        "{}",
        text(&o.stderr)
    );
    // the payload as a file, and DER instead of armor
    let o = gpgsm(
        dir,
        &["--status-fd", "1", "--verify", "good.der", "payload"],
        b"",
        Some("root.pem"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    // tampered payload: BADSIG, exit 1
    let mut bad = PAYLOAD.to_vec();
    let at = bad.len() - 2;
    bad[at] ^= 1;
    let o = gpgsm(
        dir,
        &["--status-fd=1", "--verify", "good.sig", "-"],
        &bad,
        Some("root.pem"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(status_keywords(&o), ["NEWSIG", "BADSIG"]);

    // another root, or none: a good signature that is not trusted
    for trust in [Some("other_root.pem"), None] {
        let o = gpgsm(
            dir,
            &["--status-fd=1", "--verify", "good.sig", "-"],
            PAYLOAD,
            trust,
        );
        assert_eq!(o.status.code(), Some(1), "{trust:?}");
        assert_eq!(
            status_keywords(&o),
            ["NEWSIG", "GOODSIG", "VALIDSIG", "TRUST_UNDEFINED"]
        );
        if trust.is_none() {
            assert!(
                text(&o.stderr).contains("set TOKENMAIL_TRUST"),
                "{}",
                text(&o.stderr)
            );
        }
    }
    // the agent configuration's [trust] anchors when TOKENMAIL_TRUST is unset
    std::fs::create_dir_all(dir.join("config/tokenmail")).expect("mkdir");
    std::fs::write(
        dir.join("config/tokenmail/agent.toml"),
        format!(
            "[trust]\nanchors = [\"{}\"]\n",
            dir.join("root.pem").display()
        ),
    )
    .expect("config");
    let o = gpgsm(
        dir,
        &["--status-fd=1", "--verify", "good.sig", "-"],
        PAYLOAD,
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    std::fs::remove_dir_all(dir.join("config")).expect("rm");

    // serverAuth only: rejected (TRUST_NEVER); codeSigning: accepted for commits
    let o = gpgsm(
        dir,
        &["--status-fd=1", "--verify", "server.sig", "-"],
        PAYLOAD,
        Some("root.pem"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        status_keywords(&o),
        ["NEWSIG", "GOODSIG", "VALIDSIG", "TRUST_NEVER"]
    );
    assert!(text(&o.stderr).contains("FAILED extended_key_usage"));
    let o = gpgsm(
        dir,
        &["--status-fd=1", "--verify", "code.sig", "-"],
        PAYLOAD,
        Some("root.pem"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        status_keywords(&o),
        ["NEWSIG", "GOODSIG", "VALIDSIG", "TRUST_FULLY"]
    );

    // expired certificate: EXPKEYSIG
    let o = gpgsm(
        dir,
        &["--status-fd=1", "--verify", "expired.sig", "-"],
        PAYLOAD,
        Some("root.pem"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        status_keywords(&o),
        ["NEWSIG", "EXPKEYSIG", "VALIDSIG", "TRUST_NEVER"]
    );

    // status to another descriptor (3, through bash): stdout stays empty
    let script = format!(
        "'{}' --status-fd 3 --verify good.sig - < payload 3>status.txt >stdout.txt",
        env!("CARGO_BIN_EXE_tokenmail-gpgsm")
    );
    sh(dir, &format!("TOKENMAIL_TRUST=root.pem {script}"));
    let st = std::fs::read_to_string(dir.join("status.txt")).expect("status");
    assert!(st.contains("[GNUPG:] GOODSIG "), "{st}");
    assert_eq!(std::fs::read(dir.join("stdout.txt")).expect("stdout"), b"");

    // an attached signature given with detached data: only the supplied data counts,
    // even when it is empty (the embedded content must not make it GOODSIG)
    sh(
        dir,
        "openssl cms -sign -binary -nodetach -in payload -signer ee_rsa.pem -inkey ee_rsa.key \
         -certfile int.pem -outform DER -out attached.der",
    );
    let o = gpgsm(
        dir,
        &["--status-fd=1", "--verify", "attached.der", "-"],
        b"",
        Some("root.pem"),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    assert!(!text(&o.stdout).contains("GOODSIG"), "{}", text(&o.stdout));
    assert!(text(&o.stdout).contains("BADSIG"), "{}", text(&o.stdout));
    // without a data operand it is an attached signature: its content is verified
    let o = gpgsm(
        dir,
        &["--status-fd=1", "--verify", "attached.der"],
        b"",
        Some("root.pem"),
    );
    assert!(text(&o.stdout).contains("GOODSIG"), "{}", text(&o.stdout));

    // garbage signature: one line, exit 2
    std::fs::write(dir.join("junk.sig"), b"not a signature\n").expect("write");
    let o = gpgsm(
        dir,
        &["--status-fd=1", "--verify", "junk.sig", "-"],
        PAYLOAD,
        Some("root.pem"),
    );
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(text(&o.stderr).lines().count(), 1, "{}", text(&o.stderr));
    assert!(!text(&o.stdout).contains("GOODSIG"));
}

#[test]
fn help_version_and_one_line_errors() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path();
    let o = gpgsm(dir, &["--help"], b"", None);
    assert!(o.status.success());
    assert!(text(&o.stdout).contains("gpg.x509.program tokenmail-gpgsm"));
    let o = gpgsm(dir, &["--version"], b"", None);
    assert!(o.status.success());
    assert!(text(&o.stdout).starts_with("tokenmail-gpgsm (tokenmail) "));
    for args in [
        vec!["--frobnicate"],
        vec!["-bsau"],
        vec!["--status-fd=2", "-bsau", "alice@example.com"], // no agent
        vec!["--status-fd=1", "--verify", "missing.sig", "-"],
        vec![],
    ] {
        let o = gpgsm(dir, &args, PAYLOAD, None);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = text(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("tokenmail-gpgsm: "), "{err}");
        assert!(o.stdout.is_empty(), "{args:?}: nothing half-written");
    }
    let o = gpgsm(
        dir,
        &["--status-fd=2", "-bsau", "alice@example.com"],
        PAYLOAD,
        None,
    );
    assert!(
        text(&o.stderr).contains("no tokenmail agent"),
        "{}",
        text(&o.stderr)
    );
    assert!(!text(&o.stderr).contains("SIG_CREATED"));
}
