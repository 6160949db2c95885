//! `tokenmail piv …`: PIV card administration through the agent (the CLI never links
//! PC/SC): status, on-card key generation, certificate import.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use tokenmail_proto::v1::{Bytes, PivStatus, Request, Response, SecretBytes};
use zeroize::Zeroizing;

use crate::agentkey::{call_with_login, connect};
use crate::output;

const EXAMPLES: &str = "\
Examples:
  tokenmail piv status                              # serial, PIN tries left, slots
  tokenmail piv keygen --slot 9c --algorithm p256 --touch-policy cached -o 9c.pub.pem
  tokenmail piv import-cert --slot 9c alice.pem     # the CA's answer to the CSR
  tokenmail piv keygen --slot 9d --algorithm rsa2048 --management-key-file ~/.mgm.hex

The management key: --management-key-file (hex, 48/32/64 digits), else a PIN-protected
management key on the card, else the factory default (with a warning to change it).";

/// PIV card commands.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct PivArgs {
    /// The card: its name in the agent or its serial (needed only with several cards).
    #[arg(long, global = true, value_name = "NAME|SERIAL")]
    token: Option<String>,
    #[command(subcommand)]
    cmd: PivCmd,
}

#[derive(Debug, Subcommand)]
enum PivCmd {
    /// Card serial, firmware, reader, PIN/PUK tries left, default credentials, slots.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Generate a key pair on the card (the private key never leaves it); prints the public key (PEM).
    Keygen {
        /// Slot: 9a (authentication), 9c (signature), 9d (key management), 9e, 82..95.
        #[arg(long, value_name = "SLOT")]
        slot: String,
        /// rsa2048, p256 or p384.
        #[arg(long, value_name = "ALG", default_value = "p256")]
        algorithm: String,
        /// default, never, once or always.
        #[arg(long, value_name = "POLICY")]
        pin_policy: Option<String>,
        /// default, never, always or cached.
        #[arg(long, value_name = "POLICY")]
        touch_policy: Option<String>,
        /// File with the management key in hex.
        #[arg(long, value_name = "FILE")]
        management_key_file: Option<PathBuf>,
        /// Write the public key (PEM) here instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Write a certificate (PEM or DER) into a slot; it must match the slot's key.
    ImportCert {
        /// Slot: 9a, 9c, 9d, 9e, 82..95.
        #[arg(long, value_name = "SLOT")]
        slot: String,
        /// File with the management key in hex.
        #[arg(long, value_name = "FILE")]
        management_key_file: Option<PathBuf>,
        /// The certificate.
        cert: PathBuf,
    },
}

pub(crate) fn management_key(path: Option<&Path>) -> Result<Option<SecretBytes>> {
    let Some(p) = path else { return Ok(None) };
    let text = Zeroizing::new(
        std::fs::read_to_string(p)
            .with_context(|| format!("cannot read the management key file {}", p.display()))?,
    );
    let hex: Zeroizing<String> =
        Zeroizing::new(text.chars().filter(|c| !c.is_whitespace()).collect());
    let bytes = Zeroizing::new(hex::decode(hex.as_bytes()).map_err(|_| {
        anyhow!(
            "{}: the management key must be hex (48 digits for 3DES/AES-192, 32 or 64 for AES)",
            p.display()
        )
    })?);
    if ![16, 24, 32].contains(&bytes.len()) {
        bail!(
            "{}: the management key is {} bytes; it must be 16, 24 or 32",
            p.display(),
            bytes.len()
        );
    }
    Ok(Some(SecretBytes(bytes)))
}

fn warn_all(warnings: &[String]) {
    for w in warnings {
        eprintln!("tokenmail: warning: {w}");
    }
}

/// Runs `tokenmail piv …`.
pub fn run(args: PivArgs, socket: Option<&Path>) -> Result<i32> {
    let mut c = connect(socket)?;
    match args.cmd {
        PivCmd::Status { json } => {
            let resp = call_with_login(&mut c, &Request::PivStatus { token: args.token })?;
            let Response::PivStatus(st) = resp else {
                bail!("unexpected answer to piv-status");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", status_text(&st));
            }
            Ok(0)
        }
        PivCmd::Keygen {
            slot,
            algorithm,
            pin_policy,
            touch_policy,
            management_key_file,
            output: out,
        } => {
            let req = Request::PivKeygen {
                token: args.token,
                slot: slot.clone(),
                algorithm,
                pin_policy,
                touch_policy,
                management_key: management_key(management_key_file.as_deref())?,
            };
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                eprintln!("tokenmail: generating the key on the card (RSA takes up to a minute)…");
            }
            let Response::PivKey {
                public_key,
                warnings,
            } = call_with_login(&mut c, &req)?
            else {
                bail!("unexpected answer to piv-keygen");
            };
            warn_all(&warnings);
            let pem =
                der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, &public_key.0)
                    .map_err(|e| anyhow!("cannot encode the public key: {e}"))?;
            output::write_output(out.as_deref(), pem.as_bytes())?;
            if let Some(p) = &out {
                eprintln!(
                    "tokenmail: key generated in slot {slot}; public key in {}",
                    p.display()
                );
            }
            Ok(0)
        }
        PivCmd::ImportCert {
            slot,
            management_key_file,
            cert,
        } => {
            let raw =
                std::fs::read(&cert).with_context(|| format!("cannot read {}", cert.display()))?;
            let der = if raw.starts_with(b"-----BEGIN") {
                let text = std::str::from_utf8(&raw)
                    .map_err(|_| anyhow!("{}: not a PEM file", cert.display()))?;
                let start = text
                    .find("-----BEGIN CERTIFICATE-----")
                    .ok_or_else(|| anyhow!("{}: no CERTIFICATE block", cert.display()))?;
                der::pem::decode_vec(&text.as_bytes()[start..])
                    .map_err(|e| anyhow!("{}: bad PEM: {e}", cert.display()))?
                    .1
            } else {
                raw
            };
            let req = Request::PivImportCert {
                token: args.token,
                slot: slot.clone(),
                certificate: Bytes(der),
                management_key: management_key(management_key_file.as_deref())?,
            };
            let Response::Done { warnings } = call_with_login(&mut c, &req)? else {
                bail!("unexpected answer to piv-import-cert");
            };
            warn_all(&warnings);
            eprintln!("tokenmail: certificate written to slot {slot}");
            Ok(0)
        }
    }
}

fn status_text(st: &PivStatus) -> String {
    let mut s = String::new();
    let yn = |b: Option<bool>| match b {
        Some(true) => "yes (change it)",
        Some(false) => "no",
        None => "unknown",
    };
    s.push_str(&format!("card {} (serial {})\n", st.token, st.serial));
    s.push_str(&format!("  firmware:  {}\n", st.version));
    s.push_str(&format!("  reader:    {}\n", st.reader));
    if let Some(n) = st.pin_tries_left {
        s.push_str(&format!(
            "  PIN tries left: {n}{}\n",
            if n == 0 {
                " (blocked: unblock with the PUK)"
            } else {
                ""
            }
        ));
    }
    if let Some(n) = st.puk_tries_left {
        s.push_str(&format!("  PUK tries left: {n}\n"));
    }
    s.push_str(&format!(
        "  default PIN: {}; default PUK: {}; default management key: {}\n",
        yn(st.default_pin),
        yn(st.default_puk),
        yn(st.default_management_key)
    ));
    if st.slots.is_empty() {
        s.push_str("  no keys (tokenmail piv keygen --slot 9c …)\n");
    }
    for sl in &st.slots {
        s.push_str(&format!(
            "  slot {} {}: {} (PIN {}, touch {}{})\n",
            sl.slot,
            sl.name,
            sl.algorithm,
            sl.pin_policy,
            sl.touch_policy,
            if sl.origin.is_empty() {
                String::new()
            } else {
                format!(", {}", sl.origin)
            }
        ));
        match &sl.certificate {
            Some(c) => s.push_str(&format!(
                "      certificate: {} ({}), expires {}\n",
                c.subject,
                c.emails.join(", "),
                c.not_after
            )),
            None => s.push_str("      no certificate\n"),
        }
    }
    s
}
