//! libtokenmail_pkcs11.so (pkcs11-module/) end to end: an agent on a SoftHSM token, and
//! the module loaded by pkcs11-tool, OpenSSL's pkcs11 engine (libp11) and NSS (modutil,
//! certutil, cmsutil), every result checked by openssl with the certificates' public keys.
//! Every program runs with a deadline (pkcs11-tests/src/process.rs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tokenmail_e2e::{bin, process, stderr, stdout, Agent};

const MESSAGE: &[u8] = b"Content-Type: text/plain\r\n\r\nHello through the PKCS#11 module.\r\n";

fn module() -> PathBuf {
    bin("libtokenmail_pkcs11.so")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed:\nstdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// A command that loads the module: it finds the agent through TOKENMAIL_SOCK only.
fn cmd(agent: &Agent, program: &str) -> Command {
    let mut c = Command::new(program);
    c.env("TOKENMAIL_SOCK", &agent.socket)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("OPENSSL_CONF")
        .env_remove("SOFTHSM2_CONF");
    c
}

fn tool(agent: &Agent, args: &[&str]) -> Output {
    process::output(
        cmd(agent, "pkcs11-tool")
            .arg("--module")
            .arg(module())
            .args(args),
    )
}

fn tool_login(agent: &Agent, args: &[&str]) -> Output {
    let pin = agent.fixture.pin();
    let mut all = vec!["--login", "--pin", pin.as_str()];
    all.extend_from_slice(args);
    tool(agent, &all)
}

fn openssl(args: &[&str]) -> Output {
    process::output(Command::new("openssl").args(args))
}

/// The public key of a fixture certificate, PEM, in `dir`.
fn public_key(agent: &Agent, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(format!("{name}.pub"));
    let cert = agent.fixture.pki(&format!("{name}.pem"));
    ok(
        &openssl(&[
            "x509",
            "-in",
            s(&cert),
            "-pubkey",
            "-noout",
            "-out",
            s(&out),
        ]),
        "openssl x509 -pubkey",
    );
    out
}

#[test]
fn pkcs11_tool_lists_signs_decrypts_and_derives() {
    let agent = Agent::start();
    let w = tempfile::tempdir().expect("tempdir");
    let d = w.path();

    // -L: one slot for the agent's token, login required
    let list = ok(&tool(&agent, &["-L"]), "pkcs11-tool -L");
    assert!(
        list.contains("token label        : tokenmail-e2e"),
        "{list}"
    );
    assert!(list.contains("login required"), "{list}");

    // -O without a login: certificates and public keys, no private keys
    let public = ok(&tool(&agent, &["-O"]), "pkcs11-tool -O");
    for k in ["alice-rsa", "bob-p256", "carol-p384"] {
        assert!(public.contains(&format!("label:      {k}")), "{public}");
    }
    assert!(
        public.contains("Certificate Object; type = X.509 cert"),
        "{public}"
    );
    assert!(
        public.contains("Public Key Object; RSA 2048 bits"),
        "{public}"
    );
    assert!(
        public.contains("Public Key Object; EC  EC_POINT 256 bits"),
        "{public}"
    );
    assert!(!public.contains("Private Key Object"), "{public}");

    // after a login: private keys, sensitive and never extractable
    let all = ok(
        &tool_login(&agent, &["-O", "--type", "privkey"]),
        "pkcs11-tool -O --login",
    );
    assert_eq!(all.matches("Private Key Object").count(), 3, "{all}");
    assert!(
        all.contains("Access:     sensitive, always sensitive, never extractable"),
        "{all}"
    );
    assert!(all.contains("Usage:      decrypt, sign"), "{all}");
    assert!(all.contains("Usage:      sign, derive"), "{all}");

    let data = d.join("data");
    std::fs::write(&data, b"signed through the agent\n").expect("write");
    let alice = public_key(&agent, d, "alice-rsa");
    let bob = public_key(&agent, d, "bob-p256");
    let carol = public_key(&agent, d, "carol-p384");

    // SHA256-RSA-PKCS: the module hashes, the agent signs the digest
    let sig = d.join("sig-rsa");
    ok(
        &tool_login(
            &agent,
            &[
                "--sign",
                "-m",
                "SHA256-RSA-PKCS",
                "--id",
                "01",
                "-i",
                s(&data),
                "-o",
                s(&sig),
            ],
        ),
        "sign SHA256-RSA-PKCS",
    );
    ok(
        &openssl(&[
            "dgst",
            "-sha256",
            "-verify",
            s(&alice),
            "-signature",
            s(&sig),
            s(&data),
        ]),
        "openssl verify of SHA256-RSA-PKCS",
    );

    // RSA-PKCS over a DigestInfo (what NSS and OpenSSL send)
    let digest = openssl(&["dgst", "-sha384", "-binary", s(&data)]).stdout;
    let mut digest_info = vec![
        0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
        0x05, 0x00, 0x04, 0x30,
    ];
    digest_info.extend_from_slice(&digest);
    let di = d.join("digest-info");
    std::fs::write(&di, &digest_info).expect("write");
    let sig = d.join("sig-raw");
    ok(
        &tool_login(
            &agent,
            &[
                "--sign",
                "-m",
                "RSA-PKCS",
                "--id",
                "01",
                "-i",
                s(&di),
                "-o",
                s(&sig),
            ],
        ),
        "sign RSA-PKCS",
    );
    ok(
        &openssl(&[
            "dgst",
            "-sha384",
            "-verify",
            s(&alice),
            "-signature",
            s(&sig),
            s(&data),
        ]),
        "openssl verify of RSA-PKCS over a DigestInfo",
    );
    // anything else than a DigestInfo is refused, not signed
    let refused = tool_login(
        &agent,
        &[
            "--sign",
            "-m",
            "RSA-PKCS",
            "--id",
            "01",
            "-i",
            s(&data),
            "-o",
            s(&sig),
        ],
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("CKR_DATA_INVALID"),
        "{}",
        stderr(&refused)
    );

    // RSA-PSS, salt = hash length
    let sig = d.join("sig-pss");
    ok(
        &tool_login(
            &agent,
            &[
                "--sign",
                "-m",
                "SHA256-RSA-PKCS-PSS",
                "--id",
                "01",
                "-i",
                s(&data),
                "-o",
                s(&sig),
            ],
        ),
        "sign SHA256-RSA-PKCS-PSS",
    );
    ok(
        &openssl(&[
            "dgst",
            "-sha256",
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:32",
            "-verify",
            s(&alice),
            "-signature",
            s(&sig),
            s(&data),
        ]),
        "openssl verify of RSA-PSS",
    );

    // ECDSA: the input is the digest; PKCS#11's raw r||s, made DER by pkcs11-tool
    for (id, key, hash) in [("02", &bob, "-sha256"), ("03", &carol, "-sha384")] {
        let dg = d.join(format!("digest-{id}"));
        std::fs::write(&dg, openssl(&["dgst", hash, "-binary", s(&data)]).stdout).expect("write");
        let sig = d.join(format!("sig-ec-{id}"));
        ok(
            &tool_login(
                &agent,
                &[
                    "--sign",
                    "-m",
                    "ECDSA",
                    "--id",
                    id,
                    "-i",
                    s(&dg),
                    "-o",
                    s(&sig),
                    "--signature-format",
                    "openssl",
                ],
            ),
            "sign ECDSA",
        );
        ok(
            &openssl(&[
                "dgst",
                hash,
                "-verify",
                s(key),
                "-signature",
                s(&sig),
                s(&data),
            ]),
            "openssl verify of ECDSA",
        );
    }

    // decryption of what openssl encrypted to alice's certificate: PKCS#1 v1.5 and OAEP
    let secret = d.join("secret");
    std::fs::write(&secret, [0x5a; 32]).expect("write");
    for (name, enc_opts, tool_opts) in [
        ("pkcs1", &[][..], &["-m", "RSA-PKCS"][..]),
        (
            "oaep",
            &[
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha256",
                "-pkeyopt",
                "rsa_mgf1_md:sha256",
            ][..],
            &[
                "-m",
                "RSA-PKCS-OAEP",
                "--hash-algorithm",
                "SHA256",
                "--mgf",
                "MGF1-SHA256",
            ][..],
        ),
    ] {
        let enc = d.join(format!("enc-{name}"));
        let mut args = vec![
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            s(&alice),
            "-in",
            s(&secret),
            "-out",
            s(&enc),
        ];
        args.extend_from_slice(enc_opts);
        ok(&openssl(&args), "openssl pkeyutl -encrypt");
        let dec = d.join(format!("dec-{name}"));
        let mut args = vec!["--decrypt", "--id", "01", "-i", s(&enc), "-o", s(&dec)];
        args.extend_from_slice(tool_opts);
        ok(&tool_login(&agent, &args), "pkcs11-tool --decrypt");
        assert_eq!(std::fs::read(&dec).expect("read"), [0x5a; 32], "{name}");
    }

    // ECDH with bob's key against an openssl ephemeral key: the same shared secret
    let eph = d.join("eph.key");
    ok(
        &openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            s(&eph),
        ]),
        "openssl genpkey",
    );
    let eph_pub = d.join("eph.der");
    ok(
        &openssl(&[
            "pkey",
            "-in",
            s(&eph),
            "-pubout",
            "-outform",
            "DER",
            "-out",
            s(&eph_pub),
        ]),
        "openssl pkey -pubout",
    );
    let z_token = d.join("z-token");
    ok(
        &tool_login(
            &agent,
            &[
                "--derive",
                "-m",
                "ECDH1-DERIVE",
                "--id",
                "02",
                "-i",
                s(&eph_pub),
                "-o",
                s(&z_token),
            ],
        ),
        "pkcs11-tool --derive",
    );
    let z_soft = d.join("z-soft");
    ok(
        &openssl(&[
            "pkeyutl",
            "-derive",
            "-inkey",
            s(&eph),
            "-peerkey",
            s(&bob),
            "-out",
            s(&z_soft),
        ]),
        "openssl pkeyutl -derive",
    );
    let z = std::fs::read(&z_token).expect("read");
    assert_eq!(z.len(), 32);
    assert_eq!(z, std::fs::read(&z_soft).expect("read"));

    // --test: random numbers pass; its signature test signs raw data with CKM_RSA_PKCS,
    // which the module refuses (docs/thunderbird.md "What does not work")
    let t = tool_login(&agent, &["--test"]);
    let text = format!("{}{}", stdout(&t), stderr(&t));
    assert!(text.contains("C_GenerateRandom"), "{text}");
    assert!(text.contains("seems to be OK"), "{text}");
    assert!(text.contains("CKR_DATA_INVALID"), "{text}");

    // TOKENMAIL_PKCS11_PROTECTED_AUTH=1: a protected authentication path; pkcs11-tool asks
    // for no PIN, logs in with none, and the agent's own PIN (its PIN file here) answers
    let protected = |args: &[&str]| {
        process::output(
            cmd(&agent, "pkcs11-tool")
                .env("TOKENMAIL_PKCS11_PROTECTED_AUTH", "1")
                .arg("--module")
                .arg(module())
                .args(args),
        )
    };
    let info = ok(&protected(&["-L"]), "pkcs11-tool -L (protected path)");
    assert!(info.contains("PIN pad present"), "{info}");
    let keys = ok(
        &protected(&["--login", "-O", "--type", "privkey"]),
        "pkcs11-tool --login without a PIN",
    );
    assert_eq!(keys.matches("Private Key Object").count(), 3, "{keys}");
    let sig = d.join("sig-protected");
    ok(
        &protected(&[
            "--login",
            "--sign",
            "-m",
            "SHA256-RSA-PKCS",
            "--id",
            "01",
            "-i",
            s(&data),
            "-o",
            s(&sig),
        ]),
        "sign without a PIN",
    );
    ok(
        &openssl(&[
            "dgst",
            "-sha256",
            "-verify",
            s(&alice),
            "-signature",
            s(&sig),
            s(&data),
        ]),
        "openssl verify of the signature made without a PIN",
    );

    // a wrong PIN is the token's answer, forwarded
    let wrong = tool(&agent, &["--login", "--pin", "00000000", "-O"]);
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("CKR_PIN_INCORRECT"),
        "{}",
        stderr(&wrong)
    );
}

#[test]
fn openssl_cms_signs_and_decrypts_through_the_engine() {
    let agent = Agent::start();
    let w = tempfile::tempdir().expect("tempdir");
    let d = w.path();
    // the fixture's engine configuration, pointed at the module instead of SoftHSM
    let conf =
        std::fs::read_to_string(agent.fixture.dir.join("openssl-pkcs11.cnf")).expect("engine conf");
    let conf: String = conf
        .lines()
        .map(|l| {
            if l.starts_with("MODULE_PATH") {
                format!("MODULE_PATH = {}\n", s(&module()))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(conf.contains("libtokenmail_pkcs11.so"));
    let conf_file = d.join("engine.cnf");
    std::fs::write(&conf_file, conf).expect("write");
    let msg = d.join("msg.txt");
    std::fs::write(&msg, MESSAGE).expect("write");
    let pki = |n: &str| agent.fixture.pki(n);
    let uri = |k: &str| {
        format!(
            "pkcs11:token=tokenmail-e2e;object={k};type=private?pin-source=file:{}",
            s(&agent.fixture.pin_file())
        )
    };
    let engine = |args: &[&str]| {
        process::output(
            cmd(&agent, "openssl")
                .env("OPENSSL_CONF", &conf_file)
                .args(args),
        )
    };

    for k in ["alice-rsa", "bob-p256", "carol-p384"] {
        let signed = d.join(format!("signed-{k}.eml"));
        ok(
            &engine(&[
                "cms",
                "-sign",
                "-engine",
                "pkcs11",
                "-keyform",
                "engine",
                "-inkey",
                &uri(k),
                "-signer",
                s(&pki(&format!("{k}.pem"))),
                "-certfile",
                s(&pki("intermediate.pem")),
                "-in",
                s(&msg),
                "-out",
                s(&signed),
            ]),
            "openssl cms -sign through the module",
        );
        let out = d.join(format!("verified-{k}"));
        ok(
            &openssl(&[
                "cms",
                "-verify",
                "-CAfile",
                s(&pki("root.pem")),
                "-in",
                s(&signed),
                "-out",
                s(&out),
            ]),
            "openssl cms -verify",
        );
        assert_eq!(std::fs::read(&out).expect("read"), MESSAGE);
    }

    for (name, recip, opts) in [
        ("pkcs1", "alice-rsa", &[][..]),
        (
            "oaep",
            "alice-rsa",
            &[
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
            ][..],
        ),
        ("ecdh", "bob-p256", &[][..]),
    ] {
        let enc = d.join(format!("enc-{name}.eml"));
        let cert = pki(&format!("{recip}.pem"));
        let mut args = vec!["cms", "-encrypt", "-aes-256-cbc", "-recip", s(&cert)];
        args.extend_from_slice(opts);
        args.extend_from_slice(&["-in", s(&msg), "-out", s(&enc)]);
        ok(&openssl(&args), "openssl cms -encrypt");
        let dec = d.join(format!("dec-{name}"));
        ok(
            &engine(&[
                "cms",
                "-decrypt",
                "-engine",
                "pkcs11",
                "-keyform",
                "engine",
                "-inkey",
                &uri(recip),
                "-recip",
                s(&cert),
                "-in",
                s(&enc),
                "-out",
                s(&dec),
            ]),
            "openssl cms -decrypt through the module",
        );
        assert_eq!(std::fs::read(&dec).expect("read"), MESSAGE, "{name}");
    }
}

#[test]
fn nss_loads_the_module_lists_certificates_signs_and_decrypts() {
    let agent = Agent::start();
    let w = tempfile::tempdir().expect("tempdir");
    let d = w.path();
    let db = format!("sql:{}", s(&d.join("nssdb")));
    std::fs::create_dir(d.join("nssdb")).expect("mkdir");
    let pki = |n: &str| agent.fixture.pki(n);
    let nss = |program: &str, args: &[&str]| process::output(cmd(&agent, program).args(args));
    ok(
        &nss("certutil", &["-N", "-d", &db, "--empty-password"]),
        "certutil -N",
    );
    ok(
        &nss(
            "modutil",
            &[
                "-dbdir",
                &db,
                "-add",
                "tokenmail",
                "-libfile",
                s(&module()),
                "-force",
            ],
        ),
        "modutil -add",
    );
    // the test root as the S/MIME trust anchor (the intermediate comes from the token)
    ok(
        &nss(
            "certutil",
            &[
                "-A",
                "-d",
                &db,
                "-n",
                "test-root",
                "-t",
                "C,C,C",
                "-i",
                s(&pki("root.pem")),
            ],
        ),
        "certutil -A",
    );
    let pw = d.join("pw");
    std::fs::write(&pw, agent.fixture.pin()).expect("write");

    let list = ok(
        &nss("certutil", &["-L", "-h", "all", "-d", &db, "-f", s(&pw)]),
        "certutil -L -h all",
    );
    for k in ["alice-rsa", "bob-p256", "carol-p384"] {
        assert!(list.contains(&format!("tokenmail-e2e:{k}")), "{list}");
    }
    let modules = ok(
        &nss("modutil", &["-dbdir", &db, "-list", "tokenmail"]),
        "modutil -list",
    );
    assert!(modules.contains("tokenmail-e2e"), "{modules}");

    let msg = d.join("msg.txt");
    std::fs::write(&msg, MESSAGE).expect("write");
    for k in ["alice-rsa", "bob-p256"] {
        let signed = d.join(format!("signed-{k}.p7m"));
        ok(
            &nss(
                "cmsutil",
                &[
                    "-S",
                    "-N",
                    &format!("tokenmail-e2e:{k}"),
                    "-H",
                    "SHA256",
                    "-d",
                    &db,
                    "-f",
                    s(&pw),
                    "-i",
                    s(&msg),
                    "-o",
                    s(&signed),
                ],
            ),
            "cmsutil -S through the module",
        );
        let out = d.join(format!("verified-{k}"));
        ok(
            &openssl(&[
                "cms",
                "-verify",
                "-inform",
                "DER",
                "-CAfile",
                s(&pki("root.pem")),
                "-certfile",
                s(&pki("intermediate.pem")),
                "-in",
                s(&signed),
                "-out",
                s(&out),
            ]),
            "openssl cms -verify of cmsutil's signature",
        );
        assert_eq!(std::fs::read(&out).expect("read"), MESSAGE);
        ok(
            &nss(
                "cmsutil",
                &[
                    "-D",
                    "-d",
                    &db,
                    "-f",
                    s(&pw),
                    "-i",
                    s(&signed),
                    "-o",
                    s(&d.join("content")),
                ],
            ),
            "cmsutil -D of the signature",
        );
        assert_eq!(std::fs::read(d.join("content")).expect("read"), MESSAGE);
    }

    // openssl encrypts to alice's certificate; NSS decrypts with the key behind the module
    let enc = d.join("enc.p7m");
    ok(
        &openssl(&[
            "cms",
            "-encrypt",
            "-aes-256-cbc",
            "-outform",
            "DER",
            "-recip",
            s(&pki("alice-rsa.pem")),
            "-in",
            s(&msg),
            "-out",
            s(&enc),
        ]),
        "openssl cms -encrypt",
    );
    let dec = d.join("dec");
    ok(
        &nss(
            "cmsutil",
            &["-D", "-d", &db, "-f", s(&pw), "-i", s(&enc), "-o", s(&dec)],
        ),
        "cmsutil -D through the module",
    );
    assert_eq!(std::fs::read(&dec).expect("read"), MESSAGE);
}

#[test]
fn without_an_agent_the_slot_is_empty_and_nothing_hangs() {
    let mut agent = Agent::start();
    let present = ok(&tool(&agent, &["-L"]), "pkcs11-tool -L");
    assert!(present.contains("tokenmail-e2e"), "{present}");
    agent.stop();
    let absent = ok(&tool(&agent, &["-L"]), "pkcs11-tool -L without an agent");
    assert!(absent.contains("(empty)"), "{absent}");
    assert!(!absent.contains("tokenmail-e2e"), "{absent}");
}
