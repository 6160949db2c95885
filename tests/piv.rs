//! PIV smart cards end to end, without hardware: a private pcscd (tests/vpiv/pcscd.sh),
//! the virtual PIV card (tests/vpiv/piv_card.py) behind vpcd, and the real agent and CLI.
//! Peers check the results: openssl verifies our signatures and encrypts what the card
//! decrypts; OpenSC's PKCS#11 module drives the same virtual card.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tokenmail_e2e::{bin, fixture_pki, process, stderr, stdout, Running};

const MESSAGE: &[u8] = b"From: frank@example.org\r\nTo: grace@example.org\r\nSubject: card test\r\nContent-Type: text/plain\r\n\r\nSigned and decrypted on a smart card.\r\n";

const CARD1: &str = "10000001";
const CARD2: &str = "10000002";
const PIN: &str = "123456";

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

fn run(cmd: &mut Command) -> Output {
    process::output(cmd)
}

/// A private pcscd with virtual cards, and the certificates for them.
struct Lab {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
    pki: PathBuf,
}

impl Lab {
    fn start() -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = run(Command::new("bash")
            .arg(script("pcscd.sh"))
            .arg("start")
            .arg(dir.path()));
        ok(&o, "pcscd.sh start");
        let text = std::fs::read_to_string(dir.path().join("env")).expect("pcscd env");
        let env = text
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                (
                    k.to_string(),
                    v.trim_matches('\'').trim_matches('"').to_string(),
                )
            })
            .collect();
        Lab {
            pki: fixture_pki(),
            dir,
            env,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn pcsc_env(&self, c: &mut Command) {
        c.env("PCSCLITE_CSOCK_NAME", &self.env["PCSCLITE_CSOCK_NAME"]);
    }

    /// Issues a certificate for `email` on a new software key of `alg` (rsa | p256 | p384),
    /// signed by the test intermediate CA; returns (key.pem, cert.pem).
    fn issue(&self, name: &str, email: &str, alg: &str) -> (PathBuf, PathBuf) {
        let key = self.path(&format!("{name}.key"));
        let csr = self.path(&format!("{name}.csr"));
        let cert = self.path(&format!("{name}.pem"));
        let ext = self.path(&format!("{name}.ext"));
        let mut g = Command::new("openssl");
        g.args(["genpkey", "-out", s(&key)]);
        match alg {
            "rsa" => g.args(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
            "p256" => g.args(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
            _ => g.args(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"]),
        };
        ok(&run(&mut g), "genpkey");
        self.issue_for(name, email, alg, &key, None, &csr, &ext, &cert);
        (key, cert)
    }

    /// Issues a certificate for a public key (PEM) with the CA; returns cert.pem.
    fn issue_pub(&self, name: &str, email: &str, alg: &str, public: &Path) -> PathBuf {
        // A throwaway key signs the CSR; -force_pubkey puts the card's key in the cert.
        let (throwaway, _) = self.issue(&format!("{name}-tmp"), email, alg);
        let csr = self.path(&format!("{name}.csr"));
        let cert = self.path(&format!("{name}.pem"));
        let ext = self.path(&format!("{name}.ext"));
        self.issue_for(
            name,
            email,
            alg,
            &throwaway,
            Some(public),
            &csr,
            &ext,
            &cert,
        );
        cert
    }

    #[allow(clippy::too_many_arguments)]
    fn issue_for(
        &self,
        name: &str,
        email: &str,
        alg: &str,
        key: &Path,
        force_pub: Option<&Path>,
        csr: &Path,
        ext: &Path,
        cert: &Path,
    ) {
        let ku = if alg == "rsa" {
            "digitalSignature, nonRepudiation, keyEncipherment"
        } else {
            "digitalSignature, nonRepudiation, keyAgreement"
        };
        std::fs::write(
            ext,
            format!(
                "[v3_ee]\nbasicConstraints = CA:FALSE\nkeyUsage = critical, {ku}\nextendedKeyUsage = emailProtection\nsubjectAltName = email:{email}\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid, issuer\n"
            ),
        )
        .expect("ext");
        ok(
            &run(Command::new("openssl").args([
                "req",
                "-new",
                "-key",
                s(key),
                "-subj",
                &format!("/CN={name}/emailAddress={email}"),
                "-out",
                s(csr),
            ])),
            "req",
        );
        let mut x = Command::new("openssl");
        x.args(["x509", "-req", "-in", s(csr), "-days", "365", "-sha384"])
            .arg("-CA")
            .arg(self.pki.join("intermediate.pem"))
            .arg("-CAkey")
            .arg(self.pki.join("intermediate.key"))
            .args(["-set_serial", &format!("0x{}", hex_serial(name))])
            .args(["-extfile", s(ext), "-extensions", "v3_ee", "-out", s(cert)]);
        if let Some(p) = force_pub {
            x.arg("-force_pubkey").arg(p);
        }
        ok(&run(&mut x), "x509 -req");
    }

    /// Starts a card in reader 0 or 1 with keys loaded (`SLOT:KEY:CERT`).
    fn card(&self, name: &str, reader: u8, serial: &str, loads: &[String]) {
        let state = self.path(&format!("{name}.json"));
        let mut c = Command::new("bash");
        c.arg(script("pcscd.sh"))
            .arg("card")
            .arg(self.dir.path())
            .arg(name)
            .arg(reader.to_string())
            .args([
                "--state",
                s(&state),
                "--init",
                "--chuid",
                "--verbose",
                "--serial",
                serial,
            ]);
        for l in loads {
            c.arg("--load").arg(l);
        }
        ok(&run(&mut c), &format!("start card {name}"));
    }

    fn card_pid(&self, name: &str) -> i32 {
        std::fs::read_to_string(self.path(&format!("cards/{name}.pid")))
            .expect("card pid file")
            .trim()
            .parse()
            .expect("pid")
    }

    /// SIGUSR1 = remove, SIGUSR2 = insert.
    fn signal_card(&self, name: &str, insert: bool) {
        let sig = if insert {
            nix::sys::signal::Signal::SIGUSR2
        } else {
            nix::sys::signal::Signal::SIGUSR1
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.card_pid(name)), sig)
            .expect("signal card");
    }

    fn chain_pem(&self) -> PathBuf {
        let p = self.path("chain.pem");
        let mut data = std::fs::read(self.pki.join("intermediate.pem")).expect("intermediate");
        data.extend(std::fs::read(self.pki.join("root.pem")).expect("root"));
        std::fs::write(&p, data).expect("chain");
        p
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // No panic in drop: a failure to stop is only reported.
        if let Err(e) = process::try_run_with_timeout(
            Command::new("bash")
                .arg(script("pcscd.sh"))
                .arg("stop")
                .arg(self.dir.path()),
            None,
            process::limit(),
        ) {
            eprintln!("{e}");
        }
    }
}

fn hex_serial(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:016x}", h & 0x7fff_ffff_ffff_ffff)
}

fn script(name: &str) -> PathBuf {
    tokenmail_e2e::workspace().join("tests/vpiv").join(name)
}

/// The agent on the lab's pcscd, with a TOML config.
struct CardAgent {
    child: Option<Running>,
    socket: PathBuf,
    log: PathBuf,
}

impl CardAgent {
    fn start(lab: &Lab, config: &str) -> CardAgent {
        let cfg = lab.path("agent.toml");
        std::fs::write(&cfg, config).expect("config");
        let socket = lab.path("run/agent.sock");
        let log = lab.path("agent.log");
        let mut c = Command::new(bin("tokenmail-agent"));
        c.args([
            "--foreground",
            "-v",
            "--config",
            s(&cfg),
            "--socket",
            s(&socket),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
        lab.pcsc_env(&mut c);
        let child = Running::spawn(&mut c);
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "agent did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        CardAgent {
            child: Some(child),
            socket,
            log,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("tokenmail"));
        c.arg("--socket").arg(&self.socket).args(args);
        c.stdin(Stdio::null());
        c
    }

    fn cli(&self, args: &[&str]) -> Output {
        process::output(&mut self.cmd(args))
    }

    /// `tokenmail login --token TOKEN --pin-stdin` with `pin` on standard input.
    fn login_stdin(&self, token: &str, pin: &str) -> Output {
        process::output_with_input(
            &mut self.cmd(&["login", "--token", token, "--pin-stdin"]),
            format!("{pin}\n").as_bytes(),
        )
    }

    /// Waits (≤ 10 s) until `status` reports the token present or absent.
    fn wait_presence(&self, token: &str, present: bool) {
        let t = Instant::now();
        loop {
            let st = self.status_json();
            if Self::token(&st, token)["present"] == present {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{token} present should be {present}: {st}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (≤ `secs`) until the agent's log contains `line`.
    fn wait_log(&self, line: &str, secs: u64) {
        let t = Instant::now();
        while !self.log().contains(line) {
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "{line:?} not in the agent's log: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn status_json(&self) -> serde_json::Value {
        let o = self.cli(&["status", "--json"]);
        ok(&o, "status");
        serde_json::from_slice(&o.stdout).expect("status json")
    }

    fn token<'a>(st: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
        st["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .find(|t| t["label"] == name)
            .unwrap_or_else(|| panic!("token {name} in {st}"))
    }
}

impl Drop for CardAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            // Dropped (killed) if SIGTERM was not enough.
            let _ = c.wait_timeout(Duration::from_secs(5));
        }
    }
}

/// Two cards: card1 (frank, RSA-2048 in 9c, PIN from a file), card2 (grace, P-256 in
/// 9c and P-384 in 9d, PIN only from clients).
fn two_cards() -> (Lab, CardAgent, PathBuf, PathBuf) {
    let lab = Lab::start();
    let (fk, fc) = lab.issue("frank", "frank@example.org", "rsa");
    let (gk, gc) = lab.issue("grace", "grace@example.org", "p256");
    let (hk, hc) = lab.issue("grace-enc", "grace@example.org", "p384");
    lab.card("card1", 0, CARD1, &[format!("9c:{}:{}", s(&fk), s(&fc))]);
    lab.card(
        "card2",
        1,
        CARD2,
        &[
            format!("9c:{}:{}", s(&gk), s(&gc)),
            format!("9d:{}:{}", s(&hk), s(&hc)),
        ],
    );
    let pin = lab.path("pin1");
    std::fs::write(&pin, format!("{PIN}\n")).expect("pin");
    std::fs::set_permissions(&pin, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 600");
    let chain = lab.chain_pem();
    let agent = CardAgent::start(
        &lab,
        &format!(
            "[pin]\npinentry = \"none\"\n\n[[token]]\ntype = \"piv\"\nname = \"card1\"\nserial = \"{CARD1}\"\npin_file = \"{}\"\nchain = \"{}\"\n\n[[token]]\ntype = \"piv\"\nname = \"card2\"\nserial = \"{CARD2}\"\nchain = \"{}\"\n",
            s(&pin),
            s(&chain),
            s(&chain)
        ),
    );
    (lab, agent, fc, gc)
}

fn openssl_verify(lab: &Lab, signed: &Path, out: &Path) -> Output {
    run(Command::new("openssl")
        .args(["cms", "-verify", "-purpose", "smimesign", "-CAfile"])
        .arg(lab.pki.join("root.pem"))
        .args(["-in", s(signed), "-out", s(out)]))
}

/// openssl encrypts `msg` (AES-256-CBC) to `cert` with extra `opts`; returns the file.
fn openssl_encrypt(lab: &Lab, msg: &Path, cert: &Path, opts: &[&str], what: &str) -> PathBuf {
    let enc = lab.path("enc.eml");
    ok(
        &run(Command::new("openssl")
            .args([
                "cms",
                "-encrypt",
                "-aes-256-cbc",
                "-in",
                s(msg),
                "-out",
                s(&enc),
                "-recip",
            ])
            .arg(cert)
            .args(opts)),
        &format!("openssl encrypt {what}"),
    );
    enc
}

#[test]
fn two_cards_sign_and_decrypt_with_openssl_as_the_peer() {
    let (lab, agent, frank_cert, grace_cert) = two_cards();
    let st = agent.status_json();
    for name in ["card1", "card2"] {
        let t = CardAgent::token(&st, name);
        assert_eq!(t["present"], true, "{name} present: {st}");
        assert!(
            t["backend"].as_str().unwrap_or("").starts_with("piv:"),
            "{t}"
        );
    }
    // card2 has no PIN yet: log in through the CLI's --pin-stdin path.
    let login_out = agent.login_stdin("card2", PIN);
    ok(&login_out, "login card2");
    let keys = agent.cli(&["keys", "--json"]);
    ok(&keys, "keys");
    let keys: serde_json::Value = serde_json::from_slice(&keys.stdout).expect("json");
    let ids: Vec<(String, String)> = keys
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            (
                k["token"].as_str().unwrap_or("").to_string(),
                k["id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for want in [("card1", "9c"), ("card2", "9c"), ("card2", "9d")] {
        assert!(
            ids.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} in {ids:?}"
        );
    }

    let msg = lab.path("m.eml");
    std::fs::write(&msg, MESSAGE).expect("msg");
    // Signatures from both cards (RSA PKCS#1, RSA-PSS, ECDSA P-256) verify with openssl.
    for (key, extra) in [
        ("frank@example.org", None),
        ("frank@example.org", Some("--pss")),
        ("sha256:", None),
    ] {
        let key = if key == "sha256:" {
            // grace's signing key by certificate fingerprint (she has two keys)
            let o = run(Command::new("openssl").args([
                "x509",
                "-noout",
                "-fingerprint",
                "-sha256",
                "-in",
                s(&grace_cert),
            ]));
            let fp = stdout(&o);
            let hexfp: String = fp
                .split('=')
                .nth(1)
                .unwrap_or("")
                .trim()
                .replace(':', "")
                .to_ascii_lowercase();
            format!("sha256:{hexfp}")
        } else {
            key.to_string()
        };
        let signed = lab.path("signed.eml");
        let msg = if key.starts_with("sha256:") {
            let m = lab.path("from-grace.eml");
            std::fs::write(&m, b"From: grace@example.org\r\nTo: frank@example.org\r\nSubject: hi\r\n\r\nECDSA on the card.\r\n").expect("msg");
            m
        } else {
            msg.clone()
        };
        let mut args = vec!["sign", "--signer", key.as_str(), s(&msg), "-o", s(&signed)];
        if let Some(e) = extra {
            args.push(e);
        }
        ok(&agent.cli(&args), &format!("sign with {key} {extra:?}"));
        let out = lab.path("verified.eml");
        ok(
            &openssl_verify(&lab, &signed, &out),
            &format!("openssl verifies {key} {extra:?}"),
        );
        // and our own verifier agrees, with the chain the agent added from `chain`
        let o = agent.cli(&[
            "verify",
            "--trust",
            s(&lab.pki.join("root.pem")),
            s(&signed),
        ]);
        ok(&o, &format!("tokenmail verify {key}"));
    }

    // openssl encrypts to frank (OAEP and PKCS#1) and grace (ECDH P-384); the cards decrypt.
    let grace_enc = lab.path("grace-enc.pem");
    for (what, cert, opts) in [
        (
            "rsa-oaep",
            &frank_cert,
            vec![
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
            ],
        ),
        ("rsa-pkcs1", &frank_cert, vec![]),
        ("ecdh-p384", &grace_enc, vec![]),
    ] {
        let enc = openssl_encrypt(&lab, &msg, cert, &opts, what);
        let dec = lab.path("dec.eml");
        ok(
            &agent.cli(&["decrypt", s(&enc), "-o", s(&dec)]),
            &format!("card decrypts {what}"),
        );
        assert_eq!(std::fs::read(&dec).expect("plain"), MESSAGE, "{what}");
    }
    let _ = grace_cert;
}

#[test]
fn wrong_pin_counts_down_and_the_right_one_resets() {
    let (lab, agent, _, _) = two_cards();
    let login = |pin: &str| agent.login_stdin("card2", pin);
    let o = login("000000");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("2 tries left"), "{}", stderr(&o));
    let o = login("111111");
    assert!(stderr(&o).contains("1 try left"), "{}", stderr(&o));
    let st = agent.cli(&["piv", "--token", "card2", "status", "--json"]);
    ok(&st, "piv status");
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).expect("json");
    assert_eq!(st["pin_tries_left"], 1, "{st}");
    let status = agent.status_json();
    let warnings = CardAgent::token(&status, "card2")["pin_warnings"].to_string();
    assert!(warnings.contains("1 PIN tries left"), "{status}");
    ok(&login(PIN), "right PIN");
    let st = agent.cli(&["piv", "--token", "card2", "status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).expect("json");
    assert_eq!(st["pin_tries_left"], 3, "{st}");
    // a request without the PIN after lock says what to do, in one line
    // After lock nothing signs, not even the card with a PIN file, until a login; the
    // PIN-file card logs in again from its file (`--unattended`).
    ok(&agent.cli(&["lock"]), "lock");
    let msg = lab.path("m.eml");
    std::fs::write(&msg, MESSAGE).expect("msg");
    let digest = "ef".repeat(32);
    for key in ["frank@example.org", "grace@example.org"] {
        let o = agent.cli(&["sign-digest", "--key", key, "--digest", &digest]);
        assert!(!o.status.success(), "{key} signed after lock");
        assert!(stderr(&o).contains("PIN"), "{}", stderr(&o));
    }
    ok(
        &agent.cli(&["login", "--token", "card1", "--unattended"]),
        "login from the PIN file",
    );
    ok(
        &agent.cli(&[
            "sign-digest",
            "--key",
            "frank@example.org",
            "--digest",
            &digest,
        ]),
        "card1 signs again",
    );
    let o = agent.cli(&["sign", "--signer", "grace@example.org", s(&msg)]);
    assert!(!o.status.success(), "card2 still needs its PIN");
}

#[test]
fn card_removed_mid_run_then_reinserted_and_waited_for() {
    let (lab, agent, _, _) = two_cards();
    let msg = lab.path("m.eml");
    std::fs::write(&msg, MESSAGE).expect("msg");
    let signed = lab.path("s.eml");
    ok(
        &agent.cli(&[
            "sign",
            "--signer",
            "frank@example.org",
            s(&msg),
            "-o",
            s(&signed),
        ]),
        "sign before removal",
    );
    lab.signal_card("card1", false);
    // the watcher notices; status says absent
    agent.wait_presence("card1", false);
    assert!(agent.log().contains("card removed"), "{}", agent.log());
    let o = agent.cli(&[
        "sign",
        "--signer",
        "frank@example.org",
        s(&msg),
        "-o",
        s(&signed),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("insert card 10000001") || e.contains("no key"),
        "one-line error naming the card: {e}"
    );
    // A request that waits for card1 (`--wait 30`), with its stderr captured.
    let wait_for_card1 = || {
        Running::spawn(
            agent
                .cmd(&[
                    "--wait",
                    "30",
                    "sign-digest",
                    "--key",
                    "frank@example.org",
                    "--digest",
                    &"ab".repeat(32),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
    };
    // A waiting request is cancellable: Ctrl-C ends it and the agent stops waiting.
    let mut cancelled = wait_for_card1();
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cancelled.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let _ = cancelled.wait_timeout(Duration::from_secs(5));
    agent.wait_log("client went away while waiting for a token", 5);
    // With --wait the request waits; insert the card a second later.
    let mut waiting = wait_for_card1();
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(st) = waiting.try_wait() {
        let o = waiting.wait(process::limit());
        panic!("the request did not wait ({st}): {}", stderr(&o));
    }
    lab.signal_card("card1", true);
    // The waiting request finishes after insertion.
    let o = waiting.wait(Duration::from_secs(30));
    let err = stderr(&o);
    assert!(o.status.success(), "sign after insertion: {err}");
    assert!(err.contains("waiting"), "{err}");
    // the PIN came from the file again; card2 (client PIN) was untouched
    ok(
        &agent.cli(&[
            "sign",
            "--signer",
            "frank@example.org",
            s(&msg),
            "-o",
            s(&signed),
        ]),
        "sign after reinsertion",
    );
}

#[test]
fn removal_forgets_a_client_pin() {
    let (lab, agent, _, _) = two_cards();
    let login_out = agent.login_stdin("card2", PIN);
    ok(&login_out, "login");
    let digest = "cd".repeat(32);
    let sign = || {
        agent.cli(&[
            "sign-digest",
            "--key",
            "grace@example.org",
            "--digest",
            &digest,
        ])
    };
    ok(&sign(), "sign-digest with the PIN cached");
    lab.signal_card("card2", false);
    std::thread::sleep(Duration::from_millis(1500));
    lab.signal_card("card2", true);
    agent.wait_presence("card2", true);
    let o = sign();
    assert!(
        !o.status.success(),
        "the PIN must be asked again after removal"
    );
    assert!(stderr(&o).contains("PIN"), "{}", stderr(&o));

    // SIGHUP (suspend) releases the cards and forgets typed PINs; a PIN file is re-read.
    let login_out = agent.login_stdin("card2", PIN);
    ok(&login_out, "login again");
    ok(&sign(), "signs with the PIN typed again");
    let pid = agent.child.as_ref().expect("agent").id() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    agent.wait_log("card released", 10);
    let o = sign();
    assert!(!o.status.success(), "typed PIN forgotten after SIGHUP");
    ok(
        &agent.cli(&[
            "sign-digest",
            "--key",
            "frank@example.org",
            "--digest",
            &digest,
        ]),
        "the card with a PIN file works after SIGHUP",
    );
}

#[test]
fn keygen_and_import_cert_on_the_card_then_sign() {
    let lab = Lab::start();
    lab.card("card3", 0, "10000003", &[]);
    let pin = lab.path("pin");
    std::fs::write(&pin, format!("{PIN}\n")).expect("pin");
    std::fs::set_permissions(&pin, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 600");
    let agent = CardAgent::start(
        &lab,
        &format!(
            "[pin]\npinentry = \"none\"\n[[token]]\ntype = \"piv\"\nserial = \"10000003\"\npin_file = \"{}\"\nchain = \"{}\"\n",
            s(&pin),
            s(&lab.chain_pem())
        ),
    );
    let st = agent.cli(&["piv", "status"]);
    ok(&st, "piv status");
    assert!(stdout(&st).contains("no keys"), "{}", stdout(&st));
    let pubkey = lab.path("9a.pub.pem");
    let o = agent.cli(&[
        "piv",
        "keygen",
        "--slot",
        "9a",
        "--algorithm",
        "p256",
        "--touch-policy",
        "never",
        "-o",
        s(&pubkey),
    ]);
    ok(&o, "keygen");
    assert!(
        stderr(&o).contains("factory default management key"),
        "default-key warning: {}",
        stderr(&o)
    );
    let cert = lab.issue_pub("ivan", "ivan@example.org", "p256", &pubkey);
    // a certificate for another key is refused, nothing written
    let (_, other) = lab.issue("other", "other@example.org", "p256");
    let o = agent.cli(&["piv", "import-cert", "--slot", "9a", s(&other)]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not the key in slot 9a"),
        "{}",
        stderr(&o)
    );
    ok(
        &agent.cli(&["piv", "import-cert", "--slot", "9a", s(&cert)]),
        "import-cert",
    );
    let st = agent.cli(&["piv", "status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).expect("json");
    let slot = &st["slots"][0];
    assert_eq!(slot["slot"], "9a", "{st}");
    assert_eq!(slot["origin"], "generated", "{st}");
    assert_eq!(slot["certificate"]["emails"][0], "ivan@example.org", "{st}");
    let msg = lab.path("m.eml");
    std::fs::write(&msg, MESSAGE).expect("msg");
    let signed = lab.path("s.eml");
    ok(
        &agent.cli(&[
            "sign",
            "--signer",
            "ivan@example.org",
            s(&msg),
            "-o",
            s(&signed),
        ]),
        "sign with the generated key",
    );
    ok(
        &openssl_verify(&lab, &signed, &lab.path("v.eml")),
        "openssl verifies",
    );

    // A key that wants a touch: the CLI tells the user before the card waits.
    let pub9c = lab.path("9c.pub.pem");
    ok(
        &agent.cli(&[
            "piv",
            "keygen",
            "--slot",
            "9c",
            "--algorithm",
            "p384",
            "--pin-policy",
            "once",
            "--touch-policy",
            "cached",
            "-o",
            s(&pub9c),
        ]),
        "keygen 9c",
    );
    let cert9c = lab.issue_pub("ivan-sign", "ivan@example.org", "p384", &pub9c);
    ok(
        &agent.cli(&["piv", "import-cert", "--slot", "9c", s(&cert9c)]),
        "import 9c",
    );
    let o = agent.cli(&["sign", "--signer", "9c", s(&msg), "-o", s(&signed)]);
    ok(&o, "sign with the touch key");
    assert!(stderr(&o).contains("touch your key"), "{}", stderr(&o));
    ok(
        &openssl_verify(&lab, &signed, &lab.path("v.eml")),
        "openssl verifies P-384",
    );
    let st = agent.cli(&["piv", "status"]);
    assert!(stdout(&st).contains("touch cached"), "{}", stdout(&st));
}

/// OpenSC's PKCS#11 module (the path for CAC/PIV/national eID cards) drives the virtual
/// card through our PKCS#11 backend: keys listed, signature verified by openssl,
/// openssl ciphertext decrypted.
#[test]
fn opensc_pkcs11_module_drives_the_card() {
    let lab = Lab::start();
    let (fk, fc) = lab.issue("olga", "olga@example.org", "rsa");
    let (gk, gc) = lab.issue("olga-ec", "olga-ec@example.org", "p256");
    lab.card(
        "card4",
        0,
        "10000004",
        &[
            format!("9a:{}:{}", s(&fk), s(&fc)),
            format!("9d:{}:{}", s(&gk), s(&gc)),
        ],
    );
    let module = opensc_module();
    // The token label OpenSC gives the card, from its own listing.
    let mut l = Command::new("pkcs11-tool");
    l.arg("--module").arg(&module).arg("-L");
    lab.pcsc_env(&mut l);
    let listing = run(&mut l);
    ok(&listing, "pkcs11-tool -L");
    let text = stdout(&listing);
    let label = text
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("token label")
                .map(|r| r.trim_start_matches([' ', ':']).trim().to_string())
        })
        .unwrap_or_else(|| panic!("a token in {text}"));
    let pin = lab.path("pin");
    std::fs::write(&pin, format!("{PIN}\n")).expect("pin");
    std::fs::set_permissions(&pin, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 600");
    let agent = CardAgent::start(
        &lab,
        &format!(
            "[pin]\npinentry = \"none\"\n[[token]]\nmodule = \"{}\"\nlabel = \"{label}\"\npin_file = \"{}\"\n",
            s(&module),
            s(&pin)
        ),
    );
    let keys = agent.cli(&["keys", "--json"]);
    ok(&keys, "keys");
    let text = stdout(&keys);
    assert!(text.contains("olga@example.org"), "{text}");
    let msg = lab.path("m.eml");
    std::fs::write(
        &msg,
        b"From: olga@example.org\r\nSubject: x\r\n\r\nvia OpenSC\r\n",
    )
    .expect("msg");
    let signed = lab.path("s.eml");
    ok(
        &agent.cli(&[
            "sign",
            "--signer",
            "olga@example.org",
            s(&msg),
            "-o",
            s(&signed),
        ]),
        "sign through OpenSC",
    );
    // The card holds no CA certificates: the verifier is given the intermediate.
    let out = lab.path("v.eml");
    let o = run(Command::new("openssl")
        .args(["cms", "-verify", "-purpose", "smimesign", "-CAfile"])
        .arg(lab.chain_pem())
        .args(["-in", s(&signed), "-out", s(&out)]));
    ok(&o, "openssl verifies the OpenSC-made signature");
    for (what, cert) in [("rsa", &fc), ("ecdh", &gc)] {
        let enc = openssl_encrypt(&lab, &msg, cert, &[], what);
        let dec = lab.path("dec.eml");
        ok(
            &agent.cli(&["decrypt", s(&enc), "-o", s(&dec)]),
            &format!("decrypt {what} through OpenSC"),
        );
        assert_eq!(
            std::fs::read(&dec).expect("plain"),
            std::fs::read(&msg).expect("msg")
        );
    }
}

fn opensc_module() -> PathBuf {
    for p in [
        "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
        "/usr/lib/aarch64-linux-gnu/opensc-pkcs11.so",
        "/usr/lib/opensc-pkcs11.so",
        "/usr/lib64/opensc-pkcs11.so",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("opensc-pkcs11.so not found: apt-get install opensc-pkcs11");
}

/// A pseudo-terminal standing in for the user's desktop: the agent's pinentry
/// (the real pinentry-tty) shows its dialog there and the "user" types on it.
struct Screen {
    master: std::fs::File,
    _slave: std::os::fd::OwnedFd,
    name: PathBuf,
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl Screen {
    fn open() -> Screen {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let pty = nix::pty::openpty(None, None).expect("openpty");
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .expect("cloexec");
        }
        let name = nix::unistd::ttyname(&pty.slave).expect("ttyname");
        let master = std::fs::File::from(pty.master);
        let mut reader = master.try_clone().expect("clone");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Screen {
            master,
            _slave: pty.slave,
            name,
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits until `marker` and, after it, pinentry-tty's "PIN:" prompt are on the
    /// screen; then lets it settle (the terminal mode switch flushes earlier input).
    fn wait_for_prompt_after(&mut self, marker: &str) -> String {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = String::from_utf8_lossy(&self.seen).into_owned();
            if let Some(at) = screen.find(marker) {
                if screen[at..].contains("PIN:") {
                    std::thread::sleep(Duration::from_millis(200));
                    return screen;
                }
            }
            match self
                .rx
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok(b) => self.seen.extend_from_slice(&b),
                Err(_) => {
                    panic!("{marker:?} and a prompt never appeared; the screen shows {screen:?}")
                }
            }
        }
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).expect("type");
        self.master.flush().expect("flush");
    }
}

/// A client without a terminal (git, a mail client) needs card2's PIN: the agent asks
/// through pinentry (the real pinentry-tty, on a pseudo-terminal), a wrong PIN is shown
/// as an error with the tries left, the right one signs; cancelling answers one error.
#[test]
fn pinentry_asks_for_clients_without_a_terminal() {
    use tokenmail_proto::v1::{Bytes, Request, Response, SignAlgorithm};
    let lab = Lab::start();
    let (gk, gc) = lab.issue("grace", "grace@example.org", "p256");
    lab.card("card2", 0, CARD2, &[format!("9c:{}:{}", s(&gk), s(&gc))]);
    let mut screen = Screen::open();
    let pinentry = lab.path("pinentry-on-screen");
    std::fs::write(
        &pinentry,
        format!(
            "#!/bin/sh\nexec /usr/bin/pinentry-tty --ttyname {} --ttytype dumb \"$@\"\n",
            screen.name.display()
        ),
    )
    .expect("wrapper");
    ok(
        &run(Command::new("chmod").arg("755").arg(&pinentry)),
        "chmod",
    );
    assert!(
        Path::new("/usr/bin/pinentry-tty").exists(),
        "pinentry-tty is missing: apt-get install pinentry-tty"
    );
    let agent = CardAgent::start(
        &lab,
        &format!(
            "[pin]\npinentry = \"{}\"\npinentry_timeout = 30\n[[token]]\ntype = \"piv\"\nname = \"card2\"\nserial = \"{CARD2}\"\n",
            s(&pinentry)
        ),
    );
    let sign = |socket: &Path| {
        let mut c = tokenmail_proto::Client::connect(socket, "git-like/1").expect("connect");
        c.call(&Request::SignDigest {
            key: "grace@example.org".into(),
            algorithm: SignAlgorithm::EcdsaSha256,
            digest: Bytes(vec![0x42; 32]),
        })
    };
    let socket = agent.socket.clone();
    let worker = std::thread::spawn(move || sign(&socket));
    let shown = screen.wait_for_prompt_after("card2");
    assert!(
        shown.contains("card2"),
        "the dialog names the card: {shown:?}"
    );
    screen.type_keys(b"999999\n");
    let shown = screen.wait_for_prompt_after("tries left");
    assert!(shown.contains("Wrong PIN (2 tries left"), "{shown:?}");
    screen.type_keys(format!("{PIN}\n").as_bytes());
    let resp = worker.join().expect("client thread");
    assert!(
        matches!(resp, Ok(Response::Signature { .. })),
        "signed after pinentry: {resp:?}; agent log:\n{}",
        agent.log()
    );
    // Cached now: a second client signs without a dialog.
    assert!(matches!(
        sign(&agent.socket),
        Ok(Response::Signature { .. })
    ));
    // After lock the dialog comes back; cancelling it (Ctrl-D) answers one error.
    ok(&agent.cli(&["lock"]), "lock");
    // Forget what the earlier dialogs left on the screen, so the next wait sees the new one.
    std::thread::sleep(Duration::from_millis(300));
    while screen.rx.try_recv().is_ok() {}
    screen.seen.clear();
    let socket = agent.socket.clone();
    let worker = std::thread::spawn(move || sign(&socket));
    screen.wait_for_prompt_after("card2");
    screen.type_keys(b"\x04");
    let resp = worker.join().expect("client thread");
    match resp {
        Err(tokenmail_proto::ClientError::Agent(e)) => {
            assert!(e.message.contains("cancelled"), "{}", e.message)
        }
        other => panic!("cancel must fail the request: {other:?}"),
    }
}

/// While one card is absent, looking for it must not disturb the other: the reader a store
/// holds is skipped (opening a card selects the PIV applet, which undoes its PIN
/// verification), and an absent card is looked for again only after a reader change.
#[test]
fn looking_for_an_absent_card_leaves_the_other_card_alone() {
    let (lab, agent, _, _) = two_cards();
    ok(&agent.login_stdin("card2", PIN), "login card2");
    let digest = "ab".repeat(32);
    ok(
        &agent.cli(&[
            "sign-digest",
            "--key",
            "grace@example.org",
            "--digest",
            &digest,
        ]),
        "card2 signs",
    );
    lab.signal_card("card1", false);
    agent.wait_presence("card1", false);
    let selects = || {
        std::fs::read_to_string(lab.path("cards/card2.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("> 00a40400"))
            .count()
    };
    let before = selects();
    assert!(
        before > 0,
        "the card's APDU log shows the agent's first SELECT"
    );
    for _ in 0..10 {
        let st = agent.status_json();
        assert_eq!(CardAgent::token(&st, "card1")["present"], false);
        assert_eq!(CardAgent::token(&st, "card2")["present"], true);
        std::thread::sleep(Duration::from_millis(200));
    }
    ok(
        &agent.cli(&[
            "sign-digest",
            "--key",
            "grace@example.org",
            "--digest",
            &digest,
        ]),
        "card2 still signs",
    );
    assert_eq!(
        selects(),
        before,
        "card2 was selected again while the agent looked for card1"
    );
    // and card1 is found again once it is back
    lab.signal_card("card1", true);
    agent.wait_presence("card1", true);
}

/// The enrolment commands on a PIV card (issue 13): `keygen --label SLOT`, a CSR signed on
/// the card that openssl verifies and issues from, `import-cert`, a signature openssl
/// verifies, an escrowed key from PKCS#12 into a retired slot that decrypts openssl's mail.
#[test]
fn enrolment_commands_on_the_card() {
    let lab = Lab::start();
    lab.card("card4", 0, "10000004", &[]);
    let pin = lab.path("pin");
    std::fs::write(&pin, format!("{PIN}\n")).expect("pin");
    std::fs::set_permissions(&pin, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 600");
    let agent = CardAgent::start(
        &lab,
        &format!(
            "[pin]\npinentry = \"none\"\n[audit]\nfile = \"{}\"\n[[token]]\ntype = \"piv\"\nserial = \"10000004\"\npin_file = \"{}\"\nchain = \"{}\"\n",
            s(&lab.path("audit.log")),
            s(&pin),
            s(&lab.chain_pem())
        ),
    );
    let o = agent.cli(&["keygen", "--label", "9c", "--algo", "p256", "--json"]);
    ok(&o, "keygen on the card");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(j["id"], "9c", "{j}");
    let o = agent.cli(&["keygen", "--label", "9c", "--algo", "p256"]);
    assert!(!o.status.success(), "a slot with a key is refused");
    assert!(stderr(&o).contains("already holds a key"), "{}", stderr(&o));

    let csr = lab.path("9c.csr");
    ok(
        &agent.cli(&[
            "csr",
            "--key",
            "9c",
            "--email",
            "judy@example.org",
            "-o",
            s(&csr),
        ]),
        "csr signed on the card",
    );
    let o =
        run(Command::new("openssl").args(["req", "-in", s(&csr), "-noout", "-verify", "-text"]));
    ok(&o, "openssl req -verify");
    assert!(
        stdout(&o).contains("email:judy@example.org"),
        "{}",
        stdout(&o)
    );
    let ext = lab.path("judy.ext");
    std::fs::write(
        &ext,
        "[v3]\nbasicConstraints = CA:FALSE\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
    )
    .expect("ext");
    let cert = lab.path("judy.pem");
    let mut x = Command::new("openssl");
    x.args(["x509", "-req", "-in", s(&csr), "-days", "365", "-sha256"])
        .arg("-CA")
        .arg(lab.pki.join("intermediate.pem"))
        .arg("-CAkey")
        .arg(lab.pki.join("intermediate.key"))
        .args(["-set_serial", "0x4a7d", "-copy_extensions", "copyall"])
        .args(["-extfile", s(&ext), "-extensions", "v3", "-out", s(&cert)]);
    ok(&run(&mut x), "the CA issues from the card's request");
    ok(
        &agent.cli(&["import-cert", "--key", "9c", s(&cert)]),
        "import-cert into the slot",
    );
    let msg = lab.path("m.eml");
    std::fs::write(
        &msg,
        String::from_utf8_lossy(MESSAGE).replace("frank@example.org", "judy@example.org"),
    )
    .expect("msg");
    let signed = lab.path("s.eml");
    ok(
        &agent.cli(&[
            "sign",
            "--signer",
            "judy@example.org",
            s(&msg),
            "-o",
            s(&signed),
        ]),
        "sign with the enrolled key",
    );
    ok(
        &openssl_verify(&lab, &signed, &lab.path("v.eml")),
        "openssl verifies",
    );

    // an escrowed RSA encryption key into retired slot 82, then openssl's mail decrypted
    let (key, ecert) = lab.issue("escrow", "judy@example.org", "rsa");
    let p12 = lab.path("escrow.p12");
    ok(
        &run(Command::new("openssl")
            .args(["pkcs12", "-export", "-inkey", s(&key), "-in", s(&ecert)])
            .args(["-passout", "pass:pw", "-out", s(&p12)])),
        "pkcs12",
    );
    let pwf = lab.path("p12pw");
    std::fs::write(&pwf, "pw\n").expect("pw");
    let o = agent.cli(&[
        "import-p12",
        "--label",
        "9d",
        "--password-file",
        s(&pwf),
        s(&p12),
    ]);
    assert!(!o.status.success(), "escrow only into retired slots");
    ok(
        &agent.cli(&[
            "import-p12",
            "--label",
            "82",
            "--password-file",
            s(&pwf),
            s(&p12),
        ]),
        "import-p12 into slot 82",
    );
    let enc = openssl_encrypt(
        &lab,
        &msg,
        &ecert,
        &["-aes256"],
        "openssl encrypts to the escrow cert",
    );
    let dec = lab.path("dec.eml");
    ok(
        &agent.cli(&["decrypt", s(&enc), "-o", s(&dec)]),
        "decrypt with the escrowed key on the card",
    );
    assert_eq!(
        std::fs::read(&dec).expect("dec"),
        std::fs::read(&msg).expect("msg")
    );
    // the card's administration is in the audit log with its operations
    let log: Vec<serde_json::Value> = std::fs::read_to_string(lab.path("audit.log"))
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    for (op, id) in [
        ("keygen", "9c"),
        ("import-cert", "9c"),
        ("import-key", "82"),
        ("sign", "9c"),
    ] {
        assert!(
            log.iter()
                .any(|r| r["op"] == op && r["key_id"] == id && r["result"] == "ok"),
            "{op} {id} in {log:?}"
        );
    }
}
