//! `tokenmail encrypt`: S/MIME-encrypt a message to given certificates.
//!
//! Needs no agent (no private key is involved). Streams from the input file or
//! standard input to `-o FILE` or standard output in bounded memory; with
//! `-o`, the output is written to a temporary file in the same directory and
//! renamed over FILE only when everything succeeded.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tokenmail_smime::envelope::{
    ContentCipher, EncryptRecipient, Encryptor, KeyTransport, OaepHash,
};
use tokenmail_smime::pipeline::{encrypt_stream, ChunkSink, EntityReader, CHUNK, OUT_CHUNK};

use crate::output::{BackgroundFeed, EarlySync, Staged, Target, WriteFeed};

/// Arguments of `tokenmail encrypt`.
#[derive(Debug, Clone, clap::Args)]
pub struct EncryptArgs {
    /// Encrypt to the certificate in this PEM (or DER) file; repeatable.
    #[arg(long = "recipient-cert", value_name = "PEM")]
    pub recipient_cert: Vec<PathBuf>,

    /// Encrypt to this address: its certificate is looked up in $TOKENMAIL_CERTS (dirs,
    /// ':'-separated; default ~/.config/tokenmail/certs) and on the agent's tokens;
    /// repeatable.
    #[arg(long = "to", value_name = "EMAIL")]
    pub to: Vec<String>,

    /// Content cipher: aes256-gcm (default), aes128-gcm, aes256-cbc, aes128-cbc.
    #[arg(long, value_name = "CIPHER")]
    pub cipher: Option<String>,

    /// The RFC 5322 message or MIME entity to encrypt (default: standard input).
    #[arg(value_name = "IN")]
    pub input: Option<PathBuf>,

    /// Write the encrypted message here (default: standard output).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,

    /// RSA key transport: oaep (RSAES-OAEP with SHA-256, the default) or pkcs1 (PKCS#1 v1.5,
    /// for older clients such as gpgsm 2.2, which cannot read OAEP).
    #[arg(long, value_name = "PADDING")]
    pub rsa_padding: Option<String>,

    /// Output form: smime (an application/pkcs7-mime message, the default), der (the bare
    /// CMS ContentInfo in DER: what NeoMutt's smime_encrypt_command returns) or pem (the
    /// same as PEM "CMS"). With der and pem, only the MIME entity (the Content-* header
    /// fields and the body) is encrypted; other header fields are left out.
    #[arg(long, value_enum, value_name = "FORM", default_value_t = OutForm::Smime)]
    pub outform: OutForm,

    /// Sign first (multipart/signed with --signer's key on a token), then encrypt.
    #[arg(long, requires = "signer")]
    pub sign: bool,

    /// Sign, encrypt, and sign the encrypted message again (RFC 2634 triple wrap).
    #[arg(long, requires = "signer", conflicts_with = "sign")]
    pub triple_wrap: bool,

    /// The signing key for --sign / --triple-wrap (label, hex id, sha256:…, or email).
    #[arg(long, value_name = "KEY")]
    pub signer: Option<String>,

    /// With --sign / --triple-wrap: an ESS security label (as `sign --security-label`), on
    /// the signature; with --triple-wrap on the outer one, which mail guards read.
    #[arg(long, value_name = "LABEL", requires = "signer")]
    pub security_label: Option<String>,

    /// Trust anchors the recipients' certificates must chain to (PEM or DER; repeatable).
    /// Default: $TOKENMAIL_TRUST, then [trust] anchors in the configuration; with none,
    /// recipients are checked for validity and key usage only.
    #[arg(long = "trust", value_name = "PEM")]
    pub trust: Vec<PathBuf>,

    /// Encrypt to a certificate that does not chain to the trust anchors (after checking it
    /// some other way); a warning is printed. Expired, revoked or signing-only certificates
    /// are refused regardless.
    #[arg(long)]
    pub allow_untrusted_recipient: bool,
}

/// `tokenmail encrypt --outform`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutForm {
    /// An application/pkcs7-mime message (headers and base64).
    Smime,
    /// The bare CMS ContentInfo, DER.
    Der,
    /// The bare CMS ContentInfo, PEM (`-----BEGIN CMS-----`).
    Pem,
}

/// `tokenmail encrypt`, with the signing variants that need the agent.
pub fn run_with_agent(mut args: EncryptArgs, socket: Option<&Path>) -> anyhow::Result<()> {
    if !(args.sign || args.triple_wrap) {
        return run_at(args, socket);
    }
    if args.triple_wrap && args.outform != OutForm::Smime {
        bail!("--triple-wrap signs the encrypted message: it needs --outform smime");
    }
    let signer = args.signer.clone().context("--sign needs --signer KEY")?;
    // the recipients before the token signs anything: a refused one costs no signature
    // (and no PIN dialog)
    if !args.recipient_cert.is_empty() {
        check_recipients(&args, socket)?;
    }
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let label = args.security_label.clone();
    let sign = |input: Option<PathBuf>, output: PathBuf, outer: bool| -> anyhow::Result<()> {
        crate::sign::run(
            crate::sign::SignArgs {
                signer: signer.clone(),
                timestamp: None,
                receipt_request: false,
                security_label: if outer { label.clone() } else { None },
                opaque: false,
                detached_der: false,
                detached_pem: false,
                crlf: false,
                digest: None,
                pss: false,
                chain: Vec::new(),
                input,
                output: Some(output),
            },
            socket,
        )
        .map(|_| ())
    };
    let signed = dir.path().join("signed.eml");
    sign(args.input.take(), signed.clone(), !args.triple_wrap)?;
    args.input = Some(signed);
    if !args.triple_wrap {
        return run_at(args, socket);
    }
    let final_out = args.output.take();
    let encrypted = dir.path().join("encrypted.eml");
    args.output = Some(encrypted.clone());
    run_at(args, socket)?;
    match final_out {
        Some(out) => sign(Some(encrypted), out, true),
        None => {
            let outer = dir.path().join("outer.eml");
            sign(Some(encrypted), outer.clone(), true)?;
            let mut f = File::open(&outer)?;
            io::copy(&mut f, &mut io::stdout().lock())?;
            Ok(())
        }
    }
}

/// Runs `tokenmail encrypt`.
pub fn run(args: EncryptArgs) -> anyhow::Result<()> {
    run_at(args, None)
}

/// [`run`], with the agent at `socket` (when one runs) as a source of CA certificates for
/// the recipients' paths.
pub fn run_at(args: EncryptArgs, socket: Option<&Path>) -> anyhow::Result<()> {
    if !args.to.is_empty() {
        bail!("--to needs the recipient store; use --recipient-cert");
    }
    if args.recipient_cert.is_empty() {
        bail!("no recipient: give --recipient-cert PEM (repeatable)");
    }
    // Arguments first (cheap, and the clearest error), then the certificates.
    let explicit_cipher = match args.cipher.as_deref() {
        None => None,
        Some(name) => Some(ContentCipher::from_name(name).with_context(|| {
            format!(
                "unknown --cipher {name:?}; use aes256-gcm, aes128-gcm, aes256-cbc or aes128-cbc"
            )
        })?),
    };
    let transport = match args.rsa_padding.as_deref() {
        None | Some("oaep") => KeyTransport::RsaOaep {
            hash: OaepHash::Sha256,
        },
        Some("pkcs1") => KeyTransport::RsaPkcs1v15,
        Some(other) => bail!("unknown --rsa-padding {other:?}; use oaep (default) or pkcs1"),
    };
    check_recipients(&args, socket)?;
    let recipients = args
        .recipient_cert
        .iter()
        .map(|p| load_recipient(p).map(|r| r.with_key_transport(transport)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cipher = explicit_cipher.unwrap_or_else(|| default_cipher(&recipients));

    let produce = |sink: &mut dyn ChunkSink| -> anyhow::Result<()> {
        if args.outform == OutForm::Smime {
            let mut input: Box<dyn Read> = match &args.input {
                Some(p) => Box::new(crate::term::Progress::file(
                    File::open(p).with_context(|| format!("cannot open input {}", p.display()))?,
                    "encrypting",
                )),
                None => Box::new(io::stdin().lock()),
            };
            return Ok(encrypt_stream(&recipients, cipher, &mut input, sink)?);
        }
        // DER: the content's length goes first, so the input is read twice (standard
        // input is spooled to a private temporary file)
        let input = match &args.input {
            Some(p) => {
                File::open(p).with_context(|| format!("cannot open input {}", p.display()))?
            }
            None => {
                let mut spool = tempfile::tempfile().context("cannot create a temporary file")?;
                io::copy(&mut io::stdin().lock(), &mut spool)
                    .context("cannot read standard input")?;
                spool
            }
        };
        let mut input = crate::term::Progress::file(input, "encrypting");
        encrypt_bare(&recipients, cipher, &mut input, args.outform, sink)
    };

    // The output is written by a second thread while the next chunk is encrypted.
    match &args.output {
        None => {
            let mut out = BackgroundFeed::new(WriteFeed(BufWriter::new(io::stdout())));
            produce(&mut out)?;
            let mut w = out.finish()?.0;
            w.flush().context("cannot write to standard output")?;
        }
        Some(path) => match Target::of(Some(path))? {
            Target::Replace { .. } => {
                let staged = Staged::new(Some(path))?;
                let mut out = BackgroundFeed::new(WriteFeed(EarlySync::new(staged.file())?));
                produce(&mut out)
                    .and_then(|()| out.finish()?.0.finish())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                staged.release()?;
            }
            // a device or a FIFO: written through, nothing to rename or sync
            Target::Through { file, .. } => {
                let mut out = BackgroundFeed::new(WriteFeed(BufWriter::new(file)));
                produce(&mut out)?;
                let mut w = out.finish()?.0;
                w.flush()
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Target::Stdout => bail!("internal error: standard output as a path"),
        },
    }
    Ok(())
}

/// One SMIMECapability (RFC 8551 §2.5.2).
#[derive(Clone, Debug, der::Sequence)]
struct Capability {
    id: der::asn1::ObjectIdentifier,
    parameters: Option<der::Any>,
}

const SMIME_CAPABILITIES: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.15");
const AES128_GCM: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.6");
const AES256_GCM: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.46");

/// AES-256-GCM, unless a recipient's certificate announces S/MIME capabilities
/// (the smimeCapabilities extension, RFC 4262) without AES-GCM: then AES-256-CBC, which
/// every S/MIME client reads.
fn default_cipher(recipients: &[EncryptRecipient]) -> ContentCipher {
    use der::Decode;
    for r in recipients {
        let Some(exts) = r.certificate().tbs_certificate().extensions() else {
            continue;
        };
        for e in exts.iter().filter(|e| e.extn_id == SMIME_CAPABILITIES) {
            match Vec::<Capability>::from_der(e.extn_value.as_bytes()) {
                Ok(caps)
                    if !caps
                        .iter()
                        .any(|c| c.id == AES128_GCM || c.id == AES256_GCM) =>
                {
                    return ContentCipher::Aes256Cbc
                }
                _ => {}
            }
        }
    }
    ContentCipher::Aes256Gcm
}

/// Refuses recipients whose certificate is expired, not yet valid, revoked, not for
/// encryption, or (with trust anchors) does not chain to them — before anything is written.
fn check_recipients(args: &EncryptArgs, socket: Option<&Path>) -> anyhow::Result<()> {
    use tokenmail_smime::recipient::{check_recipient, RecipientChecks};
    let anchor_paths = if args.trust.is_empty() {
        crate::store::default_anchor_paths()?.0
    } else {
        args.trust.clone()
    };
    let anchors = crate::store::load_certs(&anchor_paths, "trust anchor")?;
    let setup = crate::verify::TrustSetup::load(None)?;
    let revocation = setup.revocation_inputs(&[]);
    // intermediates: [trust] intermediates, the CA certificates of the certificate
    // directories and of the agent's tokens, and (per file) a bundle's own chain
    let mut known = setup.intermediates.clone();
    if !anchors.is_empty() {
        known.extend(crate::store::known_ca_certificates(socket));
    }
    for p in &args.recipient_cert {
        let bytes =
            std::fs::read(p).with_context(|| format!("cannot read certificate {}", p.display()))?;
        let certs = tokenmail_smime::path::CertEntry::from_pem_or_der(&bytes)
            .map_err(|e| anyhow::anyhow!("cannot encrypt to {}: {e}", p.display()))?;
        let Some((cert, bundled)) = certs.split_first() else {
            bail!("cannot encrypt to {}: no certificate in it", p.display());
        };
        // the file's other certificates (a bundle with the chain) help build the path
        let mut intermediates = known.clone();
        intermediates.extend(bundled.iter().cloned());
        let checks = RecipientChecks {
            anchors: &anchors,
            intermediates: &intermediates,
            policy: &setup.policy,
            revocation: &revocation,
            allow_untrusted: args.allow_untrusted_recipient,
            now: std::time::SystemTime::now(),
        };
        match check_recipient(cert, &checks) {
            Ok(warnings) => {
                for w in warnings {
                    eprintln!("tokenmail: {w}");
                }
            }
            Err(e) => bail!("not encrypting: {e} ({})", p.display()),
        }
    }
    Ok(())
}

fn load_recipient(path: &Path) -> anyhow::Result<EncryptRecipient> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read certificate {}", path.display()))?;
    EncryptRecipient::from_pem_or_der(&bytes)
        .with_context(|| format!("cannot encrypt to {}", path.display()))
}

/// PEM, streaming: 64 base64 characters a line.
#[derive(Debug, Default)]
struct PemLines {
    carry: Vec<u8>,
}

impl PemLines {
    const LINE: usize = 48;

    fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        use base64::Engine;
        self.carry.extend_from_slice(data);
        let whole = self.carry.len() / Self::LINE * Self::LINE;
        for line in self.carry[..whole].chunks(Self::LINE) {
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(line)
                    .as_bytes(),
            );
            out.push(b'\n');
        }
        self.carry.drain(..whole);
    }

    fn finish(self, out: &mut Vec<u8>) {
        use base64::Engine;
        if !self.carry.is_empty() {
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(&self.carry)
                    .as_bytes(),
            );
            out.push(b'\n');
        }
    }
}

/// `--outform der|pem`: the bare ContentInfo, DER (definite lengths: a first pass over the
/// input measures the plaintext), raw or as PEM "CMS". Streams in bounded memory.
fn encrypt_bare(
    recipients: &[EncryptRecipient],
    cipher: ContentCipher,
    input: &mut (impl Read + std::io::Seek),
    form: OutForm,
    output: &mut dyn ChunkSink,
) -> anyhow::Result<()> {
    use std::io::SeekFrom;
    let mut text = Vec::with_capacity(CHUNK + CHUNK / 8);
    input
        .seek(SeekFrom::Start(0))
        .context("cannot read the input")?;
    // pass 1: the plaintext's length
    let mut len: u64 = 0;
    {
        let (mut entity, _) = EntityReader::open(input)?;
        loop {
            text.clear();
            if !entity.next_into(&mut text)? {
                break;
            }
            len += text.len() as u64;
        }
    }
    input
        .seek(SeekFrom::Start(0))
        .context("cannot read the input again")?;
    // pass 2
    let (mut entity, outer) = EntityReader::open(input)?;
    if !outer.is_empty() {
        let names: Vec<String> = String::from_utf8_lossy(&outer)
            .lines()
            .filter(|l| !l.starts_with([' ', '\t']))
            .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_string()))
            .collect();
        eprintln!(
            "tokenmail: note: --outform {}: only the MIME entity is encrypted; left out: {}",
            if form == OutForm::Pem { "pem" } else { "der" },
            names.join(", ")
        );
    }
    let (mut enc, header) =
        Encryptor::new_with_length(recipients, cipher, len).context("cannot encrypt")?;
    let mut pem = (form == OutForm::Pem).then(PemLines::default);
    let emit = |data: &[u8], pem: &mut Option<PemLines>, out: &mut Vec<u8>| match pem {
        Some(p) => p.push(data, out),
        None => out.extend_from_slice(data),
    };
    let mut ct = Vec::with_capacity(CHUNK + CHUNK / 8);
    let mut out = output.buffer(OUT_CHUNK);
    if pem.is_some() {
        out.extend_from_slice(b"-----BEGIN CMS-----\n");
    }
    emit(&header, &mut pem, &mut out);
    loop {
        text.clear();
        if !entity.next_into(&mut text)? {
            break;
        }
        ct.clear();
        enc.update_into(&text, &mut ct).context("cannot encrypt")?;
        emit(&ct, &mut pem, &mut out);
        output.put(out).context("cannot write the output")?;
        out = output.buffer(OUT_CHUNK);
    }
    let last = enc.finish().context("cannot encrypt")?;
    emit(&last, &mut pem, &mut out);
    if let Some(p) = pem {
        p.finish(&mut out);
        out.extend_from_slice(b"-----END CMS-----\n");
    }
    output.put(out).context("cannot write the output")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use tokenmail_smime::envelope::{decrypt, SoftwareKey};

    fn make_key(dir: &Path) -> (PathBuf, PathBuf) {
        let key = dir.join("k.pem");
        let cert = dir.join("c.pem");
        let ok = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=cli test",
            ])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl")
            .status
            .success();
        assert!(ok);
        (key, cert)
    }

    #[test]
    fn to_is_refused_for_now() {
        let e = run(EncryptArgs {
            recipient_cert: vec![],
            to: vec!["a@example.org".into()],
            cipher: None,
            input: None,
            output: None,
            sign: false,
            triple_wrap: false,
            signer: None,
            security_label: None,
            rsa_padding: None,
            outform: OutForm::Smime,
            trust: vec![],
            allow_untrusted_recipient: false,
        })
        .expect_err("--to");
        assert_eq!(
            e.to_string(),
            "--to needs the recipient store; use --recipient-cert"
        );
    }

    #[test]
    fn encrypts_a_message_to_a_file_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, cert) = make_key(dir.path());
        let input = dir.path().join("in.eml");
        std::fs::write(
            &input,
            b"From: a@example.org\nTo: b@example.org\nSubject: s\nContent-Type: text/plain\n\nbody\n",
        )
        .expect("write");
        let output = dir.path().join("out.eml");
        run(EncryptArgs {
            recipient_cert: vec![cert.clone()],
            to: vec![],
            cipher: Some("aes128-cbc".into()),
            input: Some(input),
            output: Some(output.clone()),
            sign: false,
            triple_wrap: false,
            signer: None,
            security_label: None,
            rsa_padding: None,
            outform: OutForm::Smime,
            trust: vec![],
            allow_untrusted_recipient: false,
        })
        .expect("encrypt");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 4, "no temporary file left: {names:?}");
        let out = std::fs::read(&output).expect("read");
        assert!(out.starts_with(b"From: a@example.org\r\nTo: b@example.org\r\nSubject: s\r\n"));
        let sk = SoftwareKey::from_pem(
            &std::fs::read_to_string(key).expect("key"),
            &std::fs::read_to_string(cert).expect("cert"),
        )
        .expect("soft key");
        let d = decrypt(&out, &sk).expect("decrypt");
        assert_eq!(&d.content[..], b"Content-Type: text/plain\r\n\r\nbody\r\n");
        assert!(!d.authenticated);
    }

    #[test]
    fn bad_cipher_and_missing_certificate_are_one_line_errors() {
        let e = run(EncryptArgs {
            recipient_cert: vec![PathBuf::from("/nonexistent/cert.pem")],
            to: vec![],
            cipher: Some("rc2".into()),
            input: None,
            output: None,
            sign: false,
            triple_wrap: false,
            signer: None,
            security_label: None,
            rsa_padding: None,
            outform: OutForm::Smime,
            trust: vec![],
            allow_untrusted_recipient: false,
        })
        .expect_err("bad cipher");
        assert!(e.to_string().contains("unknown --cipher"));
        let e = run(EncryptArgs {
            recipient_cert: vec![PathBuf::from("/nonexistent/cert.pem")],
            to: vec![],
            cipher: None,
            input: None,
            output: None,
            sign: false,
            triple_wrap: false,
            signer: None,
            security_label: None,
            rsa_padding: None,
            outform: OutForm::Smime,
            trust: vec![],
            allow_untrusted_recipient: false,
        })
        .expect_err("missing cert");
        assert!(e.to_string().contains("cannot read certificate"));
    }
}
