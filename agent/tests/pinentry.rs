//! The pinentry client against the real `pinentry-tty` (driven through a
//! pseudo-terminal, as a user would type) and against a fake peer that speaks broken
//! Assuan (`tests/data/fake-pinentry.py`).
//!
//! pinentry-tty and python3 are declared test dependencies: nothing here is skipped.
//! Every wait is bounded, so a broken client fails a test instead of hanging it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use secrecy::ExposeSecret;
use tokenmail_agent::pin::pinentry::{
    self, PinentryError, PinentryRequest, TtyOptions, HARD_DEADLINE_GRACE,
};

const PINENTRY_TTY: &str = "/usr/bin/pinentry-tty";
const PYTHON: &str = "/usr/bin/python3";
const FAKE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake-pinentry.py");

/// How long a test waits for output on the terminal.
const SCREEN_WAIT: Duration = Duration::from_secs(20);
/// How much longer than its own deadline a call may take before the test calls it hung.
const HANG_MARGIN: Duration = Duration::from_secs(15);

fn pinentry_tty() -> PathBuf {
    let path = PathBuf::from(PINENTRY_TTY);
    assert!(
        path.exists(),
        "{PINENTRY_TTY} is missing: apt-get install pinentry-tty"
    );
    path
}

// ---------------------------------------------------------------------------------
// A pseudo-terminal standing in for the user's terminal.

struct Pty {
    master: File,
    /// Kept open so the terminal exists while pinentry opens it by name.
    _slave: OwnedFd,
    name: PathBuf,
    output: Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl Pty {
    fn open() -> Pty {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        for fd in [&pty.master, &pty.slave] {
            // Not inherited by pinentry (which opens the terminal by name).
            fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).expect("cloexec");
        }
        let name = nix::unistd::ttyname(&pty.slave).expect("ttyname");
        let master = File::from(pty.master);
        let mut reader = master.try_clone().expect("clone master");
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            // Ends with EIO once the terminal is gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Pty {
            master,
            _slave: pty.slave,
            name,
            output,
            seen: Vec::new(),
        }
    }

    fn tty_options(&self) -> TtyOptions {
        TtyOptions {
            ttyname: Some(self.name.clone()),
            ttytype: Some("dumb".into()),
            lc_ctype: Some("C.UTF-8".into()),
            lc_messages: None,
        }
    }

    /// Waits until `needle` has appeared on the screen; returns the screen so far.
    fn wait_for(&mut self, needle: &str) -> String {
        let until = Instant::now() + SCREEN_WAIT;
        loop {
            let screen = String::from_utf8_lossy(&self.seen).into_owned();
            if screen.contains(needle) {
                return screen;
            }
            let left = until.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => self.seen.extend_from_slice(&bytes),
                Err(_) => panic!("{needle:?} did not appear on the terminal; it shows {screen:?}"),
            }
        }
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).expect("type on the terminal");
        self.master.flush().expect("flush the terminal");
    }
}

// ---------------------------------------------------------------------------------
// Running the client in a thread, so that the test can play the user meanwhile.

struct Ask {
    program: PathBuf,
    description: String,
    error: Option<String>,
    keyinfo: Option<String>,
    timeout: Duration,
    tty: Option<TtyOptions>,
}

impl Ask {
    fn new(program: &Path, tty: Option<TtyOptions>) -> Ask {
        Ask {
            program: program.to_path_buf(),
            description:
                "Enter the PIN for token \"alice\" (YubiKey 5 #12345678) to sign a message".into(),
            error: None,
            keyinfo: None,
            timeout: Duration::from_secs(30),
            tty,
        }
    }

    fn request(&self) -> PinentryRequest<'_> {
        PinentryRequest {
            program: &self.program,
            title: "tokenmail",
            description: &self.description,
            prompt: "PIN:",
            error: self.error.as_deref(),
            keyinfo: self.keyinfo.as_deref(),
            timeout: self.timeout,
            tty: self.tty.clone(),
        }
    }
}

struct Pending {
    result: Receiver<Result<String, PinentryError>>,
    started: Instant,
    bound: Duration,
}

impl Pending {
    /// The call's result, and how long it took.
    fn outcome(self) -> (Result<String, PinentryError>, Duration) {
        let result = self
            .result
            .recv_timeout(self.bound)
            .expect("get_pin did not return within its bound (hung)");
        (result, self.started.elapsed())
    }
}

fn start_get_pin(ask: Ask) -> Pending {
    let bound = ask.timeout + HARD_DEADLINE_GRACE + HANG_MARGIN;
    let (tx, result) = mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        let outcome = retry_busy(|| pinentry::get_pin(&ask.request()))
            .map(|pin| pin.expose_secret().to_string());
        let _ = tx.send(outcome);
    });
    Pending {
        result,
        started,
        bound,
    }
}

fn get_pin_now(ask: Ask) -> Result<String, PinentryError> {
    start_get_pin(ask).outcome().0
}

/// Runs `call` again when the program could not be executed because another test
/// thread's fork briefly held it open for writing (ETXTBSY, with the freshly copied
/// fake): a race of the tests, not of the code under test.
fn retry_busy<T>(mut call: impl FnMut() -> Result<T, PinentryError>) -> Result<T, PinentryError> {
    const ETXTBSY: i32 = 26;
    let mut tries = 0;
    loop {
        match call() {
            Err(PinentryError::Spawn { source, .. })
                if source.raw_os_error() == Some(ETXTBSY) && tries < 20 =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

// ---------------------------------------------------------------------------------
// The fake peer.

/// A copy of the fake pinentry named for `mode`, in a directory of its own (so each
/// test has its own transcript).
struct Fake {
    _dir: tempfile::TempDir,
    program: PathBuf,
}

impl Fake {
    fn new(mode: &str) -> Fake {
        static PYTHON_CHECKED: OnceLock<()> = OnceLock::new();
        PYTHON_CHECKED.get_or_init(|| {
            assert!(
                Path::new(PYTHON).exists(),
                "{PYTHON} is missing (it runs the fake pinentry): apt-get install python3"
            );
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let program = dir.path().join(format!("fake-pinentry-{mode}"));
        std::fs::copy(FAKE_SCRIPT, &program).expect("copy the fake pinentry");
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the fake pinentry");
        Fake { _dir: dir, program }
    }

    fn sidecar(&self, ext: &str) -> String {
        let mut path = self.program.clone().into_os_string();
        path.push(ext);
        std::fs::read_to_string(&path).unwrap_or_default()
    }

    /// The lines the fake received.
    fn transcript(&self) -> Vec<String> {
        self.sidecar(".log").lines().map(str::to_string).collect()
    }

    /// Whether the fake's process is gone (exited and reaped).
    fn is_gone(&self) -> bool {
        let pid = self.sidecar(".pid");
        let pid = pid.trim();
        assert!(!pid.is_empty(), "the fake did not start");
        !Path::new("/proc").join(pid).exists()
    }
}

fn expect_protocol_error(mode: &str) -> String {
    let fake = Fake::new(mode);
    let mut ask = Ask::new(&fake.program, None);
    ask.timeout = Duration::from_secs(10);
    let (result, took) = start_get_pin(ask).outcome();
    let message = match result {
        Err(PinentryError::Protocol(m)) => m,
        other => panic!("mode {mode}: expected a protocol error, got {other:?}"),
    };
    assert!(took < Duration::from_secs(8), "mode {mode}: took {took:?}");
    assert!(fake.is_gone(), "mode {mode}: the fake was not reaped");
    message
}

// ---------------------------------------------------------------------------------
// The real pinentry-tty.

#[test]
fn tty_returns_the_pin_typed_with_spaces_and_percent() {
    let program = pinentry_tty();
    let mut pty = Pty::open();
    let pending = start_get_pin(Ask::new(&program, Some(pty.tty_options())));
    let screen = pty.wait_for("PIN:");
    assert!(
        screen.contains("Enter the PIN for token \"alice\" (YubiKey 5 #12345678)"),
        "{screen:?}"
    );
    pty.type_keys(b"12 34%56 \n");
    let (result, _) = pending.outcome();
    assert_eq!(result.expect("a PIN"), "12 34%56 ");
    assert!(
        !String::from_utf8_lossy(&pty.seen).contains("34%56"),
        "the PIN was echoed"
    );
}

#[test]
fn tty_retry_shows_the_error_and_escaped_description() {
    let program = pinentry_tty();
    let mut pty = Pty::open();
    let mut ask = Ask::new(&program, Some(pty.tty_options()));
    ask.description = "Second line follows.\nPIN 100% required".into();
    ask.error = Some("Wrong PIN (2 tries left)".into());
    ask.keyinfo = Some("tokenmail/alice".into());
    let pending = start_get_pin(ask);
    let screen = pty.wait_for("PIN:");
    assert!(screen.contains("Wrong PIN (2 tries left)"), "{screen:?}");
    assert!(
        screen.contains("Second line follows.\r\nPIN 100% required"),
        "{screen:?}"
    );
    pty.type_keys(b"000000\n");
    assert_eq!(pending.outcome().0.expect("a PIN"), "000000");
}

#[test]
fn tty_ctrl_d_cancels() {
    let program = pinentry_tty();
    let mut pty = Pty::open();
    let pending = start_get_pin(Ask::new(&program, Some(pty.tty_options())));
    pty.wait_for("PIN:");
    // pinentry-tty takes end-of-file (Ctrl-D) as cancel.
    pty.type_keys(b"\x04");
    let (result, _) = pending.outcome();
    assert!(
        matches!(result, Err(PinentryError::Cancelled)),
        "{result:?}"
    );
}

#[test]
fn tty_empty_entry_is_empty_pin() {
    let program = pinentry_tty();
    let mut pty = Pty::open();
    let pending = start_get_pin(Ask::new(&program, Some(pty.tty_options())));
    pty.wait_for("PIN:");
    pty.type_keys(b"\n");
    let (result, _) = pending.outcome();
    assert!(matches!(result, Err(PinentryError::EmptyPin)), "{result:?}");
}

#[test]
fn tty_times_out_when_nobody_types() {
    let program = pinentry_tty();
    let mut pty = Pty::open();
    let mut ask = Ask::new(&program, Some(pty.tty_options()));
    ask.timeout = Duration::from_secs(2);
    let pending = start_get_pin(ask);
    pty.wait_for("PIN:");
    let (result, took) = pending.outcome();
    assert!(matches!(result, Err(PinentryError::Timeout)), "{result:?}");
    assert!(
        took >= Duration::from_secs(1),
        "gave up too early: {took:?}"
    );
    assert!(
        took <= Duration::from_secs(2) + HARD_DEADLINE_GRACE + Duration::from_secs(2),
        "took {took:?}"
    );
}

#[test]
fn tty_message_is_shown_until_a_key_is_pressed() {
    let program = pinentry_tty();
    let mut pty = Pty::open();
    let tty = pty.tty_options();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(pinentry::show_message_with_tty(
            &program,
            "tokenmail",
            "PIN blocked: use the PUK",
            Duration::from_secs(30),
            Some(&tty),
        ));
    });
    pty.wait_for("PIN blocked: use the PUK");
    pty.type_keys(b"\n");
    let result = rx
        .recv_timeout(Duration::from_secs(30) + HANG_MARGIN)
        .expect("show_message hung");
    assert!(result.is_ok(), "{result:?}");
}

// ---------------------------------------------------------------------------------
// Starting the program.

#[test]
fn missing_program_is_not_found_with_a_one_line_message() {
    let missing = Path::new("/nonexistent/tokenmail-test/pinentry-missing");
    let result = get_pin_now(Ask::new(missing, None));
    let err = result.expect_err("no such program");
    assert!(
        matches!(&err, PinentryError::NotFound(p) if p == missing),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("/nonexistent/tokenmail-test/pinentry-missing"),
        "{message}"
    );
    assert!(message.contains("not found"), "{message}");
    assert!(!message.contains('\n'), "{message:?}");

    let err = pinentry::show_message(missing, "tokenmail", "text", Duration::from_secs(5))
        .expect_err("no such program");
    assert!(matches!(err, PinentryError::NotFound(_)), "{err:?}");
}

#[test]
fn find_pinentry_finds_an_installed_program() {
    pinentry_tty();
    let found =
        pinentry::find_pinentry().expect("a pinentry in $PATH (apt-get install pinentry-tty)");
    let name = found
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a file name");
    assert!(name.starts_with("pinentry"), "{}", found.display());
    assert!(found.is_absolute());
}

// ---------------------------------------------------------------------------------
// The fake peer.

#[test]
fn sends_the_expected_commands_escaped_and_says_bye() {
    let fake = Fake::new("ok");
    let mut ask = Ask::new(&fake.program, None);
    ask.tty = Some(TtyOptions {
        ttyname: Some("/dev/pts/99".into()),
        ttytype: Some("xterm-256color".into()),
        lc_ctype: Some("C.UTF-8".into()),
        lc_messages: None,
    });
    ask.description = "Line 1\nLine 2: 100% sure\r".into();
    ask.error = Some("Wrong PIN (2 tries left)".into());
    ask.keyinfo = Some("tokenmail/alice".into());
    ask.timeout = Duration::from_millis(2500);
    assert_eq!(get_pin_now(ask).expect("a PIN"), "1234");
    assert_eq!(
        fake.transcript(),
        [
            "OPTION ttyname=/dev/pts/99",
            "OPTION ttytype=xterm-256color",
            "OPTION lc-ctype=C.UTF-8",
            "SETTITLE tokenmail",
            "SETDESC Line 1%0ALine 2: 100%25 sure%0D",
            "SETPROMPT PIN:",
            "SETERROR Wrong PIN (2 tries left)",
            "SETKEYINFO tokenmail/alice",
            "SETTIMEOUT 3",
            "GETPIN",
            "BYE",
        ]
    );
    assert!(fake.is_gone(), "the fake was not reaped");
}

#[test]
fn long_description_is_cut_to_one_assuan_line() {
    let fake = Fake::new("ok");
    let mut ask = Ask::new(&fake.program, None);
    ask.description = "%\n".repeat(2000);
    assert_eq!(get_pin_now(ask).expect("a PIN"), "1234");
    let transcript = fake.transcript();
    let desc = transcript
        .iter()
        .find(|l| l.starts_with("SETDESC "))
        .expect("SETDESC sent");
    assert!(desc.len() < 1000, "{} bytes", desc.len());
    assert!(desc.ends_with("..."), "{desc}");
    assert!(transcript.iter().all(|l| l.len() < 1000));
}

#[test]
fn environment_is_reduced_to_the_allowed_variables() {
    let fake = Fake::new("ok");
    get_pin_now(Ask::new(&fake.program, None)).expect("a PIN");
    let names = fake.sidecar(".env");
    for name in names.lines().filter(|n| !n.is_empty()) {
        assert!(
            pinentry::PASSED_ENV.contains(&name) || name.starts_with("LC_"),
            "{name} was passed to pinentry"
        );
    }
}

#[test]
fn data_in_several_lines_with_status_comments_and_inquiry() {
    let fake = Fake::new("multi");
    assert_eq!(
        get_pin_now(Ask::new(&fake.program, None)).expect("a PIN"),
        "1 2%3\n4"
    );
    let transcript = fake.transcript();
    let getpin = transcript
        .iter()
        .position(|l| l == "GETPIN")
        .expect("GETPIN sent");
    assert_eq!(transcript[getpin + 1], "END", "{transcript:?}");
}

#[test]
fn refused_optional_commands_are_tolerated() {
    let fake = Fake::new("refuse-opt");
    let mut ask = Ask::new(&fake.program, None);
    ask.keyinfo = Some("tokenmail/alice".into());
    assert_eq!(get_pin_now(ask).expect("a PIN"), "1234");
}

#[test]
fn cancel_empty_and_failure_replies() {
    let fake = Fake::new("cancel");
    let result = get_pin_now(Ask::new(&fake.program, None));
    assert!(
        matches!(result, Err(PinentryError::Cancelled)),
        "{result:?}"
    );

    let fake = Fake::new("empty");
    let result = get_pin_now(Ask::new(&fake.program, None));
    assert!(matches!(result, Err(PinentryError::EmptyPin)), "{result:?}");

    let fake = Fake::new("failure");
    match get_pin_now(Ask::new(&fake.program, None)) {
        Err(PinentryError::Pinentry { code, message }) => {
            assert_eq!(code, 83886081);
            assert_eq!(message, "General error <Pinentry>");
        }
        other => panic!("expected a pinentry failure, got {other:?}"),
    }
}

#[test]
fn show_message_through_the_fake() {
    let fake = Fake::new("ok");
    retry_busy(|| {
        pinentry::show_message(
            &fake.program,
            "tokenmail",
            "PIN blocked: use the PUK",
            Duration::from_secs(5),
        )
    })
    .expect("message acknowledged");
    assert_eq!(
        fake.transcript(),
        [
            "SETTITLE tokenmail",
            "SETDESC PIN blocked: use the PUK",
            "SETTIMEOUT 5",
            "MESSAGE",
            "BYE"
        ]
    );
}

#[test]
fn unknown_reply_is_a_protocol_error_without_its_content() {
    let message = expect_protocol_error("garbage");
    assert!(
        !message.contains("1234") && !message.contains("HELLO"),
        "{message}"
    );
}

#[test]
fn bad_escape_is_a_protocol_error_without_the_data() {
    let message = expect_protocol_error("bad-escape");
    assert!(
        !message.contains("12") && !message.contains("34"),
        "{message}"
    );
}

#[test]
fn overlong_line_is_a_protocol_error() {
    let message = expect_protocol_error("long-line");
    assert!(!message.contains("777"), "{message}");
}

#[test]
fn program_exiting_mid_command_is_a_protocol_error() {
    expect_protocol_error("exit");
}

#[test]
fn bad_greeting_is_a_protocol_error() {
    let message = expect_protocol_error("bad-greeting");
    assert!(!message.contains("HELLO"), "{message}");
}

#[test]
fn unresponsive_program_is_killed_at_the_deadline() {
    for mode in ["hang", "silent"] {
        let fake = Fake::new(mode);
        let mut ask = Ask::new(&fake.program, None);
        ask.timeout = Duration::from_secs(1);
        let (result, took) = start_get_pin(ask).outcome();
        assert!(
            matches!(result, Err(PinentryError::Timeout)),
            "mode {mode}: {result:?}"
        );
        let limit = Duration::from_secs(1) + HARD_DEADLINE_GRACE + Duration::from_secs(2);
        assert!(took <= limit, "mode {mode}: took {took:?}");
        assert!(took >= Duration::from_secs(1), "mode {mode}: took {took:?}");
        assert!(fake.is_gone(), "mode {mode}: the fake was not killed");
    }
}
