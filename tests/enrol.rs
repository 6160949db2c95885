//! Enrolment on a SoftHSM token through the agent (issue 13): `keygen` makes a key pair
//! that the token reports sensitive and never extractable, `csr` makes a request openssl
//! verifies and an openssl CA issues from, `import-cert` stores the certificate beside
//! the key (refusing another key's), and the key then signs mail openssl verifies — all
//! without restarting the agent. `import-p12` brings escrowed encryption keys (OpenSSL 3
//! defaults and -legacy) onto the token and refuses signing-only ones; `status` flags a
//! key the token lets be read.

use std::path::Path;
use std::process::Command;

use tokenmail_e2e::{process, stderr, stdout, Agent, Fixture};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn ok(o: &std::process::Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

fn run(cmd: &mut Command, what: &str) -> String {
    let o = process::output(cmd);
    ok(&o, what);
    stdout(&o)
}

/// `pkcs11-tool` on the fixture's token, logged in.
fn pkcs11_tool(f: &Fixture) -> Command {
    let mut c = Command::new("pkcs11-tool");
    c.env("SOFTHSM2_CONF", f.dir.join("softhsm2.conf"))
        .arg("--module")
        .arg(&f.module)
        .args(["--token-label", &f.label, "--login", "--pin", &f.pin()]);
    c
}

/// The `Access:` line pkcs11-tool prints for the private key labelled `label`.
fn access_of(f: &Fixture, label: &str) -> String {
    let list = run(
        pkcs11_tool(f).args(["--list-objects", "--type", "privkey"]),
        "pkcs11-tool --list-objects",
    );
    let mut in_key = false;
    for line in list.lines() {
        let t = line.trim();
        if let Some(l) = t.strip_prefix("label:") {
            in_key = l.trim() == label;
        }
        if in_key {
            if let Some(a) = t.strip_prefix("Access:") {
                return a.trim().to_string();
            }
        }
    }
    panic!("no private key {label:?} on the token:\n{list}");
}

/// Sensitive and not extractable; a key generated on the token is also "never
/// extractable" (CKA_NEVER_EXTRACTABLE), which an imported key cannot be by definition.
fn assert_not_extractable(f: &Fixture, label: &str) {
    let access = access_of(f, label);
    let flags: Vec<&str> = access.split(',').map(str::trim).collect();
    assert!(flags.contains(&"sensitive"), "{label}: {access}");
    assert!(!flags.contains(&"extractable"), "{label}: {access}");
}

fn assert_generated_on_token(f: &Fixture, label: &str) {
    assert_not_extractable(f, label);
    let access = access_of(f, label);
    assert!(
        access.contains("never extractable") && access.contains("local"),
        "{label}: {access}"
    );
}

const MESSAGE: &[u8] = b"From: new@example.com\r\nTo: bob@example.com\r\nSubject: first day\r\n\r\nsigned with a key made today\r\n";

/// Issues a certificate from `csr` with the fixture's intermediate CA, copying the
/// request's extensions (SAN, keyUsage, extendedKeyUsage) as a CA would.
fn issue(f: &Fixture, dir: &Path, csr: &Path, out: &Path, ku: Option<&str>) {
    let ext = dir.join("issue.ext");
    let mut text = String::from(
        "[v3]\nbasicConstraints = CA:FALSE\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
    );
    if let Some(ku) = ku {
        text.push_str(&format!("keyUsage = critical, {ku}\n"));
    }
    std::fs::write(&ext, text).expect("ext");
    run(
        Command::new("openssl")
            .args(["x509", "-req", "-in", s(csr), "-CA"])
            .arg(f.pki("intermediate.pem"))
            .arg("-CAkey")
            .arg(f.pki("intermediate.key"))
            .args(["-set_serial", "4242", "-days", "365", "-sha256"])
            .args([
                "-copy_extensions",
                "copyall",
                "-extfile",
                s(&ext),
                "-extensions",
                "v3",
            ])
            .args(["-out", s(out)]),
        "openssl x509 -req (the CA issues)",
    );
}

#[test]
fn keygen_csr_issue_import_and_sign_without_restart() {
    let agent = Agent::start();
    let f = &agent.fixture;
    let w = tempfile::tempdir().expect("tempdir");
    let msg = w.path().join("m.eml");
    std::fs::write(&msg, MESSAGE).expect("msg");
    for (n, algo) in ["p256", "rsa2048", "p384"].into_iter().enumerate() {
        let label = format!("new-{algo}");
        let email = format!("new{n}@example.com");
        let o = agent.cli(&["keygen", "--label", &label, "--algo", algo, "--json"]);
        ok(&o, "keygen");
        let j: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
        assert_eq!(j["label"], label.as_str());
        assert_eq!(j["exportable"], false);
        assert!(j["public_key"]
            .as_str()
            .expect("pem")
            .starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_generated_on_token(f, &label);
        // the id is fresh and shared by both halves
        let id = j["id"].as_str().expect("id").to_string();
        assert_eq!(id.len(), 32, "16 random bytes: {id}");
        let pubs = run(
            pkcs11_tool(f).args(["--list-objects", "--type", "pubkey", "--id", &id]),
            "public half",
        );
        assert!(pubs.contains(&label), "public key with the same id: {pubs}");

        // a label in use is refused, and nothing is made
        let o = agent.cli(&["keygen", "--label", &label, "--algo", algo]);
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("already has an object labelled"),
            "{}",
            stderr(&o)
        );

        // the CSR, checked by openssl
        let csr = w.path().join(format!("{label}.csr"));
        ok(
            &agent.cli(&["csr", "--key", &label, "--email", &email, "-o", s(&csr)]),
            "csr",
        );
        let text = run(
            Command::new("openssl").args(["req", "-in", s(&csr), "-noout", "-verify", "-text"]),
            "openssl req -verify",
        );
        assert!(text.contains(&format!("email:{email}")), "{text}");
        assert!(text.contains("E-mail Protection"), "{text}");
        assert!(text.contains("Digital Signature"), "{text}");
        assert!(
            text.contains(if algo.starts_with("rsa") {
                "Key Encipherment"
            } else {
                "Key Agreement"
            }),
            "{text}"
        );
        assert!(text.contains(&format!("CN = {email}")), "{text}");

        // another key's certificate is refused; the issued one is stored
        let cert = w.path().join(format!("{label}.pem"));
        issue(f, w.path(), &csr, &cert, None);
        let o = agent.cli(&["import-cert", "--key", &label, s(&f.pki("alice-rsa.pem"))]);
        assert!(!o.status.success(), "another key's certificate");
        assert!(stderr(&o).contains("not the one of key"), "{}", stderr(&o));
        ok(
            &agent.cli(&[
                "import-cert",
                "--key",
                &label,
                s(&cert),
                "--chain",
                s(&f.pki("chain.pem")),
            ]),
            "import-cert",
        );
        let certs = run(
            pkcs11_tool(f).args(["--list-objects", "--type", "cert", "--id", &id]),
            "certificate objects",
        );
        assert!(
            certs.contains(&label),
            "certificate beside the key: {certs}"
        );

        // the agent uses it at once: a signature openssl verifies
        let signed = w.path().join(format!("{label}.signed.eml"));
        let m = w.path().join(format!("m{n}.eml"));
        std::fs::write(
            &m,
            String::from_utf8_lossy(MESSAGE).replace("new@example.com", &email),
        )
        .expect("msg");
        ok(
            &agent.cli(&["sign", "--signer", &email, s(&m), "-o", s(&signed)]),
            "sign with the new key",
        );
        run(
            Command::new("openssl")
                .args(["cms", "-verify", "-in", s(&signed), "-CAfile"])
                .arg(f.pki("root.pem"))
                .args(["-purpose", "smimesign", "-out", "/dev/null"]),
            "openssl cms -verify",
        );
    }
    // the audit log has each key's generation, certificate import and signature
    let log = audit(&agent);
    for op in ["keygen", "import-cert", "sign"] {
        assert!(
            log.iter()
                .filter(|r| r["op"] == op && r["result"] == "ok")
                .count()
                >= 3,
            "{op} x3 in {log:?}"
        );
    }
    // `keys` lists them, none flagged
    let keys = stdout(&agent.cli(&["keys"]));
    assert!(
        keys.contains("new-p384") && !keys.contains("WARNING"),
        "{keys}"
    );

    // renewal: a new key on the same token, a request with the old subject and email
    let req = w.path().join("renew.csr");
    let o = agent.cli(&[
        "renew",
        "--key",
        "new-p256",
        "--label",
        "new-p256-2",
        "-o",
        s(&req),
    ]);
    ok(&o, "renew");
    let text = run(
        Command::new("openssl").args(["req", "-in", s(&req), "-noout", "-verify", "-text"]),
        "renewal request",
    );
    assert!(
        text.contains("email:new0@example.com") && text.contains("CN = new0@example.com"),
        "{text}"
    );
    assert_generated_on_token(f, "new-p256-2");
    assert!(
        stdout(&agent.cli(&["keys"])).contains("new-p256"),
        "the old key stays"
    );
}

/// `openssl pkcs12 -export` of a key and certificate with a password, `extra` options.
fn p12(dir: &Path, key: &Path, cert: &Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let out = dir.join(format!("{name}.p12"));
    run(
        Command::new("openssl")
            .args(["pkcs12", "-export", "-inkey", s(key), "-in", s(cert)])
            .args(["-passout", "pass:escrow secret", "-out", s(&out)])
            .args(extra),
        "openssl pkcs12 -export",
    );
    out
}

#[test]
fn escrowed_keys_are_imported_from_pkcs12_and_decrypt() {
    let agent = Agent::start();
    let f = &agent.fixture;
    let w = tempfile::tempdir().expect("tempdir");
    let pw = w.path().join("pw");
    std::fs::write(&pw, "escrow secret\n").expect("pw");
    let wrong = w.path().join("wrong");
    std::fs::write(&wrong, "not it\n").expect("pw");
    let msg = w.path().join("m.eml");
    std::fs::write(
        &msg,
        b"To: dave@example.com\r\nSubject: escrow\r\n\r\nfor the archive\r\n",
    )
    .expect("msg");
    for (label, extra) in [("dave-escrow", &[][..]), ("dave-legacy", &["-legacy"][..])] {
        let file = p12(
            w.path(),
            &f.pki("dave-rsa.key"),
            &f.pki("dave-rsa.pem"),
            label,
            extra,
        );
        let o = agent.cli(&[
            "import-p12",
            "--label",
            label,
            "--password-file",
            s(&wrong),
            s(&file),
        ]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("wrong password"), "{}", stderr(&o));
        let o = agent.cli(&[
            "import-p12",
            "--label",
            label,
            "--password-file",
            s(&pw),
            s(&file),
        ]);
        ok(&o, "import-p12");
        assert!(stdout(&o).contains("not extractable"), "{}", stdout(&o));
        assert_not_extractable(f, label);
        // the same label again is refused
        let o = agent.cli(&[
            "import-p12",
            "--label",
            label,
            "--password-file",
            s(&pw),
            s(&file),
        ]);
        assert!(!o.status.success(), "label in use");
        // remove the first import's key before the next, so dave's certificate selects one
        if label == "dave-escrow" {
            // mail openssl encrypts to dave is decrypted on the token
            let enc = w.path().join("enc.p7m");
            run(
                Command::new("openssl")
                    .args([
                        "cms",
                        "-encrypt",
                        "-aes256",
                        "-in",
                        s(&msg),
                        "-out",
                        s(&enc),
                    ])
                    .arg(f.pki("dave-rsa.pem")),
                "openssl cms -encrypt to dave",
            );
            let dec = w.path().join("dec.eml");
            ok(
                &agent.cli(&["decrypt", s(&enc), "-o", s(&dec)]),
                "decrypt with the escrowed key",
            );
            assert_eq!(
                std::fs::read(&dec).expect("plain"),
                std::fs::read(&msg).expect("msg"),
                "escrowed key decrypts"
            );
            run(
                pkcs11_tool(f).args(["--delete-object", "--type", "privkey", "--label", label]),
                "delete",
            );
        }
    }

    // a signing-only certificate: refused unless --force
    let csr = w.path().join("erin.csr");
    run(
        Command::new("openssl")
            .args(["req", "-new", "-key"])
            .arg(f.pki("erin-p256.key"))
            .args([
                "-subj",
                "/CN=Erin Sign Only",
                "-addext",
                "subjectAltName=email:erin@example.com",
            ])
            .args(["-out", s(&csr)]),
        "erin csr",
    );
    let cert = w.path().join("erin-sign.pem");
    issue(
        f,
        w.path(),
        &csr,
        &cert,
        Some("digitalSignature, nonRepudiation"),
    );
    let file = p12(w.path(), &f.pki("erin-p256.key"), &cert, "erin", &[]);
    let o = agent.cli(&[
        "import-p12",
        "--label",
        "erin-sign",
        "--password-file",
        s(&pw),
        s(&file),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("allows only signing"), "{}", stderr(&o));
    assert!(
        !run(pkcs11_tool(f).args(["--list-objects"]), "list").contains("erin-sign"),
        "nothing stored"
    );
    ok(
        &agent.cli(&[
            "import-p12",
            "--force",
            "--label",
            "erin-sign",
            "--password-file",
            s(&pw),
            s(&file),
        ]),
        "import-p12 --force",
    );
    assert_not_extractable(f, "erin-sign");

    // the audit log has the imports and the decryption, with who asked
    let log = audit(&agent);
    for op in ["import-key", "decrypt"] {
        assert!(
            log.iter().any(|r| r["op"] == op
                && r["result"] == "ok"
                && r["peer"]["program"] == "tokenmail"),
            "{op} in {log:?}"
        );
    }
    assert!(
        !log.iter().any(|r| r.to_string().contains("escrow secret")),
        "no password in the log"
    );
}

/// The agent's audit log, one JSON value per line.
fn audit(agent: &Agent) -> Vec<serde_json::Value> {
    std::fs::read_to_string(agent.audit_log())
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn a_key_the_token_lets_be_read_is_flagged() {
    // a key made the careless way (pkcs11-tool --extractable), before the agent starts
    let mut agent = Agent::start_configured(&[], true, |f| {
        run(
            pkcs11_tool(f).args([
                "--keypairgen",
                "--key-type",
                "EC:prime256v1",
                "--id",
                "77",
                "--label",
                "careless",
                "--usage-sign",
                "--extractable",
            ]),
            "pkcs11-tool --keypairgen --extractable",
        );
        None
    });
    let o = agent.cli(&["keys", "--json"]);
    ok(&o, "keys --json");
    let keys: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let careless = keys
        .as_array()
        .or_else(|| keys["keys"].as_array())
        .expect("array")
        .iter()
        .find(|k| k["label"] == "careless")
        .cloned()
        .expect("the careless key is listed");
    assert_eq!(careless["exportable"], true, "{careless}");
    let text = stdout(&agent.cli(&["keys"]));
    assert!(
        text.contains("WARNING: the token reports this private key extractable"),
        "{text}"
    );
    // the provisioned keys are not flagged
    let alice = keys
        .as_array()
        .or_else(|| keys["keys"].as_array())
        .expect("array")
        .iter()
        .find(|k| k["label"] == "alice-rsa")
        .cloned()
        .expect("alice");
    assert!(alice.get("exportable").is_none() || alice["exportable"] == false);
    // and the agent said so in its log at start
    let (_, log) = agent.stop();
    assert!(
        log.contains("\"careless\"") && log.contains("extractable or not sensitive"),
        "{log}"
    );
}
