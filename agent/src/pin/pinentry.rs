//! Asking for a PIN through a `pinentry` program (GnuPG's PIN-entry dialogs:
//! pinentry-gnome3, -qt, -gtk-2, -curses, -tty), for clients that have no terminal
//! of their own (git, mail clients).
//!
//! The agent speaks the client side of the Assuan protocol to the program over its
//! stdin/stdout:
//!
//! ```text
//! <- OK Pleased to meet you
//! -> OPTION ttyname=/dev/pts/3       (only with TtyOptions)
//! -> OPTION ttytype=xterm-256color   (only with TtyOptions)
//! -> OPTION lc-ctype=C.UTF-8         (only with TtyOptions)
//! -> SETTITLE tokenmail
//! -> SETDESC Enter the PIN for token "alice" ...
//! -> SETPROMPT PIN:
//! -> SETERROR Wrong PIN (2 tries left)   (only on a retry)
//! -> SETKEYINFO tokenmail/alice          (only when given)
//! -> SETTIMEOUT 60
//! -> GETPIN
//! <- D 1234      (percent-escaped, possibly several D lines; S and # lines skipped)
//! <- OK
//! -> BYE
//! ```
//!
//! Care taken:
//! - the program gets no arguments and a cleared environment that keeps only what a
//!   dialog needs to reach the user's display or terminal (see [`PASSED_ENV`]);
//! - every buffer that holds PIN bytes is a [`Zeroizing`] buffer allocated once with a
//!   fixed capacity (so it never reallocates and leaves a copy behind), and the result
//!   is a [`SecretString`]; nothing received from the program is ever logged or put
//!   into an error message, except the text of an Assuan `ERR` line;
//! - the whole exchange runs against one deadline (`timeout` plus a short grace, see
//!   [`HARD_DEADLINE_GRACE`]): the program is told the timeout with `SETTIMEOUT`, and
//!   killed if it is still running at the deadline, so a call never blocks for longer
//!   than `timeout` + a few seconds. The program is always reaped.
//!
//! The calls block; async code runs them with `tokio::task::spawn_blocking`.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use zeroize::Zeroizing;

/// Program names [`find_pinentry`] looks for, in order of preference.
pub const PINENTRY_PROGRAMS: &[&str] = &[
    "pinentry",
    "pinentry-gnome3",
    "pinentry-qt",
    "pinentry-gtk-2",
    "pinentry-curses",
    "pinentry-tty",
];

/// Environment variables passed to the pinentry program (plus every `LC_*`); the rest
/// of the agent's environment is cleared.
pub const PASSED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "TERM",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "DBUS_SESSION_BUS_ADDRESS",
    "XDG_RUNTIME_DIR",
    "GPG_TTY",
];

/// How long after `timeout` the program is killed if it has not answered by itself
/// (pinentry programs give up on their own at `SETTIMEOUT`).
pub const HARD_DEADLINE_GRACE: Duration = Duration::from_secs(2);

/// Default for [`PinentryRequest::new`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest line sent, including the final LF (Assuan's limit).
pub const MAX_LINE: usize = 1000;

/// Longest line accepted from the program, including the LF. Assuan's limit is 1000
/// bytes; pinentry programs not built on libassuan are allowed some slack.
const MAX_RECV_LINE: usize = 4096;

/// Largest PIN accepted (decoded bytes).
pub const MAX_PIN_LEN: usize = 2048;

/// Timeouts above this are capped (keeps deadline arithmetic far from overflow).
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How long the program gets to exit after `BYE` before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// Bytes read from the program at a time.
const READ_CHUNK: usize = 512;

/// Inquiries answered in one command before the program is deemed broken.
const MAX_INQUIRIES: usize = 16;

/// Longest `ERR` description kept in [`PinentryError::Pinentry`] (characters).
const MAX_ERR_TEXT: usize = 200;

// libgpg-error codes (the low 16 bits of an Assuan ERR code).
const GPG_ERR_TIMEOUT: u32 = 62;
const GPG_ERR_CANCELED: u32 = 99;
const GPG_ERR_NOT_CONFIRMED: u32 = 114;
const GPG_ERR_FULLY_CANCELED: u32 = 198;
const GPG_ERR_ASS_CANCELED: u32 = 277;

/// Why no PIN (or no acknowledged message) came back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PinentryError {
    /// The user cancelled the dialog (Assuan `ERR` with `GPG_ERR_CANCELED`, code 99,
    /// e.g. 83886179; also `GPG_ERR_FULLY_CANCELED` and `GPG_ERR_NOT_CONFIRMED`).
    #[error("PIN entry cancelled")]
    Cancelled,
    /// The user confirmed an empty PIN. Kept apart from [`Cancelled`](Self::Cancelled)
    /// so that a caller can tell the two apart; no token accepts an empty PIN, so
    /// callers normally treat it like a cancel (without trying a login).
    #[error("empty PIN entered")]
    EmptyPin,
    /// The program does not exist (or its interpreter does not).
    #[error("pinentry program {} not found", .0.display())]
    NotFound(PathBuf),
    /// The program could not be started for another reason (permissions, ...).
    #[error("cannot start pinentry program {}: {source}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Nobody answered in time: the program reported `GPG_ERR_TIMEOUT`, or it was
    /// still running at the hard deadline and was killed.
    #[error("PIN entry timed out")]
    Timeout,
    /// The program answered a command with an Assuan `ERR` other than cancel or
    /// timeout (e.g. it cannot open the terminal or the display).
    #[error("pinentry failed: {message} (error code {code})")]
    Pinentry {
        /// The Assuan error code (gpg-error source in the high bits, code in the low 16).
        code: u32,
        /// The error's description, sanitised to one line.
        message: String,
    },
    /// The program broke the protocol (bad greeting, unknown reply, bad escape, line
    /// too long, closed the connection mid-command, ...). Never contains what the
    /// program sent.
    #[error("pinentry protocol error: {0}")]
    Protocol(String),
    /// The request cannot be sent as it is (e.g. a control character in an `OPTION`
    /// value or in the key info).
    #[error("invalid pinentry request: {0}")]
    InvalidRequest(String),
    /// Reading from or writing to the program failed.
    #[error("I/O error talking to pinentry: {0}")]
    Io(#[source] io::Error),
}

/// Terminal facts of the requesting client, sent as `OPTION`s so that a terminal
/// pinentry (curses, tty) prompts on the client's terminal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TtyOptions {
    /// The client's terminal device (`OPTION ttyname=`), e.g. `/dev/pts/3` (`$GPG_TTY`).
    pub ttyname: Option<PathBuf>,
    /// Its terminal type (`OPTION ttytype=`, `$TERM`).
    pub ttytype: Option<String>,
    /// Its character-type locale (`OPTION lc-ctype=`, e.g. `C.UTF-8`).
    pub lc_ctype: Option<String>,
    /// Its messages locale (`OPTION lc-messages=`).
    pub lc_messages: Option<String>,
}

impl TtyOptions {
    /// Options naming only the terminal device.
    pub fn new(ttyname: impl Into<PathBuf>) -> Self {
        TtyOptions {
            ttyname: Some(ttyname.into()),
            ..TtyOptions::default()
        }
    }

    /// The `OPTION` lines these options give, or why one cannot be sent.
    fn option_lines(&self) -> Result<Vec<String>, PinentryError> {
        let mut lines = Vec::new();
        if let Some(name) = &self.ttyname {
            let name = name.to_str().ok_or_else(|| {
                PinentryError::InvalidRequest("the terminal name is not UTF-8".into())
            })?;
            lines.push(option_line("ttyname", name)?);
        }
        if let Some(v) = &self.ttytype {
            lines.push(option_line("ttytype", v)?);
        }
        if let Some(v) = &self.lc_ctype {
            lines.push(option_line("lc-ctype", v)?);
        }
        if let Some(v) = &self.lc_messages {
            lines.push(option_line("lc-messages", v)?);
        }
        Ok(lines)
    }
}

/// What to ask for; see [`get_pin`].
#[derive(Debug, Clone)]
pub struct PinentryRequest<'a> {
    /// The pinentry program, e.g. `/usr/bin/pinentry` (see [`find_pinentry`]). A bare
    /// name is looked up in the `$PATH` passed to the program.
    pub program: &'a Path,
    /// Window title (`SETTITLE`), e.g. `tokenmail`.
    pub title: &'a str,
    /// The text of the dialog (`SETDESC`); newlines are allowed. Cut short if it does
    /// not fit in one Assuan line (about 990 bytes once escaped).
    pub description: &'a str,
    /// Label of the entry field (`SETPROMPT`), e.g. `PIN:`.
    pub prompt: &'a str,
    /// Shown as an error above the description on a retry (`SETERROR`), e.g.
    /// `Wrong PIN (2 tries left)`.
    pub error: Option<&'a str>,
    /// Cache id for pinentry's own password-manager integration (`SETKEYINFO`), e.g.
    /// `tokenmail/alice`: printable ASCII, no spaces and no `%`.
    pub keyinfo: Option<&'a str>,
    /// How long the user has (`SETTIMEOUT`, whole seconds, at least 1, at most a day);
    /// the program is killed [`HARD_DEADLINE_GRACE`] later.
    pub timeout: Duration,
    /// The client's terminal, for terminal pinentries.
    pub tty: Option<TtyOptions>,
}

impl<'a> PinentryRequest<'a> {
    /// A request with title `tokenmail`, prompt `PIN:`, no error, no key info,
    /// [`DEFAULT_TIMEOUT`] and no terminal.
    pub fn new(program: &'a Path, description: &'a str) -> Self {
        PinentryRequest {
            program,
            title: "tokenmail",
            description,
            prompt: "PIN:",
            error: None,
            keyinfo: None,
            timeout: DEFAULT_TIMEOUT,
            tty: None,
        }
    }
}

/// Asks the user for a PIN through the pinentry program `req.program`.
///
/// Blocks until the user answers, cancels, or the timeout passes (at most
/// `req.timeout` + [`HARD_DEADLINE_GRACE`] + about a second to reap the program).
///
/// Errors: [`PinentryError::Cancelled`] when the user cancels,
/// [`PinentryError::EmptyPin`] when they confirm an empty entry,
/// [`PinentryError::Timeout`], [`PinentryError::NotFound`] /
/// [`PinentryError::Spawn`] when the program cannot be started, and
/// [`PinentryError::Pinentry`] / [`PinentryError::Protocol`] /
/// [`PinentryError::Io`] when it fails or misbehaves.
pub fn get_pin(req: &PinentryRequest) -> Result<SecretString, PinentryError> {
    let mut commands = match &req.tty {
        Some(tty) => tty.option_lines()?,
        None => Vec::new(),
    };
    commands.push(text_command("SETTITLE", req.title));
    commands.push(text_command("SETDESC", req.description));
    commands.push(text_command("SETPROMPT", req.prompt));
    if let Some(error) = req.error {
        commands.push(text_command("SETERROR", error));
    }
    if let Some(keyinfo) = req.keyinfo {
        commands.push(keyinfo_command(keyinfo)?);
    }
    let timeout = req.timeout.min(MAX_TIMEOUT);
    commands.push(timeout_command(timeout));

    let mut session = Session::start(req.program, timeout)?;
    for command in &commands {
        session.setup_command(command)?;
    }
    let mut pin = PinBuf::new();
    session.transact("GETPIN", Some(&mut pin))?;
    session.finish();
    pin.into_secret()
}

/// Shows `text` in a dialog with a single OK button (pinentry's `MESSAGE`), e.g.
/// `PIN blocked: use the PUK`, and waits until it is acknowledged or `timeout` passes.
///
/// Without a terminal: suits graphical pinentries; see [`show_message_with_tty`].
///
/// Errors as for [`get_pin`]; a dialog closed with cancel/Escape gives
/// [`PinentryError::Cancelled`], which callers may ignore.
pub fn show_message(
    program: &Path,
    title: &str,
    text: &str,
    timeout: Duration,
) -> Result<(), PinentryError> {
    show_message_with_tty(program, title, text, timeout, None)
}

/// [`show_message`] on the client's terminal (for terminal pinentries).
pub fn show_message_with_tty(
    program: &Path,
    title: &str,
    text: &str,
    timeout: Duration,
    tty: Option<&TtyOptions>,
) -> Result<(), PinentryError> {
    let mut commands = match tty {
        Some(tty) => tty.option_lines()?,
        None => Vec::new(),
    };
    commands.push(text_command("SETTITLE", title));
    commands.push(text_command("SETDESC", text));
    let timeout = timeout.min(MAX_TIMEOUT);
    commands.push(timeout_command(timeout));

    let mut session = Session::start(program, timeout)?;
    for command in &commands {
        session.setup_command(command)?;
    }
    session.transact("MESSAGE", None)?;
    session.finish();
    Ok(())
}

/// Looks for a pinentry program in `$PATH`, trying the names of [`PINENTRY_PROGRAMS`]
/// in order (`pinentry` first: it is the one the system administrator chose).
pub fn find_pinentry() -> Option<PathBuf> {
    find_pinentry_in(&std::env::var_os("PATH")?)
}

/// [`find_pinentry`] with an explicit search path (`:`-separated). Relative entries
/// (such as `.` or an empty entry) are ignored.
pub fn find_pinentry_in(search_path: &OsStr) -> Option<PathBuf> {
    let dirs: Vec<PathBuf> = std::env::split_paths(search_path)
        .filter(|d| d.is_absolute())
        .collect();
    PINENTRY_PROGRAMS.iter().find_map(|name| {
        dirs.iter()
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable(candidate))
    })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether an environment variable of the agent is passed on to pinentry.
fn is_passed_env(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    PASSED_ENV.contains(&name) || name.starts_with("LC_")
}

// ---------------------------------------------------------------------------------
// Building commands

/// Percent-escapes `text` for an Assuan command argument: `%`, CR, LF and every other
/// ASCII control character become `%XX`; everything else (UTF-8 included) is sent as
/// is. Stops before the escaped text would exceed `budget` bytes (never inside a
/// character or an escape); returns whether it stopped early.
fn escape_into(out: &mut String, text: &str, budget: usize) -> bool {
    let mut used = 0;
    for ch in text.chars() {
        let needs_escape = ch == '%' || ch.is_ascii_control();
        let len = if needs_escape { 3 } else { ch.len_utf8() };
        if used + len > budget {
            return true;
        }
        if needs_escape {
            // `ch` is ASCII here.
            out.push_str(&format!("%{:02X}", u32::from(ch)));
        } else {
            out.push(ch);
        }
        used += len;
    }
    false
}

/// `VERB escaped-text`, cut (with `...`) to fit in one [`MAX_LINE`] line.
fn text_command(verb: &str, text: &str) -> String {
    // verb, space, text, LF
    let budget = MAX_LINE - verb.len() - 2;
    let mut line = String::with_capacity(MAX_LINE);
    line.push_str(verb);
    line.push(' ');
    let start = line.len();
    if escape_into(&mut line, text, budget) {
        // Cut again with room for the ellipsis.
        line.truncate(start);
        escape_into(&mut line, text, budget - 3);
        line.push_str("...");
        tracing::debug!("pinentry: {verb} text cut to fit one Assuan line");
    }
    line
}

/// `OPTION name=value`. Option values are not unescaped by pinentry, so a value that
/// would need escaping is refused.
fn option_line(name: &str, value: &str) -> Result<String, PinentryError> {
    if value.is_empty() || value.chars().any(|c| c.is_control() || c == '%') {
        return Err(PinentryError::InvalidRequest(format!(
            "the {name} option is empty or contains a control character or '%'"
        )));
    }
    let line = format!("OPTION {name}={value}");
    if line.len() + 1 > MAX_LINE {
        return Err(PinentryError::InvalidRequest(format!(
            "the {name} option is too long"
        )));
    }
    Ok(line)
}

/// `SETKEYINFO id` (sent as is by pinentry to a password manager).
fn keyinfo_command(keyinfo: &str) -> Result<String, PinentryError> {
    let valid = !keyinfo.is_empty()
        && keyinfo.len() <= 200
        && keyinfo.bytes().all(|b| b.is_ascii_graphic() && b != b'%');
    if !valid {
        return Err(PinentryError::InvalidRequest(
            "the key info must be 1 to 200 printable ASCII characters without spaces or '%'".into(),
        ));
    }
    Ok(format!("SETKEYINFO {keyinfo}"))
}

/// `SETTIMEOUT seconds`: rounded up, at least 1 (0 would mean "no timeout").
fn timeout_command(timeout: Duration) -> String {
    let mut secs = timeout.as_secs();
    if timeout.subsec_nanos() > 0 {
        secs += 1;
    }
    format!("SETTIMEOUT {}", secs.max(1))
}

/// The verb of a command line (for messages and logs: never the argument).
fn verb_of(line: &str) -> &str {
    line.split(' ').next().unwrap_or(line)
}

// ---------------------------------------------------------------------------------
// Reading replies

/// One line from the program, classified.
#[derive(PartialEq, Eq)]
enum Reply<'a> {
    /// `OK [...]`
    Ok,
    /// `ERR code [description]`
    Err { code: u32, message: &'a [u8] },
    /// `D escaped-data`
    Data(&'a [u8]),
    /// `S ...`: status, ignored.
    Status,
    /// `# ...`: comment, ignored.
    Comment,
    /// `INQUIRE keyword [...]`
    Inquire,
    /// Anything else.
    Unknown,
}

impl std::fmt::Debug for Reply<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Ok => f.write_str("Ok"),
            Reply::Err { code, .. } => write!(f, "Err({code})"),
            Reply::Data(d) => write!(f, "Data(<{} bytes>)", d.len()),
            Reply::Status => f.write_str("Status"),
            Reply::Comment => f.write_str("Comment"),
            Reply::Inquire => f.write_str("Inquire"),
            Reply::Unknown => f.write_str("Unknown"),
        }
    }
}

/// Classifies a line (without its LF; a trailing CR is ignored).
fn parse_reply(line: &[u8]) -> Reply<'_> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (word, rest) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    match word {
        b"OK" => Reply::Ok,
        b"D" => Reply::Data(rest),
        b"S" => Reply::Status,
        b"INQUIRE" if !rest.is_empty() => Reply::Inquire,
        b"ERR" => {
            let (code, message) = match rest.iter().position(|&b| b == b' ') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            match std::str::from_utf8(code).ok().and_then(|c| c.parse().ok()) {
                Some(code) => Reply::Err { code, message },
                None => Reply::Unknown,
            }
        }
        _ if line.starts_with(b"#") => Reply::Comment,
        _ => Reply::Unknown,
    }
}

/// Why a data line could not be decoded.
#[derive(Debug, PartialEq, Eq)]
enum DecodeError {
    /// `%` not followed by two hex digits.
    BadEscape,
    /// More than the buffer's fixed capacity.
    TooLong,
}

/// Appends the percent-decoded `escaped` to `out`, never beyond `max` bytes in all.
fn percent_decode_into(escaped: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), DecodeError> {
    let mut i = 0;
    while i < escaped.len() {
        let byte = if escaped[i] == b'%' {
            let hi = escaped.get(i + 1).and_then(|&b| hex_value(b));
            let lo = escaped.get(i + 2).and_then(|&b| hex_value(b));
            match (hi, lo) {
                (Some(hi), Some(lo)) => {
                    i += 3;
                    (hi << 4) | lo
                }
                _ => return Err(DecodeError::BadEscape),
            }
        } else {
            i += 1;
            escaped[i - 1]
        };
        if out.len() >= max {
            return Err(DecodeError::TooLong);
        }
        out.push(byte);
    }
    Ok(())
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The error for an Assuan `ERR` reply.
fn map_err_reply(code: u32, message: &[u8]) -> PinentryError {
    match code & 0xFFFF {
        GPG_ERR_CANCELED
        | GPG_ERR_FULLY_CANCELED
        | GPG_ERR_ASS_CANCELED
        | GPG_ERR_NOT_CONFIRMED => PinentryError::Cancelled,
        GPG_ERR_TIMEOUT => PinentryError::Timeout,
        _ => PinentryError::Pinentry {
            code,
            message: sanitize(message),
        },
    }
}

/// An ERR description made safe to show: lossy UTF-8, control characters replaced,
/// at most [`MAX_ERR_TEXT`] characters.
fn sanitize(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let text = text.trim();
    let mut out: String = text
        .chars()
        .take(MAX_ERR_TEXT)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > MAX_ERR_TEXT {
        out.push_str("...");
    }
    if out.is_empty() {
        out.push_str("no description");
    }
    out
}

/// The PIN as it is being received: a buffer of fixed capacity, zeroized on drop.
struct PinBuf(Zeroizing<Vec<u8>>);

impl PinBuf {
    fn new() -> Self {
        PinBuf(Zeroizing::new(Vec::with_capacity(MAX_PIN_LEN)))
    }

    fn append_escaped(&mut self, escaped: &[u8]) -> Result<(), PinentryError> {
        percent_decode_into(escaped, &mut self.0, MAX_PIN_LEN).map_err(|e| match e {
            DecodeError::BadEscape => {
                PinentryError::Protocol("invalid percent escape in a data line".into())
            }
            DecodeError::TooLong => {
                PinentryError::Protocol(format!("the PIN is longer than {MAX_PIN_LEN} bytes"))
            }
        })
    }

    fn into_secret(self) -> Result<SecretString, PinentryError> {
        if self.0.is_empty() {
            return Err(PinentryError::EmptyPin);
        }
        let text = std::str::from_utf8(&self.0)
            .map_err(|_| PinentryError::Protocol("the PIN is not valid UTF-8".into()))?;
        // Exactly sized, so that the conversion to a boxed str does not reallocate
        // (which would leave an unzeroized copy behind).
        let mut pin = String::with_capacity(text.len());
        pin.push_str(text);
        Ok(SecretString::from(pin))
    }
}

/// Splits a byte stream into lines without ever reallocating its buffer; every
/// buffer is zeroized on drop (lines may carry PIN data).
struct LineReader<R> {
    inner: R,
    pending: Zeroizing<Vec<u8>>,
}

impl<R: Read> LineReader<R> {
    fn new(inner: R) -> Self {
        LineReader {
            inner,
            pending: Zeroizing::new(Vec::with_capacity(MAX_RECV_LINE + READ_CHUNK)),
        }
    }

    /// The next line without its LF; `None` at end of stream (a partial last line is
    /// dropped); an `InvalidData` error for a line longer than [`MAX_RECV_LINE`].
    fn next_line(&mut self) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                if pos + 1 > MAX_RECV_LINE {
                    return Err(line_too_long());
                }
                let line = Zeroizing::new(self.pending[..pos].to_vec());
                self.pending.drain(..=pos);
                return Ok(Some(line));
            }
            if self.pending.len() >= MAX_RECV_LINE {
                return Err(line_too_long());
            }
            let mut chunk = Zeroizing::new([0u8; READ_CHUNK]);
            let n = match self.inner.read(&mut chunk[..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(None);
            }
            // pending.len() < MAX_RECV_LINE and n <= READ_CHUNK: within capacity.
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }
}

fn line_too_long() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("line longer than {MAX_RECV_LINE} bytes"),
    )
}

/// What the reader thread hands over.
enum FromReader {
    Line(Zeroizing<Vec<u8>>),
    Eof,
    Failed(io::Error),
}

fn spawn_reader(stdout: ChildStdout) -> io::Result<Receiver<FromReader>> {
    let (tx, rx) = mpsc::sync_channel(16);
    std::thread::Builder::new()
        .name("pinentry-reader".into())
        .spawn(move || reader_loop(stdout, &tx))?;
    Ok(rx)
}

fn reader_loop(stdout: ChildStdout, tx: &SyncSender<FromReader>) {
    let mut reader = LineReader::new(stdout);
    loop {
        let (message, last) = match reader.next_line() {
            Ok(Some(line)) => (FromReader::Line(line), false),
            Ok(None) => (FromReader::Eof, true),
            Err(e) => (FromReader::Failed(e), true),
        };
        // A send fails once the session is over: stop reading then.
        if tx.send(message).is_err() || last {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------
// The session

/// A running pinentry program. Dropping it says `BYE`, closes the pipe and reaps the
/// program (killing it if it does not exit within [`EXIT_GRACE`]).
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    replies: Receiver<FromReader>,
    deadline: Instant,
}

impl Session {
    /// Starts `program` and reads its greeting.
    fn start(program: &Path, timeout: Duration) -> Result<Session, PinentryError> {
        let deadline = Instant::now() + timeout + HARD_DEADLINE_GRACE;
        let mut command = Command::new(program);
        command
            .env_clear()
            .envs(
                std::env::vars_os()
                    .filter(|(name, _)| is_passed_env(name))
                    .collect::<Vec<(OsString, OsString)>>(),
            )
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        tracing::debug!(program = %program.display(), "starting pinentry");
        let mut child = command.spawn().map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                PinentryError::NotFound(program.to_path_buf())
            } else {
                PinentryError::Spawn {
                    program: program.to_path_buf(),
                    source,
                }
            }
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let replies = match stdout.map(spawn_reader) {
            Some(Ok(rx)) => rx,
            Some(Err(e)) => {
                kill_and_reap(&mut child);
                return Err(PinentryError::Io(e));
            }
            None => {
                kill_and_reap(&mut child);
                return Err(PinentryError::Io(io::Error::other("no pipe to pinentry")));
            }
        };
        let mut session = Session {
            child,
            stdin,
            replies,
            deadline,
        };
        session.read_greeting()?;
        Ok(session)
    }

    fn read_greeting(&mut self) -> Result<(), PinentryError> {
        loop {
            let line = self.next_line("the greeting")?;
            match parse_reply(&line) {
                Reply::Ok => return Ok(()),
                Reply::Comment | Reply::Status => continue,
                Reply::Err { code, message } => return Err(map_err_reply(code, message)),
                _ => {
                    return Err(PinentryError::Protocol(
                        "the program did not greet with OK (is it a pinentry program?)".into(),
                    ))
                }
            }
        }
    }

    /// Sends one of the commands before `GETPIN`/`MESSAGE`. An `ERR` to an optional
    /// one (`SETKEYINFO`, `SETTIMEOUT`, `OPTION` other than `ttyname`) is logged and
    /// ignored, as gpg-agent does for older pinentries.
    fn setup_command(&mut self, line: &str) -> Result<(), PinentryError> {
        let optional = line.starts_with("SETKEYINFO ")
            || line.starts_with("SETTIMEOUT ")
            || (line.starts_with("OPTION ") && !line.starts_with("OPTION ttyname="));
        match self.transact(line, None) {
            Err(PinentryError::Pinentry { code, .. }) if optional => {
                tracing::debug!(
                    "pinentry refused {} (error code {code}); going on without it",
                    verb_of(line)
                );
                Ok(())
            }
            other => other,
        }
    }

    /// Sends `line` and reads the reply up to `OK` or `ERR`. Data lines go to `data`
    /// (and are a protocol error without it); inquiries are answered with an empty
    /// `END`.
    fn transact(&mut self, line: &str, mut data: Option<&mut PinBuf>) -> Result<(), PinentryError> {
        let verb = verb_of(line);
        tracing::debug!("pinentry: {verb}");
        self.send(line)?;
        let mut inquiries = 0;
        loop {
            let reply = self.next_line(verb)?;
            match parse_reply(&reply) {
                Reply::Ok => return Ok(()),
                Reply::Err { code, message } => {
                    let err = map_err_reply(code, message);
                    tracing::debug!("pinentry: {verb} failed: {err}");
                    return Err(err);
                }
                Reply::Data(escaped) => match data.as_deref_mut() {
                    Some(buf) => buf.append_escaped(escaped)?,
                    None => {
                        return Err(PinentryError::Protocol(format!(
                            "unexpected data in the reply to {verb}"
                        )))
                    }
                },
                Reply::Status | Reply::Comment => {}
                Reply::Inquire => {
                    inquiries += 1;
                    if inquiries > MAX_INQUIRIES {
                        return Err(PinentryError::Protocol(format!(
                            "too many inquiries during {verb}"
                        )));
                    }
                    self.send("END")?;
                }
                Reply::Unknown => {
                    return Err(PinentryError::Protocol(format!(
                        "unexpected reply to {verb} (not OK, ERR, D, S, # or INQUIRE)"
                    )))
                }
            }
        }
    }

    fn send(&mut self, line: &str) -> Result<(), PinentryError> {
        debug_assert!(line.len() < MAX_LINE && !line.contains('\n'));
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| PinentryError::Io(io::Error::other("pipe to pinentry closed")))?;
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        stdin
            .write_all(&buf)
            .and_then(|()| stdin.flush())
            .map_err(|e| {
                if e.kind() == io::ErrorKind::BrokenPipe {
                    PinentryError::Protocol(format!("the program exited before {}", verb_of(line)))
                } else {
                    PinentryError::Io(e)
                }
            })
    }

    /// The next line, waiting at most until the deadline (then the program is killed).
    fn next_line(&mut self, during: &str) -> Result<Zeroizing<Vec<u8>>, PinentryError> {
        let wait = self.deadline.saturating_duration_since(Instant::now());
        match self.replies.recv_timeout(wait) {
            Ok(FromReader::Line(line)) => Ok(line),
            Ok(FromReader::Eof) | Err(RecvTimeoutError::Disconnected) => {
                Err(PinentryError::Protocol(format!(
                    "the program closed the connection during {during}"
                )))
            }
            Ok(FromReader::Failed(e)) if e.kind() == io::ErrorKind::InvalidData => {
                Err(PinentryError::Protocol(format!("{e} during {during}")))
            }
            Ok(FromReader::Failed(e)) => Err(PinentryError::Io(e)),
            Err(RecvTimeoutError::Timeout) => {
                tracing::debug!("pinentry: no answer during {during} by the deadline; killing it");
                self.stdin = None;
                kill_and_reap(&mut self.child);
                Err(PinentryError::Timeout)
            }
        }
    }

    /// Ends the session normally (`BYE`, then reaping, in `Drop`).
    fn finish(self) {}
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            // Best effort: the program also exits when its input closes.
            let _ = stdin.write_all(b"BYE\n").and_then(|()| stdin.flush());
        }
        let limit = Instant::now() + EXIT_GRACE;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < limit => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    kill_and_reap(&mut self.child);
                    return;
                }
            }
        }
    }
}

fn kill_and_reap(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // Fails only if it has exited in the meantime; wait() reaps it either way.
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        assert!(!escape_into(&mut out, text, usize::MAX));
        out
    }

    fn decoded(escaped: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::new();
        percent_decode_into(escaped, &mut out, 64).map(|()| out)
    }

    #[test]
    fn escapes_percent_and_control_characters() {
        assert_eq!(escaped("plain text: OK"), "plain text: OK");
        assert_eq!(escaped("100%"), "100%25");
        assert_eq!(escaped("a\nb\r\nc"), "a%0Ab%0D%0Ac");
        assert_eq!(escaped("tab\there\u{7f}\u{1}"), "tab%09here%7F%01");
        assert_eq!(escaped("+ stays +"), "+ stays +");
        assert_eq!(escaped("Schlüssel «alice»"), "Schlüssel «alice»");
    }

    #[test]
    fn escaping_stops_at_the_budget_without_splitting() {
        let mut out = String::new();
        assert!(escape_into(&mut out, "ab%cd", 4));
        assert_eq!(out, "ab");
        let mut out = String::new();
        assert!(escape_into(&mut out, "aüb", 2));
        assert_eq!(out, "a");
        let mut out = String::new();
        assert!(!escape_into(&mut out, "a%", 4));
        assert_eq!(out, "a%25");
    }

    #[test]
    fn long_text_commands_are_cut_to_one_line() {
        let desc = "é%\n".repeat(1000);
        let line = text_command("SETDESC", &desc);
        assert!(line.len() < MAX_LINE, "{} bytes", line.len());
        assert!(line.len() > MAX_LINE - 10);
        assert!(line.starts_with("SETDESC é%25%0A"));
        assert!(line.ends_with("..."));
        assert!(!line.contains('\n'));
        let short = text_command("SETPROMPT", "PIN:");
        assert_eq!(short, "SETPROMPT PIN:");
    }

    #[test]
    fn option_and_keyinfo_values_are_checked() {
        assert_eq!(
            option_line("ttyname", "/dev/pts/3").expect("valid"),
            "OPTION ttyname=/dev/pts/3"
        );
        assert!(option_line("ttytype", "xterm\nGETPIN").is_err());
        assert!(option_line("lc-ctype", "C%0A").is_err());
        assert!(option_line("lc-ctype", "").is_err());
        assert_eq!(
            keyinfo_command("tokenmail/alice").expect("valid"),
            "SETKEYINFO tokenmail/alice"
        );
        assert!(keyinfo_command("with space").is_err());
        assert!(keyinfo_command("x\ny").is_err());
        assert!(keyinfo_command("").is_err());
    }

    #[test]
    fn tty_options_give_option_lines() {
        let tty = TtyOptions {
            ttyname: Some("/dev/pts/7".into()),
            ttytype: Some("dumb".into()),
            lc_ctype: Some("C.UTF-8".into()),
            lc_messages: None,
        };
        assert_eq!(
            tty.option_lines().expect("valid"),
            [
                "OPTION ttyname=/dev/pts/7",
                "OPTION ttytype=dumb",
                "OPTION lc-ctype=C.UTF-8"
            ]
        );
        assert!(TtyOptions::default()
            .option_lines()
            .expect("valid")
            .is_empty());
    }

    #[test]
    fn timeout_is_whole_seconds_rounded_up() {
        assert_eq!(timeout_command(Duration::from_secs(60)), "SETTIMEOUT 60");
        assert_eq!(timeout_command(Duration::from_millis(1500)), "SETTIMEOUT 2");
        assert_eq!(timeout_command(Duration::ZERO), "SETTIMEOUT 1");
    }

    #[test]
    fn unescapes_data() {
        assert_eq!(decoded(b"1234").expect("ok"), b"1234");
        assert_eq!(decoded(b"a b%25c").expect("ok"), b"a b%c");
        assert_eq!(decoded(b"%0A%0d%0a%7e+").expect("ok"), b"\n\r\n~+");
        assert_eq!(decoded(b"").expect("ok"), b"");
        assert_eq!(decoded(b"%C3%BC").expect("ok"), "ü".as_bytes());
        assert_eq!(decoded(b"12%"), Err(DecodeError::BadEscape));
        assert_eq!(decoded(b"12%4"), Err(DecodeError::BadEscape));
        assert_eq!(decoded(b"%zz"), Err(DecodeError::BadEscape));
        assert_eq!(decoded(&[b'x'; 65]), Err(DecodeError::TooLong));
        assert_eq!(decoded(&[b'x'; 64]).expect("ok").len(), 64);
    }

    #[test]
    fn escape_then_unescape_round_trips() {
        let text = "P%N with\nnewline, ü and 100%";
        assert_eq!(
            decoded(escaped(text).as_bytes()).expect("ok"),
            text.as_bytes()
        );
    }

    #[test]
    fn pin_buffer_accumulates_data_lines() {
        let mut pin = PinBuf::new();
        pin.append_escaped(b"12 ").expect("ok");
        pin.append_escaped(b"%2534").expect("ok");
        let capacity = pin.0.capacity();
        let secret = pin.into_secret().expect("a PIN");
        assert_eq!(secrecy::ExposeSecret::expose_secret(&secret), "12 %34");
        assert_eq!(capacity, MAX_PIN_LEN);

        assert!(matches!(
            PinBuf::new().into_secret(),
            Err(PinentryError::EmptyPin)
        ));
        let mut pin = PinBuf::new();
        pin.append_escaped(b"%FF").expect("ok");
        assert!(matches!(pin.into_secret(), Err(PinentryError::Protocol(_))));
        let mut pin = PinBuf::new();
        let long = vec![b'1'; MAX_PIN_LEN + 1];
        match pin.append_escaped(&long) {
            Err(PinentryError::Protocol(m)) => assert!(!m.contains("111"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn parses_replies() {
        assert_eq!(parse_reply(b"OK"), Reply::Ok);
        assert_eq!(parse_reply(b"OK Pleased to meet you"), Reply::Ok);
        assert_eq!(parse_reply(b"OK\r"), Reply::Ok);
        assert_eq!(parse_reply(b"D a b%25c"), Reply::Data(b"a b%25c"));
        assert_eq!(parse_reply(b"D  lead"), Reply::Data(b" lead"));
        assert_eq!(parse_reply(b"D"), Reply::Data(b""));
        assert_eq!(parse_reply(b"S ERROR tty.? 83886142 "), Reply::Status);
        assert_eq!(parse_reply(b"S"), Reply::Status);
        assert_eq!(parse_reply(b"# a comment"), Reply::Comment);
        assert_eq!(parse_reply(b"#"), Reply::Comment);
        assert_eq!(parse_reply(b"INQUIRE QUALITY 1234"), Reply::Inquire);
        assert_eq!(
            parse_reply(b"ERR 83886179 Operation cancelled <Pinentry>"),
            Reply::Err {
                code: 83886179,
                message: b"Operation cancelled <Pinentry>"
            }
        );
        assert_eq!(
            parse_reply(b"ERR 83886179"),
            Reply::Err {
                code: 83886179,
                message: b""
            }
        );
        for bad in [
            &b""[..],
            b"OKAY",
            b"ok",
            b"ERR",
            b"ERR cancelled",
            b"ERR -1 x",
            b"DATA x",
            b"INQUIRE",
            b"1234",
            b"END",
        ] {
            assert_eq!(
                parse_reply(bad),
                Reply::Unknown,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn maps_error_codes() {
        assert!(matches!(
            map_err_reply(83886179, b"Operation cancelled"),
            PinentryError::Cancelled
        ));
        assert!(matches!(map_err_reply(99, b""), PinentryError::Cancelled));
        assert!(matches!(
            map_err_reply((5 << 24) | 198, b""),
            PinentryError::Cancelled
        ));
        assert!(matches!(
            map_err_reply(83886142, b"Timeout"),
            PinentryError::Timeout
        ));
        match map_err_reply(83886254, b"Unknown option\x1b[31m <Pinentry>") {
            PinentryError::Pinentry { code, message } => {
                assert_eq!(code, 83886254);
                assert_eq!(message, "Unknown option [31m <Pinentry>");
            }
            other => panic!("unexpected {other:?}"),
        }
        match map_err_reply(1, &[b'x'; 500]) {
            PinentryError::Pinentry { message, .. } => {
                assert_eq!(message.len(), MAX_ERR_TEXT + 3)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn line_reader_splits_and_limits_lines() {
        let input = b"OK hello\nD 12\n\nS x\npartial".to_vec();
        let mut reader = LineReader::new(io::Cursor::new(input));
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line().expect("read") {
            lines.push(line.to_vec());
        }
        assert_eq!(
            lines,
            [
                b"OK hello".to_vec(),
                b"D 12".to_vec(),
                b"".to_vec(),
                b"S x".to_vec()
            ]
        );

        let mut long = vec![b'A'; MAX_RECV_LINE * 2];
        long.push(b'\n');
        let mut reader = LineReader::new(io::Cursor::new(long));
        let err = reader.next_line().expect_err("too long");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let mut just_fits = vec![b'B'; MAX_RECV_LINE - 1];
        just_fits.push(b'\n');
        let mut reader = LineReader::new(io::Cursor::new(just_fits));
        let line = reader.next_line().expect("read").expect("a line");
        assert_eq!(line.len(), MAX_RECV_LINE - 1);
        assert_eq!(reader.pending.capacity(), MAX_RECV_LINE + READ_CHUNK);
    }

    #[test]
    fn finds_pinentry_in_search_path() {
        let dir1 = tempfile::tempdir().expect("tempdir");
        let dir2 = tempfile::tempdir().expect("tempdir");
        let make = |dir: &Path, name: &str, mode: u32| {
            let path = dir.join(name);
            std::fs::write(&path, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            path
        };
        let search = |dirs: &[&Path]| find_pinentry_in(&std::env::join_paths(dirs).expect("join"));
        assert_eq!(search(&[dir1.path(), dir2.path()]), None);
        // Not executable: ignored.
        make(dir1.path(), "pinentry", 0o644);
        assert_eq!(search(&[dir1.path(), dir2.path()]), None);
        let tty = make(dir1.path(), "pinentry-tty", 0o755);
        assert_eq!(search(&[dir1.path(), dir2.path()]), Some(tty));
        // A preferred name anywhere in the path wins over a later name.
        let qt = make(dir2.path(), "pinentry-qt", 0o755);
        assert_eq!(search(&[dir1.path(), dir2.path()]), Some(qt));
        let plain = make(dir2.path(), "pinentry", 0o755);
        assert_eq!(search(&[dir1.path(), dir2.path()]), Some(plain));
        // Relative entries are skipped.
        assert_eq!(find_pinentry_in(OsStr::new(".:relative")), None);
    }

    #[test]
    fn passes_only_listed_environment() {
        for name in ["PATH", "DISPLAY", "GPG_TTY", "LC_ALL", "LC_CTYPE", "LANG"] {
            assert!(is_passed_env(OsStr::new(name)), "{name}");
        }
        for name in [
            "TOKENMAIL_PIN",
            "LD_PRELOAD",
            "SSH_AUTH_SOCK",
            "PINENTRY_USER_DATA",
        ] {
            assert!(!is_passed_env(OsStr::new(name)), "{name}");
        }
    }
}
