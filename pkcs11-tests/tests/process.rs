//! The test helper that runs external programs with a deadline (src/process.rs).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokenmail_pkcs11_tests::process::{self, Running};

fn panic_text(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn alive(pid: &str) -> bool {
    std::path::Path::new("/proc").join(pid).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn output_and_input_like_command_output() {
    let o = process::output_with_input(
        Command::new("sh").args(["-c", "tr a-z A-Z; echo err >&2; exit 3"]),
        b"abc",
    );
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(o.stdout, b"ABC");
    assert_eq!(o.stderr, b"err\n");
    // No input: stdin is empty, as with Command::output.
    let o = process::output(&mut Command::new("cat"));
    assert!(o.status.success());
    assert!(o.stdout.is_empty());
}

#[test]
fn large_output_on_both_pipes_does_not_deadlock() {
    let o = process::run_with_timeout(
        Command::new("sh").args([
            "-c",
            "head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2",
        ]),
        None,
        Duration::from_secs(30),
    );
    assert!(o.status.success());
    assert_eq!((o.stdout.len(), o.stderr.len()), (3_000_000, 3_000_000));
}

#[test]
fn expiry_kills_the_program_and_what_it_started_and_reports_its_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("grandchild");
    let script = format!(
        "sleep 300 & echo $! > '{}'; echo started; echo on-stderr >&2; wait",
        pidfile.display()
    );
    let t = Instant::now();
    let e = std::panic::catch_unwind(|| {
        process::run_with_timeout(
            Command::new("sh").arg("-c").arg(&script),
            None,
            Duration::from_secs(2),
        )
    })
    .expect_err("the deadline passes");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let msg = panic_text(e);
    assert!(msg.contains("\"sh\" \"-c\""), "the command line: {msg}");
    assert!(msg.contains("did not finish within 2 s"), "{msg}");
    assert!(msg.contains("TOKENMAIL_TEST_TIMEOUT"), "{msg}");
    assert!(
        msg.contains("started") && msg.contains("on-stderr"),
        "{msg}"
    );
    let grandchild = std::fs::read_to_string(&pidfile).expect("pid");
    let grandchild = grandchild.trim();
    let t = Instant::now();
    while alive(grandchild) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(grandchild), "the background sleep was killed too");
}

#[test]
fn a_missing_program_fails_with_its_name() {
    let e = process::try_run_with_timeout(
        &mut Command::new("/nonexistent/program"),
        None,
        Duration::from_secs(5),
    )
    .expect_err("no such program");
    assert!(e.contains("/nonexistent/program"), "{e}");
}

#[test]
fn a_running_child_is_waited_for_from_the_call_on() {
    let r = Running::spawn(
        Command::new("sh")
            .args(["-c", "sleep 1; echo done"])
            .stdout(Stdio::piped()),
    );
    // A child started a while ago still gets the whole deadline.
    std::thread::sleep(Duration::from_millis(1500));
    let o = r.wait(Duration::from_millis(500));
    assert!(o.status.success());
    assert_eq!(o.stdout, b"done\n");
    let r = Running::spawn(Command::new("sleep").arg("300"));
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        r.wait(Duration::from_secs(1))
    }))
    .expect_err("times out");
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(panic_text(e).contains("\"sleep\" \"300\" did not finish within 1 s"));
}

#[test]
fn a_running_child_dies_when_dropped() {
    let mut r = Running::spawn(Command::new("sleep").arg("300").stdin(Stdio::null()));
    let pid = r.id().to_string();
    assert!(r.alive());
    assert_eq!(r.wait_timeout(Duration::from_millis(100)), None);
    drop(r);
    assert!(!alive(&pid), "killed and reaped on drop");
}
