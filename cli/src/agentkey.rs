//! Keys on the agent's tokens, seen from the CLI: the private-key operations go over the
//! socket; everything else (CMS, MIME, AES) runs here.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use tokenmail_proto::v1::{Bytes, DecryptAlgorithm, ErrorCode, KeyInfo, Pin, Request, Response};
use tokenmail_proto::{Client, ClientError};
use tokenmail_smime::envelope::{KeyOpError, KeyTransport, RecipientKey};
use x509_cert::der::Decode;
use zeroize::Zeroizing;

/// The socket path: `--socket`, else the contract's defaults.
pub fn socket_path(cli_socket: Option<&Path>) -> PathBuf {
    match cli_socket {
        Some(p) => p.to_path_buf(),
        None => tokenmail_proto::default_socket_path(current_uid()),
    }
}

fn current_uid() -> u32 {
    // the real uid, never an assumed 0 (no /proc is no reason to pick root's socket)
    nix::unistd::getuid().as_raw()
}

/// Connects and performs the handshake. With a terminal we ask for PINs ourselves;
/// without one (git, mail clients) the agent may ask through pinentry.
/// With no agent there and a configuration file, one is started first
/// ([`crate::autostart`]).
pub fn connect(socket: Option<&Path>) -> Result<Client> {
    let path = socket_path(socket);
    let name = concat!("tokenmail/", env!("CARGO_PKG_VERSION"));
    match Client::connect_with(&path, name, have_tty()) {
        Err(ClientError::NoAgent { .. })
            if crate::autostart::start_if_configured(&path, socket.is_some())? =>
        {
            Ok(Client::connect_with(&path, name, have_tty())?)
        }
        other => Ok(other?),
    }
}

/// `--wait SECONDS`: how long a request waits for an absent token (card) to be inserted.
static WAIT_SECS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Sets `--wait` for this process.
pub fn set_wait(secs: u64) {
    let _ = WAIT_SECS.set(secs);
}

/// Why the first absent token of `st` is absent, in the agent's words (a label the
/// PKCS#11 module does not have comes with the labels it has); `None` when all are there.
/// Asks with a `wait-token` of 0 seconds: nothing is waited for, no PIN is used.
pub fn why_absent(client: &mut Client, st: &tokenmail_proto::v1::AgentStatus) -> Option<String> {
    let t = st.tokens.iter().find(|t| !t.present)?;
    match client.call(&Request::WaitToken {
        token: Some(t.label.clone()),
        timeout_secs: 0,
    }) {
        Err(ClientError::Agent(e)) => Some(e.message),
        _ => None,
    }
}

/// With `--wait`: when some token is absent, says so and waits until one of them is
/// inserted. Returns true if it waited (the caller looks for its key again).
pub fn wait_for_absent(client: &mut Client) -> Result<bool> {
    let wait = WAIT_SECS.get().copied().unwrap_or(0);
    if wait == 0 {
        return Ok(false);
    }
    let Response::Status(st) = client.call(&Request::Status)? else {
        return Err(anyhow!("unexpected answer to status"));
    };
    let absent: Vec<String> = st
        .tokens
        .iter()
        .filter(|t| !t.present)
        .map(|t| {
            if t.serial.is_empty() {
                t.label.clone()
            } else {
                format!("{} (serial {})", t.label, t.serial)
            }
        })
        .collect();
    if absent.is_empty() {
        return Ok(false);
    }
    eprintln!(
        "tokenmail: waiting up to {wait} s for {} to be inserted (Ctrl-C cancels)",
        absent.join(" or ")
    );
    client.call(&Request::WaitToken {
        token: None,
        timeout_secs: wait,
    })?;
    Ok(true)
}

/// Tells the user to touch the key when its touch policy asks for it (on stderr).
pub fn touch_notice(info: &KeyInfo, what: &str) {
    if matches!(info.touch.as_deref(), Some("always") | Some("cached")) {
        eprintln!(
            "tokenmail: touch your key now to {what} (token {:?}, {}; it blinks while it waits)",
            info.token, info.label
        );
    }
}

/// Sends a request; when the agent needs a PIN and we have a terminal, asks for it,
/// logs in, and sends the request again (once). With `--wait`, an absent token is
/// waited for (the agent notices the insertion) and the request sent again.
pub fn call_with_login(client: &mut Client, req: &Request) -> Result<Response, ClientError> {
    let first = client.call(req);
    recover(client, req, first)
}

/// What [`call_with_login`] does with the agent's first answer to `req` (which may have
/// come from [`Client::connect_and_call`]): waits for an absent token, or asks for the PIN
/// and logs in, then sends `req` again (once).
pub fn recover(
    client: &mut Client,
    req: &Request,
    first: Result<Response, ClientError>,
) -> Result<Response, ClientError> {
    let wait = WAIT_SECS.get().copied().unwrap_or(0);
    let first = match first {
        Err(ClientError::Agent(e)) if e.code == ErrorCode::TokenNotPresent && wait > 0 => {
            eprintln!(
                "tokenmail: {}; waiting up to {wait} s (Ctrl-C cancels)",
                e.message
            );
            client.call(&Request::WaitToken {
                token: None,
                timeout_secs: wait,
            })?;
            client.call(req)
        }
        other => other,
    };
    match first {
        Err(ClientError::Agent(e)) if e.code == ErrorCode::PinRequired && have_tty() => {
            let token = e.token.clone();
            let pin = match prompt_pin(token.as_deref()) {
                Ok(p) => p,
                Err(_) => return Err(ClientError::Agent(e)),
            };
            client.call(&Request::Login {
                token,
                pin: Some(pin),
            })?;
            client.call(req)
        }
        other => other,
    }
}

/// Whether we can ask the user for a PIN (standard input or /dev/tty is a terminal).
pub fn have_tty() -> bool {
    std::io::stdin().is_terminal() || std::fs::File::open("/dev/tty").is_ok()
}

/// Asks for a PIN on the terminal without echo.
pub fn prompt_pin(token: Option<&str>) -> Result<Pin> {
    let prompt = match token {
        Some(t) => format!("PIN for token {t:?}: "),
        None => "Token PIN: ".to_string(),
    };
    let pin =
        rpassword::prompt_password(prompt).context("cannot read the PIN from the terminal")?;
    if pin.is_empty() {
        return Err(anyhow!("empty PIN; nothing sent"));
    }
    Ok(Pin::new(pin))
}

/// The agent's keys that have a certificate, parsed.
pub fn keys_with_certificates(
    client: &mut Client,
) -> Result<Vec<(KeyInfo, x509_cert::Certificate)>> {
    let Response::Keys { keys } = client.call(&Request::ListKeys)? else {
        return Err(anyhow!("unexpected answer to list-keys"));
    };
    Ok(keys
        .into_iter()
        .filter_map(|k| {
            let cert = x509_cert::Certificate::from_der(&k.certificate.as_ref()?.der.0).ok()?;
            Some((k, cert))
        })
        .collect())
}

/// A key on a token, used through the agent.
pub struct AgentKey<'a> {
    client: &'a RefCell<Client>,
    info: KeyInfo,
    /// Key name sent to the agent (hex id, unique within the listing it came from).
    name: String,
    cert: x509_cert::Certificate,
    /// Label, for messages.
    pub label: String,
}

impl std::fmt::Debug for AgentKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKey")
            .field("label", &self.label)
            .finish()
    }
}

impl<'a> AgentKey<'a> {
    /// A key of the listing.
    pub fn new(client: &'a RefCell<Client>, info: &KeyInfo, cert: x509_cert::Certificate) -> Self {
        // The certificate fingerprint names the key uniquely across tokens.
        let name = match &info.certificate {
            Some(c) => format!("sha256:{}", c.sha256),
            None => info.id.clone(),
        };
        AgentKey {
            client,
            info: info.clone(),
            name,
            cert,
            label: info.label.clone(),
        }
    }

    fn call(&self, req: &Request) -> Result<Response, KeyOpError> {
        let mut c = self.client.borrow_mut();
        match call_with_login(&mut c, req) {
            Ok(r) => Ok(r),
            Err(ClientError::Agent(e)) if e.code == ErrorCode::DecryptFailed => {
                Err(KeyOpError::Failed)
            }
            Err(ClientError::Agent(e)) if e.code == ErrorCode::MechanismUnsupported => {
                Err(KeyOpError::Unsupported(e.message))
            }
            Err(e) => Err(KeyOpError::Unavailable(e.to_string())),
        }
    }
}

impl RecipientKey for AgentKey<'_> {
    fn certificate(&self) -> &x509_cert::Certificate {
        &self.cert
    }

    fn decrypt_key(
        &self,
        alg: KeyTransport,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyOpError> {
        let algorithm = DecryptAlgorithm::from_key_transport(alg)
            .ok_or_else(|| KeyOpError::Unsupported(format!("{alg:?}")))?;
        touch_notice(&self.info, "decrypt");
        match self.call(&Request::DecryptKey {
            key: self.name.clone(),
            algorithm,
            wrapped: Bytes(wrapped.to_vec()),
        })? {
            Response::Secret { secret } => Ok(secret.0),
            _ => Err(KeyOpError::Failed),
        }
    }

    fn ecdh(&self, peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyOpError> {
        touch_notice(&self.info, "decrypt");
        match self.call(&Request::Derive {
            key: self.name.clone(),
            peer_point: Bytes(peer_point.to_vec()),
        })? {
            Response::Secret { secret } => Ok(secret.0),
            _ => Err(KeyOpError::Failed),
        }
    }
}
