//! `tokenmail-bench soak`: many mixed clients against one agent for a while, with faults.
//!
//! The driver owns the agent: it starts `tokenmail-agent --foreground` on a private socket
//! (its `TMPDIR` a private directory, checked empty at the end), and later kills it with
//! SIGKILL and starts it again on the same socket. Its clients use the blocking
//! [`tokenmail_proto::Client`] over the agent's stream operations (`sign`, `verify`,
//! `decrypt`) and `status`; each answer is checked (the decrypted and verified content
//! byte for byte against the expected one).
//!
//! Timeline (the load time is `--minutes`/`--seconds`, or about 24 s with `--short`):
//!
//! 1. prepare: messages encrypted to the token's RSA and P-256 certificates, messages signed
//!    by both keys (through the agent), their expected outputs; an idle sample of the agent;
//! 2. load, with (b) slow clients (a stream request whose input is dribbled byte by byte)
//!    and never-reading clients (a 4 MiB sign whose answer is never read) for a while,
//!    then (a) the token removed (`softhsm2-util --delete-token`) for a few seconds and
//!    restored (its directory moved back): clients in the gap must get `token-not-present`,
//!    and after it operations must succeed again, with the same agent;
//! 3. quiesce: all clients disconnect, an idle sample of the agent (fds, RSS) to compare
//!    with the one before the load;
//! 4. load again, `tokenmail decrypt -o` / `tokenmail sign -o` runs started around the
//!    moment the agent is killed (SIGKILL); the clients in flight must get an error at once
//!    (not hang), the CLI runs must leave either their complete output or nothing (no
//!    partial output file, no temporary file) in their output directory; the agent is
//!    started again on the same socket, sampled idle, and the load resumes;
//! 5. stop: an idle sample of the new agent, SIGTERM, the agent's TMPDIR must be empty.
//!
//! `busy` answers (more than 16 stream operations at once) are expected with many clients
//! and counted, not failures. Errors are "expected" only inside the fault windows and only
//! of the kind the fault must give; anything else is an "unexpected" error.
//! Every external program runs with a deadline (`process::try_run_with_timeout`).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tokenmail_proto::frame::{read_frame, write_frame, FrameKind};
use tokenmail_proto::v1::{ErrorCode, Request, Response, SignForm};
use tokenmail_proto::{encode_message, Client, ClientError, ProtoError};

use crate::process::{self, Running};

const CLIENT_NAME: &str = concat!("tokenmail-bench-soak/", env!("CARGO_PKG_VERSION"));
/// Longest a client waits for one answer: beyond it the agent is taken as hung.
const OP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest any external program may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// After the token is back (or the agent serves again), errors of the fault are still
/// expected from operations that started up to this long after.
const GRACE: Duration = Duration::from_secs(2);
/// The agent's write timeout (agent/src/server/stream.rs WRITE_TIMEOUT).
const AGENT_WRITE_TIMEOUT: Duration = Duration::from_secs(120);

/// Soak and fault run against a private agent (see the module documentation).
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// tokenmail-agent binary (the driver starts, kills and restarts it).
    #[arg(long, value_name = "PATH")]
    agent: PathBuf,
    /// tokenmail binary (the `-o` runs interrupted by the kill).
    #[arg(long, value_name = "PATH")]
    cli: PathBuf,
    /// PKCS#11 module (SoftHSM).
    #[arg(long, value_name = "LIB.so", env = "TOKENMAIL_PKCS11_MODULE")]
    module: PathBuf,
    /// Label of the token.
    #[arg(long, value_name = "LABEL", env = "TOKENMAIL_TOKEN_LABEL")]
    token_label: String,
    /// File holding the user PIN.
    #[arg(long, value_name = "FILE", env = "TOKENMAIL_PIN_FILE")]
    pin_file: PathBuf,
    /// The test PKI of softhsm/provision.sh (root.pem, alice-rsa.pem, bob-p256.pem).
    #[arg(long, value_name = "DIR", env = "TOKENMAIL_PKI")]
    pki: PathBuf,
    /// Scratch directory (socket, agent logs, outputs): created, must be empty.
    #[arg(long, value_name = "DIR")]
    work: PathBuf,
    /// Concurrent load clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Load time in minutes.
    #[arg(long, conflicts_with = "seconds")]
    minutes: Option<f64>,
    /// Load time in seconds.
    #[arg(long)]
    seconds: Option<f64>,
    /// The CI variant: about 24 s of load, smaller big messages.
    #[arg(long)]
    short: bool,
    /// Clients that dribble their input during phase (b).
    #[arg(long, default_value_t = 4)]
    slow_clients: usize,
    /// Clients that send a big sign request and never read the answer during phase (b).
    #[arg(long, default_value_t = 4)]
    never_reading: usize,
    /// Print JSON instead of the text report.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report (with the fd/RSS series) to this file.
    #[arg(long, value_name = "FILE")]
    json_file: Option<PathBuf>,
}

// ------------------------------------------------------------------------------ plan

/// When each phase happens, from the start of the load.
#[derive(Debug, Clone)]
struct Plan {
    total: Duration,
    b_start: Duration,
    b_end: Duration,
    a_start: Duration,
    gap: Duration,
    /// End of the first load period (quiesce).
    load1: Duration,
    /// Load between the quiesce and the kill.
    prekill: Duration,
    /// Load after the restart.
    load2: Duration,
    /// Size of the message of the `-o` CLI runs.
    cli_bytes: usize,
    /// Size of the never-reading clients' message.
    never_bytes: usize,
    /// A slow client's frame takes this long to dribble...
    dribble_frame: Duration,
    /// ...and it pauses this long between frames.
    dribble_pause: Duration,
}

impl Plan {
    fn new(a: &SoakArgs) -> Result<Plan> {
        let secs = match (a.minutes, a.seconds) {
            (Some(m), _) => m * 60.0,
            (None, Some(s)) => s,
            (None, None) if a.short => 24.0,
            (None, None) => 60.0,
        };
        if !secs.is_finite() || secs < 16.0 {
            bail!("the load must last at least 16 s");
        }
        let total = Duration::from_secs_f64(secs);
        let long = secs >= 200.0;
        let load2 = Duration::from_secs_f64((secs * 0.2).max(4.0));
        let prekill = Duration::from_secs(2);
        let load1 = total.saturating_sub(load2 + prekill);
        let b_start = Duration::from_secs_f64((load1.as_secs_f64() * 0.05).max(1.0));
        // Long runs keep the never-reading clients past the agent's write timeout.
        let b_len = if long {
            AGENT_WRITE_TIMEOUT + Duration::from_secs(20)
        } else {
            Duration::from_secs_f64(load1.as_secs_f64() * 0.35)
        };
        let b_end = b_start + b_len;
        let gap = Duration::from_secs(if long { 8 } else { 3 });
        let a_start = b_end + Duration::from_secs_f64((load1.as_secs_f64() * 0.05).max(1.0));
        if a_start + gap + Duration::from_secs(2) > load1 {
            bail!("the load is too short for the fault phases: give more --seconds");
        }
        Ok(Plan {
            total,
            b_start,
            b_end,
            a_start,
            gap,
            load1,
            prekill,
            load2,
            cli_bytes: if a.short { 4 << 20 } else { 16 << 20 },
            never_bytes: if a.short { 1 << 20 } else { 4 << 20 },
            dribble_frame: Duration::from_secs(if long { 12 } else { 2 }),
            dribble_pause: Duration::from_secs(if long { 10 } else { 1 }),
        })
    }
}

// -------------------------------------------------------------------------- messages

fn message(subject: &str, body_bytes: usize, eight_bit: bool) -> Vec<u8> {
    let mut m = format!(
        "From: alice@example.com\r\nTo: bob@example.com\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
    )
    .into_bytes();
    if eight_bit {
        m.extend_from_slice(
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        );
    } else {
        m.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n\r\n");
    }
    let line: &[u8] = if eight_bit {
        "gr\u{fc}\u{df}e aus K\u{f6}ln, soak line with some text in it to fill 76 chars\r\n"
            .as_bytes()
    } else {
        b"soak test line: the quick brown fox jumps over the lazy dog 0123456789 abc\r\n"
    };
    let mut n = 0usize;
    while n < body_bytes.max(1) {
        m.extend_from_slice(line);
        n += line.len();
    }
    m
}

/// One prepared input and what the agent must answer with.
#[derive(Debug)]
struct Case {
    input: Vec<u8>,
    expect: Vec<u8>,
}

#[derive(Debug)]
struct Fixtures {
    small: Vec<u8>,
    small8: Vec<u8>,
    big: Vec<u8>,
    /// [small, 100 KiB] x [alice-rsa, bob-p256]
    enc_small: Vec<Case>,
    enc_big: Vec<Case>,
    signed_small: Vec<Case>,
    signed_big: Vec<Case>,
    trust: String,
}

const SIGN_KEYS: [&str; 2] = ["alice-rsa", "bob-p256"];

fn sign_req(key: &str) -> Request {
    Request::Sign {
        key: key.to_string(),
        form: SignForm::Multipart,
        digest: None,
        pss: None,
        crlf: None,
        receipt_request: None,
        security_label: None,
    }
}

fn stream_call(c: &mut Client, req: &Request, input: &[u8]) -> Result<(Response, Vec<u8>)> {
    let mut out = Vec::new();
    let r = c
        .call_stream(req, input, &mut out)
        .map_err(|e| anyhow!("{e}"))?;
    Ok((r, out))
}

fn prepare(socket: &Path, pki: &Path, plan: &Plan, work: &Path) -> Result<(Fixtures, BigFiles)> {
    let mut c = connect(socket).context("preparing the messages")?;
    let pem = |name: &str| {
        fs::read_to_string(pki.join(name))
            .with_context(|| format!("cannot read {}", pki.join(name).display()))
    };
    let recipients = [pem("alice-rsa.pem")?, pem("bob-p256.pem")?];
    let trust = pem("root.pem")?;
    let small = message("soak small", 300, false);
    let small8 = message("soak small 8-bit", 300, true);
    let big = message("soak 100 KiB", 100 << 10, false);

    let mut encs = |plain: &[u8]| -> Result<Vec<Case>> {
        let mut v = Vec::new();
        for r in &recipients {
            let req = Request::Encrypt {
                recipients: vec![r.clone()],
                cipher: None,
            };
            let (resp, enc) = stream_call(&mut c, &req, plain).context("encrypt")?;
            if !matches!(resp, Response::Encrypted { .. }) {
                bail!("encrypt: unexpected answer {resp:?}");
            }
            let (resp, dec) =
                stream_call(&mut c, &Request::Decrypt, &enc).context("first decrypt")?;
            if !matches!(resp, Response::Decrypted { .. }) {
                bail!("decrypt: unexpected answer {resp:?}");
            }
            v.push(Case {
                input: enc,
                expect: dec,
            });
        }
        Ok(v)
    };
    let enc_small = encs(&small)?;
    let enc_big = encs(&big)?;
    let verify_req = Request::Verify {
        trust: vec![trust.clone()],
        signature: None,
    };
    let mut signs = |plain: &[u8]| -> Result<Vec<Case>> {
        let mut v = Vec::new();
        for k in SIGN_KEYS {
            // the From address must be the signer's for the message to verify
            let text = String::from_utf8_lossy(plain).replacen(
                "From: alice@",
                &format!("From: {}@", k.split('-').next().unwrap_or("alice")),
                1,
            );
            let (resp, signed) =
                stream_call(&mut c, &sign_req(k), text.as_bytes()).context("sign")?;
            if !matches!(resp, Response::Signed { .. }) {
                bail!("sign: unexpected answer {resp:?}");
            }
            let (resp, content) =
                stream_call(&mut c, &verify_req, &signed).context("first verify")?;
            if !matches!(resp, Response::Verified { valid: true, .. }) {
                bail!("verify: unexpected answer {resp:?}");
            }
            v.push(Case {
                input: signed,
                expect: content,
            });
        }
        Ok(v)
    };
    let signed_small = signs(&small)?;
    let signed_big = signs(&big)?;

    // The CLI runs' message, encrypted to alice, and what decrypting it gives.
    let cli_plain = message("soak CLI", plan.cli_bytes, false);
    let plain_path = work.join("cli-message.eml");
    let enc_path = work.join("cli-message.p7m");
    fs::write(&plain_path, &cli_plain).context("write the CLI message")?;
    let req = Request::Encrypt {
        recipients: vec![recipients[0].clone()],
        cipher: None,
    };
    let (_, enc) = stream_call(&mut c, &req, &cli_plain).context("encrypt the CLI message")?;
    fs::write(&enc_path, &enc).context("write the CLI message")?;
    let (_, dec) = stream_call(&mut c, &Request::Decrypt, &enc).context("decrypt it")?;
    let never = message("soak never read", plan.never_bytes, false);
    Ok((
        Fixtures {
            small,
            small8,
            big,
            enc_small,
            enc_big,
            signed_small,
            signed_big,
            trust,
        },
        BigFiles {
            plain: plain_path,
            encrypted: enc_path,
            decrypted: dec,
            never,
        },
    ))
}

#[derive(Debug)]
struct BigFiles {
    plain: PathBuf,
    encrypted: PathBuf,
    decrypted: Vec<u8>,
    never: Vec<u8>,
}

// ---------------------------------------------------------------------- operations

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    SignSmall,
    Sign100k,
    DecryptSmall,
    Decrypt100k,
    VerifySmall,
    Verify100k,
    Status,
}

const OPS: [Op; 7] = [
    Op::SignSmall,
    Op::Sign100k,
    Op::DecryptSmall,
    Op::Decrypt100k,
    Op::VerifySmall,
    Op::Verify100k,
    Op::Status,
];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::SignSmall => "sign-small",
            Op::Sign100k => "sign-100k",
            Op::DecryptSmall => "decrypt-small",
            Op::Decrypt100k => "decrypt-100k",
            Op::VerifySmall => "verify-small",
            Op::Verify100k => "verify-100k",
            Op::Status => "status",
        }
    }
    /// Uses a key on the token.
    fn token(self) -> bool {
        matches!(
            self,
            Op::SignSmall | Op::Sign100k | Op::DecryptSmall | Op::Decrypt100k
        )
    }
    /// Share of the mix, in percent.
    fn weight(self) -> u64 {
        match self {
            Op::SignSmall => 20,
            Op::Sign100k => 8,
            Op::DecryptSmall => 18,
            Op::Decrypt100k => 6,
            Op::VerifySmall => 14,
            Op::Verify100k => 6,
            Op::Status => 28,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    /// Answered and checked; `absent` for a status that shows the token absent.
    Ok { absent: bool },
    /// The agent's `busy` answer.
    Busy,
    /// Another error answer from the agent.
    Agent(ErrorCode, String),
    /// The connection failed (no agent, closed, reset).
    Conn(String),
    /// No answer within [`OP_TIMEOUT`].
    Hang(String),
    /// A wrong answer (content differs, unexpected response).
    Wrong(String),
}

impl Outcome {
    fn label(&self) -> String {
        match self {
            Outcome::Ok { .. } => "ok".into(),
            Outcome::Busy => "busy".into(),
            Outcome::Agent(c, _) => format!("agent error {}", code_name(*c)),
            Outcome::Conn(_) => "connection error".into(),
            Outcome::Hang(_) => "no answer (hang)".into(),
            Outcome::Wrong(_) => "wrong answer".into(),
        }
    }
    fn detail(&self) -> String {
        match self {
            Outcome::Ok { .. } | Outcome::Busy => self.label(),
            Outcome::Agent(c, m) => format!("{}: {m}", code_name(*c)),
            Outcome::Conn(m) | Outcome::Hang(m) | Outcome::Wrong(m) => m.clone(),
        }
    }
}

fn code_name(c: ErrorCode) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{c:?}"))
}

fn classify(e: ClientError) -> Outcome {
    match e {
        ClientError::Agent(info)
            if info.code == ErrorCode::Internal && info.message.contains("busy") =>
        {
            Outcome::Busy
        }
        ClientError::Agent(info) => Outcome::Agent(info.code, info.message),
        ClientError::Proto(ProtoError::Io(io))
            if matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Outcome::Hang(format!("no answer within {OP_TIMEOUT:?}: {io}"))
        }
        e @ (ClientError::NoAgent { .. }
        | ClientError::Proto(ProtoError::Truncated)
        | ClientError::Proto(ProtoError::Io(_))) => Outcome::Conn(e.to_string()),
        other => Outcome::Wrong(other.to_string()),
    }
}

fn connect(socket: &Path) -> Result<Client, ClientError> {
    let mut c = Client::connect(socket, CLIENT_NAME)?;
    let s = c.stream();
    s.set_read_timeout(Some(OP_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(OP_TIMEOUT)))
        .map_err(|e| ClientError::Proto(ProtoError::Io(e)))?;
    Ok(c)
}

/// A small xorshift generator (no dependency; quality is not the point).
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn pick(rng: &mut Rng) -> Op {
    let mut r = rng.below(100);
    for op in OPS {
        if r < op.weight() {
            return op;
        }
        r -= op.weight();
    }
    Op::Status
}

fn run_op(c: &mut Client, op: Op, fx: &Fixtures, rng: &mut Rng) -> Outcome {
    let i = rng.below(2) as usize;
    let stream = |c: &mut Client, req: &Request, input: &[u8]| {
        let mut out = Vec::new();
        c.call_stream(req, input, &mut out).map(|r| (r, out))
    };
    let r = match op {
        Op::Status => {
            return match c.call(&Request::Status) {
                Ok(Response::Status(st)) => Outcome::Ok {
                    absent: st.tokens.iter().any(|t| !t.present),
                },
                Ok(other) => Outcome::Wrong(format!("status answered {other:?}")),
                Err(e) => classify(e),
            }
        }
        Op::SignSmall | Op::Sign100k => {
            let input = match op {
                Op::Sign100k => &fx.big,
                _ if rng.below(2) == 0 => &fx.small8,
                _ => &fx.small,
            };
            stream(c, &sign_req(SIGN_KEYS[i]), input).map(|(r, out)| match r {
                Response::Signed { bytes, .. }
                    if bytes == out.len() as u64
                        && out.windows(16).any(|w| w == b"multipart/signed") =>
                {
                    Outcome::Ok { absent: false }
                }
                other => Outcome::Wrong(format!(
                    "sign answered {other:?} with {} bytes of output",
                    out.len()
                )),
            })
        }
        Op::DecryptSmall | Op::Decrypt100k => {
            let case = match op {
                Op::Decrypt100k => &fx.enc_big[i],
                _ => &fx.enc_small[i],
            };
            stream(c, &Request::Decrypt, &case.input).map(|(r, out)| match r {
                Response::Decrypted { .. } if out == case.expect => Outcome::Ok { absent: false },
                other => Outcome::Wrong(format!(
                    "decrypt answered {other:?} with {} bytes of output (expected {})",
                    out.len(),
                    case.expect.len()
                )),
            })
        }
        Op::VerifySmall | Op::Verify100k => {
            let case = match op {
                Op::Verify100k => &fx.signed_big[i],
                _ => &fx.signed_small[i],
            };
            let req = Request::Verify {
                trust: vec![fx.trust.clone()],
                signature: None,
            };
            stream(c, &req, &case.input).map(|(r, out)| match r {
                Response::Verified { valid: true, .. } if out == case.expect => {
                    Outcome::Ok { absent: false }
                }
                other => Outcome::Wrong(format!(
                    "verify answered {other:?} with {} bytes of output",
                    out.len()
                )),
            })
        }
    };
    r.unwrap_or_else(classify)
}

// ------------------------------------------------------------------------- records

#[derive(Debug, Clone)]
struct Rec {
    op: Op,
    start: Duration,
    end: Duration,
    outcome: Outcome,
}

#[derive(Debug)]
struct Shared {
    socket: PathBuf,
    t0: Instant,
    stop: AtomicBool,
    paused: AtomicBool,
    parked: AtomicUsize,
    fx: Fixtures,
}

impl Shared {
    fn now(&self) -> Duration {
        self.t0.elapsed()
    }
}

fn worker(sh: &Shared, id: usize) -> Vec<Rec> {
    let mut rng = Rng::new(id as u64 + 1 + sh.t0.elapsed().as_nanos() as u64);
    let mut recs = Vec::new();
    let mut conn: Option<Client> = None;
    let mut parked = false;
    let mut uses = 0u32;
    while !sh.stop.load(Ordering::SeqCst) {
        if sh.paused.load(Ordering::SeqCst) {
            conn = None;
            if !parked {
                parked = true;
                sh.parked.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        if parked {
            parked = false;
            sh.parked.fetch_sub(1, Ordering::SeqCst);
        }
        let op = pick(&mut rng);
        let start = sh.now();
        let c = match conn.take() {
            Some(c) => Ok(c),
            None => {
                uses = 0;
                connect(&sh.socket)
            }
        };
        let outcome = match c {
            Ok(mut c) => {
                let o = run_op(&mut c, op, &sh.fx, &mut rng);
                uses += 1;
                // Reconnect now and then (connection set-up and tear-down are part of the load).
                if matches!(o, Outcome::Ok { .. } | Outcome::Busy) && uses < 20 + id as u32 % 10 {
                    conn = Some(c);
                }
                o
            }
            Err(e) => classify(e),
        };
        let end = sh.now();
        let pause = match &outcome {
            Outcome::Ok { .. } => 0,
            Outcome::Busy => 5 + rng.below(20),
            Outcome::Agent(..) => 20,
            _ => 50,
        };
        recs.push(Rec {
            op,
            start,
            end,
            outcome,
        });
        if pause > 0 {
            std::thread::sleep(Duration::from_millis(pause));
        }
    }
    if parked {
        sh.parked.fetch_sub(1, Ordering::SeqCst);
    }
    recs
}

// ------------------------------------------------------------------- slow clients

#[derive(Debug, Default, Clone)]
struct SlowStats {
    ok: u64,
    busy: u64,
    errors: Vec<String>,
    /// Longest slow operation (dribbled input included), ms.
    longest_ms: u64,
}

/// Sends a sign request whose input is dribbled a few bytes at a time, until `until`.
fn slow_client(sh: &Shared, plan: &Plan, until: Duration) -> SlowStats {
    let mut st = SlowStats::default();
    let input = &sh.fx.small;
    // A slow client learns that it got `busy` only after dribbling its whole input: until
    // one of its operations went through, it tries again a little past the phase.
    let more = |st: &SlowStats| {
        let now = sh.now();
        now < until || (st.ok == 0 && now < until + Duration::from_secs(15))
    };
    while more(&st) && !sh.stop.load(Ordering::SeqCst) {
        let t = Instant::now();
        match slow_once(sh, plan, input) {
            Ok(Response::Signed { .. }) => st.ok += 1,
            Ok(other) => st.errors.push(format!("slow sign answered {other:?}")),
            Err(e) => match classify(e) {
                Outcome::Busy => st.busy += 1,
                o => st.errors.push(o.detail()),
            },
        }
        st.longest_ms = st.longest_ms.max(t.elapsed().as_millis() as u64);
    }
    st
}

fn slow_once(sh: &Shared, plan: &Plan, input: &[u8]) -> Result<Response, ClientError> {
    let mut c = connect(&sh.socket)?;
    let s = c.stream();
    let io = |e: std::io::Error| ClientError::Proto(ProtoError::Io(e));
    write_frame(
        s,
        FrameKind::Message,
        &encode_message(&sign_req("alice-rsa"))?,
    )?;
    // Two frames; each dribbled in 32 steps over `dribble_frame`, a pause between them.
    let half = input.len() / 2;
    for (n, part) in [&input[..half], &input[half..]].into_iter().enumerate() {
        if n > 0 {
            std::thread::sleep(plan.dribble_pause);
        }
        let mut frame = tokenmail_proto::frame::encode_frame(FrameKind::Data, part)?;
        let step = frame.len().div_ceil(32);
        let wait = plan.dribble_frame / 32;
        while !frame.is_empty() {
            let k = step.min(frame.len());
            s.write_all(&frame[..k]).map_err(io)?;
            frame.drain(..k);
            std::thread::sleep(wait);
        }
    }
    write_frame(s, FrameKind::End, &[])?;
    // The answer: output Data frames, End, the result.
    loop {
        let (h, p) = read_frame(s)?.ok_or(ProtoError::Truncated)?;
        match h.kind {
            FrameKind::Data => {}
            FrameKind::End => break,
            _ => {
                return match tokenmail_proto::decode_message::<Response>(&p)? {
                    Response::Error(e) => Err(ClientError::Agent(e)),
                    r => Ok(r),
                }
            }
        }
    }
    let (_, p) = read_frame(s)?.ok_or(ProtoError::Truncated)?;
    match tokenmail_proto::decode_message::<Response>(&p)? {
        Response::Error(e) => Err(ClientError::Agent(e)),
        r => Ok(r),
    }
}

// -------------------------------------------------------------- never-reading clients

#[derive(Debug)]
struct NeverReader {
    stream: UnixStream,
    /// When its output started to arrive (it holds a stream slot from then on).
    output_at: Duration,
    busy_retries: u64,
}

/// Sends a big sign request, waits until the output starts (reading only the first frame
/// header) and from then on never reads. Busy answers are retried on a new connection.
fn never_reader(sh: &Shared, input: &[u8], until: Duration) -> Result<NeverReader, String> {
    let mut busy_retries = 0;
    while sh.now() < until {
        let mut c = connect(&sh.socket).map_err(|e| e.to_string())?;
        let s = c.stream();
        let sent = (|| -> Result<(), ProtoError> {
            write_frame(
                s,
                FrameKind::Message,
                &encode_message(&sign_req("alice-rsa"))?,
            )?;
            for chunk in input.chunks(tokenmail_proto::frame::CHUNK) {
                write_frame(s, FrameKind::Data, chunk)?;
            }
            write_frame(s, FrameKind::End, &[])
        })();
        sent.map_err(|e| format!("sending the big request: {e}"))?;
        // The output starts once the agent has signed; waiting for it ends with the phase.
        let left = until.saturating_sub(sh.now()).max(Duration::from_secs(1));
        s.set_read_timeout(Some(left))
            .map_err(|e| format!("socket: {e}"))?;
        let mut header = [0u8; 12];
        s.read_exact(&mut header)
            .map_err(|e| format!("waiting for the first answer frame: {e}"))?;
        match header[6] {
            2 => {
                // Data: the output has started. Never read again.
                let stream = s
                    .try_clone()
                    .map_err(|e| format!("cannot keep the connection: {e}"))?;
                return Ok(NeverReader {
                    stream,
                    output_at: sh.now(),
                    busy_retries,
                });
            }
            _ => {
                // End, then the error (busy): read it and try again.
                let mut rest = Vec::new();
                let _ = read_frame(s).map(|f| {
                    if let Some((_, p)) = f {
                        rest = p;
                    }
                });
                let text = String::from_utf8_lossy(&rest).into_owned();
                if !text.contains("busy") {
                    return Err(format!("the big sign was answered {text}"));
                }
                busy_retries += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    Err("no stream slot before the end of the phase".into())
}

/// At the end of phase (b): whether the agent closed the connection (its write timeout)
/// or still waits for the client to read.
fn never_reader_end(mut nr: NeverReader) -> (&'static str, u64) {
    let _ = nr.stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    loop {
        match nr.stream.read(&mut buf) {
            Ok(0) => return ("closed by the agent", got),
            Ok(n) => got += n as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return ("still open", got)
            }
            Err(_) => return ("reset by the agent", got),
        }
        if got > 64 << 20 {
            return ("still sending", got);
        }
    }
}

// ------------------------------------------------------------------------ the agent

#[derive(Debug)]
struct Env {
    socket: PathBuf,
    conf: PathBuf,
    token_dir: PathBuf,
    agent_tmp: PathBuf,
    work: PathBuf,
}

#[derive(Debug)]
struct AgentProc {
    run: Running,
    pid: u32,
    log: PathBuf,
}

fn start_agent(a: &SoakArgs, env: &Env, n: usize) -> Result<AgentProc> {
    let log = env.work.join(format!("agent-{n}.log"));
    let f = fs::File::create(&log).context("agent log")?;
    let mut cmd = Command::new(&a.agent);
    cmd.arg("--foreground")
        .arg("--socket")
        .arg(&env.socket)
        .arg("--pkcs11-module")
        .arg(&a.module)
        .arg("--token-label")
        .arg(&a.token_label)
        .arg("--pin-file")
        .arg(&a.pin_file)
        .env("SOFTHSM2_CONF", &env.conf)
        .env("TMPDIR", &env.agent_tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(f));
    let mut run = Running::try_spawn(&mut cmd).map_err(|e| anyhow!(e))?;
    let pid = run.id();
    // For scripts/soak.sh: an agent left behind by a driver that was itself killed.
    let _ = fs::write(env.work.join("agent.pid"), format!("{pid}\n"));
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if UnixStream::connect(&env.socket).is_ok() {
            return Ok(AgentProc { run, pid, log });
        }
        if !run.alive() {
            bail!("the agent exited at start: {}", log_tail(&log));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "the agent did not listen on {} within 20 s: {}",
        env.socket.display(),
        log_tail(&log)
    )
}

fn log_tail(p: &Path) -> String {
    let s = fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// SIGTERM (through `kill`, with a deadline), then waits; SIGKILL when it does not stop.
fn stop_agent(ag: AgentProc) -> String {
    let _ = process::try_run_with_timeout(
        Command::new("kill").arg("-TERM").arg(ag.pid.to_string()),
        None,
        Duration::from_secs(10),
    );
    let mut run = ag.run;
    match run.wait_timeout(Duration::from_secs(15)) {
        Some(st) => format!("stopped by SIGTERM ({st})"),
        None => {
            let _ = run.kill();
            "did not stop within 15 s of SIGTERM: killed".into()
        }
    }
}

fn run_tool(cmd: &mut Command) -> Result<()> {
    let out = process::try_run_with_timeout(cmd, None, TOOL_TIMEOUT).map_err(|e| anyhow!(e))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `directories.tokendir` of a SoftHSM configuration.
fn token_dir(conf: &Path) -> Result<PathBuf> {
    let text = fs::read_to_string(conf).with_context(|| format!("reading {}", conf.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("directories.tokendir"))
        .filter_map(|r| r.trim().strip_prefix('='))
        .map(|v| PathBuf::from(v.trim()))
        .next()
        .ok_or_else(|| anyhow!("{}: no directories.tokendir", conf.display()))
}

// -------------------------------------------------------------------------- samples

#[derive(Debug, Clone, Copy)]
struct Sample {
    t: Duration,
    agent: usize,
    fds: u64,
    rss_kib: u64,
}

fn sample(pid: u32) -> Option<(u64, u64)> {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    Some((fds, rss))
}

#[derive(Debug, Default)]
struct Sampler {
    /// (agent number, pid) of the agent to sample, or none (dead).
    current: Mutex<Option<(usize, u32)>>,
    samples: Mutex<Vec<Sample>>,
    stop: AtomicBool,
}

impl Sampler {
    fn take(&self, t: Duration) -> Option<Sample> {
        let (agent, pid) = (*self.current.lock().ok()?)?;
        let (fds, rss_kib) = sample(pid)?;
        let s = Sample {
            t,
            agent,
            fds,
            rss_kib,
        };
        if let Ok(mut v) = self.samples.lock() {
            v.push(s);
        }
        Some(s)
    }
    fn set(&self, v: Option<(usize, u32)>) {
        if let Ok(mut c) = self.current.lock() {
            *c = v;
        }
    }
}

/// Samples taken while no client is connected (labelled, for the flatness checks).
#[derive(Debug, Default)]
struct Idle(Vec<(String, Sample)>);

/// Waits until no client is connected (`parked` = all workers), at most 90 s.
fn quiesce(sh: &Shared, workers: usize) -> bool {
    sh.paused.store(true, Ordering::SeqCst);
    let t = Instant::now();
    while sh.parked.load(Ordering::SeqCst) < workers {
        if t.elapsed() > OP_TIMEOUT + Duration::from_secs(30) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// An idle sample after the agent has had a moment to close what the clients left.
fn idle_sample(sampler: &Sampler, sh: &Shared, label: &str, idle: &mut Idle) {
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(s) = sampler.take(sh.now()) {
        idle.0.push((label.to_string(), s));
    }
}

fn sleep_until(sh: &Shared, at: Duration) {
    let now = sh.now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

// ---------------------------------------------------------------------- CLI runs

#[derive(Debug)]
struct CliRun {
    kind: &'static str,
    /// Start relative to the kill (negative: before), ms.
    offset_ms: i64,
    dir: PathBuf,
    out: PathBuf,
    result: Result<(bool, String), String>,
    start: Duration,
    end: Duration,
}

fn cli_cmd(a: &SoakArgs, env: &Env, kind: &str, big: &BigFiles, out: &Path) -> Command {
    let mut c = Command::new(&a.cli);
    c.arg("--socket").arg(&env.socket);
    if kind == "decrypt" {
        c.arg("decrypt").arg(&big.encrypted);
    } else {
        c.args(["sign", "--signer", "alice@example.com"])
            .arg(&big.plain);
    }
    c.arg("-o")
        .arg(out)
        .env("XDG_CACHE_HOME", env.work.join("cli-cache"))
        .env("TMPDIR", env.work.join("cli-tmp"));
    c
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

// ----------------------------------------------------------------------- statistics

fn pct(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    ms(sorted[i])
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// What fault, if any, explains an error.
#[derive(Debug, Clone, Copy)]
struct Faults {
    gap_start: Duration,
    /// When `softhsm2-util --delete-token` returned.
    deleted_at: Duration,
    gap_end: Duration,
    kill_at: Duration,
    ready_at: Duration,
}

impl Faults {
    fn expected(&self, r: &Rec) -> Option<&'static str> {
        match &r.outcome {
            Outcome::Agent(ErrorCode::TokenNotPresent, _)
                if r.end >= self.gap_start && r.start <= self.gap_end + GRACE =>
            {
                Some("token removed")
            }
            // softhsm2-util deletes the token's files one by one: an operation that overlaps
            // the deletion may see a half-deleted token (a key object gone, the token still
            // there), which no real device shows. Reported apart ("half_deleted").
            Outcome::Agent(ErrorCode::TokenError | ErrorCode::NoSuchKey, _)
                if r.op.token() && r.start <= self.deleted_at && r.end >= self.gap_start =>
            {
                Some("token half-deleted")
            }
            // A C_Decrypt that fails because the token vanished under it is answered with
            // the uniform decrypt-failed: the agent checks presence only on the next call,
            // never right after a failed decryption (a timing oracle; docs/protocol.md §9.2).
            Outcome::Agent(ErrorCode::DecryptFailed, _)
                if matches!(r.op, Op::DecryptSmall | Op::Decrypt100k)
                    && r.end >= self.gap_start
                    && r.start <= self.gap_end + GRACE =>
            {
                Some("token removed under a decryption")
            }
            Outcome::Conn(_) if r.end >= self.kill_at && r.start <= self.ready_at + GRACE => {
                Some("agent killed")
            }
            _ => None,
        }
    }
}

// ------------------------------------------------------------------------- the run

pub fn soak(a: SoakArgs) -> Result<()> {
    if a.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let plan = Plan::new(&a)?;
    let conf = PathBuf::from(std::env::var_os("SOFTHSM2_CONF").ok_or_else(|| {
        anyhow!(
            "SOFTHSM2_CONF is not set: source the env file of softhsm/provision.sh \
             (the soak removes the token: never the system's)"
        )
    })?);
    if !conf.is_file() {
        bail!("SOFTHSM2_CONF={} is not a file", conf.display());
    }
    let tdir = token_dir(&conf)?;
    if names(&tdir).len() != 1 {
        bail!(
            "{} must hold exactly one token (the private one of provision.sh)",
            tdir.display()
        );
    }
    fs::create_dir_all(&a.work).context("creating --work")?;
    if !names(&a.work).is_empty() {
        bail!("--work {} is not empty", a.work.display());
    }
    let work = a.work.canonicalize().context("--work")?;
    let env = Env {
        socket: work.join("run").join("agent.sock"),
        conf,
        token_dir: tdir,
        agent_tmp: work.join("agent-tmp"),
        work: work.clone(),
    };
    for d in ["agent-tmp", "cli-tmp", "cli-cache"] {
        fs::create_dir_all(work.join(d))?;
    }
    let t_begin = Instant::now();
    let sampler = Arc::new(Sampler::default());
    let mut idle = Idle::default();

    let agent1 = start_agent(&a, &env, 1)?;
    sampler.set(Some((1, agent1.pid)));
    let first = sample(agent1.pid);
    let (fx, big) = prepare(&env.socket, &a.pki, &plan, &work)?;
    eprintln!(
        "soak: prepared in {:.1} s; load {:.0} s with {} clients",
        t_begin.elapsed().as_secs_f64(),
        plan.total.as_secs_f64(),
        a.clients
    );
    let sh = Arc::new(Shared {
        socket: env.socket.clone(),
        t0: Instant::now(),
        stop: AtomicBool::new(false),
        paused: AtomicBool::new(false),
        parked: AtomicUsize::new(0),
        fx,
    });
    idle_sample(&sampler, &sh, "agent 1 before the load", &mut idle);

    // The sampler: one sample a second.
    let sampler_thread = {
        let (sampler, sh) = (Arc::clone(&sampler), Arc::clone(&sh));
        std::thread::spawn(move || {
            while !sampler.stop.load(Ordering::SeqCst) {
                sampler.take(sh.now());
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    let load_start = sh.now();
    let at = |d: Duration| load_start + d;
    let workers: Vec<_> = (0..a.clients)
        .map(|i| {
            let sh = Arc::clone(&sh);
            std::thread::spawn(move || worker(&sh, i))
        })
        .collect();

    // ---- (b) slow and never-reading clients
    sleep_until(&sh, at(plan.b_start));
    eprintln!("soak: phase (b): slow and never-reading clients");
    let b_started = sh.now();
    let b_until = at(plan.b_end);
    let slow: Vec<_> = (0..a.slow_clients)
        .map(|_| {
            let (sh, plan) = (Arc::clone(&sh), plan.clone());
            std::thread::spawn(move || slow_client(&sh, &plan, b_until))
        })
        .collect();
    let never: Vec<_> = (0..a.never_reading)
        .map(|_| {
            let sh = Arc::clone(&sh);
            let input = big.never.clone();
            std::thread::spawn(move || never_reader(&sh, &input, b_until))
        })
        .collect();
    let never: Vec<Result<NeverReader, String>> = never
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err("never-reading client panicked".into()))
        })
        .collect();
    sleep_until(&sh, b_until);
    let never_out: Vec<Value> = std::thread::scope(|sc| {
        let hs: Vec<_> = never
            .into_iter()
            .map(|r| {
                let sh = &sh;
                sc.spawn(move || match r {
                    Ok(nr) => {
                        let held = sh.now().saturating_sub(nr.output_at);
                        let busy = nr.busy_retries;
                        let (state, bytes) = never_reader_end(nr);
                        json!({"held_s": (held.as_secs_f64() * 10.0).round() / 10.0,
                               "busy_retries": busy, "at_end": state, "bytes_read_at_end": bytes})
                    }
                    Err(e) => json!({"error": e}),
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| json!({"error": "panicked"})))
            .collect()
    });
    let slow_stats: Vec<SlowStats> = slow
        .into_iter()
        .map(|h| {
            h.join().unwrap_or_else(|_| SlowStats {
                errors: vec!["slow client panicked".into()],
                ..SlowStats::default()
            })
        })
        .collect();
    let b_ended = sh.now();

    // ---- (a) token removed and restored
    sleep_until(&sh, at(plan.a_start));
    eprintln!("soak: phase (a): token removed");
    let parent = env
        .token_dir
        .parent()
        .ok_or_else(|| anyhow!("token dir has no parent"))?;
    let backup = parent.join("tokens-soak-backup");
    let _ = fs::remove_dir_all(&backup);
    run_tool(
        Command::new("cp")
            .arg("-a")
            .arg(&env.token_dir)
            .arg(&backup),
    )?;
    let gap_start = sh.now();
    run_tool(
        Command::new("softhsm2-util")
            .args(["--delete-token", "--token", &a.token_label])
            .env("SOFTHSM2_CONF", &env.conf),
    )?;
    let deleted_at = sh.now();
    std::thread::sleep(plan.gap);
    // Restore: move the token's directory back (a rename: it appears whole).
    for name in names(&backup) {
        fs::rename(backup.join(&name), env.token_dir.join(&name))
            .with_context(|| format!("restoring the token {name}"))?;
    }
    let gap_end = sh.now();
    let _ = fs::remove_dir_all(&backup);
    eprintln!("soak: phase (a): token restored");

    // ---- quiesce: idle sample of agent 1 after the load
    // (operations after the restore get a few seconds even when the phases ran late)
    sleep_until(&sh, at(plan.load1).max(gap_end + Duration::from_secs(4)));
    let quiesced = sh.now();
    let parked_ok = quiesce(&sh, a.clients);
    idle_sample(&sampler, &sh, "agent 1 after the load", &mut idle);
    sh.paused.store(false, Ordering::SeqCst);
    let resumed = sh.now();

    // ---- (c) the agent killed mid-request, CLI runs around it, restarted
    let kill_plan = resumed + plan.prekill;
    let offsets: [i64; 8] = [-1500, -900, -500, -250, -100, 0, 300, 600];
    let mut runs: Vec<CliRun> = Vec::new();
    let (kill_at, ready_at, agent2, killed_status) = std::thread::scope(|sc| -> Result<_> {
        let mut handles = Vec::new();
        for (i, off) in offsets.iter().enumerate() {
            let kind = if i % 2 == 0 { "decrypt" } else { "sign" };
            let dir = work.join(format!("cli-out-{i}"));
            fs::create_dir_all(&dir)?;
            let out = dir.join(if kind == "decrypt" {
                "plain.eml"
            } else {
                "signed.eml"
            });
            let start_at = Duration::from_millis((kill_plan.as_millis() as i64 + off) as u64);
            let mut cmd = cli_cmd(&a, &env, kind, &big, &out);
            let sh = &sh;
            handles.push(sc.spawn(move || {
                sleep_until(sh, start_at);
                let start = sh.now();
                let r = process::try_run_with_timeout(&mut cmd, None, TOOL_TIMEOUT).map(|o| {
                    (
                        o.status.success(),
                        String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    )
                });
                CliRun {
                    kind,
                    offset_ms: *off,
                    dir,
                    out,
                    result: r,
                    start,
                    end: sh.now(),
                }
            }));
        }
        sleep_until(&sh, kill_plan);
        eprintln!("soak: phase (c): agent killed");
        sh.paused.store(true, Ordering::SeqCst); // after their error, clients wait
        let kill_at = sh.now();
        sampler.set(None);
        let out = agent1.run.kill();
        std::thread::sleep(Duration::from_millis(1000));
        let agent2 = start_agent(&a, &env, 2)?;
        let ready_at = sh.now();
        sampler.set(Some((2, agent2.pid)));
        for h in handles {
            runs.push(h.join().map_err(|_| anyhow!("a CLI run thread panicked"))?);
        }
        Ok((kill_at, ready_at, agent2, out.status.to_string()))
    })?;
    eprintln!("soak: phase (c): agent restarted");
    // Clients parked after their error: idle sample of the new agent, then load again.
    let parked_after_kill = quiesce(&sh, a.clients);
    idle_sample(&sampler, &sh, "agent 2 after the restart", &mut idle);
    let unparked = sh.now();
    sh.paused.store(false, Ordering::SeqCst);
    std::thread::sleep(plan.load2);
    sh.stop.store(true, Ordering::SeqCst);
    let load_end = sh.now();
    let mut recs: Vec<Rec> = Vec::new();
    for h in workers {
        recs.extend(h.join().map_err(|_| anyhow!("a client thread panicked"))?);
    }
    let stopped = sh.now();
    idle_sample(&sampler, &sh, "agent 2 after the load", &mut idle);

    // Outputs of the CLI runs that succeeded must be complete and valid.
    let mut check = connect(&env.socket).map_err(|e| anyhow!("{e}"))?;
    let cli_out: Vec<Value> = runs
        .iter()
        .map(|r| cli_report(r, &big, &mut check, &sh.fx.trust, kill_at))
        .collect();
    drop(check);
    sampler.stop.store(true, Ordering::SeqCst);
    let _ = sampler_thread.join();
    let agent2_log = agent2.log.clone();
    let stop2 = stop_agent(agent2);
    let agent_tmp_left = names(&env.agent_tmp);
    let cli_tmp_left = names(&work.join("cli-tmp"));

    // ---- report
    let faults = Faults {
        gap_start,
        deleted_at,
        gap_end,
        kill_at,
        ready_at,
    };
    let samples = sampler
        .samples
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let report = build_report(&Report {
        a: &a,
        plan: &plan,
        recs: &recs,
        faults,
        load_start,
        load_end,
        windows: Windows {
            b: (b_started, b_ended),
            deleted_at,
            quiesced,
            resumed,
            unparked,
            stopped,
        },
        slow: &slow_stats,
        never: never_out,
        cli: cli_out,
        samples: &samples,
        idle: &idle,
        first,
        extra: json!({
            "parked_before_kill": parked_ok,
            "parked_after_kill": parked_after_kill,
            "killed_agent_status": killed_status,
            "second_agent_stop": stop2,
            "agent_tmpdir_left": agent_tmp_left,
            "cli_tmpdir_left": cli_tmp_left,
            "agent_log_warnings": log_warnings(&agent2_log, &work.join("agent-1.log")),
        }),
    });
    if let Some(p) = &a.json_file {
        fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

fn log_warnings(a2: &Path, a1: &Path) -> Value {
    let count = |p: &Path| {
        let text = fs::read_to_string(p).unwrap_or_default();
        let mut busy = 0u64;
        let mut other: Vec<String> = Vec::new();
        let mut other_n = 0u64;
        for l in text.lines() {
            if l.contains("answering busy") {
                busy += 1;
            } else if l.contains("WARN") || l.contains("ERROR") {
                other_n += 1;
                if other.len() < 8 {
                    other.push(l.chars().take(300).collect());
                }
            }
        }
        json!({"busy_warnings": busy, "other_warnings": other_n, "examples": other})
    };
    json!({"agent_1": count(a1), "agent_2": count(a2)})
}

fn cli_report(
    r: &CliRun,
    big: &BigFiles,
    check: &mut Client,
    trust: &str,
    kill_at: Duration,
) -> Value {
    let left = names(&r.dir);
    let out_name = r
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (ok, stderr, hang) = match &r.result {
        Ok((ok, e)) => (*ok, e.clone(), false),
        Err(e) => (false, e.chars().take(400).collect(), true),
    };
    // Success: exactly the output, complete. Failure: nothing at all.
    let (files_ok, content) = if ok {
        let content = match fs::read(&r.out) {
            Ok(bytes) if r.kind == "decrypt" => {
                if bytes == big.decrypted {
                    "complete".to_string()
                } else {
                    format!("DIFFERS ({} bytes)", bytes.len())
                }
            }
            Ok(bytes) => {
                let req = Request::Verify {
                    trust: vec![trust.to_string()],
                    signature: None,
                };
                match stream_call(check, &req, &bytes) {
                    Ok((Response::Verified { valid: true, .. }, _)) => "verifies".to_string(),
                    Ok((other, _)) => format!("DOES NOT VERIFY: {other:?}"),
                    Err(e) => format!("NOT CHECKED: {e}"),
                }
            }
            Err(e) => format!("MISSING: {e}"),
        };
        (left == [out_name], content)
    } else {
        (left.is_empty(), "none".to_string())
    };
    let stage = if r.end < kill_at {
        "finished before the kill"
    } else if r.start >= kill_at {
        "started after the kill"
    } else {
        "spanned the kill"
    };
    json!({
        "kind": r.kind,
        "start_offset_ms": r.offset_ms,
        "actual_start_ms": ms(r.start) - ms(kill_at),
        "duration_ms": ms(r.end.saturating_sub(r.start)),
        "stage": stage,
        "success": ok,
        "hang": hang,
        "error": if ok { Value::Null } else { json!(stderr.lines().last().unwrap_or("").to_string()) },
        "clear_error": ok || (!hang && !stderr.is_empty() && !stderr.contains("panicked")),
        "output": content,
        "dir_after": left,
        "dir_ok": files_ok && (!ok || content == "complete" || content == "verifies"),
    })
}

#[derive(Debug)]
struct Windows {
    b: (Duration, Duration),
    deleted_at: Duration,
    quiesced: Duration,
    resumed: Duration,
    unparked: Duration,
    stopped: Duration,
}

#[derive(Debug)]
struct Report<'a> {
    a: &'a SoakArgs,
    plan: &'a Plan,
    recs: &'a [Rec],
    faults: Faults,
    load_start: Duration,
    load_end: Duration,
    windows: Windows,
    slow: &'a [SlowStats],
    never: Vec<Value>,
    cli: Vec<Value>,
    samples: &'a [Sample],
    idle: &'a Idle,
    first: Option<(u64, u64)>,
    extra: Value,
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 100.0).round() / 100.0
}

fn build_report(r: &Report) -> Value {
    let f = r.faults;
    let recs = r.recs;
    // per operation
    let mut ops = serde_json::Map::new();
    let (mut t_ok, mut t_busy, mut t_exp, mut t_unexp) = (0u64, 0u64, 0u64, 0u64);
    let mut unexpected: Vec<Value> = Vec::new();
    for op in OPS {
        let mine: Vec<&Rec> = recs.iter().filter(|x| x.op == op).collect();
        let mut lat: Vec<Duration> = mine
            .iter()
            .filter(|x| matches!(x.outcome, Outcome::Ok { .. }))
            .map(|x| x.end - x.start)
            .collect();
        lat.sort();
        let busy = mine.iter().filter(|x| x.outcome == Outcome::Busy).count() as u64;
        let mut exp = 0u64;
        let mut unexp = 0u64;
        for x in &mine {
            if matches!(x.outcome, Outcome::Ok { .. } | Outcome::Busy) {
                continue;
            }
            if f.expected(x).is_some() {
                exp += 1;
            } else {
                unexp += 1;
                if unexpected.len() < 25 {
                    unexpected.push(json!({"op": op.name(), "at_s": secs(x.start),
                        "duration_ms": ms(x.end - x.start), "error": x.outcome.detail()}));
                }
            }
        }
        t_ok += lat.len() as u64;
        t_busy += busy;
        t_exp += exp;
        t_unexp += unexp;
        ops.insert(
            op.name().into(),
            json!({
                "ok": lat.len(), "busy": busy, "expected_errors": exp, "unexpected_errors": unexp,
                "p50_ms": pct(&lat, 0.5), "p99_ms": pct(&lat, 0.99),
                "max_ms": lat.last().map_or(0.0, |d| ms(*d)),
            }),
        );
    }
    // wall time with clients running: the load minus the quiesce and the dead/idle time
    let paused = (r.windows.resumed.saturating_sub(r.windows.quiesced))
        + (r.windows.unparked.saturating_sub(f.kill_at));
    let loaded = (r.load_end - r.load_start)
        .saturating_sub(paused)
        .as_secs_f64();
    let rate = |from: Duration, to: Duration| -> f64 {
        let n = recs
            .iter()
            .filter(|x| matches!(x.outcome, Outcome::Ok { .. }) && x.end >= from && x.end < to)
            .count();
        let s = to.saturating_sub(from).as_secs_f64();
        if s > 0.0 {
            (n as f64 / s * 10.0).round() / 10.0
        } else {
            0.0
        }
    };

    // (a) token gap
    let in_gap: Vec<&Rec> = recs
        .iter()
        .filter(|x| x.op.token() && x.start >= r.windows.deleted_at && x.start < f.gap_end)
        .collect();
    let mut gap_outcomes = serde_json::Map::new();
    for x in &in_gap {
        let k = x.outcome.label();
        let n = gap_outcomes.get(&k).and_then(Value::as_u64).unwrap_or(0);
        gap_outcomes.insert(k, json!(n + 1));
    }
    let gap_examples: Vec<String> = in_gap
        .iter()
        .filter(|x| !matches!(x.outcome, Outcome::Ok { .. } | Outcome::Busy))
        .map(|x| format!("{}: {}", x.op.name(), x.outcome.detail()))
        .take(3)
        .collect();
    let half_deleted = recs
        .iter()
        .filter(|x| f.expected(x) == Some("token half-deleted"))
        .count();
    let decrypt_failed_in_gap = recs
        .iter()
        .filter(|x| {
            matches!(x.outcome, Outcome::Agent(ErrorCode::DecryptFailed, _))
                && f.expected(x).is_some()
        })
        .count();
    let not_present = in_gap
        .iter()
        .filter(|x| matches!(x.outcome, Outcome::Agent(ErrorCode::TokenNotPresent, _)))
        .count();
    let status_absent = recs
        .iter()
        .filter(|x| matches!(x.outcome, Outcome::Ok { absent: true }))
        .count();
    let after_restore: Vec<&Rec> = recs
        .iter()
        .filter(|x| {
            x.op.token()
                && x.start >= f.gap_end
                && x.end < r.windows.quiesced
                && matches!(x.outcome, Outcome::Ok { .. })
        })
        .collect();
    let mut restore_outcomes = serde_json::Map::new();
    for x in recs
        .iter()
        .filter(|x| x.op.token() && x.start >= f.gap_end && x.end < r.windows.quiesced)
    {
        let k = x.outcome.label();
        let n = restore_outcomes
            .get(&k)
            .and_then(Value::as_u64)
            .unwrap_or(0);
        restore_outcomes.insert(k, json!(n + 1));
    }
    let first_ok_after_restore = after_restore
        .iter()
        .map(|x| x.end)
        .min()
        .map(|t| ms(t - f.gap_end));

    // (c) kill
    let inflight: Vec<&Rec> = recs
        .iter()
        .filter(|x| x.start < f.kill_at && x.end >= f.kill_at)
        .collect();
    let inflight_err: Vec<&&Rec> = inflight
        .iter()
        .filter(|x| !matches!(x.outcome, Outcome::Ok { .. } | Outcome::Busy))
        .collect();
    let max_err_after = inflight_err
        .iter()
        .map(|x| x.end - f.kill_at)
        .max()
        .map_or(0.0, ms);
    let inflight_hang = inflight
        .iter()
        .filter(|x| matches!(x.outcome, Outcome::Hang(_)))
        .count();
    let mut kill_errors: Vec<String> = inflight_err.iter().map(|x| x.outcome.detail()).collect();
    kill_errors.sort();
    kill_errors.dedup();
    kill_errors.truncate(5);
    let ok_after_restart = recs
        .iter()
        .filter(|x| x.start >= r.windows.unparked && matches!(x.outcome, Outcome::Ok { .. }))
        .count();
    let token_ok_after_restart = recs
        .iter()
        .filter(|x| {
            x.op.token() && x.start >= r.windows.unparked && matches!(x.outcome, Outcome::Ok { .. })
        })
        .count();

    // (b)
    let (b0, b1) = r.windows.b;
    let served_in_b = recs
        .iter()
        .filter(|x| matches!(x.outcome, Outcome::Ok { .. }) && x.end >= b0 && x.end < b1)
        .count();
    let mut lat_b: Vec<Duration> = recs
        .iter()
        .filter(|x| matches!(x.outcome, Outcome::Ok { .. }) && x.end >= b0 && x.end < b1)
        .map(|x| x.end - x.start)
        .collect();
    lat_b.sort();
    let slow_ok: u64 = r.slow.iter().map(|s| s.ok).sum();
    let slow_busy: u64 = r.slow.iter().map(|s| s.busy).sum();
    let slow_err: Vec<&String> = r.slow.iter().flat_map(|s| s.errors.iter()).collect();
    let slow_longest = r.slow.iter().map(|s| s.longest_ms).max().unwrap_or(0);

    // fds and RSS
    let agent_stats = |n: usize| -> Value {
        let s: Vec<&Sample> = r.samples.iter().filter(|s| s.agent == n).collect();
        let idle: Vec<Value> = r
            .idle
            .0
            .iter()
            .filter(|(_, s)| s.agent == n)
            .map(|(l, s)| json!({"when": l, "at_s": secs(s.t), "fds": s.fds, "rss_kib": s.rss_kib}))
            .collect();
        json!({
            "samples": s.len(),
            "fds": {"first": s.first().map(|x| x.fds), "last": s.last().map(|x| x.fds),
                     "max": s.iter().map(|x| x.fds).max()},
            "rss_kib": {"first": s.first().map(|x| x.rss_kib), "last": s.last().map(|x| x.rss_kib),
                         "max": s.iter().map(|x| x.rss_kib).max()},
            "idle": idle,
        })
    };
    let series: Vec<Value> = r
        .samples
        .iter()
        .map(|s| json!([secs(s.t), s.agent, s.fds, s.rss_kib]))
        .collect();

    json!({
        "soak": {
            "clients": r.a.clients,
            "short": r.a.short,
            "load_s": secs(r.plan.total),
            "loaded_wall_s": (loaded * 10.0).round() / 10.0,
            "slow_clients": r.a.slow_clients,
            "never_reading_clients": r.a.never_reading,
            "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "loadavg_end": crate::loadavg(),
            "schedule_s": {
                "b": [secs(b0), secs(b1)], "token_gap": [secs(f.gap_start), secs(f.gap_end)],
                "quiesce": [secs(r.windows.quiesced), secs(r.windows.resumed)],
                "kill": secs(f.kill_at), "agent_ready": secs(f.ready_at),
                "load_end": secs(r.load_end), "clients_stopped": secs(r.windows.stopped),
            },
        },
        "totals": {
            "ok": t_ok, "busy": t_busy, "expected_errors": t_exp, "unexpected_errors": t_unexp,
            "ok_per_s": if loaded > 0.0 { (t_ok as f64 / loaded * 10.0).round() / 10.0 } else { 0.0 },
            "answers_per_s": if loaded > 0.0 { ((t_ok + t_busy + t_exp + t_unexp) as f64 / loaded * 10.0).round() / 10.0 } else { 0.0 },
            "ok_per_s_steady": rate(r.load_start, b0),
            "ok_per_s_during_b": rate(b0, b1),
        },
        "ops": ops,
        "unexpected": unexpected,
        "slow_and_never_reading": {
            "others_served_during_b": served_in_b,
            "others_p50_ms_during_b": pct(&lat_b, 0.5),
            "others_p99_ms_during_b": pct(&lat_b, 0.99),
            "slow_ok": slow_ok, "slow_busy": slow_busy, "slow_errors": slow_err,
            "slow_longest_ms": slow_longest,
            "never_reading": r.never,
        },
        "token_removal": {
            "gap_ms": ms(f.gap_end - f.gap_start),
            "token_ops_in_gap": in_gap.len(),
            "outcomes_in_gap": gap_outcomes,
            "not_present_in_gap": not_present,
            "decrypt_failed_around_gap": decrypt_failed_in_gap,
            "half_deleted_errors": half_deleted,
            "deletion_ms": ms(f.deleted_at - f.gap_start),
            "error_examples": gap_examples,
            "status_saw_absent": status_absent,
            "token_ok_after_restore": after_restore.len(),
            "outcomes_after_restore": restore_outcomes,
            "first_ok_after_restore_ms": first_ok_after_restore,
        },
        "kill": {
            "inflight": inflight.len(),
            "inflight_errors": inflight_err.len(),
            "inflight_hangs": inflight_hang,
            "max_error_after_kill_ms": max_err_after,
            "errors": kill_errors,
            "restart_ms": ms(f.ready_at - f.kill_at),
            "ok_after_restart": ok_after_restart,
            "token_ok_after_restart": token_ok_after_restart,
            "cli_runs": r.cli,
        },
        "agent": {"first_sample": r.first.map(|(f, k)| json!({"fds": f, "rss_kib": k})),
                  "agent_1": agent_stats(1), "agent_2": agent_stats(2), "series": series},
        "checks": r.extra,
    })
}

fn print_text(v: &Value) {
    let g = |p: &str| v.pointer(p).cloned().unwrap_or(Value::Null);
    println!(
        "soak: {} clients, {} s load ({} s with clients running), nproc {}, loadavg at end {}",
        g("/soak/clients"),
        g("/soak/load_s"),
        g("/soak/loaded_wall_s"),
        g("/soak/nproc"),
        g("/soak/loadavg_end")
    );
    println!("schedule (s from start): {}", g("/soak/schedule_s"));
    println!();
    println!("| operation | ok | busy | expected errors | unexpected | p50 ms | p99 ms | max ms |");
    println!("|---|--:|--:|--:|--:|--:|--:|--:|");
    for op in OPS {
        let o = g(&format!("/ops/{}", op.name()));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            op.name(),
            o["ok"],
            o["busy"],
            o["expected_errors"],
            o["unexpected_errors"],
            o["p50_ms"],
            o["p99_ms"],
            o["max_ms"]
        );
    }
    println!();
    println!("totals: {}", g("/totals"));
    println!("unexpected errors: {}", g("/unexpected"));
    println!("(b) slow / never-reading: {}", g("/slow_and_never_reading"));
    println!("(a) token removal: {}", g("/token_removal"));
    let mut kill = g("/kill");
    let cli = kill
        .as_object_mut()
        .and_then(|m| m.remove("cli_runs"))
        .unwrap_or(Value::Null);
    println!("(c) kill: {kill}");
    if let Some(runs) = cli.as_array() {
        for r in runs {
            println!("    CLI run: {r}");
        }
    }
    for n in ["agent_1", "agent_2"] {
        let a = g(&format!("/agent/{n}"));
        println!("{n}: fds {} rss_kib {}", a["fds"], a["rss_kib"]);
        if let Some(idle) = a["idle"].as_array() {
            for i in idle {
                println!("    idle: {i}");
            }
        }
    }
    println!("checks: {}", g("/checks"));
}
