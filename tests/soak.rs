//! The soak and fault run, short (issue 11 item 16; `scripts/soak.sh --short` is the same
//! run): 64 mixed clients against a private agent for about 24 s, with the token removed
//! and restored, slow and never-reading clients, and the agent killed mid-request and
//! restarted. The driver is `tokenmail-bench soak` (bench/src/soak.rs); this test checks
//! its figures. Figures of the full run: docs/reliability.md.

use std::process::Command;
use std::time::Instant;

use serde_json::Value;
use tokenmail_e2e::{bin, process, provision, stderr};

fn num(v: &Value, p: &str) -> f64 {
    v.pointer(p)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {p}"))
}

#[test]
fn soak_short_with_faults() {
    let started = Instant::now();
    let fixture = provision("tokenmail-soak");
    let work = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(bin("tokenmail-bench"));
    cmd.arg("soak")
        .arg("--short")
        .arg("--json")
        .arg("--agent")
        .arg(bin("tokenmail-agent"))
        .arg("--cli")
        .arg(bin("tokenmail"))
        .arg("--module")
        .arg(&fixture.module)
        .arg("--token-label")
        .arg(&fixture.label)
        .arg("--pin-file")
        .arg(fixture.pin_file())
        .arg("--pki")
        .arg(fixture.dir.join("pki"))
        .arg("--work")
        .arg(work.path().join("w"))
        .env("SOFTHSM2_CONF", fixture.dir.join("softhsm2.conf"));
    // about 40 s in a debug build on a loaded 2-core machine; the limit is for a hang
    let out = process::run_with_timeout(&mut cmd, None, process::long_limit() * 2);
    assert!(out.status.success(), "the soak failed: {}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let show = |p: &str| r.pointer(p).map(Value::to_string).unwrap_or_default();
    eprintln!(
        "soak: {} s; totals {}; token removal {}; kill {}",
        started.elapsed().as_secs(),
        show("/totals"),
        show("/token_removal"),
        show("/kill")
    );

    // No error outside the faults, and of the kind each fault must give; busy is allowed.
    assert_eq!(
        num(&r, "/totals/unexpected_errors"),
        0.0,
        "unexpected errors: {}",
        show("/unexpected")
    );
    assert!(
        num(&r, "/totals/ok") >= 200.0,
        "too little load: {}",
        show("/totals")
    );
    for op in [
        "sign-small",
        "sign-100k",
        "decrypt-small",
        "decrypt-100k",
        "verify-small",
        "verify-100k",
        "status",
    ] {
        assert!(
            num(&r, &format!("/ops/{op}/ok")) >= 1.0,
            "{op}: {}",
            show("/ops")
        );
    }

    // (a) token removed: "not present" in the gap, served again after it, same agent.
    assert!(
        num(&r, "/token_removal/not_present_in_gap") >= 1.0,
        "{}",
        show("/token_removal")
    );
    assert!(num(&r, "/token_removal/status_saw_absent") >= 1.0);
    assert!(
        num(&r, "/token_removal/token_ok_after_restore") >= 1.0,
        "no success after the token came back: {}",
        show("/token_removal")
    );

    // (b) slow and never-reading clients: the others kept being served.
    assert!(num(&r, "/slow_and_never_reading/others_served_during_b") >= 50.0);
    assert!(
        num(&r, "/slow_and_never_reading/slow_ok") >= 1.0,
        "{}",
        show("/slow_and_never_reading")
    );
    assert_eq!(show("/slow_and_never_reading/slow_errors"), "[]");
    let never = r
        .pointer("/slow_and_never_reading/never_reading")
        .and_then(Value::as_array)
        .expect("never_reading");
    assert!(
        never.iter().any(|n| n.get("held_s").is_some()),
        "no never-reading client held a stream: {never:?}"
    );

    // (c) agent killed: errors at once (no hang), nothing partial left, the new agent serves.
    assert!(num(&r, "/kill/inflight_errors") >= 1.0, "{}", show("/kill"));
    assert_eq!(num(&r, "/kill/inflight_hangs"), 0.0);
    assert!(
        num(&r, "/kill/max_error_after_kill_ms") < 10_000.0,
        "{}",
        show("/kill")
    );
    let runs = r
        .pointer("/kill/cli_runs")
        .and_then(Value::as_array)
        .expect("cli runs");
    assert!(
        runs.iter().any(|c| c["success"] == false),
        "no CLI run was interrupted: {runs:?}"
    );
    for c in runs {
        assert_eq!(c["hang"], false, "{c}");
        assert_eq!(c["clear_error"], true, "{c}");
        assert_eq!(c["dir_ok"], true, "partial or temporary output left: {c}");
    }
    assert!(
        num(&r, "/kill/token_ok_after_restart") >= 1.0,
        "{}",
        show("/kill")
    );
    assert_eq!(show("/checks/agent_tmpdir_left"), "[]");
    assert_eq!(show("/checks/cli_tmpdir_left"), "[]");
    assert!(
        show("/checks/second_agent_stop").contains("stopped by SIGTERM"),
        "{}",
        show("/checks")
    );

    // fds flat; RSS bounded (allocator arenas grow with 64 clients, they do not leak).
    let idle =
        |agent: &str, i: usize, what: &str| num(&r, &format!("/agent/{agent}/idle/{i}/{what}"));
    for agent in ["agent_1", "agent_2"] {
        let (fd0, fd1) = (idle(agent, 0, "fds"), idle(agent, 1, "fds"));
        assert!(
            fd1 <= fd0 + 4.0,
            "{agent}: fds {fd0} -> {fd1}: {}",
            show("/agent")
        );
        let (rss0, rss1) = (idle(agent, 0, "rss_kib"), idle(agent, 1, "rss_kib"));
        assert!(
            rss1 <= 2.0 * rss0 + 64.0 * 1024.0,
            "{agent}: RSS {rss0} KiB -> {rss1} KiB"
        );
    }
}
