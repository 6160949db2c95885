//! `tokenmail-sendmail` (issue 14): the organisation policy applied at send time through
//! the agent, the result handed to an MTA (here a capturing one), checked with openssl —
//! signed always, encrypted to a must-encrypt domain with the archive recipient, signed
//! only elsewhere, triple-wrapped when asked, fail closed with the recipient named and the
//! message kept, Bcc removed, MTA and agent failures keeping the message. The agent's
//! audit log records every private-key operation of these sends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tokenmail_e2e::{bin, process, stderr, stdout, Agent};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A place with a policy, a certificate store and a capturing MTA.
struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(agent: &Agent, policy_extra: &str) -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = &agent.fixture;
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).expect("certs");
        std::fs::copy(f.pki("dave-rsa.pem"), certs.join("dave.pem")).expect("dave");
        // the capturing MTA: the message and its arguments, one pair per delivery
        let mta = dir.path().join("mta.sh");
        std::fs::write(
            &mta,
            format!(
                "#!/bin/sh\nn=$(date +%s%N)\nprintf '%s\\n' \"$*\" > {out}/args-$n\ncat > {out}/msg-$n.eml\n",
                out = dir.path().display()
            ),
        )
        .expect("mta");
        std::fs::set_permissions(&mta, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let config = format!(
            "[policy]\nsign = \"always\"\nmust_encrypt_domains = [\"example.com\"]\narchive_recipient = \"{archive}\"\nmta = [\"{mta}\"]\nqueue_dir = \"{queue}\"\n{policy_extra}",
            archive = s(&f.pki("erin-p256.pem")),
            mta = s(&mta),
            queue = s(&dir.path().join("queue")),
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("config");
        Lab { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn sendmail(&self, agent: &Agent, args: &[&str], message: &[u8]) -> Output {
        process::output_with_input(
            Command::new(bin("tokenmail-sendmail"))
                .args(args)
                .env("TOKENMAIL_SOCK", &agent.socket)
                .env("TOKENMAIL_CONFIG", self.path("config.toml"))
                .env("TOKENMAIL_CERTS", self.path("certs"))
                .env("XDG_CACHE_HOME", self.path("cache")),
            message,
        )
    }

    /// The captured deliveries: (arguments, message).
    fn delivered(&self) -> Vec<(String, Vec<u8>)> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("args-"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| {
                let stamp = &n["args-".len()..];
                (
                    std::fs::read_to_string(self.path(n))
                        .expect("args")
                        .trim()
                        .to_string(),
                    std::fs::read(self.path(&format!("msg-{stamp}.eml"))).expect("msg"),
                )
            })
            .collect()
    }

    fn queued(&self) -> Vec<Vec<u8>> {
        match std::fs::read_dir(self.path("queue")) {
            Ok(d) => d
                .filter_map(|e| e.ok())
                .map(|e| std::fs::read(e.path()).expect("queued"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn openssl(args: &[&str], input: &[u8]) -> Output {
    process::output_with_input(Command::new("openssl").args(args), input)
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: exit {:?}\n{}\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

fn decrypt_with(agent: &Agent, key: &str, cert: &str, msg: &[u8]) -> Vec<u8> {
    let f = &agent.fixture;
    let o = openssl(
        &[
            "cms",
            "-decrypt",
            "-inkey",
            s(&f.pki(key)),
            "-recip",
            s(&f.pki(cert)),
        ],
        msg,
    );
    ok(&o, &format!("openssl cms -decrypt with {key}"));
    o.stdout
}

fn verify(agent: &Agent, msg: &[u8]) -> Vec<u8> {
    let o = openssl(
        &[
            "cms",
            "-verify",
            "-CAfile",
            s(&agent.fixture.pki("root.pem")),
            "-purpose",
            "smimesign",
        ],
        msg,
    );
    ok(&o, "openssl cms -verify");
    o.stdout
}

const TO_DAVE: &[u8] = b"From: alice@example.com\r\nTo: Dave <dave@example.com>\r\nBcc: carol@example.com\r\nSubject: quarterly figures\r\n\r\nfor dave's eyes\r\n";

#[test]
fn policy_signs_encrypts_archives_and_fails_closed() {
    let agent = Agent::start();
    let lab = Lab::new(&agent, "");

    // must-encrypt domain: signed, then encrypted to dave, the archive and alice herself
    let o = lab.sendmail(&agent, &["-oi", "-t"], TO_DAVE);
    ok(&o, "sendmail to dave");
    let sent = lab.delivered();
    assert_eq!(sent.len(), 1);
    let (args, msg) = &sent[0];
    assert_eq!(
        args, "dave@example.com carol@example.com",
        "envelope recipients"
    );
    let text = String::from_utf8_lossy(msg);
    assert!(text.contains("application/pkcs7-mime"), "{text}");
    assert!(!text.contains("Bcc"), "Bcc removed: {text}");
    assert!(!text.contains("for dave's eyes"), "encrypted: {text}");
    let inner = decrypt_with(&agent, "dave-rsa.key", "dave-rsa.pem", msg);
    assert!(String::from_utf8_lossy(&inner).contains("multipart/signed"));
    let content = verify(&agent, &inner);
    assert!(String::from_utf8_lossy(&content).contains("for dave's eyes"));
    // the archive recipient can read it too
    let archived = decrypt_with(&agent, "erin-p256.key", "erin-p256.pem", msg);
    assert_eq!(archived, inner, "the archive copy is the same message");

    // elsewhere: signed only
    let o = lab.sendmail(
        &agent,
        &["-i", "carl@other.org"],
        b"From: alice@example.com\r\nTo: carl@other.org\r\nSubject: hi\r\n\r\nopen text\r\n",
    );
    ok(&o, "sendmail to carl");
    let (args, msg) = lab.delivered().pop().expect("second delivery");
    assert_eq!(args, "carl@other.org");
    assert!(String::from_utf8_lossy(&msg).contains("multipart/signed"));
    assert!(String::from_utf8_lossy(&verify(&agent, &msg)).contains("open text"));

    // a must-encrypt recipient without a certificate: nothing sent, named, kept
    let before = lab.delivered().len();
    let message = b"From: alice@example.com\r\nTo: dave@example.com, nobody@example.com\r\nSubject: x\r\n\r\nsecret\r\n";
    let o = lab.sendmail(&agent, &["-t"], message);
    assert_eq!(o.status.code(), Some(69), "EX_UNAVAILABLE: {}", stderr(&o));
    assert!(stderr(&o).contains("nobody@example.com"), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("dave@example.com,"),
        "only the missing one: {}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("kept in"), "{}", stderr(&o));
    assert_eq!(lab.delivered().len(), before, "nothing sent");
    assert_eq!(
        lab.queued(),
        vec![message.to_vec()],
        "the message is kept as given"
    );

    // dry run: the plan, nothing sent
    let o = lab.sendmail(&agent, &["-t", "--dry-run"], TO_DAVE);
    ok(&o, "dry run");
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(plan["encrypt"], true);
    assert_eq!(plan["archive"], true);
    assert_eq!(lab.delivered().len(), before);
    // the same through `tokenmail policy show --dry-run`
    let m = lab.path("m.eml");
    std::fs::write(&m, message).expect("m");
    let o = process::output(
        agent
            .cli_cmd(&["policy", "show", "--dry-run", s(&m)])
            .env("TOKENMAIL_CONFIG", lab.path("config.toml"))
            .env("TOKENMAIL_CERTS", lab.path("certs")),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("not sent") && stdout(&o).contains("nobody@example.com"),
        "{}",
        stdout(&o)
    );

    // every private-key operation of these sends is in the audit log, with who asked
    let log = std::fs::read_to_string(agent.audit_log()).expect("audit log");
    let signs: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
        .filter(|r| r["op"] == "sign")
        .collect();
    assert!(signs.len() >= 2, "{log}");
    for r in &signs {
        assert_eq!(r["result"], "ok", "{r}");
        assert_eq!(r["peer"]["program"], "tokenmail-sendm", "{r}");
        assert!(r["digest"].as_str().is_some_and(|d| d.len() == 64), "{r}");
    }
    assert!(
        !log.contains("for dave's eyes") && !log.contains("secret"),
        "no content in the log"
    );
}

#[test]
fn triple_wrap_and_failures_keep_the_message() {
    let agent = Agent::start();
    let lab = Lab::new(&agent, "triple_wrap = true\n");
    let o = lab.sendmail(&agent, &["-t"], TO_DAVE);
    ok(&o, "triple wrap");
    let (_, msg) = lab.delivered().pop().expect("delivered");
    // outer signature over the encrypted message, inner signature inside
    let encrypted = verify(&agent, &msg);
    let inner = decrypt_with(&agent, "dave-rsa.key", "dave-rsa.pem", &encrypted);
    assert!(String::from_utf8_lossy(&verify(&agent, &inner)).contains("for dave's eyes"));

    // the MTA fails: its code, the message kept
    let failing = Lab::new(&agent, "");
    let cfg = std::fs::read_to_string(failing.path("config.toml")).expect("cfg");
    let cfg = cfg
        .lines()
        .map(|l| {
            if l.starts_with("mta") {
                "mta = [\"/bin/false\"]"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(failing.path("config.toml"), cfg).expect("cfg");
    let o = failing.sendmail(&agent, &["-t"], TO_DAVE);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("kept in"), "{}", stderr(&o));
    assert_eq!(failing.queued(), vec![TO_DAVE.to_vec()]);

    // no agent (dave's certificate is in the store, but nothing can sign): temporary
    // failure, kept
    let o = process::output_with_input(
        Command::new(bin("tokenmail-sendmail"))
            .arg("dave@example.com")
            .env("TOKENMAIL_SOCK", lab.path("no-agent.sock"))
            .env("TOKENMAIL_CONFIG", lab.path("config.toml"))
            .env("TOKENMAIL_CERTS", lab.path("certs")),
        TO_DAVE,
    );
    assert_eq!(o.status.code(), Some(75), "EX_TEMPFAIL: {}", stderr(&o));
    assert!(stderr(&o).contains("kept in"), "{}", stderr(&o));

    // a bad policy: EX_CONFIG, one line
    std::fs::write(lab.path("bad.toml"), "[policy]\nencrypt = \"sometimes\"\n").expect("bad");
    let o = process::output_with_input(
        Command::new(bin("tokenmail-sendmail"))
            .arg("-t")
            .env("TOKENMAIL_CONFIG", lab.path("bad.toml")),
        TO_DAVE,
    );
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
}

/// A private Postfix (its own configuration, queue and mailbox in a scratch directory; no
/// network listener; stopped when dropped) as the MTA behind tokenmail-sendmail.
struct Postfix {
    dir: tempfile::TempDir,
}

impl Postfix {
    fn start() -> Postfix {
        Self::start_listening(None)
    }

    /// With `Some(port)`, an SMTP listener on 127.0.0.1:port too (relaying for loopback).
    fn start_listening(smtp_port: Option<u16>) -> Postfix {
        Self::start_with(smtp_port, None)
    }

    /// As [`Postfix::start_listening`], offering STARTTLS with `tls` = (certificate, key).
    fn start_with(smtp_port: Option<u16>, tls: Option<(&Path, &Path)>) -> Postfix {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path();
        for d in ["conf", "queue", "data", "vmail"] {
            std::fs::create_dir(t.join(d)).expect("mkdir");
        }
        let chown = |path: &Path, owner: &str| {
            let o = process::output(Command::new("chown").arg(owner).arg(path));
            assert!(o.status.success(), "chown {owner}: {}", stderr(&o));
        };
        // Postfix runs as its own users: its data directory is theirs, the mailbox nobody's
        chown(&t.join("data"), "postfix");
        chown(&t.join("vmail"), "nobody:nogroup");
        std::fs::write(
            t.join("conf/main.cf"),
            format!(
                "compatibility_level = 3.6\nqueue_directory = {t}/queue\ndata_directory = {t}/data\n\
                 mail_owner = postfix\nsetgid_group = postdrop\nmyhostname = localhost.localdomain\n\
                 mydestination =\ninet_interfaces = loopback-only\ninet_protocols = ipv4\n\
                 virtual_mailbox_domains = example.com, other.org\nvirtual_mailbox_base = {t}/vmail\n\
                 virtual_mailbox_maps = static:mailbox\nvirtual_uid_maps = static:65534\n\
                 virtual_gid_maps = static:65534\nvirtual_minimum_uid = 1\n\
                 maillog_file_prefixes = {t}\nmaillog_file = {t}/maillog\nsmtputf8_enable = no\n\
                 mynetworks = 127.0.0.0/8\nsmtpd_relay_restrictions = permit_mynetworks, reject\n",
                t = t.display()
            ),
        )
        .expect("main.cf");
        if let Some((cert, key)) = tls {
            let mut main = std::fs::read_to_string(t.join("conf/main.cf")).expect("main.cf");
            main.push_str(&format!(
                "smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n",
                cert.display(),
                key.display()
            ));
            std::fs::write(t.join("conf/main.cf"), main).expect("main.cf");
        }
        // Debian's master.cf without the smtp listener and without chroot
        let proto = std::fs::read_to_string("/etc/postfix/master.cf.proto")
            .expect("/etc/postfix/master.cf.proto (apt-get install postfix)");
        let master: Vec<String> = proto
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                if l.starts_with('#') || l.starts_with(' ') || f.len() < 8 {
                    l.to_string()
                } else if f[0] == "smtp" && f[1] == "inet" {
                    format!("#{l}")
                } else {
                    let mut g = f.clone();
                    g[4] = "n";
                    g.join(" ")
                }
            })
            .collect();
        let mut master = master.join("\n") + "\n";
        if let Some(port) = smtp_port {
            master.push_str(&format!("127.0.0.1:{port} inet n - n - - smtpd\n"));
        }
        std::fs::write(t.join("conf/master.cf"), master).expect("master.cf");
        let pf = Postfix { dir };
        let o = process::output(
            Command::new("postfix")
                .arg("-c")
                .arg(pf.conf())
                .arg("start"),
        );
        assert!(
            o.status.success(),
            "postfix start: {}{}",
            stderr(&o),
            std::fs::read_to_string(pf.dir.path().join("maillog")).unwrap_or_default()
        );
        pf
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    /// The delivered messages of the mailbox, waited for (at most 30 s) until there are `n`.
    fn wait_for(&self, n: usize) -> Vec<Vec<u8>> {
        let mbox = self.dir.path().join("vmail/mailbox");
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let data = std::fs::read(&mbox).unwrap_or_default();
            let text = String::from_utf8_lossy(&data).into_owned();
            let msgs: Vec<Vec<u8>> = text
                .split("\nFrom ")
                .filter(|m| !m.trim().is_empty())
                .map(|m| {
                    // drop the mbox "From " line
                    let m = m.strip_prefix("From ").unwrap_or(m);
                    m.split_once('\n')
                        .map(|(_, rest)| rest)
                        .unwrap_or("")
                        .as_bytes()
                        .to_vec()
                })
                .collect();
            if msgs.len() >= n || std::time::Instant::now() > until {
                assert!(
                    msgs.len() >= n,
                    "Postfix delivered {} of {n} messages: {}",
                    msgs.len(),
                    std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
                );
                return msgs;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = process::output(
            Command::new("postfix")
                .arg("-c")
                .arg(self.conf())
                .arg("abort"),
        );
    }
}

#[test]
fn through_a_real_postfix() {
    let agent = Agent::start();
    let postfix = Postfix::start();
    let lab = Lab::new(&agent, "");
    let cfg = std::fs::read_to_string(lab.path("config.toml")).expect("cfg");
    let mta = format!(
        "mta = [\"/usr/sbin/sendmail\", \"-C\", \"{}\", \"-i\"]",
        s(&postfix.conf())
    );
    let cfg = cfg
        .lines()
        .map(|l| {
            if l.starts_with("mta") {
                mta.as_str()
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(lab.path("config.toml"), cfg).expect("cfg");
    ok(
        &lab.sendmail(&agent, &["-oi", "-t"], TO_DAVE),
        "to dave through postfix",
    );
    ok(
        &lab.sendmail(
            &agent,
            &["-oi", "carl@other.org"],
            b"From: alice@example.com\r\nTo: carl@other.org\r\nSubject: hi\r\n\r\nthrough postfix\r\n",
        ),
        "to carl through postfix",
    );
    // the mailbox gets dave's and carol's copies (encrypted) and carl's (signed)
    let msgs = postfix.wait_for(3);
    let mut encrypted = 0;
    let mut signed = 0;
    for m in &msgs {
        let text = String::from_utf8_lossy(m);
        assert!(
            text.contains("Received: by localhost.localdomain (Postfix"),
            "{text}"
        );
        if text.contains("application/pkcs7-mime") {
            let inner = decrypt_with(&agent, "dave-rsa.key", "dave-rsa.pem", m);
            assert!(String::from_utf8_lossy(&verify(&agent, &inner)).contains("for dave's eyes"));
            encrypted += 1;
        } else {
            assert!(String::from_utf8_lossy(&verify(&agent, m)).contains("through postfix"));
            signed += 1;
        }
    }
    assert_eq!(
        (encrypted, signed),
        (2, 1),
        "two encrypted copies, one signed"
    );
}

/// A free loopback port (bound and released: good enough for a test's own listener).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn smtp_submission_instead_of_an_mta() {
    let agent = Agent::start();
    let port = free_port();
    let postfix = Postfix::start_listening(Some(port));
    let lab = Lab::new(&agent, "");
    let cfg = std::fs::read_to_string(lab.path("config.toml")).expect("cfg");
    let cfg = cfg
        .lines()
        .filter(|l| !l.starts_with("mta"))
        .collect::<Vec<_>>()
        .join("\n")
        + &format!(
            "\n[policy.smtp]\nserver = \"127.0.0.1:{port}\"\ntls = \"none\"\ntimeout = 20\n"
        );
    std::fs::write(lab.path("config.toml"), cfg).expect("cfg");
    ok(
        &lab.sendmail(&agent, &["-oi", "-t"], TO_DAVE),
        "to dave over SMTP",
    );
    let msgs = postfix.wait_for(2);
    for m in &msgs {
        let text = String::from_utf8_lossy(m);
        assert!(text.contains("with ESMTP"), "came in over SMTP: {text}");
        let inner = decrypt_with(&agent, "dave-rsa.key", "dave-rsa.pem", m);
        assert!(String::from_utf8_lossy(&verify(&agent, &inner)).contains("for dave's eyes"));
    }
    // a server that is not there: temporary failure, the message kept
    let cfg = std::fs::read_to_string(lab.path("config.toml"))
        .expect("cfg")
        .replace(
            &format!("127.0.0.1:{port}"),
            &format!("127.0.0.1:{}", free_port()),
        );
    std::fs::write(lab.path("config.toml"), cfg).expect("cfg");
    let o = lab.sendmail(&agent, &["-oi", "-t"], TO_DAVE);
    assert_eq!(o.status.code(), Some(75), "EX_TEMPFAIL: {}", stderr(&o));
    assert!(stderr(&o).contains("kept in"), "{}", stderr(&o));
    assert_eq!(lab.queued(), vec![TO_DAVE.to_vec()]);
}

/// STARTTLS to a server whose certificate chains to the CA in SSL_CERT_FILE: delivered;
/// the same server with the system's CAs only: refused, nothing sent, the message kept.
#[test]
fn smtp_submission_with_starttls() {
    let agent = Agent::start();
    let pki = tempfile::tempdir().expect("pki");
    let p = |n: &str| pki.path().join(n);
    let o = process::output(
        Command::new("bash")
            .arg("-c")
            .arg(
                "set -e; openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                 -keyout ca.key -subj /CN=smtp-test-ca -days 2 -addext basicConstraints=critical,CA:TRUE \
                 -addext keyUsage=critical,keyCertSign -out ca.pem 2>/dev/null; \
                 openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout srv.key \
                 -subj /CN=localhost -out srv.csr 2>/dev/null; \
                 printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ext; \
                 openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -set_serial 7 -days 2 \
                 -extfile ext -out srv.pem 2>/dev/null; chmod 644 srv.key",
            )
            .current_dir(pki.path()),
    );
    ok(&o, "test CA and server certificate");
    let port = free_port();
    let postfix = Postfix::start_with(Some(port), Some((&p("srv.pem"), &p("srv.key"))));
    let lab = Lab::new(&agent, "");
    let cfg = std::fs::read_to_string(lab.path("config.toml")).expect("cfg");
    let cfg = cfg
        .lines()
        .filter(|l| !l.starts_with("mta"))
        .collect::<Vec<_>>()
        .join("\n")
        + &format!(
            "\n[policy.smtp]\nserver = \"localhost:{port}\"\ntls = \"starttls\"\ntimeout = 20\n"
        );
    std::fs::write(lab.path("config.toml"), cfg).expect("cfg");
    let send = |ca: Option<&Path>| {
        let mut c = Command::new(bin("tokenmail-sendmail"));
        c.args(["-oi", "-t"])
            .env("TOKENMAIL_SOCK", &agent.socket)
            .env("TOKENMAIL_CONFIG", lab.path("config.toml"))
            .env("TOKENMAIL_CERTS", lab.path("certs"))
            .env("XDG_CACHE_HOME", lab.path("cache"));
        match ca {
            Some(ca) => c.env("SSL_CERT_FILE", ca),
            None => c.env_remove("SSL_CERT_FILE"),
        };
        process::output_with_input(&mut c, TO_DAVE)
    };
    // not trusted: refused before anything is sent
    let o = send(None);
    assert!(!o.status.success(), "an untrusted server is refused");
    assert!(stderr(&o).contains("kept in"), "{}", stderr(&o));
    // trusted: delivered over TLS
    ok(&send(Some(&p("ca.pem"))), "STARTTLS to a trusted server");
    let msgs = postfix.wait_for(2);
    for m in &msgs {
        let text = String::from_utf8_lossy(m);
        assert!(text.contains("with ESMTPS"), "came in over TLS: {text}");
        let inner = decrypt_with(&agent, "dave-rsa.key", "dave-rsa.pem", m);
        assert!(String::from_utf8_lossy(&verify(&agent, &inner)).contains("for dave's eyes"));
    }
}
