//! Enrolment through the agent: `keygen`, `csr`, `import-cert`, `import-p12`, `renew`.
//!
//! Key pairs are made on the token (the agent's PKCS#11 session or PIV card); the CSR is
//! built here with `x509-cert`'s builder (`tokenmail_smime::csr`) and only its digest goes
//! to the token; PKCS#12 files are read here (`tokenmail_smime::pkcs12`) and the key sent
//! once to the agent, which creates it sensitive and not extractable.

use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use tokenmail_proto::v1::{
    Bytes, ErrorCode, KeyInfo, Request, Response, SecretBytes, SignAlgorithm,
};
use tokenmail_proto::{Client, ClientError};
use tokenmail_smime::alg::{HashAlg, KeyKind, SignatureScheme};
use tokenmail_smime::path::CertEntry;
use x509_cert::der::{Decode, Encode};
use zeroize::Zeroizing;

use crate::agentkey::{call_with_login, connect};

const KEYGEN_EXAMPLES: &str = "\
Examples:
  tokenmail keygen --token work --label alice-2027 --algo p256
  tokenmail keygen --token work --label alice-enc --algo rsa3072 --id 0a01
  tokenmail keygen --token yubikey --label 9c --algo p256 --touch-policy cached   # a PIV slot
  tokenmail csr --key alice-2027 --email alice@example.com -o alice.csr            # next step

On a PKCS#11 token the private key is sensitive, never extractable and private, and both
halves share one fresh CKA_ID; a label or id already in use is refused. The key can be
used at once: no agent restart.";

const CSR_EXAMPLES: &str = "\
Examples:
  tokenmail csr --key alice-2027 --email alice@example.com -o alice.csr
  tokenmail csr --key alice-2027 --email alice@example.com --subject 'CN=Alice Example,O=Example Corp'
  openssl req -in alice.csr -noout -verify -text      # check it
  openssl ca -in alice.csr -out alice.pem ...         # the CA issues
  tokenmail import-cert --key alice-2027 alice.pem --chain ca-chain.pem";

const IMPORT_CERT_EXAMPLES: &str = "\
Examples:
  tokenmail import-cert --key alice-2027 alice.pem --chain ca-chain.pem
  tokenmail import-cert --key 9c alice.pem              # a PIV slot

The certificate's public key must be the key's. A read-only token cannot hold it: the
certificate is then kept in the certificate directory instead, and this is said.";

const IMPORT_P12_EXAMPLES: &str = "\
Examples:
  tokenmail import-p12 --token work escrow-2026.p12               # asks for the password
  tokenmail import-p12 --token work --label alice-enc-2026 --password-file pw escrow.p12
  tokenmail import-p12 --token yubikey --label 82 escrow-2025.p12   # PIV: retired slots 82..95

For escrowed encryption keys only: a certificate that allows only signing is refused
(signing keys are never escrowed) unless --force. Reads PKCS#12 made by OpenSSL 3
(PBES2/AES) and by `openssl pkcs12 -legacy` (3DES/RC2). The key is created on the token
sensitive and not extractable.";

const RENEW_EXAMPLES: &str = "\
Examples:
  tokenmail renew --key alice-2026 -o alice-2027.csr
  tokenmail renew --key alice-2026 --label alice-2027 --algo p384 -o alice-2027.csr

A new key is generated on the same token, and a CSR with the old certificate's subject
and email is written. The old key stays, to decrypt old mail; once the new certificate is
imported (tokenmail import-cert --key NEW CERT), the email selects the newer certificate.";

/// `tokenmail keygen`.
#[derive(Debug, Args)]
#[command(after_help = KEYGEN_EXAMPLES)]
pub struct KeygenArgs {
    /// The token: its label or serial (needed only with several tokens).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Label of the new key (CKA_LABEL); on a PIV card the slot: 9a, 9c, 9d, 9e, 82..95.
    #[arg(long, value_name = "NAME")]
    label: String,
    /// rsa2048, rsa3072, rsa4096, p256 or p384.
    #[arg(
        long,
        visible_alias = "algorithm",
        value_name = "ALG",
        default_value = "p256"
    )]
    algo: String,
    /// CKA_ID in hex (default: 16 fresh random bytes).
    #[arg(long, value_name = "HEX")]
    id: Option<String>,
    /// PIV only: default, never, once or always.
    #[arg(long, value_name = "POLICY")]
    pin_policy: Option<String>,
    /// PIV only: default, never, always or cached.
    #[arg(long, value_name = "POLICY")]
    touch_policy: Option<String>,
    /// PIV only: file with the management key in hex.
    #[arg(long, value_name = "FILE")]
    management_key_file: Option<PathBuf>,
    /// Write the public key (PEM) to FILE.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// `tokenmail csr`.
#[derive(Debug, Args)]
#[command(after_help = CSR_EXAMPLES)]
pub struct CsrArgs {
    /// The key: label, hex id, or an email in its certificate.
    #[arg(long, value_name = "KEY")]
    key: String,
    /// The email address the certificate is for (subjectAltName rfc822Name).
    #[arg(long, value_name = "EMAIL")]
    email: String,
    /// Subject DN, e.g. 'CN=Alice Example,O=Example Corp' (default: CN=<email>).
    #[arg(long, value_name = "DN")]
    subject: Option<String>,
    /// RSA keys: sign the request with RSA-PSS instead of PKCS#1 v1.5.
    #[arg(long)]
    pss: bool,
    /// sha256, sha384 or sha512 (default: sha384 for P-384 keys, else sha256).
    #[arg(long, value_name = "HASH")]
    hash: Option<String>,
    /// Write the request (PEM) to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// `tokenmail import-cert`.
#[derive(Debug, Args)]
#[command(after_help = IMPORT_CERT_EXAMPLES)]
pub struct ImportCertArgs {
    /// The key: label, hex id, or (PIV) slot.
    #[arg(long, value_name = "KEY")]
    key: String,
    /// CA certificates to store on the token as well (PEM bundle).
    #[arg(long, value_name = "PEM")]
    chain: Option<PathBuf>,
    /// PIV only: file with the management key in hex.
    #[arg(long, value_name = "FILE")]
    management_key_file: Option<PathBuf>,
    /// The certificate (PEM or DER).
    cert: PathBuf,
}

/// `tokenmail import-p12`.
#[derive(Debug, Args)]
#[command(after_help = IMPORT_P12_EXAMPLES)]
pub struct ImportP12Args {
    /// The token: its label or serial (needed only with several tokens).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Label of the key on the token (default: the file's friendlyName, else the email).
    #[arg(long, value_name = "NAME")]
    label: Option<String>,
    /// CKA_ID in hex (default: 16 fresh random bytes).
    #[arg(long, value_name = "HEX")]
    id: Option<String>,
    /// Read the password from FILE (first line) instead of asking.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Import even a key whose certificate allows only signing.
    #[arg(long)]
    force: bool,
    /// PIV only: file with the management key in hex.
    #[arg(long, value_name = "FILE")]
    management_key_file: Option<PathBuf>,
    /// The PKCS#12 file.
    file: PathBuf,
}

/// `tokenmail renew`.
#[derive(Debug, Args)]
#[command(after_help = RENEW_EXAMPLES)]
pub struct RenewArgs {
    /// The key whose certificate is to be renewed: label, hex id, or email.
    #[arg(long, value_name = "KEY")]
    key: String,
    /// Label of the new key (default: the old label with the date, e.g. alice-20261206).
    #[arg(long, value_name = "NAME")]
    label: Option<String>,
    /// Algorithm of the new key (default: the old key's).
    #[arg(long, value_name = "ALG")]
    algo: Option<String>,
    /// Write the request (PEM) to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

fn parse_id(hex_id: Option<&str>) -> Result<Option<Bytes>> {
    hex_id
        .map(|h| {
            let b = hex::decode(h.trim())
                .map_err(|_| anyhow!("--id {h:?}: give the id in hex, e.g. 0a01"))?;
            if b.is_empty() {
                bail!("--id: the id must not be empty");
            }
            Ok(Bytes(b))
        })
        .transpose()
}

fn warn_all(warnings: &[String]) {
    for w in warnings {
        eprintln!("tokenmail: {w}");
    }
}

fn spki_pem(der_bytes: &[u8]) -> Result<String> {
    x509_cert::der::pem::encode_string("PUBLIC KEY", x509_cert::der::pem::LineEnding::LF, der_bytes)
        .map_err(|e| anyhow!("cannot encode the public key: {e}"))
}

/// Runs `tokenmail keygen`.
pub fn keygen(args: KeygenArgs, socket: Option<&Path>) -> Result<i32> {
    let mut c = connect(socket)?;
    let req = Request::Keygen {
        token: args.token,
        label: args.label,
        algorithm: args.algo,
        id: parse_id(args.id.as_deref())?,
        pin_policy: args.pin_policy,
        touch_policy: args.touch_policy,
        management_key: crate::piv::management_key(args.management_key_file.as_deref())?,
    };
    let Response::Generated {
        key,
        public_key,
        warnings,
    } = call_with_login(&mut c, &req)?
    else {
        bail!("unexpected answer to keygen");
    };
    warn_all(&warnings);
    let pem = spki_pem(&public_key.0)?;
    if let Some(out) = &args.output {
        crate::output::write_output(Some(out), pem.as_bytes())?;
    }
    if args.json {
        let v = serde_json::json!({
            "token": key.token,
            "label": key.label,
            "id": key.id,
            "algorithm": key.algorithm,
            "exportable": key.exportable,
            "public_key": pem,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "generated {} key {:?} (id {}) on token {:?}",
            key.algorithm, key.label, key.id, key.token
        );
        if args.output.is_none() {
            print!("{pem}");
        }
        eprintln!(
            "next: tokenmail csr --key {} --email YOUR@ADDRESS -o request.csr",
            key.label
        );
    }
    Ok(0)
}

/// The one key of the agent's listing that `name` names (label, hex id, email, or
/// `sha256:` fingerprint of its certificate).
fn find_key(client: &mut Client, name: &str) -> Result<KeyInfo> {
    let Response::Keys { keys } = call_with_login(client, &Request::ListKeys)? else {
        bail!("unexpected answer to list-keys");
    };
    let lower = name.to_ascii_lowercase();
    let matches = |pred: &dyn Fn(&KeyInfo) -> bool| -> Vec<KeyInfo> {
        keys.iter().filter(|k| pred(k)).cloned().collect()
    };
    let mut hits = matches(&|k| k.label == name);
    if hits.is_empty() {
        hits = matches(&|k| k.id == lower);
    }
    if hits.is_empty() {
        if let Some(fp) = lower.strip_prefix("sha256:") {
            hits = matches(&|k| k.certificate.as_ref().is_some_and(|c| c.sha256 == fp));
        }
    }
    if hits.is_empty() && name.contains('@') {
        hits = matches(&|k| {
            k.certificate
                .as_ref()
                .is_some_and(|c| c.emails.iter().any(|e| e.eq_ignore_ascii_case(name)))
        });
        // several certificates for one address: the newest
        hits.sort_by(|a, b| {
            let na = a.certificate.as_ref().map(|c| c.not_after.clone());
            let nb = b.certificate.as_ref().map(|c| c.not_after.clone());
            nb.cmp(&na)
        });
        hits.truncate(1);
    }
    match hits.len() {
        1 => Ok(hits.remove(0)),
        0 => bail!("no key {name:?} on the agent's tokens; `tokenmail keys` lists them"),
        n => bail!("{name:?} names {n} keys; name one by its hex id (`tokenmail keys`)"),
    }
}

/// The name that selects `k` at the agent, unambiguously.
fn agent_name(k: &KeyInfo) -> String {
    match &k.certificate {
        Some(c) => format!("sha256:{}", c.sha256),
        None => k.id.clone(),
    }
}

fn parse_hash(h: &str) -> Result<HashAlg> {
    match h.to_ascii_lowercase().replace('-', "").as_str() {
        "sha256" => Ok(HashAlg::Sha256),
        "sha384" => Ok(HashAlg::Sha384),
        "sha512" => Ok(HashAlg::Sha512),
        _ => bail!("--hash {h:?}: use sha256, sha384 or sha512"),
    }
}

/// Makes a CSR for `key` signed on its token; returns its PEM.
fn make_csr(
    client: Client,
    key: &KeyInfo,
    email: &str,
    subject: Option<&str>,
    hash: Option<HashAlg>,
    pss: bool,
) -> Result<String> {
    let spki = key.public_key.as_ref().ok_or_else(|| {
        anyhow!(
            "the agent did not send key {:?}'s public key: update tokenmail-agent",
            key.label
        )
    })?;
    let parsed = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(&spki.0)
        .map_err(|e| anyhow!("key {:?}: its public key does not parse: {e}", key.label))?;
    let kind: KeyKind = tokenmail_smime::keys::PublicKey::from_spki(&parsed)
        .map_err(|e| anyhow!("key {:?}: {e}", key.label))?
        .kind();
    let scheme = kind.scheme(hash, pss).map_err(|e| anyhow!(e))?;
    let name = agent_name(key);
    let client = RefCell::new(client);
    let sign = |scheme: SignatureScheme, digest: &[u8]| -> Result<Vec<u8>, String> {
        let algorithm = SignAlgorithm::from_scheme(scheme)
            .ok_or_else(|| format!("{} is not a signing algorithm of the agent", scheme.name()))?;
        crate::agentkey::touch_notice(key, "sign the request");
        match call_with_login(
            &mut client.borrow_mut(),
            &Request::SignDigest {
                key: name.clone(),
                algorithm,
                digest: Bytes(digest.to_vec()),
            },
        ) {
            Ok(Response::Signature { signature, .. }) => Ok(signature.0),
            Ok(_) => Err("unexpected answer to sign-digest".into()),
            Err(e) => Err(e.to_string()),
        }
    };
    let signer = tokenmail_smime::csr::DigestSigner::new(&spki.0, scheme, sign)?;
    let der_bytes = tokenmail_smime::csr::build(&signer, email, subject)?;
    Ok(tokenmail_smime::csr::to_pem(&der_bytes)?)
}

fn write_pem(output: Option<&Path>, pem: &str) -> Result<()> {
    match output {
        Some(p) => crate::output::write_output(Some(p), pem.as_bytes()),
        None => {
            std::io::stdout().write_all(pem.as_bytes())?;
            Ok(())
        }
    }
}

/// Runs `tokenmail csr`.
pub fn csr(args: CsrArgs, socket: Option<&Path>) -> Result<i32> {
    let hash = args.hash.as_deref().map(parse_hash).transpose()?;
    let mut c = connect(socket)?;
    let key = find_key(&mut c, &args.key)?;
    let pem = make_csr(
        c,
        &key,
        &args.email,
        args.subject.as_deref(),
        hash,
        args.pss,
    )?;
    write_pem(args.output.as_deref(), &pem)?;
    if let Some(o) = &args.output {
        eprintln!(
            "tokenmail: request for {} (key {:?}) written to {}; send it to your CA, then: tokenmail import-cert --key {} CERT",
            args.email,
            key.label,
            o.display(),
            key.label
        );
    }
    Ok(0)
}

/// Certificates of a PEM bundle or one DER certificate.
fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if data.starts_with(b"\x30") {
        x509_cert::Certificate::from_der(&data)
            .map_err(|e| anyhow!("{}: not a DER certificate ({e})", path.display()))?;
        return Ok(vec![data]);
    }
    let certs = x509_cert::Certificate::load_pem_chain(&data)
        .map_err(|e| anyhow!("{}: not a PEM certificate ({e})", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate in it", path.display());
    }
    certs
        .iter()
        .map(|c| c.to_der().map_err(|e| anyhow!("{}: {e}", path.display())))
        .collect()
}

/// Runs `tokenmail import-cert`.
pub fn import_cert(args: ImportCertArgs, socket: Option<&Path>) -> Result<i32> {
    let mut certs = read_certs(&args.cert)?;
    let certificate = certs.remove(0);
    // a bundle's further certificates are the chain, with --chain's
    let mut chain = certs;
    if let Some(p) = &args.chain {
        chain.extend(read_certs(p)?);
    }
    let mut c = connect(socket)?;
    let req = Request::ImportCert {
        key: args.key.clone(),
        certificate: Bytes(certificate.clone()),
        chain: chain.iter().cloned().map(Bytes).collect(),
        management_key: crate::piv::management_key(args.management_key_file.as_deref())?,
    };
    match call_with_login(&mut c, &req) {
        Ok(Response::Done { warnings }) => {
            warn_all(&warnings);
            let facts = describe(&certificate);
            println!("certificate {facts} stored beside key {:?}", args.key);
            Ok(0)
        }
        Err(ClientError::Agent(e)) if e.code == ErrorCode::TokenReadOnly => {
            let kept = keep_locally(&certificate)?;
            eprintln!(
                "tokenmail: {}; the certificate was kept in {} instead (recipients and verification find it there; the token's key signs only with a certificate on the token)",
                e.message,
                kept.display()
            );
            Ok(1)
        }
        Err(e) => Err(e.into()),
        Ok(_) => bail!("unexpected answer to import-cert"),
    }
}

/// `CN=… (for a@b, until 2027-12-06)` of a certificate.
fn describe(der_bytes: &[u8]) -> String {
    match CertEntry::from_der(der_bytes.to_vec()) {
        Ok(c) => {
            let e = tokenmail_smime::expiry::expiry(
                &c,
                "",
                std::time::SystemTime::now(),
                tokenmail_smime::expiry::DEFAULT_WINDOW,
            );
            format!(
                "{} (for {}, until {})",
                e.subject,
                e.emails.join(", "),
                e.not_after
            )
        }
        Err(_) => "(unreadable)".into(),
    }
}

/// Writes a certificate into the first certificate directory (for a read-only token).
fn keep_locally(der_bytes: &[u8]) -> Result<PathBuf> {
    let dir = crate::store::cert_dirs()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no certificate directory to keep it in (set TOKENMAIL_CERTS)"))?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    use sha2::Digest;
    let name = format!(
        "{}.pem",
        &hex::encode(sha2::Sha256::digest(der_bytes))[..16]
    );
    let path = dir.join(name);
    let pem = x509_cert::der::pem::encode_string(
        "CERTIFICATE",
        x509_cert::der::pem::LineEnding::LF,
        der_bytes,
    )
    .map_err(|e| anyhow!("cannot encode the certificate: {e}"))?;
    crate::output::write_output(Some(&path), pem.as_bytes())?;
    Ok(path)
}

/// The PKCS#12 password: the first line of `file`, else asked without echo.
fn p12_password(file: Option<&Path>) -> Result<Zeroizing<String>> {
    if let Some(f) = file {
        let text = Zeroizing::new(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the password file {}", f.display()))?,
        );
        let line = text.lines().next().unwrap_or("");
        return Ok(Zeroizing::new(line.to_string()));
    }
    if !crate::agentkey::have_tty() {
        bail!("no terminal to ask the PKCS#12 password: give it with --password-file FILE");
    }
    Ok(Zeroizing::new(
        rpassword::prompt_password("PKCS#12 password: ")
            .context("cannot read the password from the terminal")?,
    ))
}

/// What the certificate's keyUsage allows: `None` without the extension (anything).
fn allows_only_signing(cert_der: &[u8]) -> Result<bool> {
    use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|e| anyhow!("the PKCS#12 certificate does not parse: {e}"))?;
    let ku = cert
        .tbs_certificate()
        .get_extension::<KeyUsage>()
        .map_err(|e| anyhow!("the certificate's keyUsage does not parse: {e}"))?;
    Ok(match ku {
        None => false,
        Some((_, ku)) => {
            let enc =
                KeyUsages::KeyEncipherment | KeyUsages::KeyAgreement | KeyUsages::DataEncipherment;
            (ku.0 & enc).is_empty()
        }
    })
}

/// The largest PKCS#12 file read.
const MAX_P12: u64 = 1 << 20;

/// Runs `tokenmail import-p12`.
pub fn import_p12(args: ImportP12Args, socket: Option<&Path>) -> Result<i32> {
    let len = std::fs::metadata(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?
        .len();
    if len > MAX_P12 {
        bail!(
            "{}: {len} bytes is not a PKCS#12 key file (at most 1 MiB)",
            args.file.display()
        );
    }
    let data = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let password = p12_password(args.password_file.as_deref())?;
    let p12 = tokenmail_smime::pkcs12::parse(&data, &password)
        .map_err(|e| anyhow!("{}: {e}", args.file.display()))?;
    drop(password);
    if allows_only_signing(&p12.certificate)? && !args.force {
        bail!(
            "{}: its certificate allows only signing (no keyEncipherment or keyAgreement): signing keys are never escrowed, so this was not imported (--force imports it anyway)",
            args.file.display()
        );
    }
    let label = match args.label.clone().or_else(|| p12.friendly_name.clone()) {
        Some(l) if !l.is_empty() => l,
        _ => CertEntry::from_der(p12.certificate.clone())
            .map(|c| c.emails())
            .unwrap_or_default()
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("{}: name the key with --label (the file has no name and the certificate no email)", args.file.display()))?,
    };
    let mut c = connect(socket)?;
    let req = Request::ImportKey {
        token: args.token,
        label,
        id: parse_id(args.id.as_deref())?,
        private_key: SecretBytes(Zeroizing::new(p12.private_key.to_vec())),
        certificate: Bytes(p12.certificate.clone()),
        chain: p12.chain.iter().cloned().map(Bytes).collect(),
        management_key: crate::piv::management_key(args.management_key_file.as_deref())?,
    };
    let Response::Generated { key, warnings, .. } = call_with_login(&mut c, &req)? else {
        bail!("unexpected answer to import-key");
    };
    warn_all(&warnings);
    println!(
        "imported {} key {:?} (id {}) with its certificate{} onto token {:?}: sensitive, not extractable",
        key.algorithm,
        key.label,
        key.id,
        if p12.chain.is_empty() { String::new() } else { format!(" and {} CA certificate(s)", p12.chain.len()) },
        key.token
    );
    Ok(0)
}

/// Runs `tokenmail renew`.
pub fn renew(args: RenewArgs, socket: Option<&Path>) -> Result<i32> {
    let mut c = connect(socket)?;
    let old = find_key(&mut c, &args.key)?;
    let cert = old.certificate.as_ref().ok_or_else(|| {
        anyhow!(
            "key {:?} has no certificate to renew: make a request with `tokenmail csr`",
            old.label
        )
    })?;
    let email = cert.emails.first().cloned().ok_or_else(|| {
        anyhow!("the certificate of key {:?} names no email address: use `tokenmail keygen` and `tokenmail csr --email`", old.label)
    })?;
    let algo = match args.algo.clone() {
        Some(a) => a,
        None => old.algorithm.replace("ec-", "").replace('-', ""),
    };
    let today = {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let t = x509_cert::der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs))
            .map_err(|e| anyhow!("the clock: {e}"))?;
        format!("{:04}{:02}{:02}", t.year(), t.month(), t.day())
    };
    let label = args
        .label
        .clone()
        .unwrap_or_else(|| format!("{}-{today}", old.label));
    let Response::Generated { key, warnings, .. } = call_with_login(
        &mut c,
        &Request::Keygen {
            token: Some(old.token.clone()),
            label,
            algorithm: algo,
            id: None,
            pin_policy: None,
            touch_policy: None,
            management_key: None,
        },
    )?
    else {
        bail!("unexpected answer to keygen");
    };
    warn_all(&warnings);
    let pem = make_csr(c, &key, &email, Some(&cert.subject), None, false)?;
    write_pem(args.output.as_deref(), &pem)?;
    eprintln!(
        "tokenmail: new {} key {:?} (id {}) on token {:?}; request for {email} with subject {:?}{}; the old key {:?} stays for decrypting old mail",
        key.algorithm,
        key.label,
        key.id,
        key.token,
        cert.subject,
        args.output.as_ref().map(|o| format!(" written to {}", o.display())).unwrap_or_default(),
        old.label
    );
    Ok(0)
}
