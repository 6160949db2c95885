//! LDAP directories and the certificate store against a real slapd: each test starts its
//! own on loopback (a free port), with a throwaway slapd.conf (core, cosine, inetorgperson;
//! mdb), entries loaded with slapadd before it starts and with ldapadd while it runs, and
//! kills it at the end (also when the test panics). Certificates are made by openssl at
//! test time (data/ldap-pki.sh). No agent runs.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Running external programs with a deadline (shared with the other test crates).
#[path = "../../pkcs11-tests/src/process.rs"]
mod process;

const PEOPLE: &str = "dc=example,dc=org";
const CORP: &str = "dc=corp,dc=example";

fn program(name: &str) -> String {
    for d in ["/usr/sbin", "/usr/bin", "/sbin"] {
        let p = Path::new(d).join(name);
        if p.exists() {
            return p.display().to_string();
        }
    }
    name.to_string()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The test's directory: fixtures, the slapd configuration and databases, the store.
struct Fixture {
    dir: tempfile::TempDir,
    slapd: Option<process::Running>,
    port: u16,
    /// ldaps://
    tls_port: u16,
}

impl Fixture {
    /// Certificates and LDIF (no server yet).
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = process::run_with_timeout(
            Command::new("bash")
                .arg("-c")
                .arg(include_str!("data/ldap-pki.sh"))
                .current_dir(dir.path()),
            None,
            process::long_limit(),
        );
        assert!(o.status.success(), "ldap-pki.sh: {}", text(&o.stderr));
        Fixture {
            dir,
            slapd: None,
            port: 0,
            tls_port: 0,
        }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts slapd with the people database (anonymous read) and the corp database
    /// (read after a bind as cn=reader), loaded with slapadd.
    fn start(&mut self) {
        let d = self.dir.path();
        for db in ["db-people", "db-corp"] {
            std::fs::create_dir_all(d.join(db)).expect("mkdir");
        }
        let conf = format!(
            "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {d}/slapd.pid
sizelimit 500
TLSCACertificateFile {d}/ca.pem
TLSCertificateFile {d}/server.pem
TLSCertificateKeyFile {d}/server.key

database mdb
maxsize 10485760
suffix \"{PEOPLE}\"
rootdn \"cn=admin,{PEOPLE}\"
rootpw admin-secret
directory {d}/db-people
access to * by * read

database mdb
maxsize 10485760
suffix \"{CORP}\"
rootdn \"cn=admin,{CORP}\"
directory {d}/db-corp
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
",
            d = d.display()
        );
        std::fs::write(d.join("slapd.conf"), conf).expect("slapd.conf");
        for (base, ldif) in [(PEOPLE, "people.ldif"), (CORP, "corp.ldif")] {
            let o = process::output(
                Command::new(program("slapadd"))
                    .args(["-f", "slapd.conf", "-b", base, "-l", ldif])
                    .current_dir(d),
            );
            assert!(o.status.success(), "slapadd {ldif}: {}", text(&o.stderr));
        }
        // a free port: taken by the system, released, given to slapd (tried again if
        // someone else took it in between)
        let free = || {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        };
        for _ in 0..5 {
            let (port, tls_port) = (free(), free());
            let mut slapd = process::Running::spawn(
                Command::new(program("slapd"))
                    .args(["-f", "slapd.conf", "-d", "0", "-h"])
                    .arg(format!(
                        "ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{tls_port}/"
                    ))
                    .current_dir(d)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped()),
            );
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(20) && slapd.alive() {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
                {
                    self.slapd = Some(slapd);
                    self.port = port;
                    self.tls_port = tls_port;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let out = slapd.kill();
            eprintln!("slapd on port {port} did not start: {}", text(&out.stderr));
        }
        panic!("slapd did not start (is it installed? softhsm/install-deps.sh installs it)");
    }

    fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// Writes the configuration file with `body`.
    fn config(&self, body: &str) -> PathBuf {
        let p = self.p("agent.toml");
        std::fs::write(&p, body).expect("config");
        p
    }

    /// The people directory, anonymous.
    fn people_config(&self) -> PathBuf {
        self.config(&format!(
            "[[directory]]\nurl = \"{}\"\nbase = \"{PEOPLE}\"\ntimeout = 5\n",
            self.url()
        ))
    }

    /// tokenmail with no agent, this configuration and the store `store/`.
    fn tokenmail(&self, args: &[&str]) -> Output {
        process::output(&mut self.tokenmail_cmd(args))
    }

    fn tokenmail_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tokenmail"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("TOKENMAIL_SOCK", self.p("no-agent.sock"))
            .env("HOME", self.dir.path())
            .env("TOKENMAIL_CONFIG", self.p("agent.toml"))
            .env("TOKENMAIL_CERTS", self.p("store"))
            .env("XDG_CACHE_HOME", self.p("cache"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("TOKENMAIL_TRUST");
        c
    }

    /// The certificates (DER) in the store.
    fn stored(&self) -> Vec<Vec<u8>> {
        let Ok(rd) = std::fs::read_dir(self.p("store")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let o = process::output(
                Command::new("openssl")
                    .args(["x509", "-outform", "DER", "-in"])
                    .arg(e.path()),
            );
            assert!(
                o.status.success(),
                "{}: {}",
                e.path().display(),
                text(&o.stderr)
            );
            out.push(o.stdout);
        }
        out
    }

    /// A certificate file as DER.
    fn der(&self, pem: &str) -> Vec<u8> {
        let o = process::output(
            Command::new("openssl")
                .args(["x509", "-outform", "DER", "-in", pem])
                .current_dir(self.dir.path()),
        );
        assert!(o.status.success(), "{}", text(&o.stderr));
        o.stdout
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(s) = self.slapd.take() {
            s.kill();
        }
    }
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            text(&o.stdout),
            text(&o.stderr)
        )
    })
}

#[test]
fn fetch_keeps_the_addresses_certificates_and_nothing_else() {
    let mut f = Fixture::new();
    f.start();
    f.people_config();

    // userCertificate;binary
    let o = f.tokenmail(&["certs", "fetch", "--json", "bob@example.org"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let j = json(&o);
    assert_eq!(j["stored"].as_array().map(Vec::len), Some(1), "{j}");
    assert_eq!(j["stored"][0]["new"], true);
    assert_eq!(j["stored"][0]["emails"][0], "bob@example.org");
    assert_eq!(f.stored(), vec![f.der("bob.pem")]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(f.p("store"))
            .expect("store")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o700, "the store is created 0700");

    // again: already there, nothing written twice
    let o = f.tokenmail(&["certs", "fetch", "bob@example.org"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).starts_with("already stored"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(f.stored().len(), 1);

    // userSMIMECertificate (certs-only SignedData holding carol's certificate and the CA's):
    // carol's is kept, the CA certificate is not
    let o = f.tokenmail(&["certs", "fetch", "--json", "Carol@Example.ORG"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let j = json(&o);
    assert_eq!(j["stored"].as_array().map(Vec::len), Some(1), "{j}");
    assert_eq!(j["stored"][0]["emails"][0], "carol@example.org");
    assert!(j["skipped"][0]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("CA certificate")));
    let stored = f.stored();
    assert_eq!(stored.len(), 2);
    assert!(stored.contains(&f.der("carol.pem")));
    assert!(!stored.contains(&f.der("ca.pem")));

    // dave's entry holds mallory's certificate: not kept, said why, exit 1
    let o = f.tokenmail(&["certs", "fetch", "dave@example.org"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("skipped: 'CN=mallory'") && out.contains("mallory@evil.example"),
        "{out}"
    );
    assert!(!f.stored().contains(&f.der("mallory.pem")));

    // filter injection: the address is escaped (RFC 4515), so it matches no entry; an
    // unescaped (mail=*)(mail=*@x) would have matched everyone
    let o = f.tokenmail(&["certs", "fetch", "--json", "*)(mail=*@example.org"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let j = json(&o);
    assert_eq!(j["stored"].as_array().map(Vec::len), Some(0), "{j}");
    assert_eq!(j["skipped"].as_array().map(Vec::len), Some(0), "{j}");
    let o = f.tokenmail(&["certs", "fetch", "*)(mail=*"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("is not an email address"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(f.stored().len(), 2, "nothing more stored");

    // 25 entries for one address: the lookup asks for 20 at most; slapd stops there and
    // says so (sizeLimitExceeded), which is a note, not an error
    let o = f.tokenmail(&["certs", "fetch", "--json", "crowd@example.org"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let j = json(&o);
    assert_eq!(j["skipped"].as_array().map(Vec::len), Some(20), "{j}");
    assert!(
        text(&o.stderr).contains("the server's limit was reached"),
        "{}",
        text(&o.stderr)
    );

    // nobody
    let o = f.tokenmail(&["certs", "fetch", "nobody@example.org"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stdout).contains("no certificate for nobody@example.org"));

    // list: file, subject, emails, notAfter, sha256
    let o = f.tokenmail(&["certs", "list", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let j = json(&o);
    let certs = j["certificates"].as_array().cloned().unwrap_or_default();
    assert_eq!(certs.len(), 2, "{j}");
    let bob = certs
        .iter()
        .find(|c| c["emails"][0] == "bob@example.org")
        .cloned()
        .unwrap_or_default();
    assert_eq!(bob["subject"], "CN=bob");
    assert!(bob["not_after"].as_str().is_some_and(|s| s.ends_with('Z')));
    let fp = bob["sha256"].as_str().unwrap_or_default().to_string();
    let o = process::output(
        Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-fingerprint",
                "-sha256",
                "-in",
                "bob.pem",
            ])
            .current_dir(f.dir.path()),
    );
    let want = text(&o.stdout)
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or("")
        .replace(':', "")
        .to_ascii_lowercase();
    assert_eq!(fp, want, "openssl's fingerprint");

    // remove by fingerprint prefix, then by file
    let o = f.tokenmail(&["certs", "remove", &fp[..12]]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(f.stored(), vec![f.der("carol.pem")]);
    let o = f.tokenmail(&["certs", "remove", &fp[..12]]);
    assert_eq!(o.status.code(), Some(1), "gone already");
    let carol_file = certs
        .iter()
        .find(|c| c["emails"][0] == "carol@example.org")
        .and_then(|c| c["file"].as_str())
        .unwrap_or_default()
        .to_string();
    let name = Path::new(&carol_file)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let o = f.tokenmail(&["certs", "remove", &name]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(f.stored().is_empty());
    // a file outside the store is not touched
    let o = f.tokenmail(&["certs", "remove", f.p("ca.pem").to_str().unwrap_or("")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("not in a certificate directory"));
    assert!(f.p("ca.pem").exists());
}

#[test]
fn encrypt_to_fetches_from_the_directory_and_openssl_decrypts() {
    let mut f = Fixture::new();
    f.start();
    std::fs::write(
        f.p("m.eml"),
        b"From: ann@example.org\r\nTo: bob@example.org\r\nSubject: ldap\r\nContent-Type: text/plain\r\n\r\nfetched on the way\r\n",
    )
    .expect("msg");

    // without [[directory]]: nothing changes, the usual error
    f.config("");
    let o = f.tokenmail(&[
        "encrypt",
        "--no-self",
        "--to",
        "bob@example.org",
        "m.eml",
        "-o",
        "enc.eml",
    ]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("no certificate for this address") && !err.contains("LDAP"),
        "{err}"
    );
    assert!(!f.p("store").exists());

    f.people_config();
    let o = f.tokenmail(&[
        "encrypt",
        "--no-self",
        "--to",
        "bob@example.org",
        "m.eml",
        "-o",
        "enc.eml",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("fetched from the LDAP directory"));
    assert_eq!(f.stored(), vec![f.der("bob.pem")], "kept in the store");
    let d = process::output(
        Command::new("openssl")
            .args([
                "cms", "-decrypt", "-in", "enc.eml", "-recip", "bob.pem", "-inkey", "bob.key",
            ])
            .current_dir(f.dir.path()),
    );
    assert!(d.status.success(), "{}", text(&d.stderr));
    assert!(text(&d.stdout).contains("fetched on the way"));

    // an address whose entry has only someone else's certificate: refused, and said
    let o = f.tokenmail(&[
        "encrypt",
        "--no-self",
        "--to",
        "dave@example.org",
        "m.eml",
        "-o",
        "enc3.eml",
    ]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("--to dave@example.org") && err.contains("for mallory@evil.example"),
        "{err}"
    );
    assert!(!f.p("enc3.eml").exists());
    assert_eq!(f.stored().len(), 1, "mallory's certificate not kept");

    // the next time the store answers (the directory is not needed: slapd stopped)
    if let Some(s) = f.slapd.take() {
        s.kill();
    }
    let o = f.tokenmail(&[
        "encrypt",
        "--no-self",
        "--to",
        "bob@example.org",
        "m.eml",
        "-o",
        "enc2.eml",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("LDAP"), "{}", text(&o.stderr));
}

#[test]
fn expiry_ldap_reports_an_expired_certificate_in_the_directory() {
    let mut f = Fixture::new();
    f.start();
    f.people_config();
    let empty = f.p("no-local-certs");
    std::fs::create_dir(&empty).expect("mkdir");
    let empty = empty.display().to_string();

    // bob, carol (and the CA in carol's SignedData), mallory: valid for 20 (CA: 30) days
    let o = f.tokenmail(&[
        "expiry", "--ldap", "--json", "--days", "10", "--certs", &empty,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let j = json(&o);
    assert_eq!(j["checked"], 4, "{j}");
    assert_eq!(j["expired"], 0);
    assert!(j["certificates"]
        .as_array()
        .is_some_and(|c| c.iter().all(|c| c["source"]
            .as_str()
            .is_some_and(|s| s.starts_with(&f.url())))));

    // an expired certificate is added to the running directory with ldapadd
    let o = process::output(
        Command::new(program("ldapadd"))
            .args(["-x", "-H", &f.url(), "-D"])
            .arg(format!("cn=admin,{PEOPLE}"))
            .args(["-w", "admin-secret", "-f", "expired.ldif"])
            .current_dir(f.dir.path()),
    );
    assert!(o.status.success(), "ldapadd: {}", text(&o.stderr));
    let o = f.tokenmail(&["expiry", "--ldap", "--days", "10", "--certs", &empty]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stdout));
    let out = text(&o.stdout);
    assert!(
        out.contains("EXPIRED") && out.contains("old@example.org") && out.contains("uid=old"),
        "{out}"
    );
    // a 25-day window makes the three 20-day certificates due (exit stays 2: expired)
    let o = f.tokenmail(&[
        "expiry", "--ldap", "--json", "--days", "25", "--certs", &empty,
    ]);
    assert_eq!(o.status.code(), Some(2));
    let j = json(&o);
    assert_eq!(
        (j["expired"].as_u64(), j["due"].as_u64()),
        (Some(1), Some(3)),
        "{j}"
    );
    // without the expired one's entry, due only: exit 1
    let o = process::output(
        Command::new(program("ldapdelete"))
            .args(["-x", "-H", &f.url(), "-D"])
            .arg(format!("cn=admin,{PEOPLE}"))
            .args(["-w", "admin-secret"])
            .arg(format!("uid=old,ou=people,{PEOPLE}"))
            .current_dir(f.dir.path()),
    );
    assert!(o.status.success(), "ldapdelete: {}", text(&o.stderr));
    let o = f.tokenmail(&["expiry", "--ldap", "--days", "25", "--certs", &empty]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));

    // without --ldap the directory is not asked
    let o = f.tokenmail(&["expiry", "--certs", &empty]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
}

#[test]
fn ldaps_and_starttls_check_the_servers_certificate() {
    let mut f = Fixture::new();
    f.start();
    let fetch = |ca: &str| {
        let mut c = f.tokenmail_cmd(&["certs", "fetch", "bob@example.org"]);
        // rustls-native-certs reads the CA store from here
        c.env("SSL_CERT_FILE", f.p(ca)).env_remove("SSL_CERT_DIR");
        process::output(&mut c)
    };
    // ldaps://, with a bind: the password crosses TLS only
    let pw = f.p("reader.pw");
    std::fs::write(&pw, "s3cret-reader\n").expect("pw");
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    f.config(&format!(
        "[[directory]]\nurl = \"ldaps://127.0.0.1:{}\"\nbase = \"{PEOPLE}\"\nbind_dn = \"cn=reader,{CORP}\"\npassword_file = \"reader.pw\"\ntimeout = 5\n",
        f.tls_port
    ));
    let o = fetch("ca.pem");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(f.stored(), vec![f.der("bob.pem")]);
    std::fs::remove_dir_all(f.p("store")).expect("rm");

    // a server certificate that does not chain to the CA store: refused, one line
    let o = fetch("erin.pem");
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot connect") && err.contains("invalid peer certificate"),
        "{err}"
    );
    assert!(f.stored().is_empty());

    // StartTLS on ldap://
    f.config(&format!(
        "[[directory]]\nurl = \"{}\"\nbase = \"{PEOPLE}\"\nstarttls = true\ntimeout = 5\n",
        f.url()
    ));
    let o = fetch("ca.pem");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(f.stored(), vec![f.der("bob.pem")]);
    std::fs::remove_dir_all(f.p("store")).expect("rm");
    let o = fetch("erin.pem");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("UnknownIssuer"),
        "{}",
        text(&o.stderr)
    );
    assert!(f.stored().is_empty());
}

#[test]
fn bind_with_a_password_file() {
    use std::os::unix::fs::PermissionsExt;
    let mut f = Fixture::new();
    f.start();
    let pw = f.p("reader.pw");
    std::fs::write(&pw, "s3cret-reader\n").expect("pw");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let with = |file: &str| {
        format!(
            "[[directory]]\nurl = \"{}\"\nbase = \"{CORP}\"\nbind_dn = \"cn=reader,{CORP}\"\npassword_file = \"{file}\"\ntimeout = 5\n",
            f.url()
        )
    };

    // anonymous: the corp database shows nothing
    f.config(&format!(
        "[[directory]]\nurl = \"{}\"\nbase = \"{CORP}\"\n",
        f.url()
    ));
    let o = f.tokenmail(&["certs", "fetch", "erin@corp.example"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));

    // bound (the file named relative to the configuration file)
    f.config(&with("reader.pw"));
    let o = f.tokenmail(&["certs", "fetch", "erin@corp.example"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(f.stored(), vec![f.der("erin.pem")]);

    // a wrong password: refused, one line, exit 2; the password never printed
    let bad = f.p("bad.pw");
    std::fs::write(&bad, "not-the-password\n").expect("pw");
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    f.config(&with("bad.pw"));
    let o = f.tokenmail(&["certs", "fetch", "erin@corp.example"]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains("refused") && err.contains("cn=reader"),
        "{err}"
    );
    assert!(!err.contains("not-the-password"), "{err}");

    // a password file others may read: refused before anything is sent
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    f.config(&with("reader.pw"));
    let o = f.tokenmail(&["certs", "fetch", "erin@corp.example"]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(err.contains("readable by other users"), "{err}");
    assert!(err.contains("chmod o-rwx"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");

    // configuration mistakes: one line at load
    f.config(&format!(
        "[[directory]]\nurl = \"{}\"\nbase = \"{CORP}\"\nbind_dn = \"cn=reader,{CORP}\"\n",
        f.url()
    ));
    let o = f.tokenmail(&["certs", "fetch", "erin@corp.example"]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(err.contains("bind_dn needs password_file"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    f.config("[[directory]]\nurl = \"http://127.0.0.1\"\nbase = \"dc=x\"\n");
    let o = f.tokenmail(&["certs", "fetch", "erin@corp.example"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("use ldap://host[:port] or ldaps://"));
    // doctor says the same; a good [[directory]] and [certs] are no unknown keys to it
    let o = f.tokenmail(&["doctor", "--json"]);
    let j = json(&o);
    let config = j["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["check"] == "config"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(config["status"], "fail", "{j}");
    assert!(
        config["message"]
            .as_str()
            .is_some_and(|m| m.contains("use ldap://host[:port]")),
        "{config}"
    );
    f.config(&format!("{}[certs]\nharvest = true\n", with("reader.pw")));
    let o = f.tokenmail(&["doctor", "--json"]);
    let j = json(&o);
    let config = j["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["check"] == "config"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(config["status"], "ok", "{j}");
}

#[test]
fn an_unreachable_directory_is_one_line_within_the_timeout() {
    let f = Fixture::new();
    // nothing listens: refused at once
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    f.config(&format!(
        "[[directory]]\nurl = \"ldap://127.0.0.1:{closed}\"\nbase = \"{PEOPLE}\"\ntimeout = 2\n"
    ));
    let t = Instant::now();
    let o = f.tokenmail(&["certs", "fetch", "bob@example.org"]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("ldap://127.0.0.1:{closed}")) && err.contains("cannot connect"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // a server that accepts and never answers: the operation deadline (2 s) ends it
    let silent = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = silent.local_addr().expect("addr").port();
    let held = std::thread::spawn(move || {
        // hold the connections open, say nothing
        let mut conns = Vec::new();
        silent.set_nonblocking(true).expect("nonblocking");
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(15) {
            if let Ok((c, _)) = silent.accept() {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    f.config(&format!(
        "[[directory]]\nurl = \"ldap://127.0.0.1:{port}\"\nbase = \"{PEOPLE}\"\ntimeout = 2\n"
    ));
    let t = Instant::now();
    let o = f.tokenmail(&["certs", "fetch", "bob@example.org"]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no answer within 2 s"), "{err}");
    assert!(took < Duration::from_secs(9), "{took:?}");
    // expiry --ldap: an error, not a report
    let o = f.tokenmail(&[
        "expiry",
        "--ldap",
        "--certs",
        f.p(".").to_str().unwrap_or("."),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("no answer within 2 s"));
    // and encrypt --to says why it found nothing
    std::fs::write(f.p("m.eml"), b"Subject: x\r\n\r\nx\r\n").expect("msg");
    let o = f.tokenmail(&["encrypt", "--no-self", "--to", "bob@example.org", "m.eml"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("no answer within 2 s"),
        "{}",
        text(&o.stderr)
    );
    let _ = held.join();
}

#[test]
fn verified_signers_certificates_are_harvested_when_asked() {
    let f = Fixture::new();
    std::fs::write(
        f.p("m.eml"),
        b"From: bob@example.org\r\nTo: ann@example.org\r\nSubject: hi\r\nContent-Type: text/plain\r\n\r\nsigned by bob\r\n",
    )
    .expect("msg");
    let o = process::output(
        Command::new("openssl")
            .args([
                "cms",
                "-sign",
                "-in",
                "m.eml",
                "-signer",
                "bob.pem",
                "-inkey",
                "bob.key",
                "-out",
                "signed.eml",
            ])
            .current_dir(f.dir.path()),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let verify = |trust: &str| {
        f.tokenmail(&[
            "verify",
            "--revocation",
            "off",
            "--trust",
            trust,
            "signed.eml",
        ])
    };

    // off by default
    f.config("");
    let o = verify("ca.pem");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert!(f.stored().is_empty());

    // on: an untrusted chain (the wrong anchor) stores nothing
    f.config("[certs]\nharvest = true\n");
    let o = verify("erin.pem");
    assert_ne!(o.status.code(), Some(0));
    assert!(f.stored().is_empty());

    // verified and trusted: stored, said on stderr; again: not twice
    let o = verify("ca.pem");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert!(text(&o.stderr).contains("stored the signer's certificate 'CN=bob'"));
    assert_eq!(f.stored(), vec![f.der("bob.pem")]);
    let o = verify("ca.pem");
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stderr).is_empty(), "{}", text(&o.stderr));
    assert_eq!(f.stored().len(), 1);

    // a typo in [certs] does not pass silently, and does not fail the verification
    f.config("[certs]\nharvset = true\n");
    let o = verify("ca.pem");
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("harvset"), "{}", text(&o.stderr));
}
