//! tokenmail-bench: benchmarks of tokenmail (not tests: no thresholds, only figures).
//!
//! `soak` (bench/src/soak.rs) runs many mixed clients with faults: see scripts/soak.sh.
//!
//! `sign-digest` measures signatures per second on one token, for each key and each
//! concurrency, two ways:
//!
//! * **raw**: this process loads the PKCS#11 module itself, logs in, opens one session
//!   per thread and calls `C_Sign` back to back with the mechanism and input the agent
//!   uses (RSA: `CKM_RSA_PKCS` over a SHA-256 DigestInfo; ECDSA: `CKM_ECDSA` over the
//!   digest). The key handle is looked up once per thread, before timing.
//! * **agent**: N threads, each with its own persistent [`tokenmail_proto::Client`]
//!   connection, send `sign-digest` requests back to back through the agent's socket.
//!
//! With `--probes` it also measures what the agent adds per request: a null round
//! trip (`hello`), `status`, and raw `C_Sign` preceded by the `C_FindObjects` the agent
//! does for every signature.

use std::path::{Path, PathBuf};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use serde_json::json;
use sha2::{Digest, Sha256, Sha384};
use tokenmail_proto::v1::{Bytes, Request, Response, SignAlgorithm};
use tokenmail_proto::{Client, ClientError};

/// DER of the P-256 curve OID (namedCurve in CKA_EC_PARAMS).
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the P-384 curve OID.
const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// DigestInfo prefix of SHA-256 for RSASSA-PKCS1-v1_5 (RFC 8017 §9.2 note 1).
const SHA256_DIGEST_INFO: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

#[path = "../../pkcs11-tests/src/process.rs"]
mod process;
mod soak;

const CLIENT_NAME: &str = concat!("tokenmail-bench/", env!("CARGO_PKG_VERSION"));

/// Benchmarks of tokenmail against the raw token (figures only, no pass/fail).
#[derive(Debug, Parser)]
#[command(name = "tokenmail-bench", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Signatures/second: raw PKCS#11 vs through the agent's socket.
    SignDigest(SignArgs),
    /// Soak and faults: many mixed clients, token removal, slow clients, agent killed.
    Soak(soak::SoakArgs),
}

#[derive(Debug, clap::Args)]
struct SignArgs {
    /// The agent's socket.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// PKCS#11 module (the one the agent uses).
    #[arg(long, value_name = "LIB.so", env = "TOKENMAIL_PKCS11_MODULE")]
    module: PathBuf,
    /// Label of the token (the one the agent uses).
    #[arg(long, value_name = "LABEL", env = "TOKENMAIL_TOKEN_LABEL")]
    token_label: String,
    /// File holding the user PIN (first line).
    #[arg(long, value_name = "FILE", env = "TOKENMAIL_PIN_FILE")]
    pin_file: PathBuf,
    /// Seconds each cell (key x concurrency x raw/agent) runs, per round.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Rounds per cell; raw and agent alternate within a cell and the median is reported
    /// (guards against other load on the machine).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrencies (threads for raw, clients for the agent).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 16])]
    concurrency: Vec<usize>,
    /// Key labels to sign with (RSA: rsa-pkcs1-sha256; P-256: ecdsa-sha256; P-384: ecdsa-sha384).
    #[arg(long, value_delimiter = ',', default_values_t = ["alice-rsa".to_string(), "bob-p256".to_string()])]
    keys: Vec<String>,
    /// Also measure what the agent adds per request (hello, status, C_FindObjects+C_Sign).
    #[arg(long)]
    probes: bool,
    /// PID of the agent, to count its CPU time per request (run.sh passes it).
    #[arg(long, value_name = "PID")]
    agent_pid: Option<u32>,
    /// Measure only one side (the other column shows 0).
    #[arg(long, value_enum, default_value_t = Only::Both)]
    only: Only,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Only {
    Both,
    Raw,
    Agent,
}

/// One key under test.
#[derive(Clone, Debug)]
struct KeySpec {
    label: String,
    kind: &'static str,
    algorithm: SignAlgorithm,
    /// What the client sends (the digest).
    digest: Vec<u8>,
    /// What goes to C_Sign (DigestInfo || digest for RSA, the digest for ECDSA).
    token_input: Vec<u8>,
    rsa: bool,
    /// ECDSA field size in bytes (for the DER -> r||s conversion).
    ec_len: usize,
}

impl KeySpec {
    fn mechanism(&self) -> Mechanism<'static> {
        if self.rsa {
            Mechanism::RsaPkcs
        } else {
            Mechanism::Ecdsa
        }
    }

    fn request(&self) -> Request {
        Request::SignDigest {
            key: self.label.clone(),
            algorithm: self.algorithm,
            digest: Bytes(self.digest.clone()),
        }
    }
}

/// One measured cell: throughput and mean latency per operation (the median round),
/// with the throughput of every round.
#[derive(Clone, Debug, Default)]
struct Rate {
    ops: u64,
    ops_per_s: f64,
    mean_latency_us: f64,
    /// CPU time per operation: this process (raw), or the client threads + the agent.
    cpu_us_per_op: Option<f64>,
    rounds: Vec<f64>,
}

impl Rate {
    fn json(&self) -> serde_json::Value {
        json!({
            "ops": self.ops,
            "ops_per_s": round2(self.ops_per_s),
            "mean_latency_us": round2(self.mean_latency_us),
            "cpu_us_per_op": self.cpu_us_per_op.map(round2),
            "rounds_ops_per_s": self.rounds.iter().map(|&r| round2(r)).collect::<Vec<_>>(),
        })
    }

    /// The median of several rounds (the lower middle one for an even count).
    fn median(mut all: Vec<Rate>) -> Rate {
        let rounds: Vec<f64> = all.iter().map(|r| r.ops_per_s).collect();
        all.sort_by(|a, b| a.ops_per_s.total_cmp(&b.ops_per_s));
        let mid = all.len().saturating_sub(1) / 2;
        let mut m = all.into_iter().nth(mid).unwrap_or_default();
        m.rounds = rounds;
        m
    }

    /// Smallest and largest round, as "min-max".
    fn spread(&self) -> String {
        if self.rounds.is_empty() {
            return "-".into();
        }
        let lo = self.rounds.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = self.rounds.iter().copied().fold(0.0, f64::max);
        format!("{lo:.0}-{hi:.0}")
    }
}

fn repeat(rounds: usize, mut f: impl FnMut() -> Result<Rate>) -> Result<Rate> {
    let mut all = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        all.push(f()?);
    }
    Ok(Rate::median(all))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

#[derive(Debug)]
struct Row {
    key: KeySpec,
    concurrency: usize,
    raw: Rate,
    agent: Rate,
}

impl Row {
    fn ratio(&self) -> f64 {
        if self.raw.ops_per_s > 0.0 {
            self.agent.ops_per_s / self.raw.ops_per_s
        } else {
            0.0
        }
    }

    /// Raw CPU per signature ÷ agent CPU per signature (client threads + agent): the
    /// share of the machine's signing capacity left through the agent. Much less moved
    /// by other load on the machine than the throughput ratio.
    fn cpu_ratio(&self) -> Option<f64> {
        match (self.raw.cpu_us_per_op, self.agent.cpu_us_per_op) {
            (Some(r), Some(a)) if a > 0.0 => Some(r / a),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Probe {
    name: String,
    concurrency: usize,
    rate: Rate,
}

/// The agent's PID, when known (for CPU time per request).
static AGENT_PID: OnceLock<Option<u32>> = OnceLock::new();

/// CPU time (user + system, all threads) of a process, in seconds, from /proc/PID/stat.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces):
    // state is field 3, utime field 14, stime field 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on Linux (fixed ABI value, independent of CONFIG_HZ).
    Some((utime + stime) / 100.0)
}

/// CPU seconds of this process, plus the agent's when `with_agent` (None if unknown).
fn cpu_now(with_agent: bool) -> Option<f64> {
    let me = cpu_seconds("self")?;
    if !with_agent {
        return Some(me);
    }
    let pid = (*AGENT_PID.get()?)?;
    Some(me + cpu_seconds(&pid.to_string())?)
}

fn fmt_cpu(c: Option<f64>) -> String {
    c.map_or_else(|| "-".into(), |c| format!("{c:.0}"))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::SignDigest(a) => sign_digest(a),
        Cmd::Soak(a) => soak::soak(a),
    };
    if let Err(e) = res {
        eprintln!("tokenmail-bench: {e:#}");
        std::process::exit(1);
    }
}

/// The token side: module, slot, login session (kept open so the login state lasts).
struct Token {
    ctx: Pkcs11,
    slot: Slot,
    _login: Session,
}

fn read_pin(path: &Path) -> Result<AuthPin> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the PIN file {}", path.display()))?;
    let first = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if first.is_empty() {
        bail!("the PIN file {} is empty", path.display());
    }
    Ok(AuthPin::from(first.to_string()))
}

fn open_token(a: &SignArgs) -> Result<Token> {
    // Never the system's tokens: SoftHSM must be pointed at the private configuration.
    let is_softhsm = a
        .module
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("softhsm"));
    if is_softhsm {
        match std::env::var_os("SOFTHSM2_CONF") {
            Some(c) if Path::new(&c).is_file() => {}
            Some(c) => bail!("SOFTHSM2_CONF={} is not a file", Path::new(&c).display()),
            None => bail!(
                "SOFTHSM2_CONF is not set: source the env file of softhsm/provision.sh \
                 (this benchmark never uses the system's SoftHSM tokens)"
            ),
        }
    }
    let ctx = Pkcs11::new(&a.module)
        .with_context(|| format!("cannot load the PKCS#11 module {}", a.module.display()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(e).context("C_Initialize"),
    }
    let mut found = None;
    for slot in ctx.get_slots_with_token().context("C_GetSlotList")? {
        let Ok(ti) = ctx.get_token_info(slot) else {
            continue;
        };
        if ti.label().trim_end() == a.token_label {
            found = Some(slot);
            break;
        }
    }
    let slot = found.ok_or_else(|| anyhow!("no token labelled {:?}", a.token_label))?;
    let login = ctx.open_ro_session(slot).context("C_OpenSession")?;
    let pin = read_pin(&a.pin_file)?;
    match login.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => return Err(e).context("C_Login"),
    }
    Ok(Token {
        ctx,
        slot,
        _login: login,
    })
}

fn find_key(s: &Session, class: ObjectClass, label: &str) -> Result<ObjectHandle, CkError> {
    let found = s.find_objects(&[
        Attribute::Class(class),
        Attribute::Label(label.as_bytes().to_vec()),
    ])?;
    found.into_iter().next().ok_or(CkError::Pkcs11(
        RvError::KeyHandleInvalid,
        cryptoki::context::Function::FindObjects,
    ))
}

fn key_spec(tok: &Token, label: &str) -> Result<KeySpec> {
    let s = tok.ctx.open_ro_session(tok.slot).context("C_OpenSession")?;
    let h = find_key(&s, ObjectClass::PRIVATE_KEY, label)
        .with_context(|| format!("no private key labelled {label:?} on the token"))?;
    let attrs = s
        .get_attributes(h, &[AttributeType::KeyType, AttributeType::EcParams])
        .context("C_GetAttributeValue")?;
    let mut kt = None;
    let mut params = None;
    for at in attrs {
        match at {
            Attribute::KeyType(k) => kt = Some(k),
            Attribute::EcParams(p) => params = Some(p),
            _ => {}
        }
    }
    let msg = format!("tokenmail-bench sign-digest input for {label}");
    let spec = match kt {
        Some(k) if k == KeyType::RSA => {
            let digest = Sha256::digest(msg.as_bytes()).to_vec();
            let mut input = SHA256_DIGEST_INFO.to_vec();
            input.extend_from_slice(&digest);
            KeySpec {
                label: label.to_string(),
                kind: "RSA",
                algorithm: SignAlgorithm::RsaPkcs1Sha256,
                digest,
                token_input: input,
                rsa: true,
                ec_len: 0,
            }
        }
        Some(k) if k == KeyType::EC && params.as_deref() == Some(P256_PARAMS) => {
            let digest = Sha256::digest(msg.as_bytes()).to_vec();
            KeySpec {
                label: label.to_string(),
                kind: "P-256",
                algorithm: SignAlgorithm::EcdsaSha256,
                token_input: digest.clone(),
                digest,
                rsa: false,
                ec_len: 32,
            }
        }
        Some(k) if k == KeyType::EC && params.as_deref() == Some(P384_PARAMS) => {
            let digest = Sha384::digest(msg.as_bytes()).to_vec();
            KeySpec {
                label: label.to_string(),
                kind: "P-384",
                algorithm: SignAlgorithm::EcdsaSha384,
                token_input: digest.clone(),
                digest,
                rsa: false,
                ec_len: 48,
            }
        }
        other => bail!("key {label:?}: unsupported key type {other:?}"),
    };
    Ok(spec)
}

/// Runs `threads` workers; each prepares (untimed), waits for the others, then runs `op`
/// back to back for `dur`. Throughput is the sum of the per-thread rates.
///
/// CPU time (this process, plus the agent's with `with_agent`) is read by the first
/// worker at its start and end; divided by all operations it gives CPU µs per operation.
fn run_cell<S, P, O>(
    threads: usize,
    dur: Duration,
    with_agent: bool,
    prepare: P,
    op: O,
) -> Result<Rate>
where
    P: Fn() -> Result<S> + Sync,
    O: Fn(&mut S) -> Result<()> + Sync,
{
    let barrier = Barrier::new(threads);
    type Out = (u64, Duration, Option<f64>);
    let results: Vec<Result<Out>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let barrier = &barrier;
                let prepare = &prepare;
                let op = &op;
                sc.spawn(move || -> Result<Out> {
                    // A failed preparation must still reach the barrier, or the others hang.
                    let state = prepare().and_then(|mut s| op(&mut s).map(|()| s));
                    barrier.wait();
                    let mut state = state?;
                    let cpu0 = if i == 0 { cpu_now(with_agent) } else { None };
                    let t0 = Instant::now();
                    let mut n = 0u64;
                    while t0.elapsed() < dur {
                        op(&mut state)?;
                        n += 1;
                    }
                    let el = t0.elapsed();
                    let cpu = match (cpu0, cpu_now(with_agent)) {
                        (Some(a), Some(b)) => Some(b - a),
                        _ => None,
                    };
                    Ok((n, el, cpu))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a worker thread panicked")))
            })
            .collect()
    });
    let mut ops = 0u64;
    let mut rate = 0.0f64;
    let mut busy = 0.0f64;
    let mut cpu = None;
    for r in results {
        let (n, el, c) = r?;
        ops += n;
        rate += n as f64 / el.as_secs_f64();
        busy += el.as_secs_f64();
        cpu = cpu.or(c);
    }
    Ok(Rate {
        ops,
        ops_per_s: rate,
        mean_latency_us: if ops > 0 {
            busy / ops as f64 * 1e6
        } else {
            0.0
        },
        cpu_us_per_op: cpu.filter(|_| ops > 0).map(|c| c / ops as f64 * 1e6),
        rounds: Vec::new(),
    })
}

fn raw_rate(
    tok: &Token,
    key: &KeySpec,
    threads: usize,
    dur: Duration,
    lookup_each: bool,
) -> Result<Rate> {
    // Only the module context crosses threads (a Session is Send but not Sync, the login
    // session stays here); the mechanism is built per call (it is not Sync either).
    let ctx = &tok.ctx;
    let slot = tok.slot;
    run_cell(
        threads,
        dur,
        false,
        || {
            let s = ctx.open_ro_session(slot).context("C_OpenSession")?;
            let h = find_key(&s, ObjectClass::PRIVATE_KEY, &key.label).context("C_FindObjects")?;
            Ok((s, h))
        },
        |(s, h): &mut (Session, ObjectHandle)| {
            let h = if lookup_each {
                find_key(s, ObjectClass::PRIVATE_KEY, &key.label).context("C_FindObjects")?
            } else {
                *h
            };
            let sig = s
                .sign(&key.mechanism(), h, &key.token_input)
                .context("C_Sign")?;
            if sig.is_empty() {
                bail!("C_Sign returned an empty signature");
            }
            Ok(())
        },
    )
}

fn connect(socket: &Path) -> Result<Client> {
    Client::connect(socket, CLIENT_NAME)
        .with_context(|| format!("cannot connect to the agent at {}", socket.display()))
}

fn agent_rate(socket: &Path, req: &Request, clients: usize, dur: Duration) -> Result<Rate> {
    agent_rate_with(socket, req, clients, dur, false)
}

/// With `refusal_ok`, an error answer from the agent counts as a completed round trip.
fn agent_rate_with(
    socket: &Path,
    req: &Request,
    clients: usize,
    dur: Duration,
    refusal_ok: bool,
) -> Result<Rate> {
    run_cell(
        clients,
        dur,
        true,
        || connect(socket),
        |c: &mut Client| match c.call(req) {
            Ok(Response::Signature { signature, .. }) if !signature.0.is_empty() => Ok(()),
            Ok(Response::Hello { .. }) | Ok(Response::Status(_)) => Ok(()),
            Ok(other) => bail!("unexpected answer from the agent: {other:?}"),
            Err(ClientError::Agent(_)) if refusal_ok => Ok(()),
            Err(e) => Err(anyhow!(e)).context("agent request"),
        },
    )
}

/// DER Ecdsa-Sig-Value -> r || s, each left-padded to `n` bytes.
fn ecdsa_der_to_raw(der: &[u8], n: usize) -> Result<Vec<u8>> {
    fn int(b: &[u8], n: usize) -> Result<(Vec<u8>, &[u8])> {
        if b.len() < 2 || b[0] != 0x02 || b[1] as usize > b.len() - 2 {
            bail!("malformed INTEGER");
        }
        let (v, rest) = b[2..].split_at(b[1] as usize);
        let v: &[u8] = match v.iter().position(|&x| x != 0) {
            Some(i) => &v[i..],
            None => &[],
        };
        if v.len() > n {
            bail!("INTEGER too long");
        }
        let mut out = vec![0u8; n - v.len()];
        out.extend_from_slice(v);
        Ok((out, rest))
    }
    if der.len() < 2 || der[0] != 0x30 {
        bail!("not a DER SEQUENCE");
    }
    let body = if der[1] & 0x80 == 0 {
        &der[2..]
    } else if der[1] == 0x81 && der.len() > 3 {
        &der[3..]
    } else {
        bail!("bad SEQUENCE length");
    };
    let (mut r, rest) = int(body, n)?;
    let (s, _) = int(rest, n)?;
    r.extend_from_slice(&s);
    Ok(r)
}

/// Checks one agent signature with C_Verify on the token's public key: the two paths
/// must sign with the same key and the same input.
fn check_agent_signature(tok: &Token, socket: &Path, key: &KeySpec) -> Result<&'static str> {
    let mut c = connect(socket)?;
    let sig = match c.call(&key.request()) {
        Ok(Response::Signature { signature, .. }) => signature.0,
        Ok(other) => bail!("unexpected answer to sign-digest: {other:?}"),
        Err(e) => return Err(anyhow!(e)).context("sign-digest through the agent"),
    };
    let s = tok.ctx.open_ro_session(tok.slot).context("C_OpenSession")?;
    let Ok(public) = find_key(&s, ObjectClass::PUBLIC_KEY, &key.label) else {
        return Ok("not checked (no public key object on the token)");
    };
    let sig = if key.rsa {
        sig
    } else {
        ecdsa_der_to_raw(&sig, key.ec_len)?
    };
    s.verify(&key.mechanism(), public, &key.token_input, &sig)
        .with_context(|| format!("the agent's {} signature does not verify", key.label))?;
    Ok("verified with C_Verify")
}

fn sign_digest(a: SignArgs) -> Result<()> {
    if !a.seconds.is_finite() || a.seconds <= 0.0 {
        bail!("--seconds must be positive");
    }
    if a.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if a.concurrency.contains(&0) {
        bail!("--concurrency values must be at least 1");
    }
    let dur = Duration::from_secs_f64(a.seconds);
    let _ = AGENT_PID.set(a.agent_pid);
    let tok = open_token(&a)?;
    let keys = a
        .keys
        .iter()
        .map(|l| key_spec(&tok, l))
        .collect::<Result<Vec<_>>>()?;
    let agent_name = connect(&a.socket)?.agent().to_string();

    let mut checks = Vec::new();
    for k in &keys {
        checks.push((k.label.clone(), check_agent_signature(&tok, &a.socket, k)?));
    }

    let load_before = loadavg();
    let mut rows = Vec::new();
    for k in &keys {
        for &c in &a.concurrency {
            let (mut raws, mut agents) = (Vec::new(), Vec::new());
            for round in 1..=a.rounds {
                eprintln!(
                    "tokenmail-bench: {} x{c}: round {round}/{}: raw, agent",
                    k.label, a.rounds
                );
                if a.only != Only::Agent {
                    raws.push(raw_rate(&tok, k, c, dur, false)?);
                }
                if a.only != Only::Raw {
                    agents.push(agent_rate(&a.socket, &k.request(), c, dur)?);
                }
            }
            rows.push(Row {
                key: k.clone(),
                concurrency: c,
                raw: Rate::median(raws),
                agent: Rate::median(agents),
            });
        }
    }

    let mut probes = Vec::new();
    if a.probes {
        let hello = Request::Hello {
            client: CLIENT_NAME.to_string(),
            pin_prompt: false,
        };
        for &c in &a.concurrency {
            eprintln!("tokenmail-bench: probe hello x{c} ...");
            probes.push(Probe {
                name: "agent: hello (null round trip)".into(),
                concurrency: c,
                rate: repeat(a.rounds, || agent_rate(&a.socket, &hello, c, dur))?,
            });
        }
        eprintln!("tokenmail-bench: probe status x1 ...");
        probes.push(Probe {
            name: "agent: status".into(),
            concurrency: 1,
            rate: repeat(a.rounds, || agent_rate(&a.socket, &Request::Status, 1, dur))?,
        });
        // A sign-digest the agent refuses after resolving the key, before the token:
        // the request path without C_FindObjects/C_Sign.
        if let Some(k) = keys.first() {
            let short = Request::SignDigest {
                key: k.label.clone(),
                algorithm: k.algorithm,
                digest: Bytes(vec![0u8; 1]),
            };
            for &c in &a.concurrency {
                eprintln!("tokenmail-bench: probe short digest x{c} ...");
                probes.push(Probe {
                    name: format!(
                        "agent: sign-digest with a 1-byte digest, refused ({})",
                        k.label
                    ),
                    concurrency: c,
                    rate: repeat(a.rounds, || {
                        agent_rate_with(&a.socket, &short, c, dur, true)
                    })?,
                });
            }
        }
        for k in &keys {
            for &c in &a.concurrency {
                eprintln!("tokenmail-bench: probe {} raw+find x{c} ...", k.label);
                probes.push(Probe {
                    name: format!("raw: C_FindObjects + C_Sign, {}", k.label),
                    concurrency: c,
                    rate: repeat(a.rounds, || raw_rate(&tok, k, c, dur, true))?,
                });
            }
        }
    }

    let load_after = loadavg();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    if a.json {
        let out = json!({
            "benchmark": "sign-digest",
            "agent": agent_name,
            "module": a.module.display().to_string(),
            "token_label": a.token_label,
            "softhsm2_conf": std::env::var("SOFTHSM2_CONF").ok(),
            "nproc": nproc,
            "seconds_per_round": a.seconds,
            "rounds": a.rounds,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "signature_checks": checks.iter().map(|(k, v)| json!({"key": k, "result": v})).collect::<Vec<_>>(),
            "results": rows.iter().map(|r| json!({
                "key": r.key.label,
                "key_type": r.key.kind,
                "algorithm": r.key.algorithm,
                "concurrency": r.concurrency,
                "raw": r.raw.json(),
                "agent": r.agent.json(),
                "ratio_agent_over_raw": (r.ratio() * 1000.0).round() / 1000.0,
                "cpu_ratio_raw_over_agent": r.cpu_ratio().map(|x| (x * 1000.0).round() / 1000.0),
            })).collect::<Vec<_>>(),
            "probes": probes.iter().map(|p| json!({
                "probe": p.name,
                "concurrency": p.concurrency,
                "rate": p.rate.json(),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }

    println!(
        "sign-digest: {} vs raw PKCS#11 ({}), token {:?}",
        agent_name,
        a.module.display(),
        a.token_label,
    );
    println!(
        "  {} s x {} rounds per cell (median shown, raw and agent alternate); nproc {}; loadavg {} -> {}",
        a.seconds, a.rounds, nproc, load_before, load_after
    );
    for (k, v) in &checks {
        println!("  agent signature with {k}: {v}");
    }
    println!();
    println!(
        "| key | type | concurrency | raw op/s | agent op/s | ratio agent/raw | raw lat µs | agent lat µs | raw CPU µs/op | agent CPU µs/op | CPU ratio raw/agent | raw rounds op/s | agent rounds op/s |"
    );
    println!("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {} | {} | {} | {} | {} |",
            r.key.label,
            r.key.kind,
            r.concurrency,
            r.raw.ops_per_s,
            r.agent.ops_per_s,
            r.ratio(),
            r.raw.mean_latency_us,
            r.agent.mean_latency_us,
            fmt_cpu(r.raw.cpu_us_per_op),
            fmt_cpu(r.agent.cpu_us_per_op),
            r.cpu_ratio()
                .map_or_else(|| "-".into(), |x| format!("{x:.2}")),
            r.raw.spread(),
            r.agent.spread()
        );
    }
    if !probes.is_empty() {
        println!();
        println!("| probe | concurrency | op/s | lat µs | CPU µs/op | rounds op/s |");
        println!("|---|--:|--:|--:|--:|--:|");
        for p in &probes {
            println!(
                "| {} | {} | {:.0} | {:.0} | {} | {} |",
                p.name,
                p.concurrency,
                p.rate.ops_per_s,
                p.rate.mean_latency_us,
                fmt_cpu(p.rate.cpu_us_per_op),
                p.rate.spread()
            );
        }
    }
    Ok(())
}
