//! Revocation over the network against real responders on loopback (issue 12): CRLs made
//! by `openssl ca -gencrl` and OCSP answers made by `openssl ocsp` behind a small Python
//! HTTP server on 127.0.0.1 (cli/tests/data/revocation_server.py). `tokenmail verify` runs
//! in-process with the http fetcher and a private cache.
//!
//! Each test makes its own PKI and server ([`Lab`]). The configuration (and so the cache
//! and `[trust] revocation_sources`) comes from TOKENMAIL_CONFIG and the proxy from
//! `http_proxy`/`no_proxy`, which are the process's: every verification (and every
//! `tokenmail` run) holds [`ENV`] while it sets them and runs.

use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

#[path = "../../pkcs11-tests/src/process.rs"]
mod process;
use tokenmail_cli::verify::{run_with, VerifyArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: VerifyArgs,
}

/// Held while the process environment is set for, and read by, a verification.
static ENV: Mutex<()> = Mutex::new(());

fn env_lock() -> MutexGuard<'static, ()> {
    ENV.lock().unwrap_or_else(|e| e.into_inner())
}

const HARD: [&str; 2] = ["--revocation", "hard-fail"];

/// A PKI (cli/tests/data/revocation-net-pki.sh) and its loopback server, in a directory of
/// its own.
struct Lab {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    /// The loopback server, killed when the lab is dropped.
    _server: process::Running,
    port: u16,
}

impl Lab {
    fn new() -> Lab {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut server = process::Running::spawn(
            Command::new("python3")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/data/revocation_server.py"
                ))
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let port = server.first_line_port("server");
        let out = process::run_with_timeout(
            Command::new("bash")
                .arg("-c")
                .arg(include_str!("data/revocation-net-pki.sh"))
                .env("PORT", port.to_string())
                .current_dir(&dir),
            None,
            process::long_limit(),
        );
        assert!(
            out.status.success(),
            "PKI: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Lab {
            _tmp: tmp,
            dir,
            _server: server,
            port,
        }
    }

    /// A configuration `NAME.toml` with its own cache `cache-NAME` and `extra` lines of
    /// `[trust]`.
    fn config(&self, name: &str, extra: &str) -> PathBuf {
        let path = self.dir.join(format!("{name}.toml"));
        let cache = self.dir.join(format!("cache-{name}"));
        std::fs::write(
            &path,
            format!("[trust]\ncrl_cache = \"{}\"\n{extra}\n", cache.display()),
        )
        .expect("config");
        path
    }

    /// `tokenmail verify --json --trust root.pem EXTRA MSG` under `config`.
    fn verify(&self, config: &Path, extra: &[&str], msg: &str) -> (i32, serde_json::Value) {
        let _env = env_lock();
        self.verify_locked(config, extra, msg)
    }

    /// [`Lab::verify`] for a caller that holds [`ENV`].
    fn verify_locked(&self, config: &Path, extra: &[&str], msg: &str) -> (i32, serde_json::Value) {
        std::env::set_var("TOKENMAIL_CONFIG", config);
        let root = self.dir.join("root.pem").display().to_string();
        let input = self.dir.join(msg).display().to_string();
        let mut all = vec!["tokenmail-verify", "--json", "--trust", &root];
        all.extend_from_slice(extra);
        all.push(&input);
        let args = Cli::try_parse_from(all).expect("arguments").args;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(args, &mut out, &mut err).expect("verify runs");
        let j = serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{msg}: json {e}: {}", String::from_utf8_lossy(&out)));
        (code, j)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("requests.log")).unwrap_or_default()
    }

    /// Requests so far whose target ends with `path`.
    fn requests(&self, path: &str) -> usize {
        self.log().lines().filter(|l| l.ends_with(path)).count()
    }

    /// Requests for each of `paths` made while `f` runs.
    fn counting<T>(&self, paths: &[&str], f: impl FnOnce() -> T) -> (T, Vec<usize>) {
        let before: Vec<usize> = paths.iter().map(|p| self.requests(p)).collect();
        let r = f();
        let after = paths.iter().map(|p| self.requests(p));
        (r, after.zip(before).map(|(a, b)| a - b).collect())
    }

    /// Sets the responder settings of /ocsp/fallback (see revocation_server.py).
    fn fallback_responder(&self, settings: &str) {
        std::fs::write(self.dir.join("fallback.ocsp"), settings).expect("responder");
    }
}

/// The per-certificate revocation entries (end entity first).
fn entries(j: &serde_json::Value) -> Vec<serde_json::Value> {
    revocation(j)["certificates"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The `revocation` check of the first signer.
fn revocation(j: &serde_json::Value) -> serde_json::Value {
    j["signers"][0]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "revocation")
        .cloned()
        .unwrap_or_default()
}

fn detail(e: &serde_json::Value) -> &str {
    e["detail"].as_str().unwrap_or_default()
}

/// `--at` a while from now.
fn from_now(d: Duration) -> String {
    der::DateTime::from_system_time(SystemTime::now() + d)
        .expect("time")
        .to_string()
}

#[test]
fn ocsp_and_crl_distribution_points_over_http() {
    let lab = Lab::new();
    let dir = lab.dir.as_path();
    let cfg = lab.config("main", "");
    let hard = HARD;

    // good: the end entity by the intermediate's OCSP responder, the intermediate by the root's
    let (code, j) = lab.verify(&cfg, &hard, "good.eml");
    assert_eq!(code, 0, "{j:#}");
    let e = entries(&j);
    assert_eq!(e.len(), 2, "{j:#}");
    for x in &e {
        assert_eq!(
            (x["source"].as_str(), x["status"].as_str()),
            (Some("ocsp"), Some("good")),
            "{x:#}"
        );
    }

    // revoked by OCSP: reason and time
    let (code, j) = lab.verify(&cfg, &[], "revoked.eml");
    assert_eq!(code, 1, "{j:#}");
    let ee = &entries(&j)[0];
    assert_eq!(ee["source"], "ocsp");
    assert_eq!(ee["status"], "revoked");
    assert_eq!(ee["reason"], "keyCompromise");
    assert!(ee["revocation_time"].is_string(), "{ee:#}");

    // revoked by the CRL at the distribution point; the second time from the cache
    let (code, j) = lab.verify(&cfg, &[], "crl_only.eml");
    assert_eq!(code, 1, "{j:#}");
    let ee = &entries(&j)[0];
    assert_eq!(
        (ee["source"].as_str(), ee["status"].as_str()),
        (Some("crl"), Some("revoked")),
        "{ee:#}"
    );
    assert!(
        ee["detail"]
            .as_str()
            .is_some_and(|d| d.contains("/crl/int.crl")),
        "{ee:#}"
    );
    let fetched = lab.requests("/crl/int.crl");
    assert_eq!(fetched, 1);
    let (code, _) = lab.verify(&cfg, &[], "crl_only.eml");
    assert_eq!(code, 1);
    assert_eq!(
        lab.requests("/crl/int.crl"),
        fetched,
        "the cached CRL is used until its nextUpdate"
    );

    // a responder the CA delegated (id-kp-OCSPSigning, issued by the CA)
    let (code, j) = lab.verify(&cfg, &hard, "delegated.eml");
    assert_eq!(code, 0, "{j:#}");
    assert!(entries(&j)[0]["detail"]
        .as_str()
        .is_some_and(|d| d.contains("tokenmail Net OCSP Responder")));

    // a responder the CA did not certify: no status; hard-fail refuses, soft-fail accepts
    let (code, j) = lab.verify(&cfg, &hard, "wrong.eml");
    assert_eq!(code, 1, "{j:#}");
    let ee = &entries(&j)[0];
    assert_eq!(ee["status"], "unknown");
    assert!(
        ee["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not issued by")),
        "{ee:#}"
    );
    let (code, _) = lab.verify(&cfg, &[], "wrong.eml");
    assert_eq!(code, 0, "soft-fail");

    // responder down
    let (code, j) = lab.verify(&cfg, &hard, "down.eml");
    assert_eq!(code, 1, "{j:#}");
    let ee = &entries(&j)[0];
    assert!(
        ee["detail"]
            .as_str()
            .is_some_and(|d| d.contains("127.0.0.1:1")),
        "{ee:#}"
    );
    let (code, j) = lab.verify(&cfg, &[], "down.eml");
    assert_eq!(
        code, 0,
        "soft-fail: an unreachable responder is reported, not fatal"
    );
    // ... and it is not asked again for a while (a blackholed one would cost each message
    // its whole deadline)
    assert!(
        entries(&j)[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("was unreachable") && d.contains("not asked again")),
        "{j:#}"
    );

    // a certificate the responder does not know
    let (code, j) = lab.verify(&cfg, &hard, "unknown.eml");
    assert_eq!(code, 1, "{j:#}");
    assert!(entries(&j)[0]["detail"]
        .as_str()
        .is_some_and(|d| d.contains("does not know")));

    // a revoked recipient is refused by `tokenmail encrypt` (the certificate with its
    // chain in one file), a good one is not
    for (who, ok) in [("ee_revoked", false), ("ee_good", true)] {
        let mut bundle = std::fs::read(dir.join(format!("{who}.pem"))).expect("cert");
        bundle.extend(std::fs::read(dir.join("int.pem")).expect("int"));
        let b = dir.join(format!("{who}+int.pem"));
        std::fs::write(&b, bundle).expect("bundle");
        let env = env_lock();
        let o = process::output(
            Command::new(env!("CARGO_BIN_EXE_tokenmail"))
                .env("TOKENMAIL_CONFIG", &cfg)
                .args(["encrypt", "--no-self", "--trust"])
                .arg(dir.join("root.pem"))
                .arg("--recipient-cert")
                .arg(&b)
                .arg("-o")
                .arg(dir.join("enc.eml"))
                .arg(dir.join("msg.txt")),
        );
        drop(env);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.success(), ok, "{who}: {e}");
        if !ok {
            assert!(e.contains("REVOKED") && e.contains("keyCompromise"), "{e}");
        }
    }

    // off: nothing asked
    let before = std::fs::read_to_string(dir.join("requests.log")).unwrap_or_default();
    let (code, _) = lab.verify(&cfg, &["--revocation", "off"], "revoked.eml");
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read_to_string(dir.join("requests.log")).unwrap_or_default(),
        before,
        "revocation off: no request"
    );
}

#[test]
fn expired_crl_and_ocsp_answers_leave_the_status_unknown() {
    let lab = Lab::new();
    let cfg = lab.config("stale", "");

    // the CRL at the distribution point: nextUpdate a day ago
    let (code, j) = lab.verify(&cfg, &HARD, "stale_crl.eml");
    assert_eq!(code, 1, "hard-fail: {j:#}");
    let ee = &entries(&j)[0];
    assert_eq!(ee["status"], "unknown", "{ee:#}");
    assert!(
        detail(ee).contains("/crl/stale.crl is out of date (nextUpdate"),
        "{ee:#}"
    );
    let (code, j) = lab.verify(&cfg, &[], "stale_crl.eml");
    assert_eq!(code, 0, "soft-fail accepts: {j:#}");
    let check = revocation(&j);
    let reason = check["reason"].as_str().unwrap_or_default();
    assert!(
        check["ok"] == true
            && reason.contains("accepted (revocation = soft-fail)")
            && reason.contains("out of date"),
        "{check:#}"
    );
    // kept in the cache (it parses), but past its nextUpdate: fetched again each time
    assert_eq!(lab.requests("/crl/stale.crl"), 2);

    // an OCSP answer valid for one minute (openssl ocsp cannot date one in the past:
    // -nmin/-ndays are positive): good now ...
    let (code, j) = lab.verify(&cfg, &HARD, "stale_ocsp.eml");
    assert_eq!(code, 0, "{j:#}");
    assert_eq!(
        (
            entries(&j)[0]["source"].as_str(),
            entries(&j)[0]["status"].as_str()
        ),
        (Some("ocsp"), Some("good")),
        "{j:#}"
    );
    // ... and out of date ten minutes later (beyond the 300 s clock skew), fetched afresh
    // (another cache): unknown, hard-fail fails, soft-fail accepts with the cause
    let later = from_now(Duration::from_secs(600));
    for (name, mode, want) in [("stale-h", "hard-fail", 1), ("stale-s", "soft-fail", 0)] {
        let cfg = lab.config(name, "");
        let (_, fetched) = lab.counting(&["/ocsp/stale"], || {
            let (code, j) = lab.verify(
                &cfg,
                &["--revocation", mode, "--at", &later],
                "stale_ocsp.eml",
            );
            assert_eq!(code, want, "{mode}: {j:#}");
            let ee = &entries(&j)[0];
            assert_eq!(ee["status"], "unknown", "{ee:#}");
            assert!(
                detail(ee).contains("/ocsp/stale")
                    && detail(ee).contains("the OCSP response is out of date (nextUpdate"),
                "{ee:#}"
            );
            assert!(
                revocation(&j)["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("out of date")),
                "{j:#}"
            );
        });
        assert_eq!(fetched, [1], "{mode}: asked the responder");
    }
}

#[test]
fn a_revoked_intermediate_fails_the_path() {
    let lab = Lab::new();
    let cfg = lab.config("int2", "");
    let ((code, j), asked) = lab.counting(&["/crl/root.crl", "/crl/int2.crl"], || {
        lab.verify(&cfg, &[], "under_int2.eml")
    });
    assert_eq!(code, 1, "a revoked CA fails even under soft-fail: {j:#}");
    assert_eq!(asked, [1, 1]);
    let e = entries(&j);
    assert_eq!(e.len(), 2, "{j:#}");
    assert_eq!(
        (e[0]["source"].as_str(), e[0]["status"].as_str()),
        (Some("crl"), Some("good")),
        "{:#}",
        e[0]
    );
    let int = &e[1];
    assert!(
        int["subject"]
            .as_str()
            .is_some_and(|s| s.contains("tokenmail Net Intermediate 2")),
        "{int:#}"
    );
    assert_eq!(
        (int["source"].as_str(), int["status"].as_str()),
        (Some("crl"), Some("revoked")),
        "{int:#}"
    );
    assert_eq!(int["reason"], "cACompromise", "{int:#}");
    let time = int["revocation_time"].as_str().expect("time");
    assert!(detail(int).contains("/crl/root.crl"), "{int:#}");
    let check = revocation(&j);
    let reason = check["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("REVOKED: 'CN=tokenmail Net Intermediate 2' (serial ")
            && reason.contains(&format!("was revoked at {time} (reason cACompromise)")),
        "{check:#}"
    );
}

#[test]
fn ocsp_first_falls_back_to_the_crl_distribution_point() {
    let lab = Lab::new();
    let paths = ["/ocsp/fallback", "/crl/int.crl"];

    // the responder is down (a closed port): the CRL says good
    let cfg = lab.config("fb-down", "");
    let ((code, j), asked) = lab.counting(&paths, || lab.verify(&cfg, &HARD, "fb_down.eml"));
    assert_eq!(code, 0, "{j:#}");
    assert_eq!(asked, [0, 1]);
    let ee = &entries(&j)[0];
    assert_eq!(
        (ee["source"].as_str(), ee["status"].as_str()),
        (Some("crl"), Some("good")),
        "{ee:#}"
    );

    // the responder answers garbage, HTTP 500, or "unknown" (it has an empty database):
    // the CRL decides (revoked); with ocsp-only the OCSP failure is the status
    let unknown = "-index empty-index.txt -CA int.pem -rsigner int.pem -rkey int.key";
    for (i, (settings, why)) in [
        ("garbage", "not an OCSP response"),
        ("error", "HTTP 500"),
        (unknown, "does not know the certificate"),
    ]
    .into_iter()
    .enumerate()
    {
        lab.fallback_responder(settings);
        let cfg = lab.config(&format!("fb-{i}"), "");
        let ((code, j), asked) = lab.counting(&paths, || lab.verify(&cfg, &[], "fallback.eml"));
        assert_eq!(code, 1, "{settings}: {j:#}");
        assert_eq!(asked, [1, 1], "{settings}");
        let ee = &entries(&j)[0];
        assert_eq!(
            (ee["source"].as_str(), ee["status"].as_str()),
            (Some("crl"), Some("revoked")),
            "{settings}: {ee:#}"
        );
        assert_eq!(ee["reason"], "keyCompromise", "{ee:#}");

        let cfg = lab.config(
            &format!("fb-only-{i}"),
            "revocation_sources = \"ocsp-only\"",
        );
        let ((code, j), asked) = lab.counting(&paths, || lab.verify(&cfg, &HARD, "fallback.eml"));
        assert_eq!(code, 1, "{settings}: {j:#}");
        assert_eq!(asked, [1, 0], "{settings}: ocsp-only asks no CRL");
        let ee = &entries(&j)[0];
        assert_eq!(ee["status"], "unknown", "{settings}: {ee:#}");
        assert!(detail(ee).contains(why), "{settings}: {ee:#}");
        let (code, _) = lab.verify(&cfg, &[], "fallback.eml");
        assert_eq!(code, 0, "{settings}: soft-fail");
    }
}

#[test]
fn each_revocation_sources_value_asks_what_it_names() {
    let lab = Lab::new();
    // the end entity: OCSP /ocsp/fallback (the intermediate's responder), CRL /crl/int.crl;
    // the intermediate: OCSP /ocsp/root, CRL /crl/root.crl; both say revoked / good
    let paths = [
        "/ocsp/fallback",
        "/crl/int.crl",
        "/ocsp/root",
        "/crl/root.crl",
    ];
    for (sources, source, asked) in [
        ("ocsp-first", "ocsp", [1, 0, 1, 0]),
        ("crl-first", "crl", [0, 1, 0, 1]),
        ("ocsp-only", "ocsp", [1, 0, 1, 0]),
        ("crl-only", "crl", [0, 1, 0, 1]),
    ] {
        let cfg = lab.config(sources, &format!("revocation_sources = \"{sources}\""));
        let ((code, j), got) = lab.counting(&paths, || lab.verify(&cfg, &HARD, "fallback.eml"));
        assert_eq!(code, 1, "{sources}: {j:#}");
        assert_eq!(got, asked, "{sources}: requests for {paths:?}");
        let e = entries(&j);
        assert_eq!(
            (e[0]["source"].as_str(), e[0]["status"].as_str()),
            (Some(source), Some("revoked")),
            "{sources}: {:#}",
            e[0]
        );
        assert_eq!(e[0]["reason"], "keyCompromise", "{sources}");
        assert_eq!(
            (e[1]["source"].as_str(), e[1]["status"].as_str()),
            (Some(source), Some("good")),
            "{sources}: {:#}",
            e[1]
        );
    }

    // no CRL at the distribution point (404): crl-first falls back to OCSP, crl-only cannot
    std::fs::rename(lab.dir.join("int.crl"), lab.dir.join("int.crl.away")).expect("rename");
    let cfg = lab.config("crl-first-404", "revocation_sources = \"crl-first\"");
    let ((code, j), got) = lab.counting(&paths[..2], || lab.verify(&cfg, &HARD, "fallback.eml"));
    assert_eq!(code, 1, "{j:#}");
    assert_eq!(got, [1, 1]);
    let ee = &entries(&j)[0];
    assert_eq!(
        (ee["source"].as_str(), ee["status"].as_str()),
        (Some("ocsp"), Some("revoked")),
        "{ee:#}"
    );
    let cfg = lab.config("crl-only-404", "revocation_sources = \"crl-only\"");
    let ((code, j), got) = lab.counting(&paths[..2], || lab.verify(&cfg, &HARD, "fallback.eml"));
    assert_eq!(code, 1, "{j:#}");
    assert_eq!(got, [0, 1]);
    let ee = &entries(&j)[0];
    assert_eq!(ee["status"], "unknown", "{ee:#}");
    assert!(
        detail(ee).contains("/crl/int.crl") && detail(ee).contains("HTTP 404"),
        "{ee:#}"
    );
}

#[test]
fn cached_answers_save_requests_and_are_checked_again() {
    let lab = Lab::new();

    // OCSP answers (valid a day): the second verification asks nothing
    let cfg = lab.config("cache-ocsp", "");
    let ocsp = ["/ocsp/int", "/ocsp/root", "/crl/int.crl", "/crl/root.crl"];
    let ((code, j), asked) = lab.counting(&ocsp, || lab.verify(&cfg, &HARD, "good.eml"));
    assert_eq!(code, 0, "{j:#}");
    assert_eq!(asked, [1, 1, 0, 0]);
    let ((code, j), asked) = lab.counting(&ocsp, || lab.verify(&cfg, &HARD, "good.eml"));
    assert_eq!(code, 0, "{j:#}");
    assert_eq!(asked, [0, 0, 0, 0], "the cached OCSP answers are used");
    for e in entries(&j) {
        assert_eq!(e["status"], "good", "{e:#}");
        assert!(detail(&e).contains("cached answer"), "{e:#}");
    }
    // two days later the cached answers are past their nextUpdate: not used (no request
    // either: they are fresh by the clock), the CRLs (valid 30 days) decide
    let later = from_now(Duration::from_secs(2 * 86400));
    let ((code, j), asked) = lab.counting(&ocsp, || {
        lab.verify(
            &cfg,
            &["--revocation", "hard-fail", "--at", &later],
            "good.eml",
        )
    });
    assert_eq!(code, 0, "{j:#}");
    assert_eq!(asked, [0, 0, 1, 1]);
    for e in entries(&j) {
        assert_eq!(
            (e["source"].as_str(), e["status"].as_str()),
            (Some("crl"), Some("good")),
            "{e:#}"
        );
    }

    // CRLs (valid 30 days): the second verification asks nothing
    let cfg = lab.config("cache-crl", "revocation_sources = \"crl-only\"");
    let crls = ["/crl/int.crl", "/crl/root.crl", "/ocsp/int", "/ocsp/root"];
    let ((code, j), asked) = lab.counting(&crls, || lab.verify(&cfg, &HARD, "good.eml"));
    assert_eq!(code, 0, "{j:#}");
    assert_eq!(asked, [1, 1, 0, 0]);
    let ((code, j), asked) = lab.counting(&crls, || lab.verify(&cfg, &HARD, "crl_only.eml"));
    assert_eq!(code, 1, "revoked, from the cached CRL: {j:#}");
    assert_eq!(entries(&j)[0]["status"], "revoked", "{j:#}");
    assert_eq!(asked, [0, 0, 0, 0], "the cached CRLs are used");
    // 40 days later the cached CRLs are past their nextUpdate: unknown, hard-fail fails
    let later = from_now(Duration::from_secs(40 * 86400));
    let ((code, j), asked) = lab.counting(&crls, || {
        lab.verify(
            &cfg,
            &["--revocation", "hard-fail", "--at", &later],
            "good.eml",
        )
    });
    assert_eq!(code, 1, "{j:#}");
    assert_eq!(asked, [0, 0, 0, 0]);
    for e in entries(&j) {
        assert_eq!(e["status"], "unknown", "{e:#}");
        assert!(detail(&e).contains("out of date (nextUpdate"), "{e:#}");
    }
}

/// Sets proxy variables for the life of the guard (the caller holds [`ENV`]), restoring
/// what was there.
struct ProxyEnv(Vec<(&'static str, Option<std::ffi::OsString>)>);

const PROXY_VARS: [&str; 6] = [
    "http_proxy",
    "HTTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

impl ProxyEnv {
    fn set(vars: &[(&str, &str)]) -> ProxyEnv {
        let saved = PROXY_VARS
            .iter()
            .map(|v| (*v, std::env::var_os(v)))
            .collect();
        for v in PROXY_VARS {
            std::env::remove_var(v);
        }
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
        ProxyEnv(saved)
    }
}

impl Drop for ProxyEnv {
    fn drop(&mut self) {
        for (k, v) in &self.0 {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
    }
}

#[test]
fn the_proxy_from_the_environment_and_no_proxy() {
    let lab = Lab::new();
    let port = lab.port;
    // the loopback server is its own proxy: the log shows the form of each request
    let proxy = format!("http://127.0.0.1:{port}");
    let env = env_lock();
    {
        let _p = ProxyEnv::set(&[("http_proxy", &proxy)]);
        let cfg = lab.config("proxy-crl", "revocation_sources = \"crl-only\"");
        let (code, j) = lab.verify_locked(&cfg, &HARD, "good.eml");
        assert_eq!(code, 0, "{j:#}");
        let cfg = lab.config("proxy-ocsp", "revocation_sources = \"ocsp-only\"");
        let (code, j) = lab.verify_locked(&cfg, &HARD, "good.eml");
        assert_eq!(code, 0, "{j:#}");
    }
    let log = lab.log();
    for line in [
        format!("GET {proxy}/crl/int.crl"),
        format!("GET {proxy}/crl/root.crl"),
        format!("POST {proxy}/ocsp/int"),
        format!("POST {proxy}/ocsp/root"),
    ] {
        assert!(log.lines().any(|l| l == line), "{line} in\n{log}");
    }
    assert!(
        !log.lines().any(|l| l.contains(" /")),
        "every request went to the proxy:\n{log}"
    );

    // no_proxy / NO_PROXY naming 127.0.0.1 (among others): asked directly
    for (i, var) in ["no_proxy", "NO_PROXY"].into_iter().enumerate() {
        let _p = ProxyEnv::set(&[
            ("HTTP_PROXY", &proxy),
            (var, "ca.example, localhost,127.0.0.1"),
        ]);
        let cfg = lab.config(&format!("noproxy-{i}"), "revocation_sources = \"crl-only\"");
        let before = lab.requests("GET /crl/int.crl");
        let (code, j) = lab.verify_locked(&cfg, &HARD, "good.eml");
        assert_eq!(code, 0, "{var}: {j:#}");
        assert_eq!(
            lab.requests("GET /crl/int.crl"),
            before + 1,
            "{var}: direct"
        );
    }

    // a proxy that cannot be reached: the status is unknown, naming it (the server is up)
    {
        let _p = ProxyEnv::set(&[("http_proxy", "http://127.0.0.1:1")]);
        let cfg = lab.config("proxy-down", "revocation_sources = \"crl-only\"");
        let (code, j) = lab.verify_locked(&cfg, &HARD, "good.eml");
        assert_eq!(code, 1, "{j:#}");
        let ee = &entries(&j)[0];
        assert!(
            detail(ee).contains("cannot reach the proxy 127.0.0.1:1"),
            "{ee:#}"
        );
    }
    drop(env);
}

/// `tokenmail-gpgsm --verify` (as git runs it) checks revocation under `[trust]` as
/// `tokenmail verify` does: a revoked signer or intermediate is TRUST_NEVER and exit 1
/// with the reason on standard error; `--disable-crl-checks` turns the checks off.
#[test]
fn tokenmail_gpgsm_checks_revocation_for_git() {
    let lab = Lab::new();
    let dir = lab.dir.as_path();
    let cfg = lab.config("gpgsm", "");
    let payload = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\ncommit\n";
    std::fs::write(dir.join("payload"), payload).expect("payload");
    for (name, ca) in [("good", "int"), ("revoked", "int"), ("under_int2", "int2")] {
        let o = process::output(
            Command::new("openssl")
                .args([
                    "cms", "-sign", "-binary", "-outform", "DER", "-in", "payload",
                ])
                .args(["-signer", &format!("ee_{name}.pem")])
                .args(["-inkey", &format!("ee_{name}.key")])
                .args(["-certfile", &format!("{ca}.pem")])
                .args(["-out", &format!("{name}.sig")])
                .current_dir(dir),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let gpgsm = |sig: &str, extra: &[&str]| {
        let _env = env_lock();
        let mut c = Command::new(env!("CARGO_BIN_EXE_tokenmail-gpgsm"));
        c.args(["--status-fd=1"])
            .args(extra)
            .args(["--verify", sig, "-"])
            .current_dir(dir)
            .env("TOKENMAIL_CONFIG", &cfg)
            .env("TOKENMAIL_TRUST", dir.join("root.pem"))
            .env("XDG_CACHE_HOME", dir.join("xdg-cache"));
        for v in PROXY_VARS {
            c.env_remove(v);
        }
        let o = process::output_with_input(&mut c, payload);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };

    let (code, status, err) = gpgsm("good.sig", &[]);
    assert_eq!(code, Some(0), "{status}{err}");
    assert!(status.contains("[GNUPG:] TRUST_FULLY"), "{status}");
    let (code, status, err) = gpgsm("revoked.sig", &[]);
    assert_eq!(code, Some(1), "{status}{err}");
    assert!(
        status.contains("[GNUPG:] GOODSIG ") && status.contains("[GNUPG:] TRUST_NEVER"),
        "{status}"
    );
    assert!(
        err.contains("FAILED revocation: REVOKED: 'CN=Alice revoked'"),
        "{err}"
    );
    let (code, status, err) = gpgsm("under_int2.sig", &[]);
    assert_eq!(code, Some(1), "{status}{err}");
    assert!(status.contains("[GNUPG:] TRUST_NEVER"), "{status}");
    assert!(
        err.contains("FAILED revocation: REVOKED: 'CN=tokenmail Net Intermediate 2'"),
        "{err}"
    );
    // gpgsm's own switch: no revocation checks, and the report says so
    let (code, status, err) = gpgsm("revoked.sig", &["--disable-crl-checks"]);
    assert_eq!(code, Some(0), "{status}{err}");
    assert!(status.contains("[GNUPG:] TRUST_FULLY"), "{status}");
}

/// Delta CRLs named by freshestCRL (as AD CS publishes them between complete CRLs) are
/// fetched and applied: a certificate revoked since the complete CRL was issued is revoked
/// through the delta its complete CRL points at, its sibling is good; the same two CRLs
/// given offline with `--crl` agree with `openssl verify -crl_check -use_deltas`.
#[test]
fn delta_crls_named_by_freshest_crl_are_fetched_and_applied() {
    let lab = Lab::new();
    let dir = lab.dir.as_path();
    let cfg = lab.config("delta", "");
    let ((code, j), asked) = lab.counting(&["/crl/int3.crl", "/crl/int3-delta.crl"], || {
        lab.verify(&cfg, &[], "delta_revoked.eml")
    });
    assert_eq!(code, 1, "revoked on the delta CRL: {j:#}");
    assert_eq!(asked, [1, 1], "the complete CRL and its delta, once each");
    let e = entries(&j);
    assert_eq!(
        (e[0]["source"].as_str(), e[0]["status"].as_str()),
        (Some("crl"), Some("revoked")),
        "{:#}",
        e[0]
    );
    assert_eq!(e[0]["reason"], "keyCompromise", "{:#}", e[0]);
    assert!(detail(&e[0]).contains("int3-delta.crl"), "{:#}", e[0]);

    let (code, j) = lab.verify(&cfg, &HARD, "delta_good.eml");
    assert_eq!(code, 0, "good on the complete CRL and its delta: {j:#}");
    assert_eq!(entries(&j)[0]["status"], "good", "{j:#}");

    // offline, the same CRLs: we and openssl agree
    let offline = lab.config("delta-offline", "revocation_sources = \"crl-only\"");
    let int3 = dir.join("int3.crl").display().to_string();
    let delta = dir.join("int3-delta.crl").display().to_string();
    let (code, j) = lab.verify(
        &offline,
        &["--crl", &int3, "--crl", &delta],
        "delta_revoked.eml",
    );
    assert_eq!(code, 1, "{j:#}");
    assert_eq!(entries(&j)[0]["status"], "revoked", "{j:#}");
    for (ee, revoked) in [("ee_delta_revoked.pem", true), ("ee_delta_good.pem", false)] {
        let o = process::output(
            Command::new("openssl")
                .args(["verify", "-crl_check", "-use_deltas", "-CAfile", "root.pem"])
                .args(["-untrusted", "int3.pem", "-CRLfile", "int3.crl"])
                .args(["-CRLfile", "int3-delta.crl", ee])
                .current_dir(dir),
        );
        let out =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.success(), !revoked, "{ee}: {out}");
        assert_eq!(out.contains("certificate revoked"), revoked, "{ee}: {out}");
    }
}
