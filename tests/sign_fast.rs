//! `tokenmail sign` with the signer cache (one round trip: `sign-digest-cert`, protocol
//! §6.4.1): the cache is written by the first signature and used by the next; when the
//! key's certificate changed (on the token, or in a damaged cache) the agent refuses to
//! sign and the CLI looks the key up again, signs with the right certificate and rewrites
//! the cache. Every program runs under `timeout`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tokenmail_e2e::{stderr, stdout, Agent};
use tokenmail_proto::v1::{Bytes, ErrorCode, Request, Response, SignAlgorithm, OPERATIONS};
use tokenmail_proto::{Client, ClientError};

const MESSAGE: &[u8] =
    b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: hi\r\nContent-Type: text/plain\r\n\r\nHello Bob.\r\n";

/// Runs `cmd` under `timeout` (60 s, then SIGKILL 5 s later).
fn run(cmd: &mut Command) -> Output {
    let mut t = Command::new("timeout");
    t.arg("-k").arg("5").arg("60").arg(cmd.get_program());
    t.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        t.current_dir(d);
    }
    t.stdin(std::process::Stdio::null());
    t.output().expect("spawn under timeout")
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

struct Setup {
    agent: Agent,
    cache: PathBuf,
    msg: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let agent = Agent::start();
        let cache = agent.dir.path().join("cache");
        let msg = agent.dir.path().join("msg.eml");
        std::fs::write(&msg, MESSAGE).expect("write message");
        Setup { agent, cache, msg }
    }

    fn pki(&self) -> PathBuf {
        self.agent.fixture.dir.join("pki")
    }

    /// `tokenmail sign --signer alice@example.com MSG -o OUT` with this test's cache.
    fn sign(&self, out: &Path) -> Output {
        let mut c = Command::new(tokenmail_e2e::bin("tokenmail"));
        c.arg("--socket")
            .arg(&self.agent.socket)
            .args(["sign", "--signer", "alice@example.com"])
            .arg(&self.msg)
            .arg("-o")
            .arg(out)
            .env("XDG_CACHE_HOME", &self.cache)
            .env_remove("TOKENMAIL_NO_SIGNER_CACHE");
        run(&mut c)
    }

    /// The one cache entry.
    fn entry(&self) -> PathBuf {
        let dir = self.cache.join("tokenmail").join("signers");
        let files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        assert_eq!(files.len(), 1, "one cache entry: {files:?}");
        files.into_iter().next().expect("one entry")
    }

    fn read_entry(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.entry()).expect("read entry")).expect("json")
    }

    fn write_entry(&self, v: &serde_json::Value) {
        std::fs::write(self.entry(), serde_json::to_vec(v).expect("json")).expect("write entry");
    }

    /// Checks `signed` with openssl against the test root and returns the signer's
    /// certificate (PEM) as openssl saw it.
    fn verify(&self, signed: &Path) -> String {
        let signer = signed.with_extension("signer.pem");
        let o = run(Command::new("openssl")
            .args(["cms", "-verify", "-CAfile"])
            .arg(self.pki().join("chain.pem"))
            .arg("-in")
            .arg(signed)
            .arg("-signer")
            .arg(&signer)
            .args(["-out", "/dev/null"]));
        ok(&o, "openssl cms -verify");
        std::fs::read_to_string(&signer).expect("signer certificate")
    }
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64")
}

fn sha256_hex(data: &[u8]) -> String {
    let o = {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("d");
        std::fs::write(&f, data).expect("write");
        run(Command::new("openssl")
            .args(["dgst", "-sha256", "-r"])
            .arg(&f))
    };
    ok(&o, "openssl dgst");
    stdout(&o)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string()
}

/// Marks the cached key as "touch always": `tokenmail sign` then tells the user to touch
/// the key, which only the cached path does (SoftHSM keys have no touch policy), so
/// stderr shows which path ran.
fn mark(v: &mut serde_json::Value) {
    v["key"]["touch"] = serde_json::json!("always");
}

fn used_cache(o: &Output) -> bool {
    stderr(o).contains("touch your key")
}

#[test]
fn cached_signer_signs_in_one_request_and_entries_are_private() {
    let s = Setup::new();
    let dir = s.agent.dir.path();
    let first = s.sign(&dir.join("1.eml"));
    ok(&first, "first sign");
    assert!(!used_cache(&first));
    s.verify(&dir.join("1.eml"));

    // Written by the first signature: 0700 directory, 0600 file, the key's certificate.
    use std::os::unix::fs::PermissionsExt;
    let entry = s.entry();
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&entry), 0o600);
    assert_eq!(mode(entry.parent().expect("dir")), 0o700);
    let mut v = s.read_entry();
    assert_eq!(v["signer"], "alice@example.com");
    assert_eq!(v["key"]["label"], "alice-rsa");
    let alice = std::fs::read_to_string(s.pki().join("alice-rsa.pem")).expect("alice cert");
    assert_eq!(
        v["key"]["certificate"]["sha256"],
        sha256_hex(&pem_to_der(&alice)).as_str()
    );

    // The next signature uses it: valid, by alice's certificate.
    mark(&mut v);
    s.write_entry(&v);
    for out in ["2.eml", "3.eml"] {
        let o = s.sign(&dir.join(out));
        ok(&o, "cached sign");
        assert!(used_cache(&o), "the cached path ran: {}", stderr(&o));
        let signer = s.verify(&dir.join(out));
        assert_eq!(pem_to_der(&signer), pem_to_der(&alice));
    }

    // Standard output and the opaque form take the same path.
    let mut c = Command::new(tokenmail_e2e::bin("tokenmail"));
    c.arg("--socket")
        .arg(&s.agent.socket)
        .args(["sign", "--opaque", "--signer", "alice@example.com"])
        .arg(&s.msg)
        .env("XDG_CACHE_HOME", &s.cache);
    let o = run(&mut c);
    ok(&o, "cached sign --opaque to standard output");
    assert!(used_cache(&o));
    std::fs::write(dir.join("4.eml"), &o.stdout).expect("write");
    s.verify(&dir.join("4.eml"));

    // An entry older than an hour is not used, and is written again.
    let mut v = s.read_entry();
    v["saved"] = serde_json::json!(0);
    s.write_entry(&v);
    let o = s.sign(&dir.join("4b.eml"));
    ok(&o, "sign with an old entry");
    assert!(!used_cache(&o), "an old entry is not used");
    let v = s.read_entry();
    assert!(v["saved"].as_u64().expect("saved") > 0);
    assert!(v["key"]["touch"].is_null(), "rewritten from status");

    // TOKENMAIL_NO_SIGNER_CACHE=1: the status path, the cache is not read.
    let mut c = Command::new(tokenmail_e2e::bin("tokenmail"));
    c.arg("--socket")
        .arg(&s.agent.socket)
        .args(["sign", "--signer", "alice@example.com"])
        .arg(&s.msg)
        .arg("-o")
        .arg(dir.join("5.eml"))
        .env("XDG_CACHE_HOME", &s.cache)
        .env("TOKENMAIL_NO_SIGNER_CACHE", "1");
    let o = run(&mut c);
    ok(&o, "sign without the cache");
    assert!(!used_cache(&o));
}

#[test]
fn wrong_certificate_in_the_cache_is_refused_then_looked_up_again() {
    let s = Setup::new();
    let dir = s.agent.dir.path();
    ok(&s.sign(&dir.join("1.eml")), "first sign");
    let alice = pem_to_der(&std::fs::read_to_string(s.pki().join("alice-rsa.pem")).expect("pem"));

    // The cache claims another certificate (dave's: also RSA, same CA, not on the token).
    let dave = pem_to_der(&std::fs::read_to_string(s.pki().join("dave-rsa.pem")).expect("pem"));
    let mut v = s.read_entry();
    {
        use base64::Engine;
        v["key"]["certificate"]["der"] =
            serde_json::json!(base64::engine::general_purpose::STANDARD.encode(&dave));
    }
    v["key"]["certificate"]["sha256"] = serde_json::json!(sha256_hex(&dave));
    mark(&mut v);
    s.write_entry(&v);

    let o = s.sign(&dir.join("2.eml"));
    ok(&o, "sign with a stale cache");
    assert!(used_cache(&o), "the cached path was tried first");
    // Signed by alice's real certificate, and the cache holds it again.
    assert_eq!(pem_to_der(&s.verify(&dir.join("2.eml"))), alice);
    let v = s.read_entry();
    assert_eq!(
        v["key"]["certificate"]["sha256"],
        sha256_hex(&alice).as_str()
    );
    assert!(v["key"]["touch"].is_null(), "rewritten from status");

    // A damaged entry is ignored.
    std::fs::write(s.entry(), b"{not json").expect("write");
    let o = s.sign(&dir.join("3.eml"));
    ok(&o, "sign with a damaged cache");
    s.verify(&dir.join("3.eml"));
    assert_eq!(s.read_entry()["key"]["label"], "alice-rsa");
}

#[test]
fn certificate_replaced_on_the_token_is_noticed() {
    let s = Setup::new();
    let dir = s.agent.dir.path();
    let pki = s.pki();
    ok(&s.sign(&dir.join("1.eml")), "first sign");
    let old = pem_to_der(&std::fs::read_to_string(pki.join("alice-rsa.pem")).expect("pem"));
    let id = s.read_entry()["key"]["id"]
        .as_str()
        .expect("id")
        .to_string();

    // A new certificate for alice's key (same public key, new serial and validity),
    // issued by the test intermediate; the CSR only carries the subject.
    let pubkey = dir.join("alice-pub.pem");
    ok(
        &run(Command::new("openssl")
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(pki.join("alice-rsa.pem"))
            .arg("-out")
            .arg(&pubkey)),
        "openssl x509 -pubkey",
    );
    let csr = dir.join("alice.csr");
    ok(
        &run(Command::new("openssl")
            .args(["req", "-new", "-key"])
            .arg(pki.join("dave-rsa.key"))
            .args([
                "-subj",
                "/CN=Alice Example/emailAddress=alice@example.com",
                "-out",
            ])
            .arg(&csr)),
        "openssl req",
    );
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "[v3]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\nsubjectAltName=email:alice@example.com\n",
    )
    .expect("ext");
    let new_pem = dir.join("alice-new.pem");
    ok(
        &run(Command::new("openssl")
            .args(["x509", "-req", "-days", "30", "-set_serial", "4242", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(pki.join("intermediate.pem"))
            .arg("-CAkey")
            .arg(pki.join("intermediate.key"))
            .arg("-force_pubkey")
            .arg(&pubkey)
            .arg("-extfile")
            .arg(&ext)
            .args(["-extensions", "v3", "-out"])
            .arg(&new_pem)),
        "openssl x509 -req",
    );
    let new = pem_to_der(&std::fs::read_to_string(&new_pem).expect("pem"));
    let new_der = dir.join("alice-new.der");
    std::fs::write(&new_der, &new).expect("write");

    // Replace the certificate object on the token (same CKA_ID and label).
    let p11 = |args: &[&str]| {
        let mut c = Command::new("pkcs11-tool");
        c.arg("--module")
            .arg(&s.agent.fixture.module)
            .args(["--token-label", &s.agent.fixture.label, "--login", "--pin"])
            .arg(s.agent.fixture.pin())
            .args(args)
            .env("SOFTHSM2_CONF", s.agent.fixture.dir.join("softhsm2.conf"));
        run(&mut c)
    };
    ok(
        &p11(&["--delete-object", "--type", "cert", "--id", &id]),
        "pkcs11-tool --delete-object",
    );
    let new_der_s = new_der.to_str().expect("utf-8 path");
    ok(
        &p11(&[
            "--write-object",
            new_der_s,
            "--type",
            "cert",
            "--id",
            &id,
            "--label",
            "alice-rsa",
        ]),
        "pkcs11-tool --write-object",
    );
    // The agent reads its token's objects again after SIGHUP (sessions released).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.agent.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    std::thread::sleep(std::time::Duration::from_millis(300));

    // The agent refuses the old certificate; the CLI looks the key up again.
    let mut c = Client::connect(&s.agent.socket, "sign-fast-test").expect("connect");
    let r = c.call(&Request::SignDigestCert {
        key: "alice@example.com".into(),
        certificate: sha256_hex(&old),
        algorithm: SignAlgorithm::RsaPkcs1Sha256,
        digest: Bytes(vec![7; 32]),
    });
    assert!(
        matches!(&r, Err(ClientError::Agent(e)) if e.code == ErrorCode::CertificateChanged),
        "{r:?}"
    );
    let mut v = s.read_entry();
    mark(&mut v);
    s.write_entry(&v);
    let o = s.sign(&dir.join("2.eml"));
    ok(&o, "sign after the certificate changed");
    assert!(used_cache(&o), "the cached path was tried first");
    assert_eq!(pem_to_der(&s.verify(&dir.join("2.eml"))), new);
    assert_eq!(
        s.read_entry()["key"]["certificate"]["sha256"],
        sha256_hex(&new).as_str()
    );
    // And the next one is cached again, with the new certificate.
    let mut v = s.read_entry();
    mark(&mut v);
    s.write_entry(&v);
    let o = s.sign(&dir.join("3.eml"));
    ok(&o, "cached sign with the new certificate");
    assert!(used_cache(&o));
    assert_eq!(pem_to_der(&s.verify(&dir.join("3.eml"))), new);
}

#[test]
fn sign_digest_cert_on_the_wire() {
    let s = Setup::new();
    let alice = pem_to_der(&std::fs::read_to_string(s.pki().join("alice-rsa.pem")).expect("pem"));
    let fp = sha256_hex(&alice);
    assert!(OPERATIONS.contains(&"sign-digest-cert"));
    let req = |key: &str, certificate: &str| Request::SignDigestCert {
        key: key.into(),
        certificate: certificate.into(),
        algorithm: SignAlgorithm::RsaPkcs1Sha256,
        digest: Bytes(vec![1; 32]),
    };
    // hello and the request in one write; both answers on the same connection.
    let (mut c, first) = Client::connect_and_call(
        &s.agent.socket,
        "sign-fast-test",
        false,
        &req("alice-rsa", &fp),
    )
    .expect("connect");
    match first {
        Ok(Response::Signature { key, signature }) => {
            assert_eq!(key, "alice-rsa");
            assert_eq!(signature.0.len(), 256);
        }
        other => panic!("{other:?}"),
    }
    // Upper-case hex is the same fingerprint; another certificate is refused, unsigned.
    assert!(matches!(
        c.call(&req("alice@example.com", &fp.to_uppercase())),
        Ok(Response::Signature { .. })
    ));
    let bob = pem_to_der(&std::fs::read_to_string(s.pki().join("bob-p256.pem")).expect("pem"));
    let r = c.call(&req("alice-rsa", &sha256_hex(&bob)));
    assert!(
        matches!(&r, Err(ClientError::Agent(e)) if e.code == ErrorCode::CertificateChanged),
        "{r:?}"
    );
    // The connection stays usable; an unknown key is still no-such-key.
    let r = c.call(&req("nobody", &fp));
    assert!(
        matches!(&r, Err(ClientError::Agent(e)) if e.code == ErrorCode::NoSuchKey),
        "{r:?}"
    );
    // Wire form.
    let json = serde_json::to_string(&req("alice-rsa", &fp)).expect("json");
    assert!(
        json.starts_with(r#"{"op":"sign-digest-cert","key":"alice-rsa","certificate":""#),
        "{json}"
    );
}
