//! git with `gpg.format = x509` and `gpg.x509.program = tokenmail-gpgsm`: commits and tags
//! signed with keys on a SoftHSM token (RSA, P-256, P-384) through the agent, verified by
//! `git verify-commit`/`verify-tag`/`log --show-signature`; interop both ways with real
//! gpgsm (our signatures verify with gpgsm; gpgsm's verify with tokenmail-gpgsm); and the
//! rejections (tampered commit, wrong trust anchor, unknown key, no agent).
//!
//! Every test has its own HOME, GNUPGHOME and repository; no global git configuration is
//! read or written (GIT_CONFIG_NOSYSTEM, a private HOME).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tokenmail_e2e::{bin, process, stderr, stdout, Agent};

/// A scratch repository with a private HOME and GNUPGHOME.
struct Repo {
    dir: tempfile::TempDir,
    socket: PathBuf,
    trust: PathBuf,
}

impl Repo {
    fn new(agent: &Agent) -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["home", "repo", "gnupg"] {
            std::fs::create_dir(dir.path().join(d)).expect("mkdir");
        }
        std::fs::set_permissions(
            dir.path().join("gnupg"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod");
        let r = Repo {
            dir,
            socket: agent.socket.clone(),
            trust: agent.fixture.pki("root.pem"),
        };
        r.ok(&["init", "-q", "-b", "main"]);
        r.ok(&["config", "user.name", "Alice Example"]);
        r.ok(&["config", "user.email", "alice@example.com"]);
        r.ok(&["config", "gpg.format", "x509"]);
        r.ok(&[
            "config",
            "gpg.x509.program",
            bin("tokenmail-gpgsm").to_str().expect("utf-8"),
        ]);
        r
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn gnupghome(&self) -> PathBuf {
        self.path("gnupg")
    }

    /// `git ARGS` in the repository with the test environment.
    fn git_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("git");
        c.args(args)
            .current_dir(self.path("repo"))
            .env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("home/.config"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .env("GNUPGHOME", self.gnupghome())
            .env("TOKENMAIL_SOCK", &self.socket)
            .env("TOKENMAIL_TRUST", &self.trust)
            .env("GIT_COMMITTER_DATE", "1700000000 +0000")
            .env("GIT_AUTHOR_DATE", "1700000000 +0000")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        c
    }

    fn git(&self, args: &[&str]) -> Output {
        process::output(&mut self.git_cmd(args))
    }

    fn ok(&self, args: &[&str]) -> Output {
        let o = self.git(args);
        assert!(
            o.status.success(),
            "git {args:?} failed:\nstdout: {}\nstderr: {}",
            stdout(&o),
            stderr(&o)
        );
        o
    }

    /// A new file and a signed commit of it; returns the commit id.
    fn signed_commit(&self, name: &str, extra: &[&str]) -> String {
        std::fs::write(self.path("repo").join(name), format!("{name}\n")).expect("write");
        self.ok(&["add", name]);
        let mut args = extra.to_vec();
        args.extend(["commit", "-q", "-S", "-m", name]);
        self.ok(&args);
        self.head()
    }

    fn head(&self) -> String {
        stdout(&self.ok(&["rev-parse", "HEAD"])).trim().to_string()
    }

    /// `%G? %GK %GF` of a commit.
    fn sig_format(&self, rev: &str, extra: &[&str]) -> (String, String, String) {
        let mut args = extra.to_vec();
        args.extend(["log", "-1", "--format=%G?%n%GK%n%GF", rev]);
        let out = stdout(&self.git(&args));
        let mut l = out.lines().map(str::to_string);
        (
            l.next().unwrap_or_default(),
            l.next().unwrap_or_default(),
            l.next().unwrap_or_default(),
        )
    }
}

/// gpgsm's fingerprint of a certificate: SHA-1 of the DER, upper-case hex.
fn sha1_fpr(pem: &Path) -> String {
    let o = process::output(
        Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha1", "-in"])
            .arg(pem),
    );
    assert!(o.status.success());
    stdout(&o)
        .trim()
        .split('=')
        .nth(1)
        .expect("fingerprint")
        .replace(':', "")
}

/// A real gpgsm home trusting the test root (gpg-agent stopped on drop).
struct Gpgsm {
    home: PathBuf,
}

impl Gpgsm {
    fn new(repo: &Repo, agent: &Agent) -> Gpgsm {
        let home = repo.gnupghome();
        // git runs gpgsm with no options of ours: the CRL check is turned off here
        std::fs::write(home.join("gpgsm.conf"), "disable-crl-checks\n").expect("gpgsm.conf");
        let g = Gpgsm { home };
        let o = g.run(&[
            "--import",
            agent.fixture.pki("root.pem").to_str().expect("p"),
        ]);
        assert!(o.status.success(), "gpgsm --import root: {}", stderr(&o));
        std::fs::write(
            g.home.join("trustlist.txt"),
            format!("{} S relax\n", sha1_fpr(&agent.fixture.pki("root.pem"))),
        )
        .expect("trustlist");
        g
    }

    /// gpgsm on this home: batch, empty loopback passphrase.
    fn command(&self) -> Command {
        let mut c = Command::new("gpgsm");
        c.env("GNUPGHOME", &self.home)
            .args([
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase-fd",
                "0",
            ])
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        process::output(self.command().args(args))
    }
}

impl Drop for Gpgsm {
    fn drop(&mut self) {
        process::kill_gpg_daemons(&self.home);
    }
}

#[test]
fn commits_and_tags_are_signed_on_the_token_and_verified() {
    let agent = Agent::start();
    let r = Repo::new(&agent);
    let alice = sha1_fpr(&agent.fixture.pki("alice-rsa.pem"));

    // user.signingkey = an email (RSA key)
    r.ok(&["config", "user.signingkey", "alice@example.com"]);
    let c1 = r.signed_commit("one", &[]);
    let raw = stdout(&r.ok(&["cat-file", "commit", &c1]));
    assert!(
        raw.contains("\ngpgsig -----BEGIN SIGNED MESSAGE-----\n"),
        "{raw}"
    );
    assert!(raw.contains(" -----END SIGNED MESSAGE-----\n"), "{raw}");
    let o = r.ok(&["verify-commit", "-v", &c1]);
    assert!(
        stderr(&o).contains("Good signature from \"/CN=Alice Example/EMail=alice@example.com\""),
        "{}",
        stderr(&o)
    );
    let o = r.ok(&["verify-commit", "--raw", &c1]);
    assert!(stderr(&o).contains(&format!("[GNUPG:] GOODSIG {alice} ")));
    assert!(stderr(&o).contains("[GNUPG:] TRUST_FULLY"));
    let o = r.ok(&["log", "--show-signature", "-1", &c1]);
    assert!(
        stdout(&o).contains("tokenmail-gpgsm: Good signature from"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        r.sig_format(&c1, &[]),
        ("G".into(), alice.clone(), alice.clone())
    );

    // no user.signingkey: git passes the committer ident "Alice Example <alice@example.com>"
    r.ok(&["config", "--unset", "user.signingkey"]);
    let c2 = r.signed_commit("two", &[]);
    r.ok(&["verify-commit", &c2]);
    assert_eq!(r.sig_format(&c2, &[]).1, alice);

    // annotated signed tag (same committer ident), verify-tag and tag -v
    r.ok(&["tag", "-s", "v1", "-m", "release one"]);
    let tag = stdout(&r.ok(&["cat-file", "tag", "v1"]));
    assert!(tag.contains("-----BEGIN SIGNED MESSAGE-----"), "{tag}");
    let o = r.ok(&["verify-tag", "v1"]);
    assert!(stderr(&o).contains("Good signature from"), "{}", stderr(&o));
    r.ok(&["tag", "-v", "v1"]);

    // EC keys: P-256 by its gpgsm fingerprint (0x form), P-384 by its label; -u on the
    // command line wins over the configuration
    let bob = sha1_fpr(&agent.fixture.pki("bob-p256.pem"));
    let c3 = r.signed_commit(
        "three",
        &["-c", &format!("user.signingkey=0x{}", bob.to_lowercase())],
    );
    r.ok(&["verify-commit", &c3]);
    assert_eq!(r.sig_format(&c3, &[]), ("G".into(), bob.clone(), bob));
    let carol = sha1_fpr(&agent.fixture.pki("carol-p384.pem"));
    std::fs::write(r.path("repo").join("four"), "four\n").expect("write");
    r.ok(&["add", "four"]);
    r.ok(&["commit", "-q", "-Scarol-p384", "-m", "four"]);
    let c4 = r.head();
    r.ok(&["verify-commit", &c4]);
    assert_eq!(r.sig_format(&c4, &[]).1, carol);
    r.ok(&[
        "tag",
        "-s",
        "-u",
        "bob@example.com",
        "v2",
        "-m",
        "release two",
    ]);
    let o = r.ok(&["verify-tag", "--raw", "v2"]);
    assert!(stderr(&o).contains("[GNUPG:] VALIDSIG "), "{}", stderr(&o));

    // verifying needs no agent
    let mut cmd = r.git_cmd(&["verify-commit", &c3]);
    cmd.env("TOKENMAIL_SOCK", r.path("no-agent.sock"));
    let o = process::output(&mut cmd);
    assert!(o.status.success(), "{}", stderr(&o));

    // a tampered commit object (message changed, signature kept) is rejected: BADSIG
    let forged = raw.replacen("\none\n", "\nforged\n", 1);
    assert_ne!(forged, raw);
    let o = process::output_with_input(
        &mut r.git_cmd(&["hash-object", "-t", "commit", "-w", "--stdin"]),
        forged.as_bytes(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let bad = stdout(&o).trim().to_string();
    let o = r.git(&["verify-commit", "--raw", &bad]);
    assert!(!o.status.success(), "a forged commit verifies");
    assert!(stderr(&o).contains("[GNUPG:] BADSIG "), "{}", stderr(&o));
    assert_eq!(r.sig_format(&bad, &[]).0, "B");

    // the wrong trust anchor: a good signature from an unknown CA is not accepted
    let other = r.path("other-root.pem");
    let o = process::output(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=Other Root",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-keyout",
            ])
            .arg(r.path("other-root.key"))
            .arg("-out")
            .arg(&other),
    );
    assert!(o.status.success());
    let mut cmd = r.git_cmd(&["verify-commit", "--raw", &c1]);
    cmd.env("TOKENMAIL_TRUST", &other);
    let o = process::output(&mut cmd);
    assert!(!o.status.success(), "verified with the wrong anchor");
    assert!(
        stderr(&o).contains("[GNUPG:] TRUST_UNDEFINED"),
        "{}",
        stderr(&o)
    );
    let mut cmd = r.git_cmd(&["log", "-1", "--format=%G?", &c1]);
    cmd.env("TOKENMAIL_TRUST", &other);
    let o = process::output(&mut cmd);
    assert_eq!(stdout(&o).trim(), "U", "good but untrusted");

    // an unknown key, or no agent: git fails to sign and makes no commit
    let before = r.head();
    std::fs::write(r.path("repo").join("five"), "five\n").expect("write");
    r.ok(&["add", "five"]);
    let o = r.git(&[
        "-c",
        "user.signingkey=nobody@example.com",
        "commit",
        "-q",
        "-S",
        "-m",
        "five",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("tokenmail-gpgsm: no key \"nobody@example.com\""),
        "{}",
        stderr(&o)
    );
    let mut cmd = r.git_cmd(&["commit", "-q", "-S", "-m", "five"]);
    cmd.env("TOKENMAIL_SOCK", r.path("no-agent.sock"));
    let o = process::output(&mut cmd);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("tokenmail-gpgsm: no tokenmail agent"),
        "{}",
        stderr(&o)
    );
    assert_eq!(r.head(), before);
}

#[test]
fn signatures_interoperate_with_real_gpgsm_both_ways() {
    let agent = Agent::start();
    let r = Repo::new(&agent);
    let g = Gpgsm::new(&r, &agent);
    let gpgsm_prog = ["-c", "gpg.x509.program=gpgsm"];

    // ours (RSA and P-256 on the token) verify with gpgsm, which was given only the root:
    // the intermediate travels in the signature
    for (file, key) in [("rsa", "alice@example.com"), ("p256", "bob-p256")] {
        let c = r.signed_commit(file, &["-c", &format!("user.signingkey={key}")]);
        let mut args = gpgsm_prog.to_vec();
        args.extend(["verify-commit", "--raw", &c]);
        let o = r.git(&args);
        assert!(
            o.status.success(),
            "gpgsm rejects our {key} commit:\n{}",
            stderr(&o)
        );
        assert!(stderr(&o).contains("[GNUPG:] GOODSIG "), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("[GNUPG:] TRUST_FULLY"),
            "{}",
            stderr(&o)
        );
        let (result, _, _) = r.sig_format(&c, &gpgsm_prog);
        assert_eq!(result, "G", "gpgsm through git log, {key}");
    }
    r.ok(&["tag", "-s", "ours", "-m", "tag signed on the token"]);
    let mut args = gpgsm_prog.to_vec();
    args.extend(["verify-tag", "ours"]);
    r.ok(&args);

    // gpgsm signs with dave's software RSA key (PKCS#12 without a passphrase)
    if let Err(e) = process::gpgsm_import_key_as_p12(
        &|| g.command(),
        &agent.fixture.pki("dave-rsa.key"),
        &agent.fixture.pki("dave-rsa.pem"),
        &r.path("dave.p12"),
        4,
    ) {
        panic!("gpgsm imports dave's key: {e}");
    }
    let dave = sha1_fpr(&agent.fixture.pki("dave-rsa.pem"));
    let mut args = gpgsm_prog.to_vec();
    args.extend(["-c", "user.signingkey=dave@example.com"]);
    let c = r.signed_commit("by-gpgsm", &args);
    let raw = stdout(&r.ok(&["cat-file", "commit", &c]));
    assert!(
        raw.contains("gpgsig -----BEGIN SIGNED MESSAGE-----"),
        "{raw}"
    );
    // … and tokenmail-gpgsm (the repository's program) verifies it
    let o = r.ok(&["verify-commit", "-v", "--raw", &c]);
    assert!(
        stderr(&o).contains(&format!("[GNUPG:] GOODSIG {dave} ")),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("[GNUPG:] TRUST_FULLY"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        r.sig_format(&c, &[]),
        ("G".into(), dave.clone(), dave.clone())
    );
    let o = r.ok(&["log", "--show-signature", "-1", &c]);
    assert!(
        stdout(&o).contains("Good signature from \"/CN=Dave Example/EMail=dave@example.com\""),
        "{}",
        stdout(&o)
    );
    // a tag signed by gpgsm too
    let mut args = gpgsm_prog.to_vec();
    args.extend([
        "tag",
        "-s",
        "-u",
        "dave@example.com",
        "theirs",
        "-m",
        "by gpgsm",
    ]);
    r.ok(&args);
    r.ok(&["verify-tag", "theirs"]);
    drop(g);
}

/// The gpgsig header of a raw commit object, unfolded, and the payload git signed (the
/// object without that header).
fn split_gpgsig(raw: &str) -> (String, String) {
    let (mut sig, mut payload, mut in_sig) = (String::new(), String::new(), false);
    for line in raw.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("gpgsig ") {
            in_sig = true;
            sig.push_str(rest);
        } else if in_sig && line.starts_with(' ') {
            sig.push_str(&line[1..]);
        } else {
            in_sig = false;
            payload.push_str(line);
        }
    }
    (sig, payload)
}

/// With `[sign] tsa` in the configuration, commit signatures carry an RFC 3161 timestamp
/// from the TSA (`tokenmail verify` checks it; git through tokenmail-gpgsm and real gpgsm
/// accept the signature); with the TSA down nothing is signed and nothing is committed.
#[test]
fn commit_signatures_are_timestamped_when_a_tsa_is_configured() {
    let agent = Agent::start();
    let r = Repo::new(&agent);
    std::fs::create_dir(r.path("tsa")).expect("mkdir");
    let tsa = tokenmail_e2e::start_tsa(&agent, &r.path("tsa"));
    let cfg = r.path("config.toml");
    std::fs::write(
        &cfg,
        format!("[sign]\ntsa = \"http://127.0.0.1:{}/tsa\"\n", tsa.port),
    )
    .expect("config");
    r.ok(&["config", "user.signingkey", "alice@example.com"]);
    std::fs::write(r.path("repo/stamped"), "stamped\n").expect("write");
    r.ok(&["add", "stamped"]);
    let o = process::output(
        r.git_cmd(&["commit", "-q", "-S", "-m", "stamped"])
            .env("TOKENMAIL_CONFIG", &cfg),
    );
    assert!(o.status.success(), "git commit -S: {}", stderr(&o));
    let c = r.head();
    let asked = std::fs::read_to_string(r.path("tsa/requests.log")).unwrap_or_default();
    assert!(asked.contains("/tsa"), "the TSA was not asked: {asked:?}");

    // tokenmail verify sees the timestamp over the commit's signature
    let raw = stdout(&r.ok(&["cat-file", "commit", &c]));
    let (sig, payload) = split_gpgsig(&raw);
    std::fs::write(r.path("commit.sig"), &sig).expect("write");
    std::fs::write(r.path("commit.payload"), &payload).expect("write");
    let o = process::output(
        agent
            .cli_cmd(&["verify", "--json", "--revocation", "off", "--trust"])
            .arg(agent.fixture.pki("root.pem"))
            .arg("--signature")
            .arg(r.path("commit.sig"))
            .arg(r.path("commit.payload")),
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("verify --json: {e}: {}", stderr(&o)));
    let checks = j["signers"][0]["checks"].as_array().expect("checks");
    let named = |n: &str| checks.iter().find(|c| c["name"] == n).cloned();
    assert!(named("timestamp").is_some_and(|c| c["ok"] == true), "{j:#}");
    assert!(named("signature").is_some_and(|c| c["ok"] == true), "{j:#}");
    assert!(named("chain").is_some_and(|c| c["ok"] == true), "{j:#}");

    // git (tokenmail-gpgsm) and real gpgsm accept the timestamped signature
    let o = r.ok(&["verify-commit", "--raw", &c]);
    assert!(stderr(&o).contains("[GNUPG:] GOODSIG "), "{}", stderr(&o));
    let o = r.ok(&["log", "--show-signature", "-1", &c]);
    assert!(
        stdout(&o).contains("tokenmail-gpgsm: Timestamp ") && stdout(&o).contains("(RFC 3161)"),
        "{}",
        stdout(&o)
    );
    let g = Gpgsm::new(&r, &agent);
    let o = r.git(&["-c", "gpg.x509.program=gpgsm", "verify-commit", "--raw", &c]);
    assert!(
        o.status.success() && stderr(&o).contains("[GNUPG:] GOODSIG "),
        "gpgsm rejects the timestamped signature:\n{}",
        stderr(&o)
    );
    drop(g);

    // the TSA down: nothing signed, nothing committed, and the error says where to look
    drop(tsa);
    std::fs::write(r.path("repo/unstamped"), "unstamped\n").expect("write");
    r.ok(&["add", "unstamped"]);
    let o = process::output(
        r.git_cmd(&["commit", "-q", "-S", "-m", "unstamped"])
            .env("TOKENMAIL_CONFIG", &cfg),
    );
    assert!(!o.status.success(), "committed without its timestamp");
    assert_eq!(r.head(), c, "a commit was made");
    let o = process::output_with_input(
        Command::new(bin("tokenmail-gpgsm"))
            .args(["--status-fd=2", "-bsau", "alice@example.com"])
            .env("TOKENMAIL_SOCK", &agent.socket)
            .env("TOKENMAIL_CONFIG", &cfg),
        b"payload\n",
    );
    assert!(!o.status.success());
    assert!(o.stdout.is_empty(), "a signature was written");
    let e = stderr(&o);
    assert!(
        e.contains("nothing was signed") && e.contains("[sign] tsa"),
        "{e}"
    );
    assert!(!e.contains("SIG_CREATED"), "{e}");
}
