//! tokenmail-agent: the background agent.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener as StdListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Parser;
use tokenmail_agent::config::{self, FileConfig, DEFAULT_MAX_SESSIONS, DEFAULT_PIN_TTL};
use tokenmail_agent::server;
use tokenmail_agent::service::Service;
use tokenmail_agent::token::pkcs11::{Pkcs11Config, Pkcs11Store};
use tokenmail_agent::token::{KeyStore, TokenError};
use tracing::{error, info, warn};

const EXAMPLES: &str = "\
Examples:
  # one SoftHSM token, PIN from a file, in the background (prints the socket to export):
  eval \"$(tokenmail-agent --pkcs11-module /usr/lib/softhsm/libsofthsm2.so \\
          --token-label tokenmail-demo --pin-file ~/.config/tokenmail/pin)\"
  # several tokens and policies from a file, attached to the terminal, logging to stderr:
  tokenmail-agent --config ~/.config/tokenmail/agent.toml --foreground
  # no PIN source: the first command that needs the key asks for the PIN (tokenmail login)
  tokenmail-agent --pkcs11-module /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so --token-label 'PIV Card'
  # a YubiKey through its PIV applet (PC/SC), by serial, with the CA chain for signatures:
  tokenmail-agent --piv-serial 12345678 --piv-chain ~/.config/tokenmail/chain.pem
  # as systemd starts it (socket activation, contrib/systemd/; docs/everyday.md):
  systemd-socket-activate -l $XDG_RUNTIME_DIR/tokenmail/agent.sock \
          tokenmail-agent --foreground --config ~/.config/tokenmail/agent.toml
  # this manual page, for man(1):
  tokenmail-agent --man ~/.local/share/man/man1

The socket is --socket, else $TOKENMAIL_SOCK, else $XDG_RUNTIME_DIR/tokenmail/agent.sock,
else /tmp/tokenmail-$UID/agent.sock. Configuration file format: docs/configuration.md.";

/// Holds logged-in sessions to hardware tokens and serves S/MIME private-key operations.
#[derive(Debug, Parser)]
#[command(name = "tokenmail-agent", version, after_help = EXAMPLES)]
struct Args {
    /// TOML configuration (tokens, PIN policy, key preferences, trust policy).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Socket path.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Stay attached, log to stderr; exit 0 on SIGTERM/SIGINT.
    #[arg(long)]
    foreground: bool,
    /// PKCS#11 module of the token.
    #[arg(long, value_name = "LIB.so", requires = "token")]
    pkcs11_module: Option<PathBuf>,
    /// Label of the token.
    #[arg(long, value_name = "LABEL", group = "token")]
    token_label: Option<String>,
    /// Serial number of the token (instead of, or with, the label).
    #[arg(long, value_name = "SERIAL", group = "token")]
    token_serial: Option<String>,
    /// Use a PIV smart card (YubiKey, PIV/CAC card) over PC/SC: the only one present,
    /// or the one given by --piv-serial. --pin-file/--pin-env then apply to it.
    #[arg(long, conflicts_with = "pkcs11_module")]
    piv: bool,
    /// Serial number of the PIV card (implies --piv).
    #[arg(long, value_name = "SERIAL", conflicts_with = "pkcs11_module")]
    piv_serial: Option<String>,
    /// PEM file of CA certificates to include in signatures made with the PIV card.
    #[arg(long, value_name = "FILE")]
    piv_chain: Option<PathBuf>,
    /// File holding the token's user PIN (first line).
    #[arg(long, value_name = "FILE", conflicts_with = "pin_env")]
    pin_file: Option<PathBuf>,
    /// Environment variable holding the user PIN (removed from the agent's environment at start).
    #[arg(long, value_name = "VAR")]
    pin_env: Option<String>,
    /// Seconds a PIN typed by the user stays cached; 0 = until `tokenmail lock`.
    #[arg(long, value_name = "SECONDS")]
    pin_cache_ttl: Option<u64>,
    /// Largest message a stream operation (sign, decrypt, verify, encrypt through the
    /// socket) may spool to a temporary file, e.g. 512M or 8G (default 8G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    max_spool: Option<u64>,
    /// Seconds a stream operation waits for the client's next input frame before giving up
    /// (default 60).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    stream_idle_timeout: Option<u64>,
    /// Seconds a client may take to read a stream operation's output before the agent closes
    /// the connection and frees the slot (default 120).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    write_timeout: Option<u64>,
    /// Log file when detached (default: agent.log beside the socket).
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// More logging (-v debug, -vv trace). Never logs PINs or key material.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Write the manual page tokenmail-agent.1 into DIR and exit (docs/everyday.md).
    #[arg(long, value_name = "DIR", hide = true, exclusive = true)]
    man: Option<PathBuf>,
}

/// `--man DIR`: tokenmail-agent.1 from the same definitions as `--help`.
fn write_man_page(dir: &std::path::Path) -> Result<PathBuf> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let man = clap_mangen::Man::new(Args::command()).manual("tokenmail");
    let path = dir.join(man.get_filename());
    let mut buf = Vec::new();
    man.render(&mut buf)
        .with_context(|| format!("cannot render {}", path.display()))?;
    std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    config::parse_size(s)
}

/// One configured token.
enum TokenSpec {
    Pkcs11(Pkcs11Config),
    #[cfg(feature = "piv")]
    Piv(tokenmail_agent::token::piv::PivConfig),
}

#[cfg(feature = "piv")]
fn piv_spec(
    name: Option<String>,
    serial: Option<&str>,
    pin_file: Option<&std::path::Path>,
    pin_env: Option<&str>,
    ttl: u64,
    chain: Option<&std::path::Path>,
) -> Result<TokenSpec> {
    config::piv_token(name, serial, pin_file, pin_env, ttl, chain)
        .map(TokenSpec::Piv)
        .map_err(|e| anyhow!(e))
}

#[cfg(not(feature = "piv"))]
fn piv_spec(
    _: Option<String>,
    _: Option<&str>,
    _: Option<&std::path::Path>,
    _: Option<&str>,
    _: u64,
    _: Option<&std::path::Path>,
) -> Result<TokenSpec> {
    Err(anyhow!(
        "this tokenmail-agent was built without PIV support (cargo feature `piv`); use a PKCS#11 module (OpenSC) instead"
    ))
}

fn token_configs(args: &Args, file: &FileConfig) -> Result<Vec<TokenSpec>> {
    let ttl = args
        .pin_cache_ttl
        .or(file.pin.cache_ttl)
        .unwrap_or(DEFAULT_PIN_TTL);
    let max = file.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS);
    let mut out = Vec::new();
    if args.piv_chain.is_some() && !(args.piv || args.piv_serial.is_some()) {
        return Err(anyhow!(
            "--piv-chain goes with --piv or --piv-serial (in a config file, use `chain` in the card's [[token]])"
        ));
    }
    if args.piv || args.piv_serial.is_some() {
        out.push(piv_spec(
            None,
            args.piv_serial.as_deref(),
            args.pin_file.as_deref(),
            args.pin_env.as_deref(),
            ttl,
            args.piv_chain.as_deref(),
        )?);
    } else if let Some(module) = &args.pkcs11_module {
        out.push(TokenSpec::Pkcs11(
            config::token(
                module,
                args.token_label.clone(),
                args.token_serial.clone(),
                args.pin_file.as_deref(),
                args.pin_env.as_deref(),
                ttl,
                max,
            )
            .map_err(|e| anyhow!(e))?,
        ));
    } else if args.token_label.is_some() || args.pin_file.is_some() || args.pin_env.is_some() {
        return Err(anyhow!(
            "--token-label, --pin-file and --pin-env describe a token: add --pkcs11-module LIB.so (or --piv)"
        ));
    }
    for t in &file.tokens {
        match t.kind.as_deref().unwrap_or("pkcs11") {
            "piv" => {
                if t.module.is_some() || t.label.is_some() {
                    return Err(anyhow!(
                        "a [[token]] of type \"piv\" takes serial, name, pin_file/pin_env and chain, not module or label"
                    ));
                }
                out.push(piv_spec(
                    t.name.clone(),
                    t.serial.as_deref(),
                    t.pin_file.as_deref(),
                    t.pin_env.as_deref(),
                    ttl,
                    t.chain.as_deref(),
                )?);
            }
            "pkcs11" => {
                let Some(module) = &t.module else {
                    return Err(anyhow!(
                        "a [[token]] of type \"pkcs11\" needs `module = \"/path/to/module.so\"`"
                    ));
                };
                if t.chain.is_some() || t.name.is_some() {
                    return Err(anyhow!(
                        "`chain` and `name` are for PIV cards; a PKCS#11 token is named by its label and keeps its CA certificates on the token"
                    ));
                }
                out.push(TokenSpec::Pkcs11(
                    config::token(
                        module,
                        t.label.clone(),
                        t.serial.clone(),
                        t.pin_file.as_deref(),
                        t.pin_env.as_deref(),
                        ttl,
                        max,
                    )
                    .map_err(|e| anyhow!(e))?,
                ));
            }
            other => {
                return Err(anyhow!(
                    "[[token]] type {other:?} is unknown: use \"pkcs11\" or \"piv\""
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(anyhow!(
            "no token configured: pass --pkcs11-module LIB.so --token-label LABEL, --piv, or --config FILE with [[token]] entries"
        ));
    }
    Ok(out)
}

fn init_logging(verbose: u8, file: Option<std::fs::File>) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // cryptoki logs every vendor mechanism it cannot name as an error, and the yubikey
    // crate logs an absent card as an error at every look: noise (ours say it once).
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("TOKENMAIL_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!(
                "{level},cryptoki::mechanism=off,yubikey=off"
            ))
        });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match file {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .init(),
        None => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init(),
    }
}

/// Detaches: forks; the parent waits for the child's word on `pipe` and prints the
/// export line. Returns in the child (with the pipe's write end) only.
#[allow(unsafe_code)]
fn detach(socket: &std::path::Path) -> Result<OwnedFd> {
    let (rd, wr) = nix::unistd::pipe().context("pipe")?;
    // SAFETY: called before any thread is started (no tokio runtime, no token module
    // loaded yet), so the child is a faithful single-threaded copy.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        nix::unistd::ForkResult::Parent { child } => {
            drop(wr);
            let mut msg = String::new();
            let mut f = std::fs::File::from(rd);
            let _ = f.read_to_string(&mut msg);
            // the child's words: `warning: …` lines, then `ready` or why it stopped
            let (warnings, rest): (Vec<&str>, Vec<&str>) = msg
                .lines()
                .filter(|l| !l.trim().is_empty())
                .partition(|l| l.starts_with("warning: "));
            for w in &warnings {
                eprintln!("tokenmail-agent: {w}");
            }
            let msg = rest.join("\n");
            if msg.trim() == "ready" {
                let p = socket.display().to_string().replace('\'', "'\\''");
                println!("TOKENMAIL_SOCK='{p}'; export TOKENMAIL_SOCK;");
                println!("echo Agent pid {child} listening on '{p}';");
                std::process::exit(0);
            }
            let msg = msg.trim();
            eprintln!(
                "tokenmail-agent: {}",
                if msg.is_empty() {
                    "the agent exited during start-up; run with --foreground to see why"
                } else {
                    msg
                }
            );
            std::process::exit(1);
        }
        nix::unistd::ForkResult::Child => {
            drop(rd);
            let _ = nix::unistd::setsid();
            let _ = std::env::set_current_dir("/");
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                let fd = null.as_raw_fd();
                for target in 0..=2 {
                    let _ = nix::unistd::dup2(fd, target);
                }
            }
            Ok(wr)
        }
    }
}

fn main() {
    let args = Args::parse();
    if let Some(dir) = &args.man {
        match write_man_page(dir) {
            Ok(p) => {
                eprintln!("wrote {}", p.display());
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("tokenmail-agent: {e:#}");
                std::process::exit(1);
            }
        }
    }
    for w in tokenmail_agent::harden::harden() {
        eprintln!("tokenmail-agent: warning: {w}");
    }
    if let Err(e) = run(args) {
        eprintln!("tokenmail-agent: {e:#}");
        std::process::exit(1);
    }
}

/// The listening socket systemd passed (socket activation: `LISTEN_PID` is our pid,
/// `LISTEN_FDS=1`, descriptor 3), checked, with its path; the variables are removed from
/// the environment either way. Runs before any thread exists.
#[allow(unsafe_code)]
fn activation() -> Result<Option<(StdListener, PathBuf)>> {
    let Some(fds) = server::take_listen_fds()? else {
        return Ok(None);
    };
    let fd = server::LISTEN_FDS_START;
    if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return Err(anyhow!(
            "socket activation: LISTEN_FDS={} but descriptor {fd} is not open; start the agent through its .socket unit (docs/everyday.md)",
            fds.count
        ));
    }
    // SAFETY: descriptor 3 is open (checked above) and was handed to this process by its
    // starter (LISTEN_PID is our pid); nothing in the agent opened it or owns it, and this
    // is the only place that takes it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let (listener, path) = server::activated_listener(owned)?;
    let Some(path) = path else {
        return Err(anyhow!(
            "socket activation: the socket passed has no path (abstract or unnamed); clients find the agent by path: use ListenStream=%t/tokenmail/agent.sock"
        ));
    };
    Ok(Some((listener, path)))
}

fn run(args: Args) -> Result<()> {
    let activated = activation()?;
    let file = match &args.config {
        Some(p) => FileConfig::load(p).map_err(|e| anyhow!(e))?,
        None => FileConfig::default(),
    };
    let tokens = token_configs(&args, &file)?;
    let max_spool = match (args.max_spool, &file.max_spool) {
        (Some(n), _) => n,
        (None, Some(v)) => v.bytes().map_err(|e| anyhow!("max_spool: {e}"))?,
        (None, None) => server::DEFAULT_MAX_SPOOL,
    };
    if max_spool < config::MIN_SPOOL {
        return Err(anyhow!(
            "max_spool {} is too small: give at least 1M",
            config::format_size(max_spool)
        ));
    }
    server::set_spool_limit(max_spool);
    server::set_stream_deadlines(
        args.stream_idle_timeout
            .unwrap_or(server::STREAM_IDLE.as_secs()),
        args.write_timeout
            .unwrap_or(server::WRITE_TIMEOUT.as_secs()),
    );
    let explicit = args.socket.as_deref().or(file.socket.as_deref());
    let dedicated_dir = explicit.is_none() && std::env::var_os("TOKENMAIL_SOCK").is_none();
    let configured = config::absolute(&server::socket_path(explicit));
    let mut notes = Vec::new();
    let (socket, activated) = match activated {
        // systemd made the socket (and its directory); it stays systemd's: not checked
        // for a live agent (it answers: systemd listens), never removed at exit
        Some((listener, path)) => {
            if explicit.is_some() && path != configured {
                notes.push(format!(
                    "serving the socket systemd passed, {}, not {} (--socket / socket in the configuration)",
                    path.display(),
                    configured.display()
                ));
            }
            (path, Some(listener))
        }
        None => {
            // Refuse early (before detaching) when another agent is live; the socket
            // itself is bound only once the signal handlers exist, so SIGTERM after it
            // appears is handled.
            server::check_free(&configured)?;
            (configured, None)
        }
    };

    let ready_pipe = if args.foreground {
        init_logging(args.verbose, None);
        None
    } else {
        let log_path = args
            .log_file
            .clone()
            .or(file.log_file.clone())
            .map(|p| config::absolute(&p))
            .unwrap_or_else(|| socket.with_file_name("agent.log"));
        // The default log lives beside the socket: its directory is made first (it is
        // made for the socket anyway), and the log is opened before detaching, so that a
        // log that cannot be opened is said on the terminal instead of dropped.
        server::prepare_dir(&socket, dedicated_dir)?;
        let log = match config::open_log(&log_path) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!(
                    "tokenmail-agent: warning: cannot open the log file {}: {e}; the detached agent logs nothing (--log-file FILE)",
                    log_path.display()
                );
                None
            }
        };
        let wr = detach(&socket)?;
        init_logging(args.verbose, log);
        Some(wr)
    };

    for n in &notes {
        warn!("{n}");
    }
    let result = serve(tokens, &file, &socket, dedicated_dir, activated, ready_pipe);
    if let Err(e) = &result {
        error!("{e:#}");
    }
    result
}

/// Removes the socket when the server stops, however it stops.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn serve(
    tokens: Vec<TokenSpec>,
    file: &FileConfig,
    socket: &std::path::Path,
    dedicated_dir: bool,
    activated: Option<StdListener>,
    ready_pipe: Option<OwnedFd>,
) -> Result<()> {
    let report = |pipe: &Option<OwnedFd>, msg: &str| {
        if let Some(fd) = pipe {
            if let Ok(dup) = fd.try_clone() {
                let mut f = std::fs::File::from(dup);
                let _ = f.write_all(msg.as_bytes());
            }
        }
    };
    let mut stores: Vec<Arc<dyn KeyStore>> = Vec::new();
    #[cfg(feature = "piv")]
    let mut cards = Vec::new();
    for t in tokens {
        match t {
            TokenSpec::Pkcs11(t) => match Pkcs11Store::new(t) {
                Ok(s) => {
                    // A label the module does not have is said now, on the terminal that
                    // started the agent, with the labels it has (a token that is merely
                    // not inserted yet is no news: it is awaited as before).
                    if let Err(e @ TokenError::NotInModule { .. }) = s.check_present() {
                        warn!("{e}");
                        report(&ready_pipe, &format!("warning: {e}\n"));
                    }
                    stores.push(Arc::new(s))
                }
                Err(e) => {
                    report(&ready_pipe, &e.to_string());
                    return Err(e.into());
                }
            },
            #[cfg(feature = "piv")]
            TokenSpec::Piv(c) => {
                let card = Arc::new(tokenmail_agent::token::piv::PivStore::new(c));
                cards.push(card.clone());
                stores.push(card);
            }
        }
    }
    #[cfg(feature = "piv")]
    if !cards.is_empty() {
        tokenmail_agent::token::hotplug::spawn(cards);
    }
    let prompter = tokenmail_agent::pin::prompt::Prompter::from_config(
        file.pin.pinentry.as_deref(),
        file.pin.pinentry_timeout,
    );
    match &prompter {
        Some(p) => {
            info!(program = %p.program().display(), "PINs for clients without a terminal: pinentry")
        }
        None => info!("no pinentry: clients without a terminal get `pin-required`"),
    }
    let svc = Arc::new(
        Service::new(stores, file.keys.prefer.clone())
            .with_prompter(prompter)
            .with_cipher_policy(file.decrypt.policy().map_err(|e| anyhow!(e))?)
            .with_trust(
                tokenmail_agent::service::TrustState::load(file.trust.clone())
                    .map_err(|e| anyhow!(e))?,
            )
            .with_audit(open_audit(&file.audit)?),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async move {
        // Log in at start where an unattended PIN exists, so the first request is fast.
        {
            let svc = svc.clone();
            tokio::task::spawn_blocking(move || {
                for s in svc.stores() {
                    let st = s.status();
                    info!(token = %st.label, present = st.present, "token configured");
                    if st.present {
                        let _ = s.keys();
                    }
                }
                // exportable keys, certificates near or past expiry: now, then once a day
                // (on a thread of its own, not holding one of the pool's)
                for w in svc.key_warnings() {
                    warn!("{w}");
                }
                let daily = svc.clone();
                let _ = std::thread::Builder::new()
                    .name("key-check".into())
                    .spawn(move || loop {
                        std::thread::sleep(Duration::from_secs(86_400));
                        for w in daily.key_warnings() {
                            warn!("{w}");
                        }
                    });
            });
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("SIGTERM handler")?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("SIGINT handler")?;
        let by_systemd = activated.is_some();
        let (listener, _remove) = match activated {
            Some(l) => (l, None),
            None => match server::bind(socket, dedicated_dir) {
                Ok(l) => (l, Some(RemoveOnDrop(socket.to_path_buf()))),
                Err(e) => {
                    report(&ready_pipe, &e.to_string());
                    return Err(e.into());
                }
            },
        };
        listener
            .set_nonblocking(true)
            .context("socket non-blocking")?;
        let listener = tokio::net::UnixListener::from_std(listener).context("socket")?;
        if by_systemd {
            info!(socket = %socket.display(), "listening (socket passed by systemd)");
        } else {
            info!(socket = %socket.display(), "listening");
        }
        report(&ready_pipe, "ready\n");
        drop(ready_pipe);

        // The PIN timer runs on a thread of its own: a blocking pool full of stream
        // operations cannot hold back a PIN's expiry (and its logout).
        {
            let svc = svc.clone();
            std::thread::Builder::new()
                .name("pin-expiry".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    svc.expire_pins();
                })
                .context("cannot start the PIN expiry thread")?;
        }
        let hup = {
            let svc = svc.clone();
            let mut sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("SIGHUP handler")?;
            tokio::spawn(async move {
                while sig.recv().await.is_some() {
                    info!("SIGHUP: releasing tokens");
                    let svc = svc.clone();
                    let _ = tokio::task::spawn_blocking(move || svc.release_all()).await;
                }
            })
        };
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: shutting down"),
                _ = int.recv() => info!("SIGINT: shutting down"),
            }
        };
        server::serve(listener, svc.clone(), shutdown).await;
        hup.abort();
        Ok::<_, anyhow::Error>(())
    })?;
    // Leave without waiting for blocked token calls; the OS closes the sessions.
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// The audit log of `[audit]` (default on, at the default path when there is one).
fn open_audit(
    cfg: &tokenmail_agent::config::AuditConfig,
) -> Result<Option<Arc<tokenmail_agent::audit::AuditLog>>> {
    use tokenmail_agent::audit;
    if cfg.enabled == Some(false) {
        info!("audit log off ([audit] enabled = false)");
        return Ok(None);
    }
    let Some(path) = cfg.file.clone().or_else(audit::default_path) else {
        warn!("no audit log: set [audit] file (no HOME or XDG_STATE_HOME to put it in)");
        return Ok(None);
    };
    let max = match &cfg.max_size {
        Some(v) => v.bytes().map_err(|e| anyhow!("[audit] max_size: {e}"))?,
        None => audit::DEFAULT_MAX_SIZE,
    };
    let log = audit::AuditLog::open(path.clone(), max, cfg.keep.unwrap_or(audit::DEFAULT_KEEP))
        .with_context(|| {
            format!(
                "cannot open the audit log {}: fix [audit] file, or set [audit] enabled = false",
                path.display()
            )
        })?;
    info!(file = %path.display(), "audit log");
    Ok(Some(Arc::new(log)))
}
