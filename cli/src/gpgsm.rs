//! `tokenmail-gpgsm`: the subset of gpgsm's command line that git uses with
//! `gpg.format = x509` (git's gpg-interface.c), see docs/git.md.
//!
//! * Sign: `tokenmail-gpgsm --status-fd=2 -bsau KEY` reads the payload on standard input and
//!   writes a detached CMS SignedData, PEM-armored as gpgsm does
//!   (`-----BEGIN SIGNED MESSAGE-----`), made with KEY on a token through the agent; the
//!   status fd gets `[GNUPG:] BEGIN_SIGNING` and `[GNUPG:] SIG_CREATED D …`.
//! * Verify: `tokenmail-gpgsm --status-fd=1 --verify SIGFILE -` reads the payload on standard
//!   input; needs no agent. Status lines as gpgsm writes them (NEWSIG, then GOODSIG /
//!   BADSIG / ERRSIG / EXPKEYSIG, VALIDSIG and TRUST_*); a summary on standard error; exit 0
//!   only for a good signature from a trusted, valid, unrevoked certificate (`[trust]`
//!   as for `tokenmail verify`). With `[sign] tsa` configured, signatures carry an RFC 3161
//!   timestamp.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
use tokenmail_proto::v1::{AgentStatus, KeyInfo, Request, Response};
use tokenmail_smime::alg::{ContentDigests, HashAlg, KeyKind, MultiHasher};
use tokenmail_smime::path::CertEntry;
use tokenmail_smime::revocation::RevocationMode;
use tokenmail_smime::verify::{verify, ParsedSignedData, SignerReport};

use crate::sign::IncludeCerts;

/// The program name in messages.
pub const PROG: &str = "tokenmail-gpgsm";

/// The armor gpgsm writes around a CMS signature (and git looks for).
const ARMOR: &str = "SIGNED MESSAGE";

/// `--help`.
pub const HELP: &str = "\
tokenmail-gpgsm: the subset of gpgsm's command line that git uses for gpg.format = x509.
Signing keys live on hardware tokens behind tokenmail-agent; verifying needs no agent.

Usage:
  tokenmail-gpgsm [--status-fd N] -bsau KEY [FILE]        sign (payload on stdin or FILE)
  tokenmail-gpgsm [--status-fd N] --verify SIGFILE [-|FILE] verify a detached signature

git set-up:
  git config gpg.format x509
  git config gpg.x509.program tokenmail-gpgsm
  git config user.signingkey alice@example.com   # optional: default is the committer

Options:
  -b, --detach-sign        make a detached signature (the only kind made)
  -s, --sign               sign
  -a, --armor              PEM armor (-----BEGIN SIGNED MESSAGE-----); default is DER
  -u, --local-user KEY     the key: an email, 'Name <email>', a gpgsm SHA-1 fingerprint
                           (40 hex, optional 0x), sha256:FINGERPRINT, a key label or hex id
      --verify SIG [DATA]  verify SIG over DATA ('-' or none: standard input; without
                           DATA and with no stdin content, SIG's own content)
      --status-fd N        write [GNUPG:] status lines to file descriptor N
  -o, --output FILE        write the signature to FILE (atomically) instead of stdout
      --include-certs N    0 or 1: the signer's certificate only; other values: with the
                           chain the token holds (default)
      --socket PATH        the agent's socket (default: $TOKENMAIL_SOCK, then the standard place)
      --disable-crl-checks verify without CRL/OCSP checks (default: [trust] revocation,
                           soft-fail unless configured)
      --keyid-format X, --batch, --no-tty, --yes, -q, -v,
      --no-greeting        accepted and ignored
  -h, --help               this help
      --version            the version

Trust anchors for --verify: $TOKENMAIL_TRUST (PEM files separated by ':'), else
`anchors` under [trust] in $TOKENMAIL_CONFIG or $XDG_CONFIG_HOME/tokenmail/agent.toml
(~/.config/...).
Signer certificates need keyUsage digitalSignature or nonRepudiation and, when they have
an extendedKeyUsage, emailProtection or codeSigning; revocation as [trust] revocation.
Signatures carry an RFC 3161 timestamp when [sign] tsa is configured. See docs/git.md.";

/// Where the signed data of a detached signature comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// standard input (`-`)
    Stdin,
    /// a file
    File(PathBuf),
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Make a detached signature.
    Sign {
        /// `-u KEY`
        key: Option<String>,
        /// The payload file (default: standard input).
        input: Option<PathBuf>,
    },
    /// Verify a signature.
    Verify {
        /// The signature file.
        signature: PathBuf,
        /// The signed data of a detached signature (`-`: standard input); `None`: the
        /// signature encapsulates its content.
        data: Option<Data>,
    },
    /// `--help`
    Help,
    /// `--version`
    Version,
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The command.
    pub command: Command,
    /// `--status-fd N`
    pub status_fd: Option<u32>,
    /// `-a`
    pub armor: bool,
    /// `-o FILE`
    pub output: Option<PathBuf>,
    /// `--include-certs N`
    pub include: IncludeCerts,
    /// `--socket PATH`
    pub socket: Option<PathBuf>,
    /// `--disable-crl-checks`: verify without revocation checks (`[trust] revocation` is
    /// used otherwise)
    pub disable_crl_checks: bool,
}

/// Options taking a value (long name, short letter).
const WITH_VALUE: &[(&str, Option<char>)] = &[
    ("status-fd", None),
    ("local-user", Some('u')),
    ("output", Some('o')),
    ("include-certs", None),
    ("keyid-format", None),
    ("socket", None),
];

/// Flags (long name, short letter).
const FLAGS: &[(&str, Option<char>)] = &[
    ("detach-sign", Some('b')),
    ("sign", Some('s')),
    ("armor", Some('a')),
    ("verify", None),
    ("batch", None),
    ("no-tty", None),
    ("yes", None),
    ("quiet", Some('q')),
    ("verbose", Some('v')),
    ("disable-crl-checks", None),
    ("no-greeting", None),
    ("help", Some('h')),
    ("version", None),
];

/// Parses gpgsm-style arguments (without the program name): long options with `=VALUE` or a
/// separate value, clustered short options (`-bsau KEY`, `-uKEY`), `--` ends the options.
pub fn parse_args<I, S>(args: I) -> Result<Options>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut it = args.into_iter().map(Into::into);
    let mut flags: Vec<&'static str> = Vec::new();
    let mut values: Vec<(&'static str, String)> = Vec::new();
    let mut operands: Vec<String> = Vec::new();
    while let Some(arg) = it.next() {
        if arg == "--" {
            operands.extend(it.by_ref());
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            if let Some((n, _)) = WITH_VALUE.iter().find(|(n, _)| *n == name) {
                let v = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .ok_or_else(|| anyhow!("option --{n} needs a value"))?,
                };
                values.push((n, v));
            } else if let Some((n, _)) = FLAGS.iter().find(|(n, _)| *n == name) {
                if inline.is_some() {
                    bail!("option --{n} takes no value");
                }
                flags.push(n);
            } else {
                bail!("unknown option --{name} (see tokenmail-gpgsm --help)");
            }
        } else if arg.len() > 1 && arg.starts_with('-') {
            let chars: Vec<char> = arg[1..].chars().collect();
            let mut i = 0;
            while i < chars.len() {
                let c = chars[i];
                if let Some((n, _)) = WITH_VALUE.iter().find(|(_, s)| *s == Some(c)) {
                    let rest: String = chars[i + 1..].iter().collect();
                    let v = if rest.is_empty() {
                        it.next()
                            .ok_or_else(|| anyhow!("option -{c} needs a value"))?
                    } else {
                        rest
                    };
                    values.push((n, v));
                    break;
                } else if let Some((n, _)) = FLAGS.iter().find(|(_, s)| *s == Some(c)) {
                    flags.push(n);
                } else {
                    bail!("unknown option -{c} (see tokenmail-gpgsm --help)");
                }
                i += 1;
            }
        } else {
            operands.push(arg);
        }
    }
    let has = |f: &str| flags.contains(&f);
    let value = |n: &str| {
        values
            .iter()
            .rev()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.clone())
    };
    let status_fd = match value("status-fd") {
        None => None,
        Some(v) => Some(
            v.parse::<u32>()
                .map_err(|_| anyhow!("--status-fd {v:?} is not a file descriptor number"))?,
        ),
    };
    let include = match value("include-certs") {
        None => IncludeCerts::Chain,
        Some(v) => match v.parse::<i32>() {
            Ok(0 | 1) => IncludeCerts::SignerOnly,
            Ok(_) => IncludeCerts::Chain,
            Err(_) => bail!("--include-certs {v:?} is not a number"),
        },
    };
    let mut opts = Options {
        command: Command::Help,
        status_fd,
        armor: has("armor"),
        output: value("output").map(PathBuf::from),
        include,
        socket: value("socket").map(PathBuf::from),
        disable_crl_checks: has("disable-crl-checks"),
    };
    let operand_path = |i: usize| operands.get(i).map(PathBuf::from);
    opts.command = if has("help") {
        Command::Help
    } else if has("version") {
        Command::Version
    } else if has("verify") {
        if has("sign") || has("detach-sign") {
            bail!("--verify cannot be combined with signing (-s/-b)");
        }
        if operands.len() > 2 {
            bail!("--verify takes a signature file and at most one data file");
        }
        Command::Verify {
            signature: operand_path(0)
                .ok_or_else(|| anyhow!("--verify needs a signature file: --verify SIG [DATA]"))?,
            data: operand_path(1).map(|p| {
                if p.as_os_str() == "-" {
                    Data::Stdin
                } else {
                    Data::File(p)
                }
            }),
        }
    } else if has("detach-sign") || has("sign") {
        if !has("detach-sign") {
            bail!("only detached signatures are made: add -b (git signs with -bsau KEY)");
        }
        if operands.len() > 1 {
            bail!("signing takes at most one input file");
        }
        Command::Sign {
            key: value("local-user"),
            input: operand_path(0).filter(|p| p.as_os_str() != "-"),
        }
    } else {
        bail!("nothing to do: sign with -bsau KEY or verify with --verify SIG [DATA] (see --help)");
    };
    Ok(opts)
}

/// Where `[GNUPG:]` status lines go.
#[derive(Debug)]
pub struct Status {
    out: Option<Box<dyn WriteDebug>>,
}

/// `Write` + `Debug` (for the status sink).
pub trait WriteDebug: Write + std::fmt::Debug {}
impl<T: Write + std::fmt::Debug> WriteDebug for T {}

impl Status {
    /// Opens `--status-fd N` (1: standard output, 2: standard error, others through
    /// /proc/self/fd); `None` discards the lines.
    pub fn open(fd: Option<u32>) -> Result<Status> {
        let out: Option<Box<dyn WriteDebug>> = match fd {
            None => None,
            Some(1) => Some(Box::new(std::io::stdout())),
            Some(2) => Some(Box::new(std::io::stderr())),
            Some(n) => Some(Box::new(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(format!("/proc/self/fd/{n}"))
                    .with_context(|| format!("--status-fd {n}: not an open file descriptor"))?,
            )),
        };
        Ok(Status { out })
    }

    /// A sink collecting the lines (tests).
    pub fn to_writer(w: Box<dyn WriteDebug>) -> Status {
        Status { out: Some(w) }
    }

    /// Writes `[GNUPG:] LINE`.
    pub fn line(&mut self, line: &str) -> Result<()> {
        if let Some(o) = self.out.as_mut() {
            o.write_all(format!("[GNUPG:] {line}\n").as_bytes())
                .and_then(|()| o.flush())
                .context("cannot write the status line")?;
        }
        Ok(())
    }
}

/// Runs the program on the process's arguments; returns the exit code (0: success;
/// 1: a signature that is not good; 2: an error, already reported on one line).
pub fn main_with_args(args: Vec<String>) -> i32 {
    let opts = match parse_args(args) {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    let result = match &opts.command {
        Command::Help => {
            println!("{HELP}");
            Ok(0)
        }
        Command::Version => {
            println!(
                "{PROG} (tokenmail) {}\nthe gpgsm subset git uses for gpg.format = x509",
                env!("CARGO_PKG_VERSION")
            );
            Ok(0)
        }
        Command::Sign { key, input } => Status::open(opts.status_fd)
            .and_then(|mut st| run_sign(&opts, key.as_deref(), input.as_deref(), &mut st)),
        Command::Verify { signature, data } => Status::open(opts.status_fd).and_then(|mut st| {
            run_verify(
                signature,
                data.as_ref(),
                opts.disable_crl_checks.then_some(RevocationMode::Off),
                &mut st,
                &mut std::io::stderr().lock(),
            )
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> i32 {
    let msg = format!("{e:#}");
    eprintln!("{PROG}: {}", msg.lines().next().unwrap_or("failed"));
    2
}

// ------------------------------------------------------------------------------ signing

/// SHA-1 over the certificate DER, upper-case hex: gpgsm's fingerprint.
pub fn sha1_fingerprint(cert_der: &[u8]) -> String {
    hex::encode_upper(HashAlg::Sha1.digest(cert_der))
}

/// The e-mail address in `Name <email>` (git's committer ident), or `s` when it has none.
fn ident_email(s: &str) -> Option<&str> {
    let start = s.rfind('<')?;
    let end = start + s[start..].find('>')?;
    let email = s[start + 1..end].trim();
    email.contains('@').then_some(email)
}

/// Finds the key git names: `user.signingkey` (an email, `Name <email>`, a gpgsm SHA-1
/// fingerprint with or without 0x, `sha256:…`, a label or a hex id) or the committer ident.
pub fn resolve_signing_key(st: &AgentStatus, name: &str) -> Result<KeyInfo> {
    let name = name.trim();
    // gpgsm's fingerprint: 40 hex digits (optional 0x); also the 16 or 8 digit key id
    let hexpart = name
        .strip_prefix("0x")
        .or_else(|| name.strip_prefix("0X"))
        .unwrap_or(name);
    if matches!(hexpart.len(), 8 | 16 | 40) && hexpart.bytes().all(|b| b.is_ascii_hexdigit()) {
        let want = hexpart.to_ascii_uppercase();
        let hits: Vec<&KeyInfo> = st
            .keys
            .iter()
            .filter(|k| {
                k.certificate
                    .as_ref()
                    .is_some_and(|c| sha1_fingerprint(&c.der.0).ends_with(&want))
            })
            .collect();
        match hits.as_slice() {
            [one] => return Ok((*one).clone()),
            [] => {}
            many => bail!(
                "{name:?} names {} keys; use the full fingerprint (see `tokenmail status --json`)",
                many.len()
            ),
        }
    }
    match crate::sign::resolve_key(st, name) {
        Ok(k) => Ok(k),
        Err(e) => match ident_email(name) {
            Some(email) if email != name => crate::sign::resolve_key(st, email).map_err(|_| {
                anyhow!(
                    "no key for {email:?} (from {name:?}) on the agent's tokens: set \
                     user.signingkey to one of `tokenmail keys`"
                )
            }),
            _ => Err(e),
        },
    }
}

/// libgcrypt's public-key algorithm numbers, as gpgsm writes them (1 RSA, 301 ECDSA).
fn pk_algo_number(kind: KeyKind) -> u32 {
    match kind {
        KeyKind::Rsa { .. } => 1,
        _ => 301,
    }
}

/// libgcrypt's hash algorithm numbers (2 SHA-1, 8 SHA-256, 9 SHA-384, 10 SHA-512).
fn hash_algo_number(h: HashAlg) -> u32 {
    match h {
        HashAlg::Sha1 => 2,
        HashAlg::Sha256 => 8,
        HashAlg::Sha384 => 9,
        HashAlg::Sha512 => 10,
    }
}

/// gpgsm's ISO time, `YYYYMMDDTHHMMSS` (UTC).
fn iso_time(t: SystemTime) -> String {
    match x509_cert::der::DateTime::from_system_time(t) {
        Ok(d) => format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}",
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minutes(),
            d.seconds()
        ),
        Err(_) => "19700101T000000".to_string(),
    }
}

fn run_sign(
    opts: &Options,
    key: Option<&str>,
    input: Option<&Path>,
    status: &mut Status,
) -> Result<i32> {
    let key = key.ok_or_else(|| {
        anyhow!("no signing key: pass -u KEY (git passes user.signingkey or the committer ident)")
    })?;
    // the payload first: git writes it all before reading our output
    let mut payload = Vec::new();
    match input {
        Some(p) => {
            payload = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        None => {
            std::io::stdin()
                .lock()
                .read_to_end(&mut payload)
                .context("cannot read standard input")?;
        }
    }
    let mut client = crate::agentkey::connect(opts.socket.as_deref())?;
    let Response::Status(st) = client.call(&Request::Status)? else {
        bail!("unexpected answer to status");
    };
    let info = resolve_signing_key(&st, key)?;
    let kind = match info.algorithm.as_str() {
        "ec-p256" => KeyKind::P256,
        "ec-p384" => KeyKind::P384,
        _ => KeyKind::Rsa { bits: 2048 },
    };
    status.line(&format!(
        "BEGIN_SIGNING H{}",
        hash_algo_number(kind.default_hash())
    ))?;
    let sig = crate::sign::sign_detached_bytes(client, &st, &info, &payload, opts.include)?;
    let out: Vec<u8> = if opts.armor {
        tokenmail_smime::mime::pem_encode(ARMOR, &sig.der).into_bytes()
    } else {
        sig.der.clone()
    };
    crate::output::write_output(opts.output.as_deref(), &out)?;
    status.line(&format!(
        "SIG_CREATED D {} {} 00 {} {}",
        pk_algo_number(sig.kind),
        hash_algo_number(sig.hash),
        iso_time(sig.signed_at),
        sha1_fingerprint(&sig.cert_der)
    ))?;
    Ok(0)
}

// ----------------------------------------------------------------------------- verifying

/// The DER of a signature file: DER/BER as is, or PEM armor (`SIGNED MESSAGE`, `CMS`,
/// `PKCS7`).
pub fn decode_signature(data: &[u8]) -> Result<Vec<u8>> {
    let start = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(data.len());
    let t = &data[start..];
    if t.first() == Some(&0x30) {
        return Ok(t.to_vec());
    }
    if t.starts_with(b"-----BEGIN ") {
        let blocks = tokenmail_smime::mime::pem_blocks(t).map_err(|e| anyhow!("{e}"))?;
        for (label, der) in blocks {
            if tokenmail_smime::mime::CMS_PEM_LABELS.contains(&label.as_str()) {
                return Ok(der);
            }
        }
        bail!("the signature's PEM armor is not a CMS signature (SIGNED MESSAGE, CMS or PKCS7)");
    }
    if t.is_empty() {
        bail!("the signature file is empty");
    }
    bail!("the signature is neither DER nor PEM CMS")
}

/// Trust anchors: $TOKENMAIL_TRUST, else `[trust] anchors` of the configuration (see
/// [`crate::store`]). Returns the anchors and where they came from (for messages).
pub fn trust_anchors() -> Result<(Vec<CertEntry>, Option<String>)> {
    let (paths, from) = crate::store::default_anchor_paths()?;
    Ok((crate::store::load_certs(&paths, "trust anchor")?, from))
}

const KP_CODE_SIGNING: &str = "1.3.6.1.5.5.7.3.3";

/// The signer's certificate among the SignedData's certificates (as the report names it).
fn signer_cert<'a>(parsed: &'a ParsedSignedData, r: &SignerReport) -> Option<&'a CertEntry> {
    parsed.certificates.iter().find(|c| {
        r.subject.as_deref() == Some(c.subject().as_str())
            && r.issuer.as_deref() == Some(c.issuer().as_str())
            && r.serial.as_deref() == Some(c.serial_hex().as_str())
    })
}

/// The subject as gpgsm shows it: `/CN=Alice Example/EMail=alice@example.com`.
fn gpgsm_name(cert: &CertEntry) -> String {
    cert.cert
        .tbs_certificate()
        .subject()
        .iter_rdn()
        .map(|rdn| {
            let s = rdn.to_string();
            match s.strip_prefix("EMAIL=") {
                Some(rest) => format!("/EMail={rest}"),
                None => format!("/{s}"),
            }
        })
        .collect()
}

fn has_code_signing(cert: &CertEntry) -> bool {
    use x509_cert::ext::pkix::ExtendedKeyUsage;
    matches!(
        cert.cert.tbs_certificate().get_extension::<ExtendedKeyUsage>(),
        Ok(Some((_, eku))) if eku.0.iter().any(|o| o.to_string() == KP_CODE_SIGNING)
    )
}

/// How a signer came out, in gpgsm's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Good signature, trusted valid certificate: GOODSIG, VALIDSIG, TRUST_FULLY.
    Good,
    /// Good signature, no path to a trust anchor: GOODSIG, VALIDSIG, TRUST_UNDEFINED.
    Untrusted,
    /// Good signature, a certificate (or the path) breaks the policy: … TRUST_NEVER.
    Rejected,
    /// Good signature, an expired certificate: EXPKEYSIG, VALIDSIG, TRUST_NEVER.
    Expired,
    /// The content or the signature was modified: BADSIG.
    Bad,
    /// Cannot be checked (no certificate, unsupported algorithm): ERRSIG.
    Error,
}

/// Classifies a signer's failed checks (`failed`: names of the checks that failed).
pub fn verdict(failed: &[&str], expired: bool) -> Verdict {
    const ERR: &[&str] = &["signer_certificate", "digest_algorithm"];
    const BAD: &[&str] = &[
        "message_digest",
        "signature",
        "content_type",
        "ess_signing_certificate",
        "signing_time",
    ];
    if failed.iter().any(|f| ERR.contains(f)) {
        Verdict::Error
    } else if failed.iter().any(|f| BAD.contains(f)) {
        Verdict::Bad
    } else if failed.is_empty() {
        Verdict::Good
    } else if expired {
        Verdict::Expired
    } else if failed
        .iter()
        .all(|f| matches!(*f, "chain" | "not_self_signed"))
    {
        Verdict::Untrusted
    } else {
        Verdict::Rejected
    }
}

/// Verifies `signature` over `data` (standard input when `None`; the signature's own
/// content when that is empty and the signature has one), with `revocation` instead of
/// `[trust] revocation` when given. Status lines to `status`, the summary to `human`.
/// Returns 0 for a good signature, 1 otherwise.
pub fn run_verify(
    signature: &Path,
    data: Option<&Data>,
    revocation: Option<RevocationMode>,
    status: &mut Status,
    human: &mut dyn Write,
) -> Result<i32> {
    let raw = std::fs::read(signature)
        .with_context(|| format!("cannot read the signature {}", signature.display()))?;
    let der = decode_signature(&raw)?;
    let parsed = ParsedSignedData::parse(&der).map_err(|e| anyhow!("cannot verify: {e}"))?;
    let digests = signed_data_digests(&parsed, data)?;
    let (anchors, anchor_source) = trust_anchors()?;
    let setup = crate::verify::TrustSetup::load(revocation)?;
    let opts = setup.options(&anchors, &[]);
    let report = verify(&parsed, &digests, &opts);
    if report.signers.is_empty() {
        status.line("NEWSIG")?;
        status.line("ERRSIG 0000000000000000 0 0 00 0 9")?;
        writeln!(human, "{PROG}: the signature has no signer")?;
        return Ok(1);
    }
    let trust = TrustNote {
        none: anchors.is_empty(),
        source: anchor_source.as_deref().unwrap_or("none"),
    };
    let mut all_good = true;
    for r in &report.signers {
        all_good &= report_signer(status, human, &parsed, r, &trust)?;
    }
    Ok(if all_good { 0 } else { 1 })
}

/// The digests of the signed data, with the algorithms the signature uses: of `data` for
/// a detached signature (only the supplied data counts, even when empty and even when the
/// signature also carries content), else of the content the signature encapsulates.
fn signed_data_digests(parsed: &ParsedSignedData, data: Option<&Data>) -> Result<ContentDigests> {
    let algs = parsed.digest_algorithms();
    let mut input: Box<dyn Read> = match data {
        Some(Data::File(p)) => Box::new(
            std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?,
        ),
        Some(Data::Stdin) => Box::new(std::io::stdin().lock()),
        None => {
            let content = parsed.encapsulated_content().ok_or_else(|| {
                anyhow!("a detached signature: give the signed data too (--verify SIG DATA)")
            })?;
            return Ok(ContentDigests::of(&algs, content));
        }
    };
    let mut h = MultiHasher::new(&algs);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match input.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("cannot read the signed data"),
        };
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize())
}

/// What to say when a signature does not chain to a trust anchor.
struct TrustNote<'a> {
    /// no anchor is configured at all
    none: bool,
    /// where the anchors came from
    source: &'a str,
}

/// gpgsm's view of a signer certificate: fingerprint, user id, public-key algorithm, expiry.
struct SignerFacts {
    fpr: String,
    uid: String,
    pk: u32,
    not_after: String,
    eku_code_signing: bool,
}

fn signer_facts(parsed: &ParsedSignedData, r: &SignerReport) -> SignerFacts {
    let cert = signer_cert(parsed, r);
    let pk = cert
        .map(|c| {
            match c
                .cert
                .tbs_certificate()
                .subject_public_key_info()
                .algorithm
                .oid
                .to_string()
                .as_str()
            {
                "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => 1,
                _ => 301,
            }
        })
        .unwrap_or(0);
    SignerFacts {
        fpr: cert
            .map(|c| sha1_fingerprint(&c.der))
            .unwrap_or_else(|| "0000000000000000".to_string()),
        uid: cert
            .map(gpgsm_name)
            .or_else(|| r.subject.clone())
            .unwrap_or_default(),
        pk,
        not_after: cert
            .map(|c| {
                iso_time(
                    c.cert
                        .tbs_certificate()
                        .validity()
                        .not_after
                        .to_system_time(),
                )
            })
            .unwrap_or_else(|| "19700101T000000".to_string()),
        // emailProtection or codeSigning: a codeSigning-only certificate signs commits
        eku_code_signing: cert.is_some_and(has_code_signing),
    }
}

/// The status lines and the human report for one signer; true when it is good.
fn report_signer(
    status: &mut Status,
    human: &mut dyn Write,
    parsed: &ParsedSignedData,
    r: &SignerReport,
    trust: &TrustNote<'_>,
) -> Result<bool> {
    status.line("NEWSIG")?;
    let f = signer_facts(parsed, r);
    let (fpr, uid, pk) = (&f.fpr, &f.uid, f.pk);
    let failures: Vec<_> = r
        .failures()
        .filter(|c| !(c.name == "extended_key_usage" && f.eku_code_signing))
        .collect();
    let failed: Vec<&str> = failures.iter().map(|c| c.name.as_str()).collect();
    let expired = failures.iter().any(|c| {
        matches!(c.name.as_str(), "validity_now" | "validity_at_signing_time")
            && c.reason.contains("expired")
    });
    let v = verdict(&failed, expired);
    let (date, sigtime) = match &r.signing_time {
        // "YYYY-MM-DDTHH:MM:SSZ"
        Some(t) if t.len() >= 19 => (
            t[..10].to_string(),
            t[..19].replace(['-', ':'], "").to_string(),
        ),
        _ => ("1970-01-01".to_string(), "19700101T000000".to_string()),
    };
    let hash = match r.digest_algorithm.as_str() {
        "SHA-1" => 2,
        "SHA-256" => 8,
        "SHA-384" => 9,
        "SHA-512" => 10,
        _ => 0,
    };
    let not_after = &f.not_after;
    let validsig = format!("VALIDSIG {fpr} {date} {sigtime} {not_after} 0 0 {pk} {hash} 00");
    writeln!(
        human,
        "{PROG}: Signature made {} UTC",
        r.signing_time
            .as_deref()
            .map(|t| t.replace('T', " ").trim_end_matches('Z').to_string())
            .unwrap_or_else(|| "(no signing time)".into())
    )?;
    writeln!(
        human,
        "{PROG}:                using {} key {fpr}",
        r.signature_algorithm
    )?;
    if let Some(t) = r.timestamp.as_ref().filter(|t| t.valid) {
        writeln!(
            human,
            "{PROG}: Timestamp {} UTC by \"{}\" (RFC 3161)",
            t.time
                .as_deref()
                .map(|t| t.replace('T', " ").trim_end_matches('Z').to_string())
                .unwrap_or_default(),
            t.tsa.as_deref().unwrap_or("?")
        )?;
    }
    match v {
        Verdict::Error => {
            status.line(&format!("ERRSIG {fpr} {pk} {hash} 00 {sigtime} 9"))?;
        }
        Verdict::Bad => {
            status.line(&format!("BADSIG {fpr} {uid}"))?;
            writeln!(human, "{PROG}: BAD signature from \"{uid}\"")?;
        }
        Verdict::Expired => {
            status.line(&format!("EXPKEYSIG {fpr} {uid}"))?;
            status.line(&validsig)?;
            status.line("TRUST_NEVER 0 tokenmail")?;
            writeln!(
                human,
                "{PROG}: Good signature from \"{uid}\", but the certificate has expired"
            )?;
        }
        Verdict::Good | Verdict::Untrusted | Verdict::Rejected => {
            status.line(&format!("GOODSIG {fpr} {uid}"))?;
            status.line(&validsig)?;
            status.line(match v {
                Verdict::Good => "TRUST_FULLY 0 tokenmail",
                Verdict::Untrusted => "TRUST_UNDEFINED 0 tokenmail",
                _ => "TRUST_NEVER 0 tokenmail",
            })?;
            writeln!(human, "{PROG}: Good signature from \"{uid}\"")?;
            for e in &r.emails {
                writeln!(human, "{PROG}:                 aka \"{e}\"")?;
            }
        }
    }
    for c in &failures {
        writeln!(human, "{PROG}: FAILED {}: {}", c.name, c.reason)?;
    }
    if v == Verdict::Untrusted && trust.none {
        writeln!(
            human,
            "{PROG}: no trust anchor configured: set TOKENMAIL_TRUST=/path/to/root.pem \
             (see docs/git.md)"
        )?;
    } else if v == Verdict::Untrusted {
        writeln!(
            human,
            "{PROG}: the certificate does not chain to a trust anchor ({})",
            trust.source
        )?;
    }
    Ok(v == Verdict::Good)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_argument_forms_parse() {
        let o = parse_args(["--status-fd=2", "-bsau", "Alice <alice@example.com>"]).expect("ok");
        assert_eq!(o.status_fd, Some(2));
        assert!(o.armor);
        assert_eq!(
            o.command,
            Command::Sign {
                key: Some("Alice <alice@example.com>".into()),
                input: None
            }
        );
        let o = parse_args(["--status-fd=1", "--verify", "/tmp/x", "-"]).expect("ok");
        assert_eq!(o.status_fd, Some(1));
        assert_eq!(
            o.command,
            Command::Verify {
                signature: "/tmp/x".into(),
                data: Some(Data::Stdin)
            }
        );
        let o = parse_args([
            "--keyid-format",
            "long",
            "--status-fd",
            "3",
            "--detach-sign",
            "--armor",
            "--local-user=0xABCD",
            "--include-certs",
            "1",
            "--batch",
            "--no-tty",
        ])
        .expect("ok");
        assert_eq!(o.status_fd, Some(3));
        assert_eq!(o.include, IncludeCerts::SignerOnly);
        assert_eq!(
            o.command,
            Command::Sign {
                key: Some("0xABCD".into()),
                input: None
            }
        );
        let o = parse_args(["-bsauKEY", "-o", "out.sig"]).expect("ok");
        assert_eq!(o.output, Some(PathBuf::from("out.sig")));
        assert_eq!(parse_args(["--help"]).expect("ok").command, Command::Help);
        assert_eq!(
            parse_args(["--version"]).expect("ok").command,
            Command::Version
        );
    }

    #[test]
    fn bad_arguments_are_one_line_errors() {
        for (args, want) in [
            (vec!["--frobnicate"], "unknown option --frobnicate"),
            (vec!["-bsx"], "unknown option -x"),
            (vec!["-bsau"], "option -u needs a value"),
            (
                vec!["--status-fd=x", "--verify", "s"],
                "not a file descriptor",
            ),
            (vec!["-sau", "k"], "only detached signatures"),
            (vec!["--verify"], "--verify needs a signature file"),
            (vec![], "nothing to do"),
            (vec!["--batch=1", "--verify", "s"], "takes no value"),
        ] {
            let e = parse_args(args.clone()).expect_err("error").to_string();
            assert!(e.contains(want), "{args:?}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn verdicts_follow_gpgsm() {
        assert_eq!(verdict(&[], false), Verdict::Good);
        assert_eq!(verdict(&["chain"], false), Verdict::Untrusted);
        assert_eq!(
            verdict(&["chain", "not_self_signed"], false),
            Verdict::Untrusted
        );
        assert_eq!(verdict(&["extended_key_usage"], false), Verdict::Rejected);
        assert_eq!(verdict(&["validity_now"], true), Verdict::Expired);
        assert_eq!(verdict(&["message_digest", "chain"], false), Verdict::Bad);
        assert_eq!(verdict(&["signer_certificate"], false), Verdict::Error);
    }

    #[test]
    fn ident_emails() {
        assert_eq!(
            ident_email("Alice Example <alice@example.com>"),
            Some("alice@example.com")
        );
        assert_eq!(ident_email("alice@example.com"), None);
        assert_eq!(ident_email("Nobody <nobody>"), None);
    }

    #[test]
    fn signature_decoding() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x01];
        assert_eq!(decode_signature(&der).expect("der"), der);
        let pem = tokenmail_smime::mime::pem_encode(ARMOR, &der);
        assert!(pem.starts_with("-----BEGIN SIGNED MESSAGE-----\n"));
        assert_eq!(decode_signature(pem.as_bytes()).expect("pem"), der);
        assert!(decode_signature(
            b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"
        )
        .is_err());
        assert!(decode_signature(b"").is_err());
    }
}
