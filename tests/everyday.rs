//! Everyday use (shared/CONTRACT.md "Everyday use"): shell completions and manual pages
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
