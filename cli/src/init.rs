//! `tokenmail init`: the first run. Finds the PKCS#11 modules in the usual places, the
//! tokens they have and the smart-card readers, asks which token to use (or takes it from
//! flags), writes the configuration file, and offers the git and NeoMutt settings.
//!
//! The CLI never links cryptoki or pcsc: tokens are listed by OpenSC's `pkcs11-tool
//! --list-slots` and readers by `opensc-tool -l`, each with a deadline; without them
//! init says what it could not see and still writes the file from what it is told.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

/// `tokenmail init`
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct InitArgs {
    /// Ask nothing (CI, scripts): the token comes from --module and --token-label.
    #[arg(long)]
    pub non_interactive: bool,
    /// PKCS#11 module of the token, e.g. /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so.
    #[arg(long, value_name = "LIB.so")]
    pub module: Option<PathBuf>,
    /// Label of the token (`pkcs11-tool --module LIB.so --list-slots` shows it).
    #[arg(long, value_name = "LABEL")]
    pub token_label: Option<String>,
    /// File holding the token's user PIN (first line, mode 0600), for an agent that logs
    /// in by itself; without it the PIN is asked when a key is first used.
    #[arg(long, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
    /// Your email address, for git's user.signingkey and NeoMutt's smime_default_key
    /// (default: git's user.email).
    #[arg(long, value_name = "ADDRESS")]
    pub email: Option<String>,
    /// The token is a PIV card (YubiKey, other PIV smart cards) used through its PIV
    /// applet over PC/SC, instead of a PKCS#11 module.
    #[arg(long, conflicts_with_all = ["module", "token_label"])]
    pub piv: bool,
    /// With --piv: the card's serial number (needed when several PIV cards may be present).
    #[arg(long, value_name = "SERIAL", conflicts_with_all = ["module", "token_label"])]
    pub piv_serial: Option<String>,
    /// Replace an existing configuration file.
    #[arg(long)]
    pub force: bool,
    /// Apply the git settings with `git config --global` (otherwise they are printed).
    #[arg(long)]
    pub git: bool,
    /// A JSON summary on standard output instead of the text.
    #[arg(long)]
    pub json: bool,
}

/// `tokenmail init --help` examples.
pub const EXAMPLES: &str = "\
Examples:
  tokenmail init                         # detect, ask, write ~/.config/tokenmail/agent.toml
  tokenmail init --git                   # and set git's gpg.format, gpg.x509.program, user.signingkey
  tokenmail init --non-interactive --module /usr/lib/softhsm/libsofthsm2.so --token-label ci --pin-file pin --json
  tokenmail init --non-interactive --module /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so --token-label work --force
  TOKENMAIL_CONFIG=./agent.toml tokenmail init --non-interactive --module ./libsofthsm2.so --token-label test
  tokenmail init --non-interactive --piv --piv-serial 12345678 --email alice@example.com   # a YubiKey

The file is $TOKENMAIL_CONFIG, else ~/.config/tokenmail/agent.toml (0600), the one read by
the agent, the CLI and tokenmail-gpgsm; an existing one is kept unless --force. Tokens are
listed with pkcs11-tool and readers with opensc-tool (package opensc) when installed.";

/// How long one detection tool may run.
const TOOL_DEADLINE: Duration = Duration::from_secs(10);

/// The NeoMutt settings documented in docs/neomutt.md (one file for both).
const NEOMUTT_RC: &str = include_str!("../../docs/examples/neomuttrc");

/// Where PKCS#11 modules live: Debian/Ubuntu (multiarch), Fedora/RHEL, macOS
/// (OpenSC installer, Homebrew). The same module is listed once (links followed).
fn module_candidates() -> Vec<PathBuf> {
    let names = [
        "opensc-pkcs11.so",
        "libsofthsm2.so",
        "libykcs11.so",
        "libykcs11.so.2",
        "p11-kit-proxy.so",
    ];
    // the documented paths first (Debian's /usr/lib/softhsm/libsofthsm2.so is a link
    // into the multiarch directory, and the name people know)
    let mut dirs: Vec<PathBuf> = [
        "/usr/lib/softhsm",
        "/usr/lib/pkcs11",
        "/usr/lib64/pkcs11",
        "/usr/lib64/softhsm",
        "/usr/lib64",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        let mut multi: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with("-linux-gnu"))
            })
            .collect();
        multi.sort();
        for m in multi {
            dirs.push(m.clone());
            dirs.push(m.join("pkcs11"));
            dirs.push(m.join("softhsm"));
        }
    }
    for d in [
        "/usr/lib",
        "/usr/local/lib/softhsm",
        "/usr/local/lib",
        "/Library/OpenSC/lib",
        "/opt/homebrew/lib/softhsm",
        "/opt/homebrew/lib",
    ] {
        dirs.push(PathBuf::from(d));
    }
    let mut out = Vec::new();
    for name in names {
        for d in &dirs {
            out.push(d.join(name));
        }
        if let Some(stem) = name.strip_suffix(".so") {
            out.push(PathBuf::from(format!("/usr/local/lib/{stem}.dylib")));
            out.push(PathBuf::from(format!("/opt/homebrew/lib/{stem}.dylib")));
        }
    }
    out
}

/// The PKCS#11 modules present, each once.
pub fn detect_modules() -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    module_candidates()
        .into_iter()
        .filter(|p| p.is_file())
        .filter(|p| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())))
        .collect()
}

/// A token a module has.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Token {
    /// The module.
    pub module: PathBuf,
    /// Its label.
    pub label: String,
    /// Its serial number.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub serial: String,
    /// Its model (`SoftHSM v2`, `PKCS#15 emulated`…).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub model: String,
}

/// Runs a tool with a deadline; its stdout when it ran (whatever its status), `None` when
/// it is not installed or did not finish in time (it is killed then).
fn run_tool(program: &str, args: &[&std::ffi::OsStr]) -> Option<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut pipe = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    let t = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if t.elapsed() < TOOL_DEADLINE => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let out = rx.recv_timeout(Duration::from_secs(2)).ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The initialized tokens in `pkcs11-tool --list-slots` output.
pub fn parse_slots(module: &Path, text: &str) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::new();
    let mut cur: Option<Token> = None;
    for line in text.lines() {
        if line.starts_with("Slot ") {
            out.extend(cur.take());
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim().to_string());
        match k {
            "token label" => {
                out.extend(cur.take());
                cur = Some(Token {
                    module: module.to_path_buf(),
                    label: v,
                    serial: String::new(),
                    model: String::new(),
                });
            }
            "serial num" => {
                if let Some(t) = cur.as_mut() {
                    t.serial = v;
                }
            }
            "token model" => {
                if let Some(t) = cur.as_mut() {
                    t.model = v;
                }
            }
            _ => {}
        }
    }
    out.extend(cur);
    out
}

/// What was found.
#[derive(Debug, Default, Serialize)]
pub struct Detected {
    /// PKCS#11 modules present.
    pub modules: Vec<PathBuf>,
    /// Their tokens (`None`: pkcs11-tool is not installed).
    pub tokens: Option<Vec<Token>>,
    /// Smart-card readers (`None`: opensc-tool is not installed).
    pub readers: Option<Vec<String>>,
}

/// The readers in `opensc-tool -l` output (`Nr. Card Features Name` table).
pub fn parse_readers(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // Nr, Card (Yes/No), then the features (maybe none), then the name
            let card = cols.get(1).copied().unwrap_or("");
            let name = l
                .split_once(card)
                .map(|(_, rest)| rest.trim())
                .unwrap_or(l.trim())
                .to_string();
            if card == "Yes" {
                format!("{name} (card present)")
            } else {
                name
            }
        })
        .collect()
}

/// Looks at modules, tokens and readers.
pub fn detect() -> Detected {
    let modules = detect_modules();
    let tokens = if which("pkcs11-tool") {
        let mut all = Vec::new();
        for m in &modules {
            if let Some(text) = run_tool(
                "pkcs11-tool",
                &["--module".as_ref(), m.as_os_str(), "--list-slots".as_ref()],
            ) {
                all.extend(parse_slots(m, &text));
            }
        }
        Some(all)
    } else {
        None
    };
    let readers = run_tool("opensc-tool", &["-l".as_ref()]).map(|t| parse_readers(&t));
    Detected {
        modules,
        tokens,
        readers,
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// The configuration file's text: the token, and the settings worth knowing, commented.
pub fn config_text(module: &Path, label: &str, pin_file: Option<&Path>) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut t = String::new();
    t.push_str(
        "# tokenmail configuration, written by `tokenmail init`. Read by tokenmail-agent\n\
         # (--config), tokenmail and tokenmail-gpgsm; every key: docs/configuration.md.\n\n\
         # tokenmail and tokenmail-gpgsm start the agent from this file when none is running;\n\
         # set to false to start it yourself (or through systemd: docs/everyday.md).\n\
         # auto_start = true\n\n\
         # The agent's socket (default: $XDG_RUNTIME_DIR/tokenmail/agent.sock).\n\
         # socket = \"/run/user/1000/tokenmail/agent.sock\"\n\n\
         [pin]\n\
         # Seconds a PIN you type stays cached; 0 = until `tokenmail lock`.\n\
         cache_ttl = 3600\n\n\
         # The token holding your keys: its PKCS#11 module and its label.\n\
         [[token]]\n",
    );
    t.push_str(&format!(
        "module = {}\nlabel = {}\n",
        q(&module.display().to_string()),
        q(label)
    ));
    match pin_file {
        Some(p) => t.push_str(&format!(
            "# The PIN, read by the agent at start (keep the file 0600).\npin_file = {}\n",
            q(&p.display().to_string())
        )),
        None => t.push_str(
            "# No PIN file: the PIN is asked when a key is first used (`tokenmail login`,\n\
             # or pinentry for git and mail clients). To log in unattended:\n\
             # pin_file = \"/home/you/.config/tokenmail/pin\"\n",
        ),
    }
    t.push_str(
        "\n# Trust anchors for `tokenmail verify`, `decrypt` and tokenmail-gpgsm:\n\
         # [trust]\n\
         # anchors = [\"/etc/tokenmail/root.pem\"]\n",
    );
    t
}

/// The configuration file's text for a PIV card (through its applet over PC/SC).
pub fn config_text_piv(serial: Option<&str>, pin_file: Option<&Path>) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let base = config_text(Path::new("/"), "", pin_file);
    let (head, tail) = base
        .split_once("# The token holding your keys")
        .unwrap_or((base.as_str(), ""));
    let rest = tail
        .split_once("label = \"\"\n")
        .map(|(_, r)| r)
        .unwrap_or("");
    let mut t = head.to_string();
    t.push_str(
        "# The PIV card holding your keys (YubiKey…), through its PIV applet (PC/SC, pcscd).\n\
         [[token]]\n\
         type = \"piv\"\n",
    );
    match serial {
        Some(sn) => t.push_str(&format!("serial = {}\n", q(sn))),
        None => t.push_str(
            "# The card's serial (`tokenmail piv status`); needed with several PIV cards:\n\
             # serial = \"12345678\"\n",
        ),
    }
    t.push_str(rest);
    t
}

/// Writes `text` to `path` as 0600 (its directory made 0700 when missing), through a
/// temporary file renamed over it.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("config"),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let written = f.write_all(text.as_bytes()).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow!("cannot write {}: {e}", tmp.display()));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow!("cannot write {}: {e}", path.display())
    })
}

/// `git config --global KEY` (with a deadline), if set.
fn git_get(key: &str) -> Option<String> {
    run_tool(
        "git",
        &[
            "config".as_ref(),
            "--global".as_ref(),
            "--get".as_ref(),
            key.as_ref(),
        ],
    )
    .map(|s| s.trim().to_string())
    .filter(|s| !s.is_empty())
}

/// The value for `gpg.x509.program`: `tokenmail-gpgsm` when $PATH finds it, else the
/// full path of the one beside this program.
fn gpgsm_program() -> String {
    if which("tokenmail-gpgsm") {
        return "tokenmail-gpgsm".into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("tokenmail-gpgsm")))
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "tokenmail-gpgsm".into())
}

/// The git settings, in order.
fn git_settings(email: Option<&str>) -> Vec<(&'static str, String)> {
    let mut s = vec![
        ("gpg.format", "x509".to_string()),
        ("gpg.x509.program", gpgsm_program()),
    ];
    if let Some(e) = email {
        s.push(("user.signingkey", e.to_string()));
    }
    s
}

/// The NeoMutt lines (docs/examples/neomuttrc without its comments), for `email`.
pub fn neomutt_lines(email: Option<&str>) -> Vec<String> {
    NEOMUTT_RC
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| match email {
            Some(e) => l.replace("you@example.org", e),
            None => l.to_string(),
        })
        .collect()
}

/// The JSON summary.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    config: &'a Path,
    /// PKCS#11: the module and the token label.
    #[serde(skip_serializing_if = "Option::is_none")]
    module: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_label: Option<&'a str>,
    /// A PIV card: `{"serial": …}` (null serial: the only card present).
    #[serde(skip_serializing_if = "Option::is_none")]
    piv: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin_file: Option<&'a Path>,
    email: Option<&'a str>,
    detected: &'a Detected,
    git: GitSummary,
    neomutt: Vec<String>,
    warnings: &'a [String],
}

#[derive(Debug, Serialize)]
struct GitSummary {
    applied: bool,
    settings: std::collections::BTreeMap<String, String>,
}

/// Line-based questions on the terminal (prompts on stderr).
struct Ask<'a> {
    input: &'a mut dyn BufRead,
}

impl Ask<'_> {
    fn line(&mut self, prompt: &str) -> Result<String> {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        let mut s = String::new();
        if self.input.read_line(&mut s)? == 0 {
            bail!("no answer (end of input): run `tokenmail init` again, or use --non-interactive");
        }
        Ok(s.trim().to_string())
    }

    fn yes(&mut self, prompt: &str) -> Result<bool> {
        Ok(matches!(
            self.line(prompt)?.to_ascii_lowercase().as_str(),
            "y" | "yes"
        ))
    }
}

/// The choices made, interactively or from flags.
struct Choice {
    /// `Some(serial)`: a PIV card (module and label unused).
    piv: Option<Option<String>>,
    module: PathBuf,
    label: String,
    pin_file: Option<PathBuf>,
    email: Option<String>,
    git: bool,
}

fn choose_interactively(args: &InitArgs, found: &Detected, ask: &mut Ask) -> Result<Choice> {
    let tokens = found.tokens.clone().unwrap_or_default();
    eprintln!("PKCS#11 modules found:");
    if found.modules.is_empty() {
        eprintln!("  none in the usual places");
    }
    for m in &found.modules {
        eprintln!("  {}", m.display());
    }
    match &found.readers {
        None => eprintln!("Smart-card readers: cannot tell (opensc-tool is not installed)"),
        Some(r) if r.is_empty() => eprintln!("Smart-card readers: none (is pcscd running?)"),
        Some(r) => {
            eprintln!("Smart-card readers:");
            for r in r {
                eprintln!("  {r}");
            }
        }
    }
    let readers = found.readers.clone().unwrap_or_default();
    let piv = if args.piv || args.piv_serial.is_some() {
        Some(args.piv_serial.clone())
    } else if args.module.is_none()
        && !readers.is_empty()
        && ask.yes("Is your key a PIV card (YubiKey…) in one of these readers? [y/N] ")?
    {
        let sn = ask.line("The card's serial (empty: the only PIV card present): ")?;
        Some((!sn.is_empty()).then_some(sn))
    } else {
        None
    };
    let (module, label) = if piv.is_some() {
        (PathBuf::new(), String::new())
    } else if let (Some(m), Some(l)) = (&args.module, &args.token_label) {
        (m.clone(), l.clone())
    } else if tokens.is_empty() {
        if found.tokens.is_none() {
            eprintln!("Tokens: cannot list them (pkcs11-tool, package opensc, is not installed)");
        } else {
            eprintln!("Tokens: none found (insert your card or key, or give the module and label)");
        }
        let m = match &args.module {
            Some(m) => m.clone(),
            None => PathBuf::from(ask.line("PKCS#11 module (path): ")?),
        };
        let l = match &args.token_label {
            Some(l) => l.clone(),
            None => ask.line("Token label: ")?,
        };
        (m, l)
    } else {
        eprintln!("Tokens:");
        for (i, t) in tokens.iter().enumerate() {
            let model = if t.model.is_empty() {
                String::new()
            } else {
                format!(", {}", t.model)
            };
            eprintln!(
                "  {}) {:?} ({}{model}) in {}",
                i + 1,
                t.label,
                if t.serial.is_empty() {
                    "no serial"
                } else {
                    &t.serial
                },
                t.module.display()
            );
        }
        loop {
            let a = ask.line(&format!(
                "Token to use (1-{}, or its label) [1]: ",
                tokens.len()
            ))?;
            let pick = if a.is_empty() {
                tokens.first()
            } else if let Ok(n) = a.parse::<usize>() {
                n.checked_sub(1).and_then(|i| tokens.get(i))
            } else {
                tokens.iter().find(|t| t.label == a)
            };
            match pick {
                Some(t) => break (t.module.clone(), t.label.clone()),
                None => eprintln!("  not one of the tokens listed"),
            }
        }
    };
    let pin_file = match &args.pin_file {
        Some(p) => Some(p.clone()),
        None => {
            let a = ask.line("PIN file (empty: ask for the PIN when a key is first used): ")?;
            (!a.is_empty()).then(|| PathBuf::from(a))
        }
    };
    let default_email = args.email.clone().or_else(|| git_get("user.email"));
    let email = {
        let shown = default_email.as_deref().unwrap_or("none");
        let a = ask.line(&format!(
            "Your email address, for git's user.signingkey and NeoMutt [{shown}]: "
        ))?;
        if a.is_empty() {
            default_email
        } else {
            Some(a)
        }
    };
    let git =
        args.git || ask.yes("Set git to sign with tokenmail (git config --global)? [y/N] ")?;
    Ok(Choice {
        piv,
        module,
        label,
        pin_file,
        email,
        git,
    })
}

/// Runs `tokenmail init`; writes the summary to `out`.
pub fn run(args: InitArgs, out: &mut dyn Write) -> Result<i32> {
    let path = crate::store::config_path().ok_or_else(|| {
        anyhow!("no home directory (HOME unset): name the file with TOKENMAIL_CONFIG=PATH")
    })?;
    if path.exists() && !args.force {
        bail!(
            "{} exists; keep it, or run `tokenmail init --force` to replace it",
            path.display()
        );
    }
    let interactive = !args.non_interactive;
    let piv_flag = args.piv || args.piv_serial.is_some();
    if interactive
        && !std::io::stdin().is_terminal()
        && !piv_flag
        && (args.module.is_none() || args.token_label.is_none())
    {
        bail!("no terminal to ask on: pass --non-interactive --module LIB.so --token-label LABEL (or --piv for a PIV card)");
    }
    let found = detect();
    let choice = if interactive && std::io::stdin().is_terminal() {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        choose_interactively(&args, &found, &mut Ask { input: &mut lock })?
    } else if piv_flag {
        Choice {
            piv: Some(args.piv_serial.clone()),
            module: PathBuf::new(),
            label: String::new(),
            pin_file: args.pin_file.clone(),
            email: args.email.clone().or_else(|| git_get("user.email")),
            git: args.git,
        }
    } else {
        let (Some(module), Some(label)) = (&args.module, &args.token_label) else {
            let seen: Vec<String> = found
                .tokens
                .iter()
                .flatten()
                .map(|t| {
                    format!(
                        "--module {} --token-label {:?}",
                        t.module.display(),
                        t.label
                    )
                })
                .collect();
            bail!(
                "--non-interactive needs --module LIB.so and --token-label LABEL{}",
                if seen.is_empty() {
                    String::new()
                } else {
                    format!(" (found: {})", seen.join("; "))
                }
            );
        };
        Choice {
            piv: None,
            module: module.clone(),
            label: label.clone(),
            pin_file: args.pin_file.clone(),
            email: args.email.clone().or_else(|| git_get("user.email")),
            git: args.git,
        }
    };
    let abs = |p: &Path| crate::store::absolute(p);
    let module = abs(&choice.module);
    if choice.piv.is_none() && !module.is_file() {
        bail!(
            "the PKCS#11 module {} does not exist: give the path of the .so file (tokenmail init lists the ones it finds)",
            module.display()
        );
    }
    let mut warnings = Vec::new();
    if let (None, Some(tokens)) = (&choice.piv, &found.tokens) {
        let same = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let here: Vec<&Token> = tokens
            .iter()
            .filter(|t| same(&t.module) == same(&module))
            .collect();
        if !here.iter().any(|t| t.label == choice.label) {
            warnings.push(format!(
                "token {:?} is not in {} now{}; the agent waits for it",
                choice.label,
                module.display(),
                if here.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (it has {})",
                        here.iter()
                            .map(|t| format!("{:?}", t.label))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ));
        }
    }
    let pin_file = choice.pin_file.as_deref().map(abs);
    if let Some(p) = &pin_file {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(p) {
            Err(_) => bail!(
                "the PIN file {} does not exist: write the PIN into it (chmod 600) first",
                p.display()
            ),
            Ok(m) if m.permissions().mode() & 0o077 != 0 => warnings.push(format!(
                "the PIN file {} is readable by others: chmod 600 {}",
                p.display(),
                p.display()
            )),
            Ok(_) => {}
        }
    }
    let text = match &choice.piv {
        Some(serial) => config_text_piv(serial.as_deref(), pin_file.as_deref()),
        None => config_text(&module, &choice.label, pin_file.as_deref()),
    };
    write_private(&path, &text)?;

    let settings = git_settings(choice.email.as_deref());
    if choice.email.is_none() {
        warnings.push(
            "no email address (--email, or git's user.email): user.signingkey and NeoMutt's smime_default_key are left for you to set"
                .into(),
        );
    }
    let mut applied = false;
    if choice.git {
        for (k, v) in &settings {
            let ok = run_git_set(k, v);
            if !ok {
                bail!(
                    "wrote {}, but `git config --global {k} {v}` failed: run it yourself",
                    path.display()
                );
            }
        }
        applied = true;
    }
    let neomutt = neomutt_lines(choice.email.as_deref());
    if args.json {
        let summary = Summary {
            config: &path,
            module: choice.piv.is_none().then_some(module.as_path()),
            token_label: choice.piv.is_none().then_some(choice.label.as_str()),
            piv: choice
                .piv
                .as_ref()
                .map(|sn| serde_json::json!({ "serial": sn })),
            pin_file: pin_file.as_deref(),
            email: choice.email.as_deref(),
            detected: &found,
            git: GitSummary {
                applied,
                settings: settings
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            },
            neomutt,
            warnings: &warnings,
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
        return Ok(0);
    }
    for w in &warnings {
        eprintln!("tokenmail init: warning: {w}");
    }
    match &choice.piv {
        Some(sn) => writeln!(
            out,
            "wrote {} (the PIV card{} through PC/SC)",
            path.display(),
            sn.as_ref()
                .map(|s| format!(" with serial {s}"))
                .unwrap_or_default()
        )?,
        None => writeln!(
            out,
            "wrote {} (token {:?} in {})",
            path.display(),
            choice.label,
            module.display()
        )?,
    }
    writeln!(out)?;
    if applied {
        writeln!(
            out,
            "git is set to sign with tokenmail (git config --global):"
        )?;
        for (k, v) in &settings {
            writeln!(out, "  {k} = {v}")?;
        }
    } else {
        writeln!(out, "git (run these, or `tokenmail init --force --git`):")?;
        for (k, v) in &settings {
            writeln!(out, "  git config --global {k} {}", shell_quote(v))?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "NeoMutt (in ~/.neomuttrc; docs/neomutt.md explains the certificate store):"
    )?;
    for l in &neomutt {
        writeln!(out, "  {l}")?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "Next: `tokenmail status` (it starts the agent from this file), `tokenmail doctor`."
    )?;
    Ok(0)
}

fn run_git_set(key: &str, value: &str) -> bool {
    run_tool(
        "git",
        &[
            "config".as_ref(),
            "--global".as_ref(),
            key.as_ref(),
            value.as_ref(),
        ],
    )
    .is_some()
        && git_get(key).as_deref() == Some(value)
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "@._-/+=:".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_readers_are_parsed() {
        let text = "Available slots:\nSlot 0 (0x26a5d901): SoftHSM slot ID 0x26a5d901\n  token label        : my token\n  token manufacturer : SoftHSM project\n  token model        : SoftHSM v2\n  serial num         : c03e18dda6a5d901\nSlot 1 (0x1): SoftHSM slot ID 0x1\n  token state:   uninitialized\n";
        let t = parse_slots(Path::new("/m.so"), text);
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t[0].label, "my token");
        assert_eq!(t[0].serial, "c03e18dda6a5d901");
        assert_eq!(t[0].model, "SoftHSM v2");
        assert!(parse_slots(Path::new("/m.so"), "No slots.\n").is_empty());
        let r = parse_readers(
            "# Detected readers (pcsc)\nNr.  Card  Features  Name\n0    Yes             Yubico YubiKey OTP+FIDO+CCID 00 00\n1    No              Virtual PCD 00 00\n",
        );
        assert_eq!(
            r,
            [
                "Yubico YubiKey OTP+FIDO+CCID 00 00 (card present)",
                "Virtual PCD 00 00"
            ]
        );
        assert!(parse_readers("No smart card readers found.\n").is_empty());
    }

    #[test]
    fn a_piv_card_is_written_as_a_piv_token() {
        let text = config_text_piv(Some("12345678"), None);
        let t: toml::Table = toml::from_str(&text).expect("toml");
        let tok = &t["token"].as_array().expect("tokens")[0];
        assert_eq!(tok["type"].as_str(), Some("piv"));
        assert_eq!(tok["serial"].as_str(), Some("12345678"));
        assert!(
            tok.get("module").is_none() && tok.get("label").is_none(),
            "{text}"
        );
        let any = config_text_piv(None, Some(Path::new("/p/pin")));
        let t: toml::Table = toml::from_str(&any).expect("toml");
        let tok = &t["token"].as_array().expect("tokens")[0];
        assert!(tok.get("serial").is_none());
        assert_eq!(tok["pin_file"].as_str(), Some("/p/pin"));
    }

    #[test]
    fn the_written_file_is_toml_with_the_token() {
        let text = config_text(
            Path::new("/usr/lib/x.so"),
            "my \"card\"",
            Some(Path::new("/p")),
        );
        let t: toml::Table = toml::from_str(&text).expect("toml");
        let tok = &t["token"].as_array().expect("tokens")[0];
        assert_eq!(tok["label"].as_str(), Some("my \"card\""));
        assert_eq!(tok["pin_file"].as_str(), Some("/p"));
        assert!(t.get("auto_start").is_none(), "commented: the default");
    }

    #[test]
    fn the_neomutt_lines_carry_the_address() {
        let l = neomutt_lines(Some("ann@example.com"));
        assert!(l
            .iter()
            .any(|l| l == "set smime_default_key = \"ann@example.com\""));
        assert!(l.iter().all(|l| !l.starts_with('#')));
        assert!(l.iter().any(|l| l.starts_with("set smime_sign_command")));
    }
}
