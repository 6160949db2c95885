//! tokenmail: the companion command line.
//!
//! Talks to tokenmail-agent over its socket for private-key operations; never links a
//! token library, so commands that need no private key work with no agent running.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use tokenmail_proto::v1::{Bytes, KeyInfo, Pin, Request, Response, SignAlgorithm};
use tokenmail_proto::{Client, ClientError};

use tokenmail_cli::agentkey::{self, call_with_login, connect, prompt_pin};
use tokenmail_cli::{
    certs, decrypt, doctor, encrypt, enrol, expiry, init, manual, output, piv, policy, receipt,
    selfcert, sign, verify,
};

const EXAMPLES: &str = "\
Examples:
  tokenmail init                         # first run: find your token, write the configuration
  eval \"$(tokenmail-agent --pkcs11-module /usr/lib/softhsm/libsofthsm2.so \\
          --token-label tokenmail-demo --pin-file pin)\"
  tokenmail status                       # tokens, keys, which key each email selects
  tokenmail keys --json                  # the keys, for scripts
  tokenmail login                        # type the token PIN (no echo)
  tokenmail sign --signer alice@example.com msg.eml -o signed.eml
  tokenmail sign --signer alice@example.com --opaque msg.eml -o /dev/null   # devices are written through
  tokenmail verify --trust root.pem signed.eml -o content.eml
  tokenmail encrypt --to bob@example.org msg.eml -o encrypted.eml
  tokenmail certs fetch bob@example.org  # from the [[directory]] LDAP entries into the store
  tokenmail certs list                   # the certificate store
  tokenmail decrypt encrypted.eml -o plain.eml
  tokenmail sign-digest --key alice@example.com report.pdf -o report.sig
  tokenmail lock                         # log out and forget cached PINs
  tokenmail --wait 30 sign --signer alice@example.com msg.eml   # wait for the card
  tokenmail piv status                   # a PIV card's slots, PIN tries left
  tokenmail doctor                       # what is wrong with the setup, and the fix
  tokenmail completions bash > ~/.local/share/bash-completion/completions/tokenmail
  tokenmail man ~/.local/share/man/man1  # tokenmail.1, tokenmail-verify.1, ...

The socket is --socket, else $TOKENMAIL_SOCK, else $XDG_RUNTIME_DIR/tokenmail/agent.sock,
else /tmp/tokenmail-$UID/agent.sock.";

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  tokenmail completions bash > ~/.local/share/bash-completion/completions/tokenmail
  tokenmail completions zsh > ~/.zfunc/_tokenmail     # with fpath+=(~/.zfunc) in ~/.zshrc
  tokenmail completions fish > ~/.config/fish/completions/tokenmail.fish
  source <(tokenmail completions bash)                # this shell only";

const MAN_EXAMPLES: &str = "\
Examples:
  tokenmail man ~/.local/share/man/man1             # then: man tokenmail-verify
  tokenmail-agent --man ~/.local/share/man/man1     # the agent's page
  tokenmail man /tmp/pages && man -l /tmp/pages/tokenmail.1";

const SIGN_EXAMPLES: &str = "\
Examples:
  tokenmail sign --signer alice@example.com msg.eml -o signed.eml
  tokenmail sign --signer alice@example.com --timestamp http://tsa.example/tsr msg.eml -o signed.eml
  tokenmail sign --signer alice@example.com --receipt-request msg.eml -o signed.eml
  tokenmail sign --signer alice@example.com --security-label 1.3.6.1.4.1.99999.1:confidential msg.eml

A default time-stamping authority: [sign] tsa = \"http://...\" in the configuration.";

const RECEIPT_EXAMPLES: &str = "\
Examples:
  tokenmail receipt --signer bob@example.com received.eml -o receipt.eml
  tokenmail verify-receipt --trust root.pem --original sent.eml receipt.eml
  tokenmail verify-receipt --json --original sent.eml receipt.eml";

/// S/MIME with keys on hardware tokens, through tokenmail-agent.
#[derive(Debug, Parser)]
#[command(name = "tokenmail", version, after_help = EXAMPLES)]
struct Cli {
    /// Agent socket (default: $TOKENMAIL_SOCK, then the standard location).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// When a token (smart card) is absent, wait up to SECONDS for it to be inserted
    /// instead of failing (Ctrl-C cancels).
    #[arg(long, global = true, value_name = "SECONDS")]
    wait: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// First run: find PKCS#11 modules, tokens and readers, write the configuration
    /// ($TOKENMAIL_CONFIG, else ~/.config/tokenmail/agent.toml), offer the git and NeoMutt settings.
    Init(init::InitArgs),
    /// Agent version, tokens (present, logged in), keys and their certificates.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The keys on the tokens, with label, id, algorithm and certificate emails.
    Keys {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Log in to a token: the PIN is read from the terminal (no echo) or, with --pin-stdin, from standard input.
    Login {
        /// Token label or serial (needed only with several tokens).
        #[arg(long)]
        token: Option<String>,
        /// Read the PIN from standard input (first line) instead of the terminal.
        #[arg(long, conflicts_with = "unattended")]
        pin_stdin: bool,
        /// Let the agent log in with the token's configured PIN file or variable (after
        /// `tokenmail lock`, or after that PIN was refused and has been corrected).
        #[arg(long)]
        unattended: bool,
    },
    /// Log out of every token and forget cached PINs.
    Lock,
    /// Sign a message with a key on a token: multipart/signed (default), --opaque, or --detached-der/--detached-pem.
    #[command(after_help = SIGN_EXAMPLES)]
    Sign(sign::SignArgs),
    /// Verify a signed message (multipart/signed, opaque, or detached with --signature); needs no agent.
    Verify(verify::VerifyArgs),
    /// Make an ESS signed receipt (RFC 2634) for a received signed message that requests one.
    #[command(after_help = RECEIPT_EXAMPLES)]
    Receipt(receipt::ReceiptArgs),
    /// Check a signed receipt against the signed message that was sent; needs no agent.
    #[command(after_help = RECEIPT_EXAMPLES)]
    VerifyReceipt(receipt::VerifyReceiptArgs),
    /// Encrypt a message to certificates (needs no agent): application/pkcs7-mime, AES-GCM by default.
    Encrypt {
        #[command(flatten)]
        args: encrypt::EncryptArgs,
        /// Do not add the sender's own certificate (the key the From address selects) to the recipients.
        #[arg(long)]
        no_self: bool,
    },
    /// Decrypt a message with a key on a token (through the agent); plaintext released only after it verified.
    Decrypt(decrypt::DecryptArgs),
    /// The effective trust and decrypt policy, and where each value comes from (`policy show`).
    Policy(policy::PolicyArgs),
    /// Certificates that expire within DAYS (default 30) or have expired, on the tokens, in the certificate directories and (--ldap) the LDAP directories; exit 0 / 1 due / 2 expired.
    Expiry(expiry::ExpiryArgs),
    /// Generate a key pair on a token (sensitive, never extractable) or in a PIV slot.
    Keygen(enrol::KeygenArgs),
    /// Make a certificate request (PKCS#10, PEM) for a key, signed on its token.
    Csr(enrol::CsrArgs),
    /// Store a certificate beside its key on the token, and its CA chain.
    ImportCert(enrol::ImportCertArgs),
    /// Import an escrowed encryption key from a PKCS#12 file onto a token (not extractable there).
    ImportP12(enrol::ImportP12Args),
    /// Renew: a new key on the same token and a request with the old certificate's subject and email.
    Renew(enrol::RenewArgs),
    /// The certificate store: fetch recipients' certificates from the LDAP directories, list, remove; exit 0 / 1 nothing found / 2 errors.
    Certs(certs::CertsArgs),
    /// The agent's audit log of private-key operations (who, which key, what, when).
    Audit(tokenmail_cli::audit::AuditArgs),
    /// PIV smart cards (YubiKey…): status, key generation on the card, certificate import.
    Piv(piv::PivArgs),
    /// Check the setup (agent, configuration, tokens, PIN files, certificates, trust, pcscd, git), each problem with its fix; exit 0 ok, 1 warnings, 2 failures.
    Doctor(doctor::DoctorArgs),
    /// Print the shell completion script for bash, zsh or fish on standard output.
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: manual::Shell,
    },
    /// Write the manual pages (tokenmail.1 and one per command, e.g. tokenmail-verify.1) into DIR.
    #[command(after_help = MAN_EXAMPLES)]
    Man {
        /// Directory to write the pages into (created if needed), e.g. ~/.local/share/man/man1.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Sign a digest with a key on the token (the file is hashed here; only the digest is sent).
    SignDigest {
        /// Key: label, hex id, or an email in its certificate.
        #[arg(long, value_name = "KEY")]
        key: String,
        /// Signature algorithm (default: rsa-pkcs1-sha256 for RSA, ecdsa-sha256/384 for P-256/P-384).
        #[arg(long, value_name = "ALG")]
        algorithm: Option<SignAlgorithm>,
        /// The digest in hex, instead of hashing a file.
        #[arg(long, value_name = "HEX", conflicts_with = "input")]
        digest: Option<String>,
        /// File to hash (default: standard input).
        input: Option<PathBuf>,
        /// Where to write the signature (default: standard output).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("tokenmail: {}", msg.lines().next().unwrap_or("failed"));
            let no_agent = matches!(
                e.downcast_ref::<ClientError>(),
                Some(ClientError::NoAgent { .. } | ClientError::NotASocket { .. })
            ) || e.is::<tokenmail_cli::autostart::StartError>();
            std::process::exit(if no_agent { 3 } else { 1 });
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    let socket = cli.socket.as_deref();
    if let Some(w) = cli.wait {
        agentkey::set_wait(w.min(600));
    }
    match cli.command {
        Command::Init(args) => init::run(args, &mut std::io::stdout().lock()),
        Command::Doctor(args) => Ok(doctor::run(args, socket, &mut std::io::stdout().lock())),
        Command::Completions { shell } => {
            manual::completions(
                shell,
                Cli::command(),
                "tokenmail",
                &mut std::io::stdout().lock(),
            )?;
            Ok(0)
        }
        Command::Man { dir } => {
            for p in manual::man_pages(Cli::command(), &dir)? {
                eprintln!("wrote {}", p.display());
            }
            Ok(0)
        }
        Command::Piv(args) => piv::run(args, socket),
        Command::Audit(args) => tokenmail_cli::audit::run(args, &mut std::io::stdout().lock()),
        Command::Keygen(args) => enrol::keygen(args, socket),
        Command::Csr(args) => enrol::csr(args, socket),
        Command::ImportCert(args) => enrol::import_cert(args, socket),
        Command::ImportP12(args) => enrol::import_p12(args, socket),
        Command::Renew(args) => enrol::renew(args, socket),
        Command::Certs(args) => Ok(certs::run(
            args,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )),
        Command::Status { json } => {
            let mut c = connect(socket)?;
            let Response::Status(st) = c.call(&Request::Status)? else {
                return Err(anyhow!("unexpected answer to status"));
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", output::status_text(&st));
            }
            Ok(0)
        }
        Command::Keys { json } => {
            let mut c = connect(socket)?;
            let Response::Keys { keys } = c.call(&Request::ListKeys)? else {
                return Err(anyhow!("unexpected answer to list-keys"));
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                print!("{}", output::keys_text(&keys));
            }
            Ok(0)
        }
        Command::Login {
            token,
            pin_stdin,
            unattended,
        } => {
            let mut c = connect(socket)?;
            if unattended {
                c.call(&Request::Login { token, pin: None })?;
                eprintln!("logged in (PIN from the agent's configured source)");
                return Ok(0);
            }
            let pin = if pin_stdin {
                let mut s = zeroize::Zeroizing::new(String::new());
                std::io::stdin().read_to_string(&mut s)?;
                let line = s.lines().next().unwrap_or("").to_string();
                if line.is_empty() {
                    return Err(anyhow!("no PIN on standard input"));
                }
                Pin::new(line)
            } else {
                prompt_pin(token.as_deref())?
            };
            c.call(&Request::Login {
                token,
                pin: Some(pin),
            })?;
            eprintln!("logged in");
            Ok(0)
        }
        Command::Sign(args) => sign::run(args, socket),
        Command::Verify(args) => verify::run(args),
        Command::Receipt(args) => receipt::receipt(args, socket),
        Command::VerifyReceipt(args) => {
            receipt::verify_receipt(args, &mut std::io::stdout().lock())
        }
        Command::Policy(args) => policy::run(args, &mut std::io::stdout().lock()),
        Command::Expiry(args) => expiry::run(args, socket, &mut std::io::stdout().lock()),
        Command::Encrypt { mut args, no_self } => {
            let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
            if !args.to.is_empty() {
                let found = tokenmail_cli::store::recipients_for(&args.to, socket, dir.path())?;
                args.recipient_cert.extend(found);
                args.to.clear();
            }
            if !no_self {
                // Encrypt-to-self reads the From header first: standard input is spooled
                // so that it can be read twice.
                let input = match &args.input {
                    Some(p) => p.clone(),
                    None => {
                        let p = dir.path().join("input.eml");
                        let mut f = std::fs::File::create(&p)?;
                        std::io::copy(&mut std::io::stdin().lock(), &mut f)
                            .context("cannot read standard input")?;
                        p
                    }
                };
                args.input = Some(input.clone());
                if let Some(note) =
                    selfcert::add_self(&input, &mut args.recipient_cert, socket, dir.path())?
                {
                    eprintln!("tokenmail: note: {note}");
                }
            }
            encrypt::run_with_agent(args, socket)?;
            Ok(0)
        }
        Command::Decrypt(args) => decrypt::run(args, socket),
        Command::Lock => {
            let mut c = connect(socket)?;
            c.call(&Request::Lock)?;
            eprintln!("locked: tokens logged out, cached PINs forgotten");
            Ok(0)
        }
        Command::SignDigest {
            key,
            algorithm,
            digest,
            input,
            output,
        } => {
            let mut c = connect(socket)?;
            let algorithm = match algorithm {
                Some(a) => a,
                None => default_algorithm(&mut c, &key)?,
            };
            let digest = match digest {
                Some(h) => hex::decode(h.trim()).context("--digest is not hex")?,
                None => hash_input(input.as_deref(), algorithm)?,
            };
            let resp = call_with_login(
                &mut c,
                &Request::SignDigest {
                    key,
                    algorithm,
                    digest: Bytes(digest),
                },
            )?;
            let Response::Signature { signature, .. } = resp else {
                return Err(anyhow!("unexpected answer to sign-digest"));
            };
            output::write_output(output.as_deref(), &signature.0)?;
            Ok(0)
        }
    }
}

/// The default algorithm for a key: RSA → PKCS#1 v1.5 SHA-256; P-256 → ECDSA SHA-256; P-384 → ECDSA SHA-384.
fn default_algorithm(c: &mut Client, key: &str) -> Result<SignAlgorithm> {
    let mut keys = list_keys(c)?;
    if !keys.iter().any(|k| key_matches(k, key)) && agentkey::wait_for_absent(c)? {
        keys = list_keys(c)?;
    }
    let k: Option<&KeyInfo> = keys.iter().find(|k| key_matches(k, key));
    Ok(match k.map(|k| k.algorithm.as_str()) {
        Some("ec-p384") => SignAlgorithm::EcdsaSha384,
        Some("ec-p256") => SignAlgorithm::EcdsaSha256,
        _ => SignAlgorithm::RsaPkcs1Sha256,
    })
}

fn list_keys(c: &mut Client) -> Result<Vec<KeyInfo>> {
    let Response::Keys { keys } = c.call(&Request::ListKeys)? else {
        return Err(anyhow!("unexpected answer to list-keys"));
    };
    Ok(keys)
}

fn key_matches(k: &KeyInfo, key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    k.label == key
        || k.id == lower
        || k.certificate.as_ref().is_some_and(|c| {
            c.emails.contains(&lower) || key.strip_prefix("sha256:") == Some(c.sha256.as_str())
        })
}

fn hash_input(input: Option<&Path>, alg: SignAlgorithm) -> Result<Vec<u8>> {
    use tokenmail_proto::v1::HashAlgorithm;
    use tokenmail_smime::alg::{ContentHasher, HashAlg};
    let mut reader: Box<dyn Read> = match input {
        Some(p) => Box::new(
            std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        ),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut h = ContentHasher::new(match alg.hash() {
        HashAlgorithm::Sha256 => HashAlg::Sha256,
        HashAlgorithm::Sha384 => HashAlg::Sha384,
        HashAlgorithm::Sha512 => HashAlg::Sha512,
        HashAlgorithm::Sha1 => return Err(anyhow!("SHA-1 signatures are not made")),
    });
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example in `--help` (the main one and the commands') parses; a shell
    /// redirection, pipe or `&&` ends the command.
    #[test]
    fn help_examples_parse() {
        let mut n = 0;
        let all = [
            EXAMPLES,
            COMPLETIONS_EXAMPLES,
            MAN_EXAMPLES,
            doctor::EXAMPLES,
            init::EXAMPLES,
            certs::EXAMPLES,
            SIGN_EXAMPLES,
            RECEIPT_EXAMPLES,
        ];
        for line in all.iter().flat_map(|e| e.lines()) {
            let line = line.trim();
            let Some(cmd) = line.strip_prefix("tokenmail ") else {
                continue;
            };
            let cmd = cmd.split(['#', '>', '|', '&']).next().unwrap_or("").trim();
            let mut argv = vec!["tokenmail"];
            argv.extend(cmd.split_whitespace());
            if let Err(e) = Cli::try_parse_from(&argv) {
                panic!("example {line:?} does not parse: {e}");
            }
            n += 1;
        }
        assert!(n >= 25, "{n} examples");
    }
}
