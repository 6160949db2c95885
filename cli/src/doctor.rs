//! `tokenmail doctor`: checks the setup and says, for each problem, how to fix it.
//!
//! One line per check: `ok`, `info` (worth knowing, never a problem), `warn` or `fail`,
//! the check's name, what was found and, for a warning or a failure, the fix. Exit 0 when
//! nothing warned or failed, 1 with warnings, 2 with failures. `--json` prints the same
//! checks as one JSON document (docs/everyday.md).
//!
//! The CLI never links cryptoki or pcsc, so everything about tokens comes from the running
//! agent's `status`; the configuration file is read with the same rules as the agent's
//! (unknown keys are errors there), `[trust]` through the core's own `TrustConfig`.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokenmail_proto::v1::{AgentStatus, Request, Response};
use tokenmail_proto::ClientError;
use tokenmail_smime::path::CertEntry;
use tokenmail_smime::trust::TrustConfig;

/// `tokenmail doctor`
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct DoctorArgs {
    /// Machine-readable output: {"checks": [{"check", "status", "message", "fix"}], "summary", "exit"}.
    #[arg(long)]
    pub json: bool,
}

/// `tokenmail doctor --help` examples.
pub const EXAMPLES: &str = "\
Examples:
  tokenmail doctor                       # one line per check: ok, info, warn or fail, with the fix
  tokenmail doctor --json                # the same, for scripts
  tokenmail --socket /run/user/1000/tokenmail/agent.sock doctor
  tokenmail doctor || echo \"exit $?: 1 = warnings, 2 = failures\"

Checks: the agent (reachable, its version), the configuration file ($TOKENMAIL_CONFIG, else
~/.config/tokenmail/agent.toml), tokens (present, logged in, PIN tries), PIN file
permissions, certificates on the tokens (expired, or expiring within 30 days), trust
anchors, revocation and the CRL cache, pcscd (PIV cards only), git's gpg.x509.program.";

/// Certificates expiring within this are a warning.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long the agent may take to answer `status`, and git to answer.
const DEADLINE: Duration = Duration::from_secs(10);

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Worth knowing; not a problem (no effect on the exit status).
    Info,
    /// Works now, but something needs attention.
    Warn,
    /// Broken: something will not work until it is fixed.
    Fail,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Which check (`agent`, `config`, `token work`, `pin-file`, …).
    pub check: String,
    /// ok / info / warn / fail.
    pub status: Level,
    /// What was found.
    pub message: String,
    /// How to fix it (warnings and failures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(name: impl Into<String>, status: Level, message: impl Into<String>) -> Check {
    Check {
        check: name.into(),
        status,
        message: message.into(),
        fix: None,
    }
}

impl Check {
    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

/// The exit status for these checks: 2 with a failure, 1 with a warning, else 0.
pub fn exit_code(checks: &[Check]) -> i32 {
    match checks.iter().map(|c| c.status).max() {
        Some(Level::Fail) => 2,
        Some(Level::Warn) => 1,
        _ => 0,
    }
}

/// Runs every check; prints them; returns the exit status.
pub fn run(args: DoctorArgs, socket: Option<&Path>, out: &mut dyn std::io::Write) -> i32 {
    let checks = run_checks(socket);
    let code = exit_code(&checks);
    let _ = if args.json {
        writeln!(out, "{}", to_json(&checks, code))
    } else {
        // `out` is standard output: coloured words only at a terminal, never with NO_COLOR
        write!(
            out,
            "{}",
            to_text_coloured(&checks, crate::term::colour_stdout())
        )
    };
    code
}

/// The checks as lines: `fail  agent: no agent at … — fix: …`.
pub fn to_text(checks: &[Check]) -> String {
    to_text_coloured(checks, false)
}

/// [`to_text`], with the status words coloured when `colour`.
pub fn to_text_coloured(checks: &[Check], colour: bool) -> String {
    use crate::term::{paint, Tone};
    let mut s = String::new();
    for c in checks {
        let tone = match c.status {
            Level::Ok => Tone::Good,
            Level::Info => Tone::Quiet,
            Level::Warn => Tone::Warn,
            Level::Fail => Tone::Bad,
        };
        s.push_str(&format!(
            "{}  {}: {}",
            paint(&format!("{:<4}", c.status.word()), tone, colour),
            c.check,
            c.message
        ));
        if let Some(f) = &c.fix {
            s.push_str(" — fix: ");
            s.push_str(f);
        }
        s.push('\n');
    }
    s
}

/// The JSON document: the checks in order, the count of each status, the exit status.
#[derive(Debug, Serialize)]
struct Report<'a> {
    checks: &'a [Check],
    summary: Summary,
    exit: i32,
}

#[derive(Debug, Serialize)]
struct Summary {
    ok: usize,
    info: usize,
    warn: usize,
    fail: usize,
}

/// The checks as a JSON document.
pub fn to_json(checks: &[Check], exit: i32) -> String {
    let count = |l: Level| checks.iter().filter(|c| c.status == l).count();
    let report = Report {
        checks,
        summary: Summary {
            ok: count(Level::Ok),
            info: count(Level::Info),
            warn: count(Level::Warn),
            fail: count(Level::Fail),
        },
        exit,
    };
    serde_json::to_string_pretty(&report).unwrap_or_else(|_| "{}".into())
}

/// Every check, in the order a person would fix things.
pub fn run_checks(socket: Option<&Path>) -> Vec<Check> {
    let mut out = Vec::new();
    let config = check_config(&mut out);
    let status = check_agent(socket, config.as_ref(), &mut out);
    if let Some(s) = &status {
        check_tokens(&s.st, s.why.as_deref(), &mut out);
        check_token_certificates(&s.st, &mut out);
    }
    if let Some(cfg) = &config {
        check_pin_files(cfg, &mut out);
    }
    check_trust(config.as_ref(), &mut out);
    check_pcscd(config.as_ref(), status.as_ref().map(|s| &s.st), &mut out);
    check_git(&mut out);
    out
}

/// The parts of the configuration file the other checks use.
#[derive(Debug, Default)]
struct Config {
    path: PathBuf,
    trust: TrustConfig,
    pin_files: Vec<PathBuf>,
    piv: bool,
}

const TOP_KEYS: &[&str] = &[
    "socket",
    "auto_start",
    "log_file",
    "max_sessions",
    "max_spool",
    "pin",
    "token",
    "keys",
    "decrypt",
    "trust",
    "directory",
    "certs",
];
const PIN_KEYS: &[&str] = &["cache_ttl", "pinentry", "pinentry_timeout"];
const TOKEN_KEYS: &[&str] = &[
    "type", "name", "module", "label", "serial", "pin_file", "pin_env", "chain",
];
const KEYS_KEYS: &[&str] = &["prefer"];
const DECRYPT_KEYS: &[&str] = &["accept"];

fn unknown_keys(t: &toml::Table, known: &[&str], prefix: &str, into: &mut Vec<String>) {
    for k in t.keys() {
        if !known.contains(&k.as_str()) {
            into.push(format!("{prefix}{k}"));
        }
    }
}

/// The configuration file: present, TOML, no key the agent would refuse.
fn check_config(out: &mut Vec<Check>) -> Option<Config> {
    let named = std::env::var_os("TOKENMAIL_CONFIG").is_some_and(|v| !v.is_empty());
    let Some(path) = crate::store::config_path() else {
        out.push(check(
            "config",
            Level::Info,
            "no configuration file ($HOME is not set): flags only",
        ));
        return None;
    };
    if !path.exists() {
        if named {
            out.push(
                check(
                    "config",
                    Level::Fail,
                    format!(
                        "TOKENMAIL_CONFIG names {}, which does not exist",
                        path.display()
                    ),
                )
                .fix("create it (docs/configuration.md) or unset TOKENMAIL_CONFIG"),
            );
        } else {
            out.push(check(
                "config",
                Level::Info,
                format!(
                    "no configuration file at {} (the agent runs on flags; the CLI uses no [trust])",
                    path.display()
                ),
            ));
        }
        return None;
    }
    let fail = |msg: String| {
        check("config", Level::Fail, msg).fix(format!(
            "edit {} (keys and values: docs/configuration.md)",
            path.display()
        ))
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            out.push(fail(format!("cannot read {}: {e}", path.display())));
            return None;
        }
    };
    let table: toml::Table = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => {
            out.push(fail(format!(
                "{} is not valid TOML: {}",
                path.display(),
                e.message()
            )));
            return None;
        }
    };
    let mut cfg = Config {
        path: path.clone(),
        ..Config::default()
    };
    let mut unknown = Vec::new();
    let mut problems = Vec::new();
    unknown_keys(&table, TOP_KEYS, "", &mut unknown);
    for (name, keys) in [
        ("pin", PIN_KEYS),
        ("keys", KEYS_KEYS),
        ("decrypt", DECRYPT_KEYS),
    ] {
        match table.get(name) {
            None => {}
            Some(toml::Value::Table(t)) => unknown_keys(t, keys, &format!("{name}."), &mut unknown),
            Some(_) => problems.push(format!("{name} must be a table ([{name}])")),
        }
    }
    if let Some(a) = table
        .get("decrypt")
        .and_then(|d| d.get("accept"))
        .map(|a| a.as_str().unwrap_or(""))
    {
        if tokenmail_smime::pipeline::CipherPolicy::from_name(a).is_none() {
            problems.push(format!(
                "[decrypt] accept = {a:?}: use \"any\", \"aes\" or \"authenticated\""
            ));
        }
    }
    match table.get("token") {
        None => {}
        Some(toml::Value::Array(tokens)) => {
            for (i, t) in tokens.iter().enumerate() {
                let Some(t) = t.as_table() else {
                    problems.push("token must be written [[token]]".into());
                    continue;
                };
                unknown_keys(t, TOKEN_KEYS, &format!("token[{i}]."), &mut unknown);
                if let Some(p) = t.get("pin_file").and_then(|v| v.as_str()) {
                    cfg.pin_files.push(PathBuf::from(p));
                }
                if t.get("type").and_then(|v| v.as_str()) == Some("piv") {
                    cfg.piv = true;
                }
            }
        }
        Some(_) => problems.push("token must be written [[token]]".into()),
    }
    if let Some(t) = table.get("trust") {
        match t.clone().try_into::<TrustConfig>() {
            Ok(mut tc) => match tc.validate() {
                Ok(()) => {
                    if let Some(dir) = path.parent() {
                        tc.resolve_paths(dir);
                    }
                    cfg.trust = tc;
                }
                Err(e) => problems.push(e),
            },
            Err(e) => problems.push(format!("[trust]: {}", e.message())),
        }
    }
    if let Err(e) = crate::ldap::parse_directories(&table, path.parent()) {
        problems.push(e);
    }
    if let Err(e) = crate::certs::parse_certs_config(&table) {
        problems.push(e);
    }
    if !unknown.is_empty() {
        out.push(fail(format!(
            "{}: unknown key{} {} (the agent refuses to start with it)",
            path.display(),
            if unknown.len() == 1 { "" } else { "s" },
            unknown.join(", ")
        )));
        return Some(cfg);
    }
    if !problems.is_empty() {
        out.push(fail(format!("{}: {}", path.display(), problems.join("; "))));
        return Some(cfg);
    }
    out.push(check(
        "config",
        Level::Ok,
        format!("{} parses", path.display()),
    ));
    Some(cfg)
}

/// The agent's status, and why its first absent token is absent (its words).
#[derive(Debug)]
struct Status {
    st: AgentStatus,
    why: Option<String>,
}

/// The agent answers `status` (within [`DEADLINE`]) and runs this version.
fn check_agent(
    socket: Option<&Path>,
    config: Option<&Config>,
    out: &mut Vec<Check>,
) -> Option<Status> {
    let path = crate::agentkey::socket_path(socket);
    let (tx, rx) = std::sync::mpsc::channel();
    let for_thread = path.clone();
    // A wedged agent must not hang the doctor: the request runs on a thread with a deadline.
    std::thread::spawn(move || {
        let r =
            tokenmail_proto::Client::connect(&for_thread, "tokenmail-doctor").and_then(|mut c| {
                let resp = c.call(&Request::Status)?;
                // why an absent token is absent, in the agent's words (a wrong label)
                let why = match &resp {
                    Response::Status(st) => crate::agentkey::why_absent(&mut c, st),
                    _ => None,
                };
                Ok((resp, why))
            });
        let _ = tx.send(r);
    });
    let start_fix = match config {
        Some(c) => format!(
            "start it: eval \"$(tokenmail-agent --config {})\"",
            c.path.display()
        ),
        None => "start it: eval \"$(tokenmail-agent --pkcs11-module LIB.so --token-label LABEL)\" (tokenmail-agent --help)".into(),
    };
    match rx.recv_timeout(DEADLINE) {
        Err(_) => {
            out.push(
                check(
                    "agent",
                    Level::Fail,
                    format!(
                        "the agent at {} did not answer within {} s",
                        path.display(),
                        DEADLINE.as_secs()
                    ),
                )
                .fix("restart it (kill the old agent, then start it again)"),
            );
            None
        }
        Ok(Ok((Response::Status(st), why))) => {
            let ours = concat!("tokenmail-agent/", env!("CARGO_PKG_VERSION"));
            let version = st.agent_version.clone();
            if version != ours {
                out.push(
                    check(
                        "agent",
                        Level::Warn,
                        format!(
                            "{version} (protocol {}) at {}, but this tokenmail is {}",
                            st.protocol,
                            path.display(),
                            env!("CARGO_PKG_VERSION")
                        ),
                    )
                    .fix("restart the agent after an upgrade, so both are the same version"),
                );
            } else {
                out.push(check(
                    "agent",
                    Level::Ok,
                    format!("{version} (protocol {}) at {}", st.protocol, path.display()),
                ));
            }
            Some(Status { st, why })
        }
        Ok(Ok((other, _))) => {
            out.push(
                check(
                    "agent",
                    Level::Fail,
                    format!("unexpected answer to status: {other:?}"),
                )
                .fix("restart the agent; is the socket another program's?"),
            );
            None
        }
        Ok(Err(ClientError::NoAgent { path })) => {
            let msg = if std::fs::symlink_metadata(&path).is_ok() {
                format!(
                    "no agent listens on {} (a socket left by a stopped agent)",
                    path.display()
                )
            } else {
                format!("no agent at {}", path.display())
            };
            // not a problem when the clients start one themselves (auto_start)
            if let Ok(crate::autostart::Plan::Start { config }) =
                crate::autostart::plan(&path, socket.is_some())
            {
                out.push(check(
                    "agent",
                    Level::Info,
                    format!(
                        "{msg}; tokenmail and tokenmail-gpgsm start one from {} on first use (auto_start); `tokenmail status` starts it now",
                        config.display()
                    ),
                ));
                return None;
            }
            out.push(check("agent", Level::Fail, msg).fix(start_fix));
            None
        }
        Ok(Err(ClientError::NotASocket { path, what })) => {
            out.push(
                check(
                    "agent",
                    Level::Fail,
                    format!("{} is {what}, not a socket", path.display()),
                )
                .fix("point --socket / TOKENMAIL_SOCK at the agent's socket (tokenmail-agent prints it)"),
            );
            None
        }
        Ok(Err(e)) => {
            out.push(
                check("agent", Level::Fail, e.to_string())
                    .fix("check --socket / TOKENMAIL_SOCK, or restart the agent"),
            );
            None
        }
    }
}

/// Each token: present, logged in, PIN tries.
fn check_tokens(st: &AgentStatus, why_absent: Option<&str>, out: &mut Vec<Check>) {
    let mut why_absent = why_absent;
    if st.tokens.is_empty() {
        out.push(
            check("tokens", Level::Fail, "the agent has no token configured")
                .fix("start it with --pkcs11-module/--token-label, --piv, or [[token]] entries"),
        );
    }
    for t in &st.tokens {
        let name = format!("token {}", t.label);
        if !t.present {
            // the agent's reason is for the first absent token
            let msg = match why_absent.take() {
                Some(why) => why.to_string(),
                None => format!("absent ({})", t.backend),
            };
            out.push(check(&name, Level::Fail, msg).fix(
                "insert the card or token; check the label (`tokenmail status`) and the module path",
            ));
            continue;
        }
        let locked = t.pin_warnings.iter().any(|w| {
            let w = w.to_ascii_lowercase();
            w == "locked" || w.contains("blocked")
        });
        if locked {
            out.push(
                check(
                    &name,
                    Level::Fail,
                    format!("the PIN is blocked ({})", t.pin_warnings.join(", ")),
                )
                .fix("unblock it with the PUK or SO PIN (ykman piv access unblock-pin, pkcs11-tool --unlock-pin)"),
            );
            continue;
        }
        if !t.pin_warnings.is_empty() {
            let last = t
                .pin_warnings
                .iter()
                .any(|w| w == "final-try" || w.contains("1 PIN try"));
            out.push(
                check(
                    &name,
                    if last { Level::Fail } else { Level::Warn },
                    format!(
                        "present, PIN tries running out ({})",
                        t.pin_warnings.join(", ")
                    ),
                )
                .fix("type the PIN carefully at the next `tokenmail login`; check the PIN file's content"),
            );
            continue;
        }
        if t.logged_in {
            out.push(check(
                &name,
                Level::Ok,
                format!("present, logged in (PIN from {})", t.pin_source),
            ));
        } else if t.locked {
            out.push(
                check(&name, Level::Info, "present, locked by `tokenmail lock`")
                    .fix("tokenmail login"),
            );
        } else if matches!(t.pin_source.as_str(), "file" | "env") {
            out.push(
                check(
                    &name,
                    Level::Warn,
                    format!(
                        "present, not logged in although a PIN {} is configured",
                        t.pin_source
                    ),
                )
                .fix("check that PIN (the agent's log says why it was not used), then `tokenmail login --unattended`"),
            );
        } else {
            out.push(check(
                &name,
                Level::Ok,
                format!(
                    "present, not logged in (asked at the first use): {}",
                    tokenmail_proto::pin_required_message(&t.label)
                ),
            ));
        }
    }
}

/// A certificate's expiry: `None` when it is valid beyond the warning period.
fn expiry(c: &CertEntry, now: SystemTime) -> Option<(Level, String)> {
    if let Some(p) = c.validity_problem(now) {
        return Some((Level::Fail, p));
    }
    let na = c.cert.tbs_certificate().validity().not_after;
    let left = na.to_system_time().duration_since(now).unwrap_or_default();
    (left < EXPIRY_WARNING).then(|| {
        (
            Level::Warn,
            format!(
                "'{}' expires in {} days (notAfter {na})",
                c.subject(),
                left.as_secs() / 86400
            ),
        )
    })
}

/// The certificates of the keys on the tokens.
fn check_token_certificates(st: &AgentStatus, out: &mut Vec<Check>) {
    let now = SystemTime::now();
    let mut fine = 0;
    for k in &st.keys {
        let Some(cs) = &k.certificate else { continue };
        let Ok(c) = CertEntry::from_der(cs.der.0.clone()) else {
            continue;
        };
        match expiry(&c, now) {
            None => fine += 1,
            Some((level, msg)) => out.push(
                check(format!("certificate {}", k.label), level, msg).fix(
                    "renew it with your CA and import the new certificate onto the token (tokenmail piv import-cert, or pkcs11-tool --write-object)",
                ),
            ),
        }
    }
    if fine > 0 {
        out.push(check(
            "certificates",
            Level::Ok,
            format!(
                "{fine} certificate{} on the tokens valid for more than 30 days",
                if fine == 1 { "" } else { "s" }
            ),
        ));
    }
}

/// PIN files named in the configuration: present, this user's, not readable by others.
fn check_pin_files(cfg: &Config, out: &mut Vec<Check>) {
    let me = nix::unistd::getuid().as_raw();
    for f in &cfg.pin_files {
        let name = "pin-file";
        match std::fs::metadata(f) {
            Err(e) => out.push(
                check(name, Level::Fail, format!("{}: {e}", f.display()))
                    .fix("create it (the PIN on its first line, mode 0600) or correct pin_file"),
            ),
            Ok(m) if m.permissions().mode() & 0o077 != 0 => out.push(
                check(
                    name,
                    Level::Fail,
                    format!(
                        "{} is readable by others (mode {:04o})",
                        f.display(),
                        m.permissions().mode() & 0o7777
                    ),
                )
                .fix(format!("chmod 600 {}", f.display())),
            ),
            Ok(m) if m.uid() != me => out.push(
                check(
                    name,
                    Level::Fail,
                    format!("{} belongs to uid {}, not to you", f.display(), m.uid()),
                )
                .fix(format!("chown {me} {}", f.display())),
            ),
            Ok(_) => out.push(check(
                name,
                Level::Ok,
                format!("{} is private (0600)", f.display()),
            )),
        }
    }
}

/// Trust anchors (TOKENMAIL_TRUST, else [trust] anchors), revocation and the CRL cache.
fn check_trust(cfg: Option<&Config>, out: &mut Vec<Check>) {
    let default = TrustConfig::default();
    let trust = cfg.map(|c| &c.trust).unwrap_or(&default);
    let (paths, from) = match std::env::var_os("TOKENMAIL_TRUST") {
        Some(v) if !v.is_empty() => (
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect::<Vec<_>>(),
            "TOKENMAIL_TRUST".to_string(),
        ),
        _ => (
            trust.anchors.clone(),
            cfg.map(|c| format!("[trust] anchors in {}", c.path.display()))
                .unwrap_or_default(),
        ),
    };
    if paths.is_empty() {
        out.push(
            check(
                "trust",
                Level::Warn,
                "no trust anchors configured: verify needs --trust on every call",
            )
            .fix("add `anchors = [\"/path/to/root.pem\"]` under [trust] in the configuration, or set TOKENMAIL_TRUST"),
        );
    } else {
        let now = SystemTime::now();
        let mut fine = 0;
        for p in &paths {
            let certs = std::fs::read(p)
                .map_err(|e| e.to_string())
                .and_then(|d| CertEntry::from_pem_or_der(&d).map_err(|e| e.to_string()));
            match certs {
                Err(e) => out.push(
                    check(
                        "trust",
                        Level::Fail,
                        format!("anchor {} ({from}): {e}", p.display()),
                    )
                    .fix("point it at a readable PEM or DER certificate file"),
                ),
                Ok(certs) => {
                    for c in certs {
                        match expiry(&c, now) {
                            None => fine += 1,
                            Some((level, msg)) => out.push(
                                check("trust", level, format!("anchor in {}: {msg}", p.display()))
                                    .fix("replace it with the CA's current root certificate"),
                            ),
                        }
                    }
                }
            }
        }
        if fine > 0 {
            out.push(check(
                "trust",
                Level::Ok,
                format!(
                    "{fine} trust anchor{} from {from}",
                    if fine == 1 { "" } else { "s" }
                ),
            ));
        }
    }

    let mode = trust.revocation();
    let cache = trust
        .crl_cache
        .clone()
        .or_else(crate::netfetch::default_cache_dir);
    use tokenmail_smime::revocation::RevocationMode;
    if mode == RevocationMode::Off {
        out.push(check(
            "revocation",
            Level::Info,
            "off: revoked certificates are not noticed ([trust] revocation = \"off\")",
        ));
        return;
    }
    let Some(cache) = cache else {
        out.push(check(
            "revocation",
            Level::Info,
            format!(
                "{} ({}), no CRL cache (no $HOME or $XDG_CACHE_HOME): every check fetches",
                mode.name(),
                trust.revocation_sources().name()
            ),
        ));
        return;
    };
    match writable_dir(&cache) {
        Ok(()) => out.push(check(
            "revocation",
            Level::Ok,
            format!(
                "{} ({}), CRL cache {}",
                mode.name(),
                trust.revocation_sources().name(),
                cache.display()
            ),
        )),
        Err(e) => out.push(
            check(
                "revocation",
                Level::Warn,
                format!("CRL cache {} is not writable: {e}", cache.display()),
            )
            .fix("fix its permissions, or set [trust] crl_cache to a directory of yours"),
        ),
    }
}

/// `dir` is a writable directory, or could be created (its first existing ancestor is one).
fn writable_dir(dir: &Path) -> Result<(), String> {
    let mut p = dir;
    loop {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => {
                return nix::unistd::access(p, nix::unistd::AccessFlags::W_OK)
                    .map_err(|e| format!("{}: {e}", p.display()));
            }
            Ok(_) => return Err(format!("{} is not a directory", p.display())),
            Err(_) => match p.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => p = parent,
                _ => return Err("no existing parent directory".into()),
            },
        }
    }
}

/// pcscd, for PIV cards: its socket (`$PCSCLITE_CSOCK_NAME`, else /run/pcscd/pcscd.comm).
fn check_pcscd(cfg: Option<&Config>, st: Option<&AgentStatus>, out: &mut Vec<Check>) {
    let sock = std::env::var_os("PCSCLITE_CSOCK_NAME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/pcscd/pcscd.comm"));
    let running = std::fs::metadata(&sock).is_ok_and(|m| m.file_type().is_socket());
    let piv = cfg.is_some_and(|c| c.piv)
        || st.is_some_and(|s| s.tokens.iter().any(|t| t.backend.starts_with("piv")));
    if running {
        out.push(check(
            "pcscd",
            Level::Ok,
            format!("running ({})", sock.display()),
        ));
    } else if piv {
        out.push(
            check(
                "pcscd",
                Level::Warn,
                format!(
                    "not running (no {}), and a PIV card is configured",
                    sock.display()
                ),
            )
            .fix("start it: sudo systemctl enable --now pcscd.socket (package pcscd)"),
        );
    } else {
        out.push(check(
            "pcscd",
            Level::Info,
            format!(
                "not running (no {}): only PIV cards need it",
                sock.display()
            ),
        ));
    }
}

/// Runs `git ARGS` with a deadline; `None` when git is not installed.
fn git(args: &[&str]) -> Option<Result<std::process::Output, String>> {
    let child = Command::new("git")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(e.to_string())),
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return Some(child.wait_with_output().map_err(|e| e.to_string())),
            Ok(None) if start.elapsed() < DEADLINE => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Some(Err(format!(
                    "git did not answer within {} s",
                    DEADLINE.as_secs()
                )));
            }
            Err(e) => return Some(Err(e.to_string())),
        }
    }
}

fn git_value(key: &str) -> Option<Result<Option<String>, String>> {
    git(&["config", "--global", "--get", key]).map(|r| {
        r.map(|o| {
            let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
            (o.status.success() && !v.is_empty()).then_some(v)
        })
    })
}

/// git: `gpg.x509.program` names tokenmail-gpgsm and `gpg.format` is x509.
fn check_git(out: &mut Vec<Check>) {
    let fix = "git config --global gpg.format x509; git config --global gpg.x509.program tokenmail-gpgsm (docs/git.md)";
    let program = match git_value("gpg.x509.program") {
        None => {
            out.push(check("git", Level::Info, "git is not installed: skipped"));
            return;
        }
        Some(Err(e)) => {
            out.push(check("git", Level::Warn, e).fix("check git"));
            return;
        }
        Some(Ok(v)) => v,
    };
    let format = git_value("gpg.format").and_then(Result::ok).flatten();
    match program {
        None => out.push(
            check(
                "git",
                Level::Info,
                "git does not sign with tokenmail (gpg.x509.program is not set)",
            )
            .fix(fix),
        ),
        Some(p) if !p.ends_with("tokenmail-gpgsm") => out.push(
            check(
                "git",
                Level::Warn,
                format!("gpg.x509.program is {p:?}, not tokenmail-gpgsm"),
            )
            .fix(fix),
        ),
        Some(p) if format.as_deref() != Some("x509") => out.push(
            check(
                "git",
                Level::Warn,
                format!(
                    "gpg.x509.program is {p}, but gpg.format is {} (git then uses gpg)",
                    format.as_deref().unwrap_or("unset")
                ),
            )
            .fix("git config --global gpg.format x509"),
        ),
        Some(p) => out.push(check(
            "git",
            Level::Ok,
            format!("gpg.format x509, gpg.x509.program {p}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_worst_check() {
        let ok = check("a", Level::Ok, "fine");
        let info = check("b", Level::Info, "fyi");
        let warn = check("c", Level::Warn, "hm").fix("do x");
        let fail = check("d", Level::Fail, "broken").fix("do y");
        assert_eq!(exit_code(&[ok.clone(), info.clone()]), 0);
        assert_eq!(exit_code(&[ok.clone(), warn.clone(), info]), 1);
        assert_eq!(exit_code(&[warn, fail.clone(), ok]), 2);
        let text = to_text(&[fail]);
        assert_eq!(text, "fail  d: broken — fix: do y\n");
    }

    #[test]
    fn a_missing_directory_is_writable_when_its_parent_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(writable_dir(&dir.path().join("a/b/c")).is_ok());
        let file = dir.path().join("f");
        std::fs::write(&file, b"").expect("write");
        assert!(writable_dir(&file.join("sub")).is_err());
    }
}
