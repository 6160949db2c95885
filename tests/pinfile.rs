//! A wrong PIN file costs one try, and `lock` is not undone by `sign` (issue 11 defects 13
//! and 14), counted with OpenSC's pkcs11-spy between the agent and SoftHSM: every
//! `C_Login` the token sees is in the spy's log.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokenmail_e2e::process::{self, Running};
use tokenmail_e2e::{bin, provision, stderr};

const SPY: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so",
    "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so",
];

struct SpiedAgent {
    _child: Running,
    socket: PathBuf,
    log: PathBuf,
    work: tempfile::TempDir,
}

impl SpiedAgent {
    fn start(module: &Path, label: &str, conf: &Path, pin_file: &Path) -> SpiedAgent {
        let spy = SPY
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("pkcs11-spy.so (package opensc) is installed by softhsm/install-deps.sh");
        let work = tempfile::tempdir().expect("tempdir");
        let socket = work.path().join("run").join("agent.sock");
        let log = work.path().join("spy.log");
        let child = Running::spawn(
            Command::new(bin("tokenmail-agent"))
                .arg("--foreground")
                .arg("--socket")
                .arg(&socket)
                .arg("--pkcs11-module")
                .arg(&spy)
                .args(["--token-label", label])
                .arg("--pin-file")
                .arg(pin_file)
                .env("PKCS11SPY", module)
                .env("PKCS11SPY_OUTPUT", &log)
                .env("SOFTHSM2_CONF", conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        SpiedAgent {
            _child: child,
            socket,
            log,
            work,
        }
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        process::output(
            Command::new(bin("tokenmail"))
                .arg("--socket")
                .arg(&self.socket)
                .args(args)
                .env("XDG_CACHE_HOME", self.work.path().join("cache"))
                .stdin(Stdio::null()),
        )
    }

    /// `C_Login` calls the token has seen.
    fn logins(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("C_Login"))
            .count()
    }
}

fn message(dir: &Path) -> PathBuf {
    let p = dir.join("m.eml");
    std::fs::write(
        &p,
        b"From: alice@example.com\r\nContent-Type: text/plain\r\n\r\nhi\r\n",
    )
    .expect("write");
    p
}

#[test]
fn a_wrong_pin_file_costs_one_try_and_lock_is_not_undone_by_sign() {
    let f = provision("tokenmail-spy");
    let conf = f.dir.join("softhsm2.conf");
    let pin = f.dir.join("wrong-pin");
    std::fs::write(&pin, "00000000\n").expect("write");
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let agent = SpiedAgent::start(&f.module, &f.label, &conf, &pin);
    let msg = message(agent.work.path());
    let m = msg.to_str().expect("utf-8");
    // every refusal names the file, says it is not tried again and what to do
    let says = |o: &std::process::Output| {
        let e = stderr(o);
        assert!(
            e.contains(&format!("PIN file {}", pin.display()))
                && e.contains("not tried again")
                && e.contains("tokenmail login")
                && e.trim().lines().count() == 1,
            "{e}"
        );
    };
    for _ in 0..3 {
        let o = agent.cli(&["sign", "--signer", "alice-rsa", m]);
        assert!(!o.status.success(), "signed with a wrong PIN file?");
        says(&o);
    }
    for _ in 0..2 {
        let o = agent.cli(&["sign-digest", "--key", "alice-rsa", m]);
        assert!(!o.status.success());
        says(&o);
    }
    assert_eq!(
        agent.logins(),
        1,
        "one try for a wrong PIN file, not one per request"
    );
    drop(agent);

    // the right file; after `lock`, `sign` does not log in again by itself
    let agent = SpiedAgent::start(&f.module, &f.label, &conf, &f.pin_file());
    let msg = message(agent.work.path());
    let m = msg.to_str().expect("utf-8");
    let o = agent.cli(&["sign", "--signer", "alice-rsa", m]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = agent.cli(&["lock"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = agent.logins();
    let o = agent.cli(&["sign", "--signer", "alice-rsa", m]);
    assert!(!o.status.success(), "lock undone by sign");
    let o = agent.cli(&["sign-digest", "--key", "alice-rsa", m]);
    assert!(!o.status.success(), "lock undone by sign-digest");
    assert_eq!(agent.logins(), before, "no login after lock");
}
