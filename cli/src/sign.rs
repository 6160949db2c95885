//! `tokenmail sign`: S/MIME-sign a message with a key on a token.
//!
//! The message is hashed here, streaming; only the DER of the signed attributes'
//! digest goes to the agent (`sign-digest`), and the signature comes back. Output:
//! multipart/signed (default), opaque signed-data, or a detached CMS over the exact bytes.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
use tokenmail_proto::v1::{
    AgentStatus, Bytes, ErrorCode, KeyInfo, Request, Response, SignAlgorithm,
};
use tokenmail_proto::{Client, ClientError};
use tokenmail_smime::alg::{HashAlg, KeyKind, SignatureScheme};
use tokenmail_smime::ess::{ReceiptRequest, SecurityLabel};
use tokenmail_smime::mime::boundary_from_random;
use tokenmail_smime::pipeline::{sign_stream, PipelineError, SignForm, SignStream};
use tokenmail_smime::signed::{
    sign_detached, DigestSigner, SignOptions, SignatureTimestamper, SignerError,
};
use tokenmail_smime::tsp::Tsa;
use tokenmail_smime::SmimeError;
use x509_cert::der::Decode;
use x509_cert::Certificate;

use crate::agentkey::{self, call_with_login};
use crate::signcache;

/// Arguments of `tokenmail sign`.
#[derive(Debug, Clone, clap::Args)]
pub struct SignArgs {
    /// The signing key: label, hex id, `sha256:`fingerprint, or an email in its certificate.
    #[arg(long, value_name = "KEY")]
    pub signer: String,
    /// Opaque `application/pkcs7-mime; smime-type=signed-data` instead of multipart/signed.
    #[arg(long, conflicts_with_all = ["detached_der", "detached_pem"])]
    pub opaque: bool,
    /// Only the detached CMS SignedData (DER) over the exact bytes of IN.
    #[arg(long, conflicts_with = "detached_pem")]
    pub detached_der: bool,
    /// Only the detached CMS SignedData (PEM) over the exact bytes of IN.
    #[arg(long)]
    pub detached_pem: bool,
    /// With --detached-der/--detached-pem: sign the content with its line endings made CRLF,
    /// as it travels in a message (what `openssl smime -sign` does without -binary; for
    /// NeoMutt's smime_sign_command, whose file has LF line endings).
    #[arg(long)]
    pub crlf: bool,
    /// Digest: sha256, sha384 or sha512 (default: matched to the key; P-384 → sha384).
    #[arg(long, value_name = "HASH")]
    pub digest: Option<String>,
    /// RSA keys: RSASSA-PSS instead of PKCS#1 v1.5.
    #[arg(long)]
    pub pss: bool,
    /// Add an RFC 3161 timestamp from the time-stamping authority at URL (http://) over the
    /// signature (default: [sign] tsa in the configuration; "none" turns that off).
    #[arg(long, value_name = "URL")]
    pub timestamp: Option<String>,
    /// Ask the recipients for an ESS signed receipt (RFC 2634), to be sent to the signer's
    /// address (the first e-mail address in the signing certificate).
    #[arg(long)]
    pub receipt_request: bool,
    /// Add an ESS security label: POLICY-OID:CLASSIFICATION[:CATEGORY-OID=TEXT]..., the
    /// classification a number or unmarked, unclassified, restricted, confidential, secret,
    /// top-secret.
    #[arg(long, value_name = "LABEL")]
    pub security_label: Option<String>,
    /// Extra CA certificates (PEM) to include, beyond the chain the token holds.
    #[arg(long, value_name = "PEM")]
    pub chain: Vec<PathBuf>,
    /// The RFC 5322 message or MIME entity (default: standard input).
    #[arg(value_name = "IN")]
    pub input: Option<PathBuf>,
    /// Where to write (default: standard output).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,
}

/// Read size: big reads keep the per-call costs (syscalls, channel hand-overs) negligible.
const CHUNK: usize = 1 << 20;

/// A key on a token, signing through the agent.
struct AgentSigner<'a> {
    client: &'a RefCell<Client>,
    name: String,
    kind: KeyKind,
    info: KeyInfo,
}

impl DigestSigner for AgentSigner<'_> {
    fn key_kind(&self) -> KeyKind {
        self.kind
    }

    fn sign_digest(&self, scheme: SignatureScheme, digest: &[u8]) -> Result<Vec<u8>, SignerError> {
        let algorithm = SignAlgorithm::from_scheme(scheme)
            .ok_or_else(|| SignerError::Unsupported(scheme.name().to_string()))?;
        crate::agentkey::touch_notice(&self.info, "sign");
        let mut c = self.client.borrow_mut();
        match call_with_login(
            &mut c,
            &Request::SignDigest {
                key: self.name.clone(),
                algorithm,
                digest: Bytes(digest.to_vec()),
            },
        ) {
            Ok(Response::Signature { signature, .. }) => Ok(signature.0),
            Ok(_) => Err(SignerError::Backend(
                "unexpected answer to sign-digest".into(),
            )),
            Err(e) => Err(SignerError::Backend(e.to_string())),
        }
    }
}

fn key_kind(info: &KeyInfo) -> Result<KeyKind> {
    match info.algorithm.as_str() {
        "ec-p256" => Ok(KeyKind::P256),
        "ec-p384" => Ok(KeyKind::P384),
        a if a.starts_with("rsa-") => Ok(KeyKind::Rsa {
            bits: a[4..].parse().unwrap_or(2048),
        }),
        other => bail!("key {:?} is {other}, which cannot sign S/MIME", info.label),
    }
}

/// Finds the signer among the agent's keys by the same rules the agent uses.
pub fn resolve_key(st: &AgentStatus, name: &str) -> Result<KeyInfo> {
    let lower = name.to_ascii_lowercase();
    let mut hits: Vec<&KeyInfo> = st.keys.iter().filter(|k| k.label == name).collect();
    if hits.is_empty() {
        hits = st.keys.iter().filter(|k| k.id == lower).collect();
    }
    if hits.is_empty() {
        if let Some(fp) = lower.strip_prefix("sha256:") {
            hits = st
                .keys
                .iter()
                .filter(|k| k.certificate.as_ref().is_some_and(|c| c.sha256 == fp))
                .collect();
        }
    }
    if hits.is_empty() && name.contains('@') {
        if let Some(sel) = st.emails.iter().find(|e| e.email == lower) {
            hits = st
                .keys
                .iter()
                .filter(|k| k.token == sel.token && k.label == sel.key && k.id == sel.id)
                .collect();
        }
    }
    match hits.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(anyhow!(
            "no key {name:?} on the agent's tokens; see `tokenmail keys`{}",
            absent_tokens(st)
        )),
        many => Err(anyhow!(
            "{name:?} names {} keys; use its sha256: fingerprint (see `tokenmail status --json`)",
            many.len()
        )),
    }
}

/// `; token "x" is not present` for the tokens the agent has configured but cannot see,
/// or nothing.
fn absent_tokens(st: &AgentStatus) -> String {
    let absent: Vec<String> = st
        .tokens
        .iter()
        .filter(|t| !t.present)
        .map(|t| format!("{:?}", t.label))
        .collect();
    match absent.len() {
        0 => String::new(),
        1 => format!("; token {} is not present", absent[0]),
        _ => format!("; tokens {} are not present", absent.join(", ")),
    }
}

fn load_extra_chain(paths: &[PathBuf]) -> Result<Vec<Certificate>> {
    let mut out = Vec::new();
    for p in paths {
        let data = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        let blocks = tokenmail_smime::mime::pem_blocks(&data)
            .map_err(|e| anyhow!("{}: {e}", p.display()))?;
        if blocks.is_empty() {
            out.push(
                Certificate::from_der(&data)
                    .map_err(|e| anyhow!("{} is not a certificate: {e}", p.display()))?,
            );
        }
        for (label, der) in blocks {
            if label == "CERTIFICATE" {
                out.push(
                    Certificate::from_der(&der)
                        .map_err(|e| anyhow!("{}: bad certificate: {e}", p.display()))?,
                );
            }
        }
    }
    Ok(out)
}

/// An input we can read twice: the file, or standard input spooled to a private temp file.
fn seekable_input(input: Option<&Path>) -> Result<File> {
    match input {
        Some(p) => File::open(p).with_context(|| format!("cannot open {}", p.display())),
        None => {
            let mut spool = tempfile::tempfile().context("cannot create a temporary file")?;
            io::copy(&mut io::stdin().lock(), &mut spool).context("cannot read standard input")?;
            spool.seek(SeekFrom::Start(0))?;
            Ok(spool)
        }
    }
}

/// Largest message signed through the signer cache: its output is held in memory until
/// the agent has signed, so that a changed certificate can be signed again from the start
/// whatever the output is (a pipe cannot start over). Bigger messages take the `status`
/// path, where two round trips more do not count.
const CACHED_MAX: u64 = 4 << 20;

/// What signing needs besides the key: certificates and options, from the key's `KeyInfo`.
struct Prepared {
    kind: KeyKind,
    cert: Certificate,
    chain: Vec<Certificate>,
    opts: SignOptions,
    fingerprint: String,
}

fn prepare(args: &SignArgs, info: &KeyInfo) -> Result<Prepared> {
    let kind = key_kind(info)?;
    let (cert_summary, cert, mut chain) = signer_certificates(info)?;
    let fingerprint = cert_summary.sha256.clone();
    chain.extend(load_extra_chain(&args.chain)?);
    let hash = match args.digest.as_deref() {
        None => None,
        Some("sha256") => Some(HashAlg::Sha256),
        Some("sha384") => Some(HashAlg::Sha384),
        Some("sha512") => Some(HashAlg::Sha512),
        Some(other) => bail!("unknown --digest {other:?}; use sha256, sha384 or sha512"),
    };
    let scheme = kind
        .scheme(hash, args.pss)
        .map_err(|e| anyhow!("--pss: {e} ({:?} is {})", info.label, info.algorithm))?;
    let now = SystemTime::now();
    check_signer_validity(&cert, now)?;
    let opts = SignOptions {
        scheme: Some(scheme),
        signing_time: Some(now),
        ..ess_options(args, &cert)?
    };
    Ok(Prepared {
        kind,
        cert,
        chain,
        opts,
        fingerprint,
    })
}

/// The timestamp, receipt request and security label of `args` (with `[sign] tsa`).
fn ess_options(args: &SignArgs, cert: &Certificate) -> Result<SignOptions> {
    let mut opts = SignOptions::default();
    if let Some(label) = &args.security_label {
        let l = SecurityLabel::from_arg(label).map_err(|e| anyhow!("--security-label: {e}"))?;
        opts.extra_signed_attributes.push(l.attribute()?);
    }
    if args.receipt_request {
        let mut id = [0u8; 32];
        getrandom::fill(&mut id).map_err(|e| anyhow!("no randomness: {e}"))?;
        let rr =
            ReceiptRequest::to_signer(&id, cert).map_err(|e| anyhow!("--receipt-request: {e}"))?;
        opts.extra_signed_attributes.push(rr.attribute()?);
    }
    opts.timestamper = timestamper(args.timestamp.as_deref())?;
    Ok(opts)
}

/// The RFC 3161 timestamper for a signature: `flag` (`--timestamp URL`, "none" for
/// none), else `[sign] tsa` in the configuration.
fn timestamper(flag: Option<&str>) -> Result<Option<Arc<dyn SignatureTimestamper>>> {
    let url = match flag {
        Some(u) => Some(u.to_string()),
        None => crate::store::config_value("sign", "tsa")?.map(|(u, _)| u),
    };
    let Some(url) = url.filter(|u| u != "none" && !u.is_empty()) else {
        return Ok(None);
    };
    let transport = crate::netfetch::HttpTsa::new(&url).map_err(|e| anyhow!("{e}"))?;
    Ok(Some(Arc::new(Tsa {
        transport,
        name: url,
    })))
}

/// Refuses a signer certificate that has expired or is not yet valid (before any PIN is
/// asked for or anything written); warns on standard error within 30 days of expiry.
fn check_signer_validity(cert: &Certificate, now: SystemTime) -> Result<()> {
    match tokenmail_smime::signed::signer_validity(cert, now) {
        Err(e) => bail!("{e}"),
        Ok(Some(w)) => {
            eprintln!("tokenmail: warning: {w}");
            Ok(())
        }
        Ok(None) => Ok(()),
    }
}

/// The driver's read size for an input of `len` bytes: 1 MiB for big messages; for small
/// ones just above their size (at least 64 KiB). A fresh 1 MiB buffer costs 256 page faults
/// when it is zero-filled, ≈ 0.5 ms per buffer on this project's VMs: more than signing a
/// small message.
fn chunk_for(len: u64) -> usize {
    let want = usize::try_from(len.saturating_add(4096)).unwrap_or(CHUNK);
    want.next_power_of_two().clamp(64 * 1024, CHUNK)
}

fn sign_form(args: &SignArgs, len: u64) -> Result<SignStream> {
    let form = match (args.opaque, args.detached_der, args.detached_pem) {
        (true, _, _) => SignForm::Opaque,
        (_, true, _) => SignForm::DetachedDer,
        (_, _, true) => SignForm::DetachedPem,
        _ => SignForm::Multipart,
    };
    let mut random = [0u8; 12];
    getrandom::fill(&mut random).map_err(|e| anyhow!("no randomness: {e}"))?;
    Ok(SignStream {
        form,
        crlf: args.crlf,
        boundary: boundary_from_random(&random),
        chunk: chunk_for(len),
    })
}

/// Runs `tokenmail sign`.
///
/// With the signer in the cache (cli/src/signcache.rs) and a message of at most
/// [`CACHED_MAX`] bytes: one connection, one round trip (`hello` and `sign-digest-cert`
/// sent together), no `status`. Otherwise, and whenever that does not give a signature
/// (certificate changed, older agent, key gone, no PIN): `status`, key resolution, login if
/// needed, `sign-digest`; the cache entry is then written for the next time.
pub fn run(args: SignArgs, socket: Option<&Path>) -> Result<i32> {
    if args.crlf && !(args.detached_der || args.detached_pem) {
        bail!("--crlf is for --detached-der/--detached-pem (the MIME forms are canonical already)");
    }
    let sock = agentkey::socket_path(socket);
    let mut opened = None;
    if let Some(info) = signcache::load(&sock, &args.signer) {
        let mut input = seekable_input(args.input.as_deref())?;
        let len = input.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        if len <= CACHED_MAX {
            if let Some(signed) = sign_cached(&args, &sock, &info, &mut input, len)? {
                crate::output::write_streaming(args.output.as_deref(), |out| {
                    out.write_all(&signed)
                        .map_err(|e| anyhow!("cannot write the output: {e}"))
                })?;
                return Ok(0);
            }
            input.seek(SeekFrom::Start(0))?;
        }
        opened = Some(input);
    }

    let mut client = agentkey::connect(socket)?;
    let Response::Status(mut st) = client.call(&Request::Status)? else {
        bail!("unexpected answer to status");
    };
    let info = match resolve_key(&st, &args.signer) {
        Ok(i) => i,
        Err(e) => {
            if !agentkey::wait_for_absent(&mut client)? {
                return Err(match agentkey::why_absent(&mut client, &st) {
                    Some(why) => anyhow!("no key {:?} on the agent's tokens: {why}", args.signer),
                    None => e,
                });
            }
            let Response::Status(again) = client.call(&Request::Status)? else {
                bail!("unexpected answer to status");
            };
            st = again;
            resolve_key(&st, &args.signer)?
        }
    };
    let Prepared {
        kind,
        cert,
        chain,
        opts,
        fingerprint,
    } = prepare(&args, &info)?;
    // Make sure the key is usable before streaming (asks for the PIN on a TTY if needed),
    // so a signature does not fail after the output was written.
    ensure_logged_in(&mut client, &st, &info)?;
    signcache::store(&sock, &args.signer, &info);
    let client = RefCell::new(client);
    let signer = AgentSigner {
        client: &client,
        name: format!("sha256:{fingerprint}"),
        kind,
        info: info.clone(),
    };

    let input = match opened {
        Some(i) => i,
        None => seekable_input(args.input.as_deref())?,
    };
    let len = input.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    let stream = sign_form(&args, len)?;
    let mut input = crate::term::Progress::new(input, Some(len), "signing");
    crate::output::write_streaming(args.output.as_deref(), |out| {
        sign_stream(&mut input, out, &signer, &cert, &chain, &opts, &stream).map_err(sign_error)
    })?;
    Ok(0)
}

/// A key named as the user named it, signing through `sign-digest-cert` on a connection
/// made when the digest is ready (`hello` and the request in one round trip).
struct CachedSigner<'a> {
    socket: &'a Path,
    name: String,
    fingerprint: String,
    kind: KeyKind,
    info: &'a KeyInfo,
    /// Set when the failure means "look the key up again" rather than a real error.
    stale: Cell<bool>,
}

impl DigestSigner for CachedSigner<'_> {
    fn key_kind(&self) -> KeyKind {
        self.kind
    }

    fn sign_digest(&self, scheme: SignatureScheme, digest: &[u8]) -> Result<Vec<u8>, SignerError> {
        let algorithm = SignAlgorithm::from_scheme(scheme)
            .ok_or_else(|| SignerError::Unsupported(scheme.name().to_string()))?;
        let req = Request::SignDigestCert {
            key: self.name.clone(),
            certificate: self.fingerprint.clone(),
            algorithm,
            digest: Bytes(digest.to_vec()),
        };
        let stale = |why: String| {
            self.stale.set(true);
            SignerError::Backend(why)
        };
        crate::agentkey::touch_notice(self.info, "sign");
        let tty = agentkey::have_tty();
        let (mut client, first) = Client::connect_and_call(
            self.socket,
            concat!("tokenmail/", env!("CARGO_PKG_VERSION")),
            tty,
            &req,
        )
        .map_err(|e| stale(e.to_string()))?;
        match agentkey::recover(&mut client, &req, first) {
            Ok(Response::Signature { signature, .. }) => Ok(signature.0),
            Ok(_) => Err(stale("unexpected answer to sign-digest-cert".into())),
            // Never a second PIN prompt after a wrong PIN (each try counts), nor after the
            // user declined to give one.
            Err(ClientError::Agent(e))
                if matches!(e.code, ErrorCode::PinIncorrect | ErrorCode::PinLocked)
                    || (e.code == ErrorCode::PinRequired && tty) =>
            {
                Err(SignerError::Backend(e.message))
            }
            // certificate-changed, no-such-key, an agent without sign-digest-cert
            // (bad-request), no PIN without a terminal, the token gone: the status path
            // decides, with its own messages, logins and waits.
            Err(e) => Err(stale(e.to_string())),
        }
    }
}

/// Signs with the cached key; `None` when the status path must do it (nothing written).
fn sign_cached(
    args: &SignArgs,
    sock: &Path,
    info: &KeyInfo,
    input: &mut File,
    len: u64,
) -> Result<Option<Vec<u8>>> {
    let Ok(Prepared {
        kind,
        cert,
        chain,
        opts,
        fingerprint,
    }) = prepare(args, info)
    else {
        signcache::forget(sock, &args.signer);
        return Ok(None);
    };
    let signer = CachedSigner {
        socket: sock,
        name: args.signer.clone(),
        fingerprint,
        kind,
        info,
        stale: Cell::new(false),
    };
    let stream = sign_form(args, len)?;
    let mut out = Vec::with_capacity((len as usize).saturating_mul(3) / 2 + 16 * 1024);
    match sign_stream(input, &mut out, &signer, &cert, &chain, &opts, &stream) {
        Ok(()) => Ok(Some(out)),
        Err(_) if signer.stale.get() => {
            signcache::forget(sock, &args.signer);
            Ok(None)
        }
        Err(e) => Err(sign_error(e)),
    }
}

/// A failure of the signing driver, in the user's terms.
fn sign_error(e: PipelineError) -> anyhow::Error {
    match e {
        PipelineError::Signer(SmimeError::Signer(SignerError::Backend(m))) => anyhow!("{m}"),
        PipelineError::Sign(SmimeError::Timestamp(m)) => {
            anyhow!("{m}: nothing was written; check the TSA's URL, or sign without --timestamp")
        }
        PipelineError::Sign(SmimeError::Malformed(m)) => {
            anyhow!("cannot sign this message: {m}")
        }
        PipelineError::Read(e) => anyhow!("cannot read the message: {e}"),
        PipelineError::Write(e) => anyhow!("cannot write the output: {e}"),
        other => anyhow!("{other}"),
    }
}

/// A detached signature made by [`sign_detached_bytes`].
#[derive(Debug, Clone)]
pub struct DetachedSignature {
    /// The CMS SignedData (DER ContentInfo), without the content.
    pub der: Vec<u8>,
    /// The signer's certificate (DER).
    pub cert_der: Vec<u8>,
    /// The key's kind.
    pub kind: KeyKind,
    /// The digest algorithm.
    pub hash: HashAlg,
    /// The signingTime attribute.
    pub signed_at: SystemTime,
}

/// Which CA certificates go into a signature besides the signer's (gpgsm's --include-certs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeCerts {
    /// The signer's certificate only.
    SignerOnly,
    /// The signer's and the chain the token holds (default).
    Chain,
}

/// The key's certificate and the CA certificates the token holds above it.
fn signer_certificates(
    info: &KeyInfo,
) -> Result<(
    &tokenmail_proto::v1::CertSummary,
    Certificate,
    Vec<Certificate>,
)> {
    let cert_summary = info.certificate.as_ref().ok_or_else(|| {
        anyhow!(
            "key {:?} has no certificate on the token: import one first",
            info.label
        )
    })?;
    let cert = Certificate::from_der(&cert_summary.der.0).context("the key's certificate")?;
    let chain = info
        .chain
        .iter()
        .filter_map(|d| Certificate::from_der(&d.0).ok())
        .collect();
    Ok((cert_summary, cert, chain))
}

/// Signs `content` (its exact bytes) with `info`'s key through the agent: a detached CMS
/// SignedData with the key's default scheme (RSA PKCS#1 v1.5 SHA-256, ECDSA SHA-256/384),
/// timestamped when `[sign] tsa` is configured (as `tokenmail sign` without `--timestamp`).
/// `st` is the status `info` was resolved from ([`resolve_key`]); asks for the PIN on a
/// terminal when the token needs it.
pub fn sign_detached_bytes(
    mut client: Client,
    st: &AgentStatus,
    info: &KeyInfo,
    content: &[u8],
    include: IncludeCerts,
) -> Result<DetachedSignature> {
    let kind = key_kind(info)?;
    let (cert_summary, cert, mut chain) = signer_certificates(info)?;
    if include == IncludeCerts::SignerOnly {
        chain.clear();
    }
    let hash = kind.default_hash();
    let signed_at = SystemTime::now();
    check_signer_validity(&cert, signed_at)?;
    let opts = SignOptions {
        scheme: Some(kind.default_scheme()),
        signing_time: Some(signed_at),
        timestamper: timestamper(None)?,
        ..SignOptions::default()
    };
    ensure_logged_in(&mut client, st, info)?;
    let client = RefCell::new(client);
    let signer = AgentSigner {
        client: &client,
        name: format!("sha256:{}", cert_summary.sha256),
        kind,
        info: info.clone(),
    };
    let digest = hash.digest(content);
    let der = sign_detached(&signer, &cert, &chain, &digest, &opts).map_err(|e| match e {
        SmimeError::Timestamp(m) => anyhow!(
            "{m}: nothing was signed; check the TSA at [sign] tsa in the configuration, or set it to \"none\""
        ),
        other => anyhow!("{other}"),
    })?;
    Ok(DetachedSignature {
        der,
        cert_der: cert_summary.der.0.clone(),
        kind,
        hash,
        signed_at,
    })
}

/// Before streaming: when the token needs a PIN the agent has no way to get, ask for it
/// here (on a terminal), so that the signature does not fail after the output was written.
/// `st`: the status the key was resolved from (one round trip less per message).
///
/// Never a PIN-less `login`: that asks the agent to read its PIN file again, which would
/// undo `tokenmail lock` and re-send a PIN the token already refused (a wrong PIN file
/// would cost a try per message and block a card). With an unattended source the agent
/// logs in by itself, once; after a refusal it answers `pin-required`, and the signer
/// asks the user then.
fn ensure_logged_in(client: &mut Client, st: &AgentStatus, info: &KeyInfo) -> Result<()> {
    let Some(t) = st.tokens.iter().find(|t| t.label == info.token) else {
        return Ok(());
    };
    let unattended = matches!(t.pin_source.as_str(), "file" | "env") && !t.locked;
    if t.logged_in || unattended || !agentkey::have_tty() {
        return Ok(());
    }
    let pin = agentkey::prompt_pin(Some(&info.token))?;
    client.call(&Request::Login {
        token: Some(info.token.clone()),
        pin: Some(pin),
    })?;
    Ok(())
}

/// Signs `content` of type `content_type` (e.g. an ESS Receipt) encapsulated, with the key
/// `name` through the agent at `socket`, adding `extra` signed attributes. Asks for the PIN
/// on a terminal when the token needs it.
pub fn sign_encapsulated_with_agent(
    socket: Option<&Path>,
    name: &str,
    content_type: der::asn1::ObjectIdentifier,
    content: &[u8],
    extra: Vec<(der::asn1::ObjectIdentifier, Vec<u8>)>,
) -> Result<Vec<u8>> {
    let mut client = agentkey::connect(socket)?;
    let Response::Status(st) = client.call(&Request::Status)? else {
        bail!("unexpected answer to status");
    };
    let info = resolve_key(&st, name)?;
    let kind = key_kind(&info)?;
    let (cert_summary, cert, chain) = signer_certificates(&info)?;
    let now = SystemTime::now();
    check_signer_validity(&cert, now)?;
    let opts = SignOptions {
        scheme: Some(kind.default_scheme()),
        signing_time: Some(now),
        extra_signed_attributes: extra,
        ..SignOptions::default()
    };
    ensure_logged_in(&mut client, &st, &info)?;
    let client = RefCell::new(client);
    let signer = AgentSigner {
        client: &client,
        name: format!("sha256:{}", cert_summary.sha256),
        kind,
        info: info.clone(),
    };
    tokenmail_smime::signed::sign_encapsulated_as(
        &signer,
        &cert,
        &chain,
        content_type,
        content,
        &opts,
    )
    .map_err(|e| anyhow!("{e}"))
}
