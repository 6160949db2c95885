//! Auto-start, as gpg-agent does it: when no agent answers on the socket and a
//! configuration file exists, `tokenmail`, `tokenmail-gpgsm` and the PKCS#11 module start
//! `tokenmail-agent --config FILE` themselves, wait (at most [`WAIT`]) for its socket, and
//! go on. `auto_start = false` in the file turns it off (docs/everyday.md).
//!
//! Started only when the agent would serve the very socket the client looks at: its
//! configuration's `socket`, else the default (`$TOKENMAIL_SOCK`, else
//! `$XDG_RUNTIME_DIR/tokenmail/agent.sock`, …), which it inherits. A `--socket` that names
//! another path starts nothing. At most one attempt per process: never a start loop.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The configuration file clients read: `$TOKENMAIL_CONFIG`, else
/// `$XDG_CONFIG_HOME/tokenmail/agent.toml`, else `~/.config/tokenmail/agent.toml`.
pub fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TOKENMAIL_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("tokenmail").join("agent.toml"))
}

/// `p` made absolute against the current directory.
pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// How long the client waits for the agent it started to listen.
pub const WAIT: Duration = Duration::from_secs(5);

static TRIED: AtomicBool = AtomicBool::new(false);

/// An agent was needed, auto-start applied, and starting it failed (the message says
/// what to do). Counts as "no agent" for exit statuses.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// What the configuration says about auto-start, for a client looking at `socket`.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Start `tokenmail-agent --config config`.
    Start {
        /// The configuration file (absolute).
        config: PathBuf,
    },
    /// Do not start one; why (for tests and `--verbose`-style notes).
    Skip(&'static str),
}

/// Decides whether to start an agent for a client that found none at `socket`
/// (`explicit`: named by `--socket`).
pub fn plan(socket: &Path, explicit: bool) -> Result<Plan, StartError> {
    let Some(config) = config_path().filter(|p| p.is_file()) else {
        return Ok(Plan::Skip("no configuration file"));
    };
    let config = absolute(&config);
    let text = std::fs::read_to_string(&config)
        .map_err(|e| StartError(format!("cannot read {}: {e}", config.display())))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| StartError(format!("{}: {}", config.display(), e.message())))?;
    match table.get("auto_start") {
        None => {}
        Some(toml::Value::Boolean(true)) => {}
        Some(toml::Value::Boolean(false)) => return Ok(Plan::Skip("auto_start = false")),
        Some(_) => {
            return Err(StartError(format!(
                "{}: auto_start must be true or false",
                config.display()
            )))
        }
    }
    // an agent with no token refuses to start: nothing to start
    let tokens = table
        .get("token")
        .and_then(toml::Value::as_array)
        .map_or(0, Vec::len);
    if tokens == 0 {
        return Ok(Plan::Skip("the configuration has no [[token]]"));
    }
    let configured = match table.get("socket") {
        Some(toml::Value::String(s)) => Some(absolute(Path::new(s))),
        Some(_) => {
            return Err(StartError(format!(
                "{}: socket must be a path (a string)",
                config.display()
            )))
        }
        None => None,
    };
    let agents = configured
        .clone()
        .unwrap_or_else(|| absolute(&crate::default_socket_path(nix::unistd::getuid().as_raw())));
    if explicit && configured.is_none() {
        return Ok(Plan::Skip(
            "--socket names a path; the configuration sets no socket",
        ));
    }
    if agents != absolute(socket) {
        return Ok(Plan::Skip(
            "the agent of the configuration would listen elsewhere",
        ));
    }
    Ok(Plan::Start { config })
}

/// `tokenmail-agent` next to the running executable, else on `$PATH`.
pub fn agent_program() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("tokenmail-agent")))
        .filter(|p| is_executable(p));
    beside.or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join("tokenmail-agent"))
            .find(|p| is_executable(p))
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// With no agent at `socket`: starts one when [`plan`] says so (once per process) and
/// waits until it answers. `Ok(true)`: an agent now listens there; `Ok(false)`: nothing
/// was started (auto-start does not apply), the caller keeps its "no agent" error.
pub fn start_if_configured(socket: &Path, explicit: bool) -> Result<bool, StartError> {
    start_for(socket, explicit, "tokenmail")
}

/// [`start_if_configured`] for the client named `who` (in the one line it prints).
pub fn start_for(socket: &Path, explicit: bool, who: &str) -> Result<bool, StartError> {
    if TRIED.swap(true, Ordering::SeqCst) {
        return Ok(false);
    }
    let config = match plan(socket, explicit)? {
        Plan::Start { config } => config,
        Plan::Skip(_) => return Ok(false),
    };
    let Some(program) = agent_program() else {
        return Err(StartError(format!(
            "no agent at {}, and tokenmail-agent is neither next to this program nor on PATH to start one from {}: install it, or set auto_start = false there",
            socket.display(),
            config.display()
        )));
    };
    let deadline = Instant::now() + WAIT;
    // Detached (the agent's default): its first process prints the export line and
    // exits once the agent listens, or says why it could not start.
    let mut child = Command::new(&program)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| StartError(format!("cannot run {}: {e}", program.display())))?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => break None,
        }
    };
    let answers = || std::os::unix::net::UnixStream::connect(socket).is_ok();
    let manual = format!(
        "{} --config {} --foreground",
        program.display(),
        config.display()
    );
    match status {
        Some(s) if s.success() => {
            while !answers() {
                if Instant::now() >= deadline {
                    return Err(StartError(format!(
                        "started tokenmail-agent from {}, but it does not listen on {} within {} s: run `{manual}` to see why",
                        config.display(),
                        socket.display(),
                        WAIT.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let said = collect(out);
            let pid = said
                .split("Agent pid ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default();
            eprintln!(
                "{who}: no agent was running: started tokenmail-agent{pid} from {} (auto_start = false there turns this off)",
                config.display()
            );
            Ok(true)
        }
        Some(_) => {
            // another client may have started one at the same moment
            if answers() {
                return Ok(true);
            }
            let text = collect(err);
            let why = text
                .lines()
                .map(|l| l.trim_start_matches("tokenmail-agent: "))
                .find(|l| !l.trim().is_empty() && !l.starts_with("warning: "))
                .unwrap_or("it exited without saying why")
                .to_string();
            Err(StartError(format!(
                "no agent was running, and starting one from {} failed: {why} (fix the configuration, or set auto_start = false there)",
                config.display()
            )))
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            if answers() {
                return Ok(true);
            }
            Err(StartError(format!(
                "tokenmail-agent started from {} did not get ready within {} s: run `{manual}` to see why",
                config.display(),
                WAIT.as_secs()
            )))
        }
    }
}

type Drained = Option<std::sync::mpsc::Receiver<Vec<u8>>>;

/// Reads a pipe to its end on a thread (the agent's pipes are small).
fn drain(pipe: Option<impl Read + Send + 'static>) -> Drained {
    let mut pipe = pipe?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    Some(rx)
}

/// What a drained pipe held (waits at most a second for its end).
fn collect(d: Drained) -> String {
    d.and_then(|rx| rx.recv_timeout(Duration::from_secs(1)).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test owns the process environment here (TOKENMAIL_CONFIG, TOKENMAIL_SOCK).
    #[test]
    fn the_plan_follows_the_configuration_and_the_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("agent.toml");
        let sock = dir.path().join("agent.sock");
        std::env::set_var("TOKENMAIL_CONFIG", &cfg);
        std::env::set_var("TOKENMAIL_SOCK", &sock);
        let plan_for = |text: &str, socket: &Path, explicit: bool| {
            std::fs::write(&cfg, text).expect("write");
            plan(socket, explicit)
        };
        let token = "[[token]]\nmodule = \"/m.so\"\nlabel = \"t\"\n";
        assert_eq!(
            plan_for(token, &sock, false).expect("plan"),
            Plan::Start {
                config: cfg.clone()
            }
        );
        assert_eq!(
            plan_for(&format!("auto_start = false\n{token}"), &sock, false).expect("plan"),
            Plan::Skip("auto_start = false")
        );
        assert!(plan_for(&format!("auto_start = 1\n{token}"), &sock, false).is_err());
        assert!(matches!(
            plan_for("[trust]\n", &sock, false).expect("plan"),
            Plan::Skip(_)
        ));
        // --socket naming another path: never
        let other = dir.path().join("other.sock");
        assert!(matches!(
            plan_for(token, &other, true).expect("plan"),
            Plan::Skip(_)
        ));
        // … unless the configuration's socket is that path
        let with_socket = format!("socket = {:?}\n{token}", other.display().to_string());
        assert!(matches!(
            plan_for(&with_socket, &other, true).expect("plan"),
            Plan::Start { .. }
        ));
        // the configuration's socket is not where the client looks
        assert!(matches!(
            plan_for(&with_socket, &sock, false).expect("plan"),
            Plan::Skip(_)
        ));
        std::fs::remove_file(&cfg).expect("rm");
        assert!(matches!(plan(&sock, false).expect("plan"), Plan::Skip(_)));
        std::env::remove_var("TOKENMAIL_CONFIG");
        std::env::remove_var("TOKENMAIL_SOCK");
    }
}
