//! Everyday use (docs/everyday.md): shell completions and manual pages
//! checked by the real bash and man, `tokenmail doctor` with each check made to fail,
//! and the frictions a new user met (issue 16, item 6).

use std::path::Path;
use std::process::{Command, Output};

use tokenmail_e2e::{bin, process, stderr, stdout};

/// `tokenmail ARGS` with no agent, no configuration and nothing inherited that names one.
fn tokenmail_isolated(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin("tokenmail"));
    c.args(args)
        .current_dir(home)
        .env("HOME", home)
        .env("TOKENMAIL_SOCK", home.join("no-agent.sock"))
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env_remove("TOKENMAIL_CONFIG")
        .env_remove("TOKENMAIL_TRUST")
        .env_remove("TOKENMAIL_CERTS");
    c
}

fn run(cmd: &mut Command) -> Output {
    process::output(cmd)
}

#[test]
fn bash_completion_is_valid_and_completes_a_subcommand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(&mut tokenmail_isolated(
        dir.path(),
        &["completions", "bash"],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let script = dir.path().join("tokenmail.bash");
    std::fs::write(&script, &o.stdout).expect("write the script");

    let o = run(Command::new("bash").arg("-n").arg(&script));
    assert!(o.status.success(), "bash -n: {}", stderr(&o));

    // The way bash calls it on Tab: the function `complete -p` names, with COMP_* set.
    let probe = r#"
set -u
source "$1"
spec=$(complete -p tokenmail)
echo "spec: $spec"
fn=$(printf '%s\n' "$spec" | sed -n 's/.*-F \([^ ]*\).*/\1/p')
COMP_WORDS=(tokenmail ver)
COMP_CWORD=1
COMP_LINE="tokenmail ver"
COMP_POINT=${#COMP_LINE}
"$fn" tokenmail ver tokenmail
printf 'reply: %s\n' "${COMPREPLY[@]}"
COMP_WORDS=(tokenmail verify --revo)
COMP_CWORD=2
COMP_LINE="tokenmail verify --revo"
COMP_POINT=${#COMP_LINE}
"$fn" tokenmail --revo verify
printf 'reply: %s\n' "${COMPREPLY[@]}"
"#;
    let o = run(Command::new("bash")
        .arg("--norc")
        .arg("--noprofile")
        .arg("-c")
        .arg(probe)
        .arg("probe")
        .arg(&script));
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(
        out.contains("spec: complete ") && out.contains(" -F "),
        "{out}"
    );
    assert!(out.lines().any(|l| l == "reply: verify"), "{out}");
    assert!(out.lines().any(|l| l == "reply: --revocation"), "{out}");
}

#[test]
fn zsh_and_fish_scripts_are_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (shell, marker) in [
        ("zsh", "#compdef tokenmail"),
        ("fish", "complete -c tokenmail"),
    ] {
        let o = run(&mut tokenmail_isolated(dir.path(), &["completions", shell]));
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        assert!(stdout(&o).contains(marker), "{shell}");
    }
    let o = run(&mut tokenmail_isolated(
        dir.path(),
        &["completions", "tcsh"],
    ));
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

/// The page rendered by man-db (or, without man, groff), as text.
fn render_man(page: &Path) -> String {
    let o = run(Command::new("man")
        .arg("-l")
        .arg("-P")
        .arg("cat")
        .arg(page)
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "0")
        .env("LC_ALL", "C.UTF-8"));
    assert!(
        o.status.success(),
        "man -l {}: {}",
        page.display(),
        stderr(&o)
    );
    // man may keep overstrike bold (x\bx) when not at a terminal: drop it.
    let mut text = String::new();
    for ch in stdout(&o).chars() {
        if ch == '\u{8}' {
            text.pop();
        } else {
            text.push(ch);
        }
    }
    text
}

#[test]
fn man_pages_render_with_man_and_name_their_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pages = dir.path().join("man1");
    let o = run(&mut tokenmail_isolated(
        dir.path(),
        &["man", pages.to_str().expect("utf-8 path")],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    for name in [
        "tokenmail.1",
        "tokenmail-verify.1",
        "tokenmail-sign.1",
        "tokenmail-decrypt.1",
        "tokenmail-doctor.1",
        "tokenmail-piv.1",
        "tokenmail-completions.1",
    ] {
        assert!(pages.join(name).is_file(), "{name} written");
    }
    let verify = render_man(&pages.join("tokenmail-verify.1"));
    assert!(verify.contains("--revocation"), "{verify}");
    assert!(verify.contains("tokenmail-verify"), "{verify}");
    let main = render_man(&pages.join("tokenmail.1"));
    assert!(
        main.contains("tokenmail-verify(1)"),
        "subcommands listed: {main}"
    );

    let o = run(Command::new(bin("tokenmail-agent"))
        .arg("--man")
        .arg(&pages)
        .env_remove("TOKENMAIL_SOCK"));
    assert!(o.status.success(), "{}", stderr(&o));
    let agent = render_man(&pages.join("tokenmail-agent.1"));
    assert!(agent.contains("--pkcs11-module"), "{agent}");
    assert!(agent.contains("--foreground"), "{agent}");
}

// ---- tokenmail doctor ----

/// `tokenmail [--socket S] doctor --json` in `home` with `env`: (exit code, document).
fn doctor_json(
    home: &Path,
    socket: Option<&Path>,
    env: &[(&str, &Path)],
) -> (i32, serde_json::Value) {
    let mut c = tokenmail_isolated(home, &[]);
    if let Some(s) = socket {
        c.arg("--socket").arg(s);
    }
    c.args(["doctor", "--json"]);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = run(&mut c);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}: {}{}", stdout(&o), stderr(&o)));
    (o.status.code().expect("exit code"), doc)
}

/// The checks named `name` (or starting with it, for `token …`).
fn checks<'a>(doc: &'a serde_json::Value, name: &str) -> Vec<&'a serde_json::Value> {
    doc["checks"]
        .as_array()
        .expect("checks array")
        .iter()
        .filter(|c| c["check"].as_str().is_some_and(|n| n.starts_with(name)))
        .collect()
}

fn one<'a>(doc: &'a serde_json::Value, name: &str, status: &str) -> &'a serde_json::Value {
    checks(doc, name)
        .into_iter()
        .find(|c| c["status"] == status)
        .unwrap_or_else(|| panic!("no {status} check {name}: {doc:#}"))
}

#[test]
fn doctor_with_a_running_agent_is_all_ok_and_its_json_has_one_shape() {
    let agent = tokenmail_e2e::Agent::start();
    // the agent logs in with its PIN file at start, in the background: make it certain
    let o = agent.cli(&["login", "--unattended"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let home = tempfile::tempdir().expect("tempdir");
    let root = agent.fixture.pki("root.pem");
    let (code, doc) = doctor_json(
        home.path(),
        Some(&agent.socket),
        &[("TOKENMAIL_TRUST", &root)],
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["exit"], 0);
    assert_eq!(doc["summary"]["fail"], 0, "{doc:#}");
    assert_eq!(doc["summary"]["warn"], 0, "{doc:#}");
    for c in doc["checks"].as_array().expect("checks") {
        let obj = c.as_object().expect("a check is an object");
        assert!(
            obj["check"].is_string() && obj["message"].is_string(),
            "{c}"
        );
        assert!(
            ["ok", "info", "warn", "fail"].contains(&obj["status"].as_str().expect("status")),
            "{c}"
        );
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        assert!(
            keys.iter()
                .all(|k| ["check", "status", "message", "fix"].contains(k)),
            "{c}"
        );
    }
    let a = one(&doc, "agent", "ok");
    assert!(
        a["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("tokenmail-agent/")),
        "{a}"
    );
    let t = one(&doc, "token ", "ok");
    assert!(
        t["message"]
            .as_str()
            .is_some_and(|m| m.contains("logged in")),
        "{t}"
    );
    one(&doc, "certificates", "ok");
    one(&doc, "trust", "ok");
    one(&doc, "revocation", "ok");
    assert_eq!(
        checks(&doc, "git")[0]["status"],
        "info",
        "git not configured in a new HOME"
    );

    // the text form: one line per check, status first
    let o = run(&mut {
        let mut c = tokenmail_isolated(home.path(), &[]);
        c.arg("--socket")
            .arg(&agent.socket)
            .arg("doctor")
            .env("TOKENMAIL_TRUST", &root);
        c
    });
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let text = stdout(&o);
    assert_eq!(
        text.lines().count(),
        doc["checks"].as_array().expect("checks").len(),
        "{text}"
    );
    for line in text.lines() {
        let word = line.split_whitespace().next().unwrap_or("");
        assert!(["ok", "info"].contains(&word), "{line}");
    }
}

#[test]
fn doctor_without_an_agent_fails_and_says_to_start_it() {
    let home = tempfile::tempdir().expect("tempdir");
    let (code, doc) = doctor_json(home.path(), None, &[]);
    assert_eq!(code, 2, "{doc:#}");
    let a = one(&doc, "agent", "fail");
    assert!(
        a["message"]
            .as_str()
            .is_some_and(|m| m.contains("no agent at")),
        "{a}"
    );
    assert!(
        a["fix"].as_str().is_some_and(|f| f.starts_with("start it")),
        "{a}"
    );
    // no anchors anywhere: a warning with the fix
    let t = one(&doc, "trust", "warn");
    assert!(
        t["fix"]
            .as_str()
            .is_some_and(|f| f.contains("TOKENMAIL_TRUST")),
        "{t}"
    );

    let o = run(&mut tokenmail_isolated(home.path(), &["doctor"]));
    assert_eq!(o.status.code(), Some(2));
    let text = stdout(&o);
    assert!(
        text.lines()
            .any(|l| l.starts_with("fail  agent: no agent at") && l.contains(" — fix: start it")),
        "{text}"
    );
}

#[test]
fn doctor_fails_a_configuration_with_an_unknown_key() {
    let home = tempfile::tempdir().expect("tempdir");
    let cfg = home.path().join("agent.toml");
    std::fs::write(
        &cfg,
        "socket = \"/tmp/x.sock\"\nauto_strat = false\n[pin]\ncache_tll = 5\n",
    )
    .expect("write");
    let (code, doc) = doctor_json(home.path(), None, &[("TOKENMAIL_CONFIG", &cfg)]);
    assert_eq!(code, 2);
    let c = one(&doc, "config", "fail");
    let m = c["message"].as_str().expect("message");
    assert!(
        m.contains("auto_strat") && m.contains("pin.cache_tll"),
        "{m}"
    );
    assert!(c["fix"].as_str().is_some_and(|f| f.contains("edit")), "{c}");
    // the fix for a missing agent names this configuration
    let a = one(&doc, "agent", "fail");
    assert!(
        a["fix"]
            .as_str()
            .is_some_and(|f| f.contains(&format!("--config {}", cfg.display()))),
        "{a}"
    );

    // a [trust] value the core refuses
    std::fs::write(&cfg, "[trust]\nmax_path_length = 99\n").expect("write");
    let (_, doc) = doctor_json(home.path(), None, &[("TOKENMAIL_CONFIG", &cfg)]);
    let c = one(&doc, "config", "fail");
    assert!(
        c["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_path_length")),
        "{c}"
    );
}

#[test]
fn doctor_fails_a_pin_file_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().expect("tempdir");
    let pin = home.path().join("pin");
    std::fs::write(&pin, "1234\n").expect("write");
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let cfg = home.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[token]]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\nlabel = \"work\"\npin_file = \"{}\"\n",
            pin.display()
        ),
    )
    .expect("write");
    let (code, doc) = doctor_json(home.path(), None, &[("TOKENMAIL_CONFIG", &cfg)]);
    assert_eq!(code, 2);
    one(&doc, "config", "ok");
    let p = one(&doc, "pin-file", "fail");
    assert!(
        p["message"].as_str().is_some_and(|m| m.contains("0644")),
        "{p}"
    );
    assert_eq!(p["fix"], format!("chmod 600 {}", pin.display()));

    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (_, doc) = doctor_json(home.path(), None, &[("TOKENMAIL_CONFIG", &cfg)]);
    one(&doc, "pin-file", "ok");
}

#[test]
fn doctor_fails_an_expired_trust_anchor_and_warns_one_expiring_soon() {
    let home = tempfile::tempdir().expect("tempdir");
    let d = home.path();
    let openssl = |args: &[&str]| {
        let o = run(Command::new("openssl").args(args).current_dir(d));
        assert!(o.status.success(), "openssl {args:?}: {}", stderr(&o));
    };
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-subj",
        "/CN=old root",
        "-out",
        "ca.csr",
    ]);
    openssl(&[
        "x509", "-req", "-in", "ca.csr", "-signkey", "ca.key", "-days", "-1", "-out", "old.pem",
    ]);
    openssl(&[
        "x509", "-req", "-in", "ca.csr", "-signkey", "ca.key", "-days", "10", "-out", "soon.pem",
    ]);
    let (code, doc) = doctor_json(d, None, &[("TOKENMAIL_TRUST", &d.join("old.pem"))]);
    assert_eq!(code, 2);
    let t = one(&doc, "trust", "fail");
    assert!(
        t["message"].as_str().is_some_and(|m| m.contains("expired")),
        "{t}"
    );
    assert!(t["fix"].is_string(), "{t}");

    let (_, doc) = doctor_json(d, None, &[("TOKENMAIL_TRUST", &d.join("soon.pem"))]);
    let t = one(&doc, "trust", "warn");
    assert!(
        t["message"]
            .as_str()
            .is_some_and(|m| m.contains("expires in")),
        "{t}"
    );

    let (_, doc) = doctor_json(d, None, &[("TOKENMAIL_TRUST", &d.join("missing.pem"))]);
    one(&doc, "trust", "fail");
}

// ---- frictions a new user met (issue 16, item 6) ----

#[test]
fn a_socket_path_that_is_a_file_or_a_directory_is_not_a_socket() {
    let home = tempfile::tempdir().expect("tempdir");
    let file = home.path().join("agent.sock");
    std::fs::write(&file, b"").expect("write");
    for (path, what) in [
        (home.path(), "a directory"),
        (file.as_path(), "a regular file"),
    ] {
        let o = run(tokenmail_isolated(home.path(), &["status"])
            .arg("--socket")
            .arg(path));
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(3), "{e}");
        assert!(e.contains(&format!("is {what}, not a socket")), "{e}");
        assert!(!e.contains("no tokenmail agent"), "{e}");
        // doctor says the same
        let mut c = tokenmail_isolated(home.path(), &[]);
        c.arg("--socket").arg(path).args(["doctor", "--json"]);
        let o = run(&mut c);
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        let a = one(&doc, "agent", "fail");
        assert!(
            a["message"]
                .as_str()
                .is_some_and(|m| m.contains("not a socket")),
            "{a}"
        );
    }
    // nothing there: still "no agent"
    let o = run(tokenmail_isolated(home.path(), &["status"])
        .arg("--socket")
        .arg(home.path().join("absent.sock")));
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("no tokenmail agent"), "{}", stderr(&o));
}

#[test]
fn decrypt_says_when_lf_input_gives_crlf_output() {
    let agent = tokenmail_e2e::Agent::start();
    let d = agent.dir.path();
    let msg = d.join("m.eml");
    std::fs::write(
        &msg,
        "From: alice@example.com\nTo: alice@example.com\nSubject: lf\nContent-Type: text/plain\n\nline one\nline two\n",
    )
    .expect("write");
    let enc = d.join("enc.eml");
    let o = agent.cli(&[
        "encrypt",
        "--no-self",
        "--recipient-cert",
        agent.fixture.pki("alice-rsa.pem").to_str().expect("utf-8"),
        msg.to_str().expect("utf-8"),
        "-o",
        enc.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let crlf = std::fs::read(&enc).expect("read");
    let lf: Vec<u8> = String::from_utf8(crlf.clone())
        .expect("the encrypted message is text")
        .replace("\r\n", "\n")
        .into_bytes();
    let enc_lf = d.join("enc-lf.eml");
    std::fs::write(&enc_lf, &lf).expect("write");

    let out = d.join("out.eml");
    let o = agent.cli(&[
        "decrypt",
        enc_lf.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plain = std::fs::read(&out).expect("plaintext");
    assert!(plain.windows(2).any(|w| w == b"\r\n"), "CRLF out");
    let e = stderr(&o);
    assert!(
        e.contains("note: the input has LF line ends, the plaintext has CRLF"),
        "{e}"
    );

    // CRLF in (as encrypt writes it), CRLF out: nothing to say
    assert!(crlf.windows(2).any(|w| w == b"\r\n"), "encrypt writes CRLF");
    let o = agent.cli(&[
        "decrypt",
        enc.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("line ends"), "{}", stderr(&o));
    // to standard output too (the note on stderr, the plaintext on stdout)
    let o = agent.cli(&["decrypt", enc_lf.to_str().expect("utf-8")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("LF line ends"), "{}", stderr(&o));
    assert!(!stdout(&o).contains("LF line ends"));
}

/// Kills a detached agent (not our child) when the test ends, however it ends.
struct Detached(i32);

impl Drop for Detached {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn the_log_file_is_made_on_the_first_start_in_a_new_socket_directory() {
    let fixture = tokenmail_e2e::provision("tokenmail-firstlog");
    let dir = tempfile::tempdir().expect("tempdir");
    // neither run/ nor run/tokenmail/ exists yet
    let socket = dir.path().join("run").join("tokenmail").join("agent.sock");
    let o = run(Command::new(bin("tokenmail-agent"))
        .arg("--socket")
        .arg(&socket)
        .arg("--pkcs11-module")
        .arg(&fixture.module)
        .args(["--token-label", &fixture.label])
        .arg("--pin-file")
        .arg(fixture.pin_file())
        .env("SOFTHSM2_CONF", fixture.dir.join("softhsm2.conf"))
        .env_remove("TOKENMAIL_SOCK"));
    assert!(o.status.success(), "{}", stderr(&o));
    let pid: i32 = stdout(&o)
        .split("Agent pid ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("pid printed");
    let _detached = Detached(pid);
    assert!(
        !stderr(&o).contains("cannot open the log file"),
        "{}",
        stderr(&o)
    );
    let log = socket.with_file_name("agent.log");
    let text = std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("{} not created: {e}", log.display()));
    // the agent logs `listening` before it tells the parent it is ready
    assert!(text.contains("listening"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&log), 0o600);
    assert_eq!(mode(socket.parent().expect("dir")), 0o700);

    // a log that cannot be opened is said on the terminal, not dropped
    let o = run(Command::new(bin("tokenmail-agent"))
        .arg("--socket")
        .arg(dir.path().join("b").join("agent.sock"))
        .arg("--log-file")
        .arg(
            dir.path()
                .join("no")
                .join("such")
                .join("dir")
                .join("agent.log"),
        )
        .arg("--pkcs11-module")
        .arg(&fixture.module)
        .args(["--token-label", &fixture.label])
        .arg("--pin-file")
        .arg(fixture.pin_file())
        .env("SOFTHSM2_CONF", fixture.dir.join("softhsm2.conf"))
        .env_remove("TOKENMAIL_SOCK"));
    assert!(o.status.success(), "{}", stderr(&o));
    if let Some(pid) = stdout(&o)
        .split("Agent pid ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
    {
        let _second = Detached(pid);
    }
    assert!(
        stderr(&o).contains("warning: cannot open the log file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_token_label_the_module_does_not_have_is_named_with_the_labels_it_has() {
    let fixture = tokenmail_e2e::provision("tokenmail-label");
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    // detached, as people start it: the warning reaches the terminal
    let o = run(Command::new(bin("tokenmail-agent"))
        .arg("--socket")
        .arg(&socket)
        .arg("--pkcs11-module")
        .arg(&fixture.module)
        .args(["--token-label", "no-such-label"])
        .env("SOFTHSM2_CONF", fixture.dir.join("softhsm2.conf"))
        .env_remove("TOKENMAIL_SOCK"));
    assert!(o.status.success(), "it still starts: {}", stderr(&o));
    let pid: i32 = stdout(&o)
        .split("Agent pid ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("pid printed");
    let _detached = Detached(pid);
    let says = |text: &str| {
        text.contains("token \"no-such-label\" is not in the PKCS#11 module")
            && text.contains("which has one token, \"tokenmail-label\"")
    };
    assert!(says(&stderr(&o)), "at start: {}", stderr(&o));
    assert!(
        stderr(&o).contains("tokenmail-agent: warning: "),
        "{}",
        stderr(&o)
    );

    let cli = |args: &[&str], input: &[u8]| {
        let mut c = tokenmail_isolated(dir.path(), &[]);
        c.arg("--socket").arg(&socket).args(args);
        process::output_with_input(&mut c, input)
    };
    // the CLI's own key lookup (sign) and the agent's (sign-digest, login)
    let o = cli(
        &["sign", "--signer", "alice@example.com"],
        b"From: a@b\r\n\r\nx\r\n",
    );
    assert!(!o.status.success());
    assert!(says(&stderr(&o)), "sign: {}", stderr(&o));
    let digest = "00".repeat(32);
    let o = cli(
        &[
            "sign-digest",
            "--key",
            "alice@example.com",
            "--digest",
            &digest,
        ],
        b"",
    );
    assert!(says(&stderr(&o)), "sign-digest: {}", stderr(&o));
    let o = cli(&["login", "--unattended"], b"");
    assert!(says(&stderr(&o)), "login: {}", stderr(&o));
    // and doctor
    let mut c = tokenmail_isolated(dir.path(), &[]);
    c.arg("--socket").arg(&socket).args(["doctor", "--json"]);
    let o = run(&mut c);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let t = one(&doc, "token no-such-label", "fail");
    assert!(says(t["message"].as_str().expect("message")), "{t}");
}

/// One wording for "needs its PIN": the agent's error, `tokenmail status`, the docs.
#[test]
fn needs_its_pin_is_said_one_way() {
    let agent = tokenmail_e2e::Agent::start();
    let o = agent.cli(&["lock"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = format!(
        "token \"{}\" needs its PIN: run `tokenmail login`",
        agent.fixture.label
    );
    let digest = "ab".repeat(32);
    let o = agent.cli(&["sign-digest", "--key", "alice-rsa", "--digest", &digest]);
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    let o = agent.cli(&["status"]);
    assert!(stdout(&o).contains(&want), "{}", stdout(&o));
    // the documentation quotes it as it is, and no other way
    let docs = tokenmail_e2e::workspace().join("docs");
    for entry in std::fs::read_dir(&docs).expect("docs") {
        let p = entry.expect("entry").path();
        if p.extension().and_then(|e| e.to_str()) != Some("md") {
            continue;
        }
        let text = std::fs::read_to_string(&p).expect("read");
        for (i, line) in text.lines().enumerate() {
            if let Some(at) = line.find("needs its PIN") {
                let rest = &line[at..];
                assert!(
                    rest.starts_with("needs its PIN: run `tokenmail login`")
                        || !line[..at].ends_with("\" "),
                    "{}:{}: {line}",
                    p.display(),
                    i + 1
                );
                assert!(
                    !rest.starts_with("needs its PIN and"),
                    "{}:{}: {line}",
                    p.display(),
                    i + 1
                );
            }
        }
    }
}

// ---- socket activation (contrib/systemd/, docs/everyday.md) ----

/// Waits until `path` exists (at most 20 s).
fn wait_for(path: &Path) {
    let t = std::time::Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "{} did not appear within 20 s",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The agent's arguments for `fixture`'s token, in the foreground, as the unit runs it.
fn agent_args(fixture: &tokenmail_e2e::Fixture) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = vec!["--foreground".into(), "--pkcs11-module".into()];
    a.push(fixture.module.clone().into());
    a.extend(["--token-label".into(), fixture.label.clone().into()]);
    a.extend(["--pin-file".into(), fixture.pin_file().into()]);
    a
}

/// `tokenmail status` through `socket` succeeds and names the token.
fn status_works(home: &Path, socket: &Path, label: &str) {
    let mut c = tokenmail_isolated(home, &[]);
    c.arg("--socket").arg(socket).arg("status");
    let o = run(&mut c);
    assert!(o.status.success(), "status: {}", stderr(&o));
    assert!(stdout(&o).contains(label), "{}", stdout(&o));
}

#[test]
fn systemd_socket_activate_starts_the_agent_on_the_first_connection() {
    let fixture = tokenmail_e2e::provision("tokenmail-sockact");
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("run").join("tokenmail");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let socket = dir.join("agent.sock");
    // systemd-socket-activate binds, waits for a connection, then execs the agent with
    // LISTEN_FDS=1, LISTEN_PID=its own pid (the same process) and the socket as fd 3
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l")
        .arg(&socket)
        .arg("--fdname=tokenmail")
        // it passes on only the variables named with -E
        .arg("-ESOFTHSM2_CONF")
        .arg(bin("tokenmail-agent"))
        .args(agent_args(&fixture))
        .env("SOFTHSM2_CONF", fixture.dir.join("softhsm2.conf"))
        .env_remove("TOKENMAIL_SOCK")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut agent = process::Running::spawn(&mut cmd);
    wait_for(&socket);
    status_works(home.path(), &socket, "tokenmail-sockact");
    // a second client, then a signature through the same agent
    let mut c = tokenmail_isolated(home.path(), &[]);
    c.arg("--socket")
        .arg(&socket)
        .args(["sign", "--signer", "alice@example.com"]);
    let o = process::output_with_input(&mut c, b"From: alice@example.com\r\n\r\nhi\r\n");
    assert!(o.status.success(), "sign: {}", stderr(&o));
    assert!(stdout(&o).contains("multipart/signed"), "{}", stdout(&o));
    let log = String::from_utf8_lossy(&agent.stderr_so_far()).into_owned();
    assert!(log.contains("socket passed by systemd"), "{log}");

    // SIGTERM: the agent stops; the socket is systemd's and stays
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let st = agent.wait_timeout(std::time::Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "exit: {st:?}: {log}");
    assert!(
        socket.exists(),
        "the passed socket is not removed by the agent"
    );
}

/// Runs `agent ARGS` as systemd does, with `listener` as descriptor 3 and LISTEN_PID set
/// to the agent's pid (a shell that execs it keeps its pid).
#[allow(unsafe_code)]
fn spawn_activated(
    listener: &std::os::unix::net::UnixListener,
    args: &[std::ffi::OsString],
    env: &[(&str, &Path)],
) -> process::Running {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=tokenmail exec "$0" "$@""#)
        .arg(bin("tokenmail-agent"))
        .args(args)
        .env_remove("TOKENMAIL_SOCK")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl) on a
    // descriptor this process owns.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                // already in place: only drop close-on-exec
                nix::fcntl::fcntl(
                    3,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )?;
            } else {
                nix::unistd::dup2(fd, 3)?;
            }
            Ok(())
        });
    }
    process::Running::spawn(&mut cmd)
}

#[test]
fn the_agent_serves_a_listening_socket_passed_as_descriptor_3() {
    let fixture = tokenmail_e2e::provision("tokenmail-fd3");
    let home = tempfile::tempdir().expect("tempdir");
    let socket = home.path().join("agent.sock");
    // the test is systemd: it binds (0600 in a 0700 directory, as the .socket unit says)
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let conf = fixture.dir.join("softhsm2.conf");
    let mut agent = spawn_activated(
        &listener,
        &agent_args(&fixture),
        &[("SOFTHSM2_CONF", conf.as_path())],
    );
    drop(listener);
    status_works(home.path(), &socket, "tokenmail-fd3");
    let log = String::from_utf8_lossy(&agent.stderr_so_far()).into_owned();
    assert!(log.contains("socket passed by systemd"), "{log}");
    assert!(agent.alive(), "{log}");

    // --socket naming another path: the passed socket is served, and the agent says so
    let other = home.path().join("elsewhere.sock");
    let socket2 = home.path().join("agent2.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket2).expect("bind");
    let mut args = agent_args(&fixture);
    args.extend(["--socket".into(), other.clone().into()]);
    let second = spawn_activated(&listener, &args, &[("SOFTHSM2_CONF", conf.as_path())]);
    drop(listener);
    status_works(home.path(), &socket2, "tokenmail-fd3");
    assert!(!other.exists());
    let log = String::from_utf8_lossy(&second.stderr_so_far()).into_owned();
    assert!(log.contains("serving the socket systemd passed"), "{log}");
}

#[test]
fn a_passed_descriptor_that_is_not_a_listening_socket_is_refused_clearly() {
    let home = tempfile::tempdir().expect("tempdir");
    let fixture = tokenmail_e2e::provision("tokenmail-badfd");
    let mut args = vec![
        "-c".into(),
        r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@" 3</dev/null"#.into(),
    ];
    args.push(std::ffi::OsString::from(bin("tokenmail-agent")));
    args.extend(agent_args(&fixture));
    args.extend(["--socket".into(), home.path().join("agent.sock").into()]);
    let o = run(Command::new("sh")
        .args(&args)
        .env("SOFTHSM2_CONF", fixture.dir.join("softhsm2.conf"))
        .env_remove("TOKENMAIL_SOCK"));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(
            "socket activation: descriptor 3 is not a socket, not a listening Unix stream socket"
        ) && err.contains("ListenStream="),
        "{err}"
    );
    assert!(
        !home.path().join("agent.sock").exists(),
        "nothing bound instead"
    );

    // LISTEN_PID of another process: not ours, the agent binds its own socket
    let socket = home.path().join("own.sock");
    let mut c = Command::new(bin("tokenmail-agent"));
    c.args(agent_args(&fixture))
        .arg("--socket")
        .arg(&socket)
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .env("SOFTHSM2_CONF", fixture.dir.join("softhsm2.conf"))
        .env_remove("TOKENMAIL_SOCK")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let _agent = process::Running::spawn(&mut c);
    wait_for(&socket);
    status_works(home.path(), &socket, "tokenmail-badfd");
}

#[test]
fn the_systemd_units_verify_and_run_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("contrib")
        .join("systemd");
    let socket_unit =
        std::fs::read_to_string(root.join("tokenmail-agent.socket")).expect("socket unit");
    let service_unit =
        std::fs::read_to_string(root.join("tokenmail-agent.service")).expect("service unit");
    // the socket is the one clients look for by default: $XDG_RUNTIME_DIR/tokenmail/agent.sock
    assert!(socket_unit.contains("\nListenStream=%t/tokenmail/agent.sock\n"));
    assert!(
        socket_unit.contains("\nSocketMode=0600\n")
            && socket_unit.contains("\nDirectoryMode=0700\n")
    );
    let exec = service_unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    assert!(
        exec.contains(" --foreground ")
            && exec.contains("--config %h/.config/tokenmail/agent.toml"),
        "{exec}"
    );
    assert!(service_unit.contains("\nLimitCORE=0\n"));

    // systemd's own checker, with ExecStart pointed at the built binary
    let home = tempfile::tempdir().expect("tempdir");
    let units = home.path().join("units");
    let rt = home.path().join("rt");
    for d in [&units, &rt] {
        std::fs::create_dir_all(d).expect("mkdir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    let agent = bin("tokenmail-agent");
    std::fs::write(units.join("tokenmail-agent.socket"), &socket_unit).expect("write");
    std::fs::write(
        units.join("tokenmail-agent.service"),
        service_unit.replace("/usr/bin/tokenmail-agent", &agent.display().to_string()),
    )
    .expect("write");
    let o = run(Command::new("systemd-analyze")
        .args(["verify", "--user", "--man=no"])
        .arg(units.join("tokenmail-agent.socket"))
        .arg(units.join("tokenmail-agent.service"))
        .env("XDG_RUNTIME_DIR", &rt)
        .env("HOME", home.path()));
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        stdout(&o),
        stderr(&o)
    );

    // ExecStart as systemd expands it (%h = HOME), under systemd-socket-activate on the
    // socket path %t gives, with a configuration at ~/.config/tokenmail/agent.toml
    let fixture = tokenmail_e2e::provision("tokenmail-unit");
    let cfg_dir = home.path().join(".config").join("tokenmail");
    std::fs::create_dir_all(&cfg_dir).expect("mkdir");
    std::fs::write(
        cfg_dir.join("agent.toml"),
        format!(
            "[[token]]\nmodule = {:?}\nlabel = {:?}\npin_file = {:?}\n",
            fixture.module.display().to_string(),
            fixture.label,
            fixture.pin_file().display().to_string()
        ),
    )
    .expect("config");
    let exec = exec
        .replace("/usr/bin/tokenmail-agent", &agent.display().to_string())
        .replace("%h", &home.path().display().to_string());
    let socket = rt.join("tokenmail").join("agent.sock");
    std::fs::create_dir_all(socket.parent().expect("dir")).expect("mkdir");
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l")
        .arg(&socket)
        .arg("-ESOFTHSM2_CONF")
        .args(exec.split_whitespace())
        .env("SOFTHSM2_CONF", fixture.dir.join("softhsm2.conf"))
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", &rt)
        .env_remove("TOKENMAIL_SOCK")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let _agent = process::Running::spawn(&mut cmd);
    wait_for(&socket);
    // the client finds it with no --socket: XDG_RUNTIME_DIR/tokenmail/agent.sock
    let mut c = tokenmail_isolated(home.path(), &["status"]);
    c.env("XDG_RUNTIME_DIR", &rt).env_remove("TOKENMAIL_SOCK");
    let o = run(&mut c);
    assert!(o.status.success(), "status: {}", stderr(&o));
    assert!(stdout(&o).contains("tokenmail-unit"), "{}", stdout(&o));
}

// ---- auto-start (proto/src/autostart.rs) ----

/// The pid of the process serving `socket` (SO_PEERCRED).
fn serving_pid(socket: &Path) -> i32 {
    let s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials)
        .expect("peer credentials")
        .pid()
}

/// A home with `~/.config/tokenmail/agent.toml` for `fixture`'s token (plus `extra`
/// lines) and the socket at `home/run/tokenmail/agent.sock` (TOKENMAIL_SOCK).
fn autostart_home(
    fixture: &tokenmail_e2e::Fixture,
    extra: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let home = tempfile::tempdir().expect("tempdir");
    let cfg_dir = home.path().join("config").join("tokenmail");
    std::fs::create_dir_all(&cfg_dir).expect("mkdir");
    std::fs::write(
        cfg_dir.join("agent.toml"),
        format!(
            "{extra}\n[[token]]\nmodule = {:?}\nlabel = {:?}\npin_file = {:?}\n",
            fixture.module.display().to_string(),
            fixture.label,
            fixture.pin_file().display().to_string()
        ),
    )
    .expect("config");
    let socket = home.path().join("run").join("tokenmail").join("agent.sock");
    (home, socket)
}

fn autostart_cmd(
    program: &str,
    home: &Path,
    socket: &Path,
    fixture: &tokenmail_e2e::Fixture,
    args: &[&str],
) -> Command {
    let mut c = tokenmail_isolated(home, args);
    c.env("TOKENMAIL_SOCK", socket)
        .env("SOFTHSM2_CONF", fixture.dir.join("softhsm2.conf"));
    if program != "tokenmail" {
        // the same isolated environment for another binary
        let mut g = Command::new(bin(program));
        g.args(args).current_dir(home);
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => g.env(k, v),
                None => g.env_remove(k),
            };
        }
        return g;
    }
    c
}

#[test]
fn with_a_configuration_and_no_agent_the_cli_starts_one_and_signs() {
    let fixture = tokenmail_e2e::provision("tokenmail-autostart");
    let (home, socket) = autostart_home(&fixture, "");
    // doctor: not a failure, the clients start it (and doctor itself starts nothing)
    let o = run(&mut autostart_cmd(
        "tokenmail",
        home.path(),
        &socket,
        &fixture,
        &["doctor", "--json"],
    ));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let a = one(&doc, "agent", "info");
    assert!(
        a["message"]
            .as_str()
            .is_some_and(|m| m.contains("on first use (auto_start)")),
        "{a}"
    );
    assert!(!socket.exists(), "doctor starts nothing");
    let msg = b"From: alice@example.com\r\n\r\nhello\r\n";
    let o = process::output_with_input(
        &mut autostart_cmd(
            "tokenmail",
            home.path(),
            &socket,
            &fixture,
            &["sign", "--signer", "alice@example.com"],
        ),
        msg,
    );
    // whatever happened, the agent it started dies with the test
    let _agent = socket.exists().then(|| Detached(serving_pid(&socket)));
    assert!(o.status.success(), "sign: {}", stderr(&o));
    assert!(stdout(&o).contains("multipart/signed"));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("tokenmail: no agent was running: started tokenmail-agent (pid ")
            && err.contains("agent.toml (auto_start = false there turns this off)"),
        "{err}"
    );
    let first = serving_pid(&socket);

    // the next command uses it: nothing started, nothing said
    let o = run(&mut autostart_cmd(
        "tokenmail",
        home.path(),
        &socket,
        &fixture,
        &["status"],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    assert_eq!(serving_pid(&socket), first, "the same agent");

    // tokenmail-gpgsm (as git runs it) starts one too
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let t = std::time::Instant::now();
    while socket.exists() && t.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = process::output_with_input(
        &mut autostart_cmd(
            "tokenmail-gpgsm",
            home.path(),
            &socket,
            &fixture,
            &["--status-fd=2", "-bsau", "alice@example.com"],
        ),
        b"tree 0000\n\ncommit\n",
    );
    let _second = socket.exists().then(|| Detached(serving_pid(&socket)));
    assert!(o.status.success(), "gpgsm: {}", stderr(&o));
    assert!(
        stdout(&o).contains("BEGIN SIGNED MESSAGE"),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("started tokenmail-agent"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn auto_start_false_or_another_socket_starts_nothing() {
    let fixture = tokenmail_e2e::provision("tokenmail-noauto");
    let (home, socket) = autostart_home(&fixture, "auto_start = false");
    let o = run(&mut autostart_cmd(
        "tokenmail",
        home.path(),
        &socket,
        &fixture,
        &["status"],
    ));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no tokenmail agent at"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("started"), "{}", stderr(&o));
    assert!(!socket.exists(), "nothing started");

    // auto-start on, but --socket names a path the configuration's agent would not use
    let (home, socket) = autostart_home(&fixture, "");
    let elsewhere = home.path().join("elsewhere.sock");
    let o = run(&mut autostart_cmd(
        "tokenmail",
        home.path(),
        &socket,
        &fixture,
        &["--socket", elsewhere.to_str().expect("utf-8"), "status"],
    ));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(!socket.exists() && !elsewhere.exists(), "nothing started");

    // a configuration the agent refuses: said once, with the agent's reason
    let (home, socket) = autostart_home(&fixture, "max_spool = \"1K\"");
    let o = run(&mut autostart_cmd(
        "tokenmail",
        home.path(),
        &socket,
        &fixture,
        &["status"],
    ));
    let _agent = socket.exists().then(|| Detached(serving_pid(&socket)));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("no agent was running, and starting one from")
            && err.contains("max_spool")
            && err.lines().count() == 1,
        "{err}"
    );
}

// ---- progress and colour (cli/src/term.rs) ----

/// A message of a little over 9 MiB (over the 8 MiB where the bar starts).
fn big_message(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let p = dir.join("big.eml");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).expect("create"));
    f.write_all(b"From: alice@example.com\r\nContent-Type: text/plain\r\n\r\n")
        .expect("write");
    for _ in 0..(9 << 20) / 80 + 1000 {
        f.write_all(&[b'p'; 78]).expect("write");
        f.write_all(b"\r\n").expect("write");
    }
    f.flush().expect("flush");
    p
}

/// `CMD` run by script(1) on a pseudo-terminal (stdin, stdout and stderr all on it);
/// what the terminal showed.
fn at_a_terminal(home: &Path, cmd: &str, env: &[(&str, &str)]) -> String {
    let c = tokenmail_isolated(home, &[]);
    let mut s = Command::new("script");
    s.args(["-qec", cmd, "/dev/null"]).current_dir(home);
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => s.env(k, v),
            None => s.env_remove(k),
        };
    }
    s.env("TERM", "xterm").env_remove("NO_COLOR");
    for (k, v) in env {
        s.env(k, v);
    }
    let o = run(&mut s);
    assert!(o.status.code().is_some(), "script: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn progress_and_colour_show_at_a_terminal_only() {
    let home = tempfile::tempdir().expect("tempdir");
    let big = big_message(home.path());
    let cert = tokenmail_e2e::fixture_pki().join("alice-rsa.pem");
    let out = home.path().join("big.p7m");
    let args = [
        "encrypt",
        "--no-self",
        "--recipient-cert",
        cert.to_str().expect("utf-8"),
        big.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
    ];
    // stderr a pipe (as in every script, git, mail client): not one byte of progress
    let o = run(&mut tokenmail_isolated(home.path(), &args));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "{:?}", stderr(&o));
    // doctor into a pipe: no colour, even without NO_COLOR
    let o = run(tokenmail_isolated(home.path(), &["doctor"]).env_remove("NO_COLOR"));
    assert!(
        stdout(&o).starts_with("info  config") || stdout(&o).contains("fail  agent"),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains('\x1b'), "{}", stdout(&o));

    // at a terminal: a bar on stderr while the input is read, cleared at the end
    let shown = at_a_terminal(
        home.path(),
        &format!("{} {}", bin("tokenmail").display(), args.join(" ")),
        &[],
    );
    assert!(
        shown.contains("encrypting") && shown.contains("MiB"),
        "{shown:?}"
    );
    // a small input: none
    let small = home.path().join("small.eml");
    std::fs::write(&small, "From: a@b\r\n\r\nx\r\n").expect("write");
    let shown = at_a_terminal(
        home.path(),
        &format!(
            "{} encrypt --no-self --recipient-cert {} {} -o {}",
            bin("tokenmail").display(),
            cert.display(),
            small.display(),
            home.path().join("small.p7m").display()
        ),
        &[],
    );
    assert!(!shown.contains("encrypting"), "{shown:?}");

    // doctor's words coloured at a terminal, and not with NO_COLOR
    let doctor = format!("{} doctor", bin("tokenmail").display());
    let shown = at_a_terminal(home.path(), &doctor, &[]);
    assert!(shown.contains("\x1b[1;31mfail\x1b[0m  agent"), "{shown:?}");
    let shown = at_a_terminal(home.path(), &doctor, &[("NO_COLOR", "1")]);
    assert!(
        shown.contains("fail  agent") && !shown.contains('\x1b'),
        "{shown:?}"
    );
}

// ---- tokenmail init (cli/src/init.rs) ----

/// `tokenmail ARGS` isolated in `home`, with git's global file there and `fixture`'s
/// SoftHSM configuration (so detection sees its token).
fn init_cmd(home: &Path, fixture: &tokenmail_e2e::Fixture, args: &[&str]) -> Command {
    let mut c = tokenmail_isolated(home, args);
    c.env("SOFTHSM2_CONF", fixture.dir.join("softhsm2.conf"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("GIT_CONFIG_GLOBAL")
        .env("TOKENMAIL_SOCK", home.join("run").join("agent.sock"));
    c
}

fn git_global(home: &Path, key: &str) -> String {
    let o = run(Command::new("git")
        .args(["config", "--global", "--get", key])
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("GIT_CONFIG_GLOBAL"));
    stdout(&o).trim().to_string()
}

#[test]
fn init_non_interactive_writes_a_configuration_the_agent_starts_from() {
    let fixture = tokenmail_e2e::provision("tokenmail-init");
    let home = tempfile::tempdir().expect("tempdir");
    let module = fixture.module.display().to_string();
    let pin = fixture.pin_file().display().to_string();
    let args = [
        "init",
        "--non-interactive",
        "--module",
        &module,
        "--token-label",
        "tokenmail-init",
        "--pin-file",
        &pin,
        "--email",
        "alice@example.com",
        "--git",
        "--json",
    ];
    let o = run(&mut init_cmd(home.path(), &fixture, &args));
    assert!(o.status.success(), "init: {}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let cfg = home
        .path()
        .join("config")
        .join("tokenmail")
        .join("agent.toml");
    assert_eq!(doc["config"].as_str(), cfg.to_str());
    // detection saw the token through pkcs11-tool
    let seen = doc["detected"]["tokens"].as_array().expect("tokens");
    assert!(
        seen.iter().any(|t| t["label"] == "tokenmail-init"),
        "{}",
        doc["detected"]
    );
    assert!(doc["detected"]["modules"].as_array().is_some());
    assert_eq!(doc["git"]["applied"], true);
    assert!(
        doc["warnings"].as_array().is_some_and(|w| w.is_empty()),
        "{doc}"
    );
    assert!(doc["neomutt"]
        .as_array()
        .expect("neomutt")
        .iter()
        .any(|l| l == "set smime_default_key = \"alice@example.com\""));
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&cfg), 0o600);
    assert_eq!(mode(cfg.parent().expect("dir")), 0o700);
    let text = std::fs::read_to_string(&cfg).expect("config");
    assert!(
        text.contains("\n# ") && text.contains("label = \"tokenmail-init\""),
        "{text}"
    );
    assert_eq!(git_global(home.path(), "gpg.format"), "x509");
    assert!(git_global(home.path(), "gpg.x509.program").ends_with("tokenmail-gpgsm"));
    assert_eq!(
        git_global(home.path(), "user.signingkey"),
        "alice@example.com"
    );

    // the file works: the next command starts the agent from it and signs
    let socket = home.path().join("run").join("agent.sock");
    let o = process::output_with_input(
        &mut init_cmd(
            home.path(),
            &fixture,
            &["sign", "--signer", "alice@example.com"],
        ),
        b"From: alice@example.com\r\n\r\nfirst\r\n",
    );
    let _agent = socket.exists().then(|| Detached(serving_pid(&socket)));
    assert!(o.status.success(), "sign: {}", stderr(&o));
    assert!(
        stderr(&o).contains("started tokenmail-agent"),
        "{}",
        stderr(&o)
    );
    // … and doctor agrees
    let o = run(&mut init_cmd(home.path(), &fixture, &["doctor", "--json"]));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    one(&doc, "config", "ok");
    one(&doc, "git", "ok");

    // an existing file is kept without --force
    let before = std::fs::read(&cfg).expect("read");
    let o = run(&mut init_cmd(home.path(), &fixture, &args));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("exists; keep it, or run `tokenmail init --force`"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&cfg).expect("read"), before);
    let mut forced: Vec<&str> = args.to_vec();
    forced.retain(|a| *a != "--json" && *a != "--git");
    forced.push("--force");
    let o = run(&mut init_cmd(home.path(), &fixture, &forced));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("git config --global gpg.format x509"),
        "{}",
        stdout(&o)
    );

    // --non-interactive without the token: what was found, as flags to copy
    let o = run(&mut init_cmd(
        home.path(),
        &fixture,
        &["init", "--non-interactive", "--force"],
    ));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o)
            .contains("--non-interactive needs --module LIB.so and --token-label LABEL (found: ")
            && stderr(&o).contains("--token-label \"tokenmail-init\""),
        "{}",
        stderr(&o)
    );
    // and with no terminal, init does not wait for answers
    let o = run(&mut init_cmd(home.path(), &fixture, &["init", "--force"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no terminal to ask on"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn init_asks_at_a_terminal() {
    let fixture = tokenmail_e2e::provision("tokenmail-ask");
    let home = tempfile::tempdir().expect("tempdir");
    let c = init_cmd(home.path(), &fixture, &[]);
    let mut s = Command::new("script");
    s.args([
        "-qec",
        &format!("{} init", bin("tokenmail").display()),
        "/dev/null",
    ])
    .current_dir(home.path());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => s.env(k, v),
            None => s.env_remove(k),
        };
    }
    // the token by its label, the PIN file, the address, yes to git
    let answers = format!(
        "tokenmail-ask\n{}\nalice@example.com\ny\n",
        fixture.pin_file().display()
    );
    let o = process::output_with_input(&mut s, answers.as_bytes());
    let shown = stdout(&o);
    assert!(o.status.success(), "{shown}{}", stderr(&o));
    assert!(shown.contains("PKCS#11 modules found:"), "{shown}");
    assert!(shown.contains("\"tokenmail-ask\" ("), "{shown}");
    assert!(shown.contains("Token to use (1-"), "{shown}");
    assert!(shown.contains("wrote "), "{shown}");
    let cfg = home
        .path()
        .join("config")
        .join("tokenmail")
        .join("agent.toml");
    let text = std::fs::read_to_string(&cfg).expect("config written");
    assert!(text.contains("label = \"tokenmail-ask\""), "{text}");
    assert!(
        text.contains(&format!("pin_file = \"{}\"", fixture.pin_file().display())),
        "{text}"
    );
    assert_eq!(
        git_global(home.path(), "user.signingkey"),
        "alice@example.com"
    );
    // the agent loads it
    let socket = home.path().join("agent.sock");
    let mut a = Command::new(bin("tokenmail-agent"));
    a.arg("--foreground")
        .arg("--config")
        .arg(&cfg)
        .arg("--socket")
        .arg(&socket)
        .env("SOFTHSM2_CONF", fixture.dir.join("softhsm2.conf"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let _agent = process::Running::spawn(&mut a);
    wait_for(&socket);
    status_works(home.path(), &socket, "tokenmail-ask");
}

/// The PKCS#11 module starts the agent from the configuration as the CLI does (issue 16:
/// "the CLI, tokenmail-gpgsm and the PKCS#11 module start the agent on first use"):
/// pkcs11-tool, with no agent running, lists the configured token's slot.
#[test]
fn the_pkcs11_module_starts_the_agent_too() {
    let fixture = tokenmail_e2e::provision("tokenmail-autostart-p11");
    let (home, socket) = autostart_home(&fixture, "");
    let template = autostart_cmd("tokenmail", home.path(), &socket, &fixture, &[]);
    let mut c = Command::new("pkcs11-tool");
    c.arg("--module")
        .arg(bin("libtokenmail_pkcs11.so"))
        .arg("-L")
        .current_dir(home.path());
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    // the module looks for tokenmail-agent on PATH (the program is pkcs11-tool's)
    let bindir = bin("tokenmail-agent")
        .parent()
        .expect("bin dir")
        .to_path_buf();
    c.env(
        "PATH",
        format!(
            "{}:{}",
            bindir.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    let o = run(&mut c);
    let _agent = socket.exists().then(|| Detached(serving_pid(&socket)));
    assert!(o.status.success(), "pkcs11-tool -L: {}", stderr(&o));
    assert!(
        stdout(&o).contains("tokenmail-autostart-p11"),
        "the token's slot: {}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("tokenmail-pkcs11: no agent was running: started tokenmail-agent"),
        "{}",
        stderr(&o)
    );
}

/// `tokenmail init --piv`: a YubiKey-style PIV card through its applet; the written file
/// names it, and the agent started from it (auto-start) shows the card (absent here).
#[test]
fn init_for_a_piv_card() {
    let fixture = tokenmail_e2e::provision("tokenmail-init-piv");
    let home = tempfile::tempdir().expect("tempdir");
    let o = run(&mut init_cmd(
        home.path(),
        &fixture,
        &[
            "init",
            "--non-interactive",
            "--piv",
            "--piv-serial",
            "12345678",
            "--email",
            "alice@example.com",
            "--json",
        ],
    ));
    assert!(o.status.success(), "init --piv: {}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(doc["piv"]["serial"], "12345678", "{doc}");
    assert!(doc.get("module").is_none(), "{doc}");
    let cfg = home.path().join("config/tokenmail/agent.toml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    assert!(
        text.contains("type = \"piv\"") && text.contains("serial = \"12345678\""),
        "{text}"
    );
    // the agent starts from it and shows the card
    let socket = home.path().join("run").join("agent.sock");
    let o = run(&mut init_cmd(home.path(), &fixture, &["status", "--json"]));
    let _agent = socket.exists().then(|| Detached(serving_pid(&socket)));
    assert!(o.status.success(), "status: {}", stderr(&o));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let tokens = st["tokens"].as_array().expect("tokens");
    assert!(
        tokens.iter().any(
            |t| t["backend"].as_str().is_some_and(|b| b.starts_with("piv"))
                && t["present"] == false
        ),
        "{st}"
    );
    // --piv and --module do not go together
    let o = run(&mut init_cmd(
        home.path(),
        &fixture,
        &[
            "init",
            "--non-interactive",
            "--piv",
            "--module",
            "/x.so",
            "--force",
        ],
    ));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
