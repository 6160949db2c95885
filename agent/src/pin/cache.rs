//! PIN sources and the per-token PIN cache.
//!
//! A PIN is held only as a [`SecretString`] (zeroized on drop). Unattended sources
//! (`--pin-file`, `--pin-env`) are read when a login is needed; a PIN sent by a client
//! is cached for the configured time. After a wrong PIN nothing is retried by itself:
//! the next login must come from a client (`tokenmail login`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// Where a token's PIN comes from when no client supplied one.
#[derive(Clone)]
pub enum PinSource {
    /// Only from clients (`tokenmail login`, or the CLI's prompt).
    None,
    /// Read from a file (first line, trailing newline stripped) at each login.
    File(PathBuf),
    /// Captured from an environment variable at start (the variable is then removed
    /// from the agent's environment so no child inherits it).
    Env(String, SecretString),
}

impl std::fmt::Debug for PinSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PinSource::None => f.write_str("None"),
            PinSource::File(p) => write!(f, "File({})", p.display()),
            PinSource::Env(v, _) => write!(f, "Env({v})"),
        }
    }
}

impl PinSource {
    /// `file`, `env` or `none`.
    pub fn kind(&self) -> &'static str {
        match self {
            PinSource::None => "none",
            PinSource::File(_) => "file",
            PinSource::Env(..) => "env",
        }
    }

    /// The source for a message (`PIN file /path`, `environment variable NAME`), or `None`
    /// when there is no unattended source.
    pub fn describe(&self) -> Option<String> {
        match self {
            PinSource::None => None,
            PinSource::File(p) => Some(format!("PIN file {}", p.display())),
            PinSource::Env(v, _) => Some(format!("environment variable {v}")),
        }
    }

    /// Reads the PIN now. `Ok(None)` when there is no unattended source.
    pub fn read(&self) -> Result<Option<SecretString>, String> {
        match self {
            PinSource::None => Ok(None),
            PinSource::Env(_, pin) => Ok(Some(pin.clone())),
            PinSource::File(path) => {
                check_private(path)?;
                let raw = Zeroizing::new(
                    std::fs::read(path)
                        .map_err(|e| format!("cannot read PIN file {}: {e}", path.display()))?,
                );
                let text = std::str::from_utf8(&raw)
                    .map_err(|_| format!("PIN file {} is not UTF-8", path.display()))?;
                let line = text.lines().next().unwrap_or("");
                if line.is_empty() {
                    return Err(format!("PIN file {} is empty", path.display()));
                }
                Ok(Some(SecretString::from(line.to_string())))
            }
        }
    }

    /// Takes the PIN out of an environment variable and removes the variable.
    pub fn from_env(var: &str) -> Result<Self, String> {
        let value = Zeroizing::new(
            std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?,
        );
        std::env::remove_var(var);
        if value.is_empty() {
            return Err(format!("environment variable {var} is empty"));
        }
        Ok(PinSource::Env(
            var.to_string(),
            SecretString::from(value.to_string()),
        ))
    }
}

/// A PIN file must be private to its owner, as ssh requires of private keys: one that its
/// group or others can read (or write) is refused, and the message says how to fix it.
fn check_private(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read PIN file {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "PIN file {} is accessible by others (mode {mode:04o}); refusing it: run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// PIN state of one token.
#[derive(Debug)]
pub struct PinState {
    source: PinSource,
    ttl: Option<Duration>,
    cached: Option<(SecretString, Option<Instant>)>,
    /// `lock` was called: unattended sources stay unused until a `login`.
    pub locked: bool,
    /// The unattended source's PIN was rejected: not tried again until a `login`.
    pub rejected: bool,
    /// Whether the last PIN in use came from a client.
    pub from_client: bool,
}

impl PinState {
    /// A new state; `ttl` bounds how long a client-supplied PIN is cached (`None` = until lock).
    pub fn new(source: PinSource, ttl: Option<Duration>) -> Self {
        PinState {
            source,
            ttl,
            cached: None,
            locked: false,
            rejected: false,
            from_client: false,
        }
    }

    /// The source's kind, or `client` when a client-supplied PIN is cached.
    pub fn source_kind(&self) -> &'static str {
        if self.from_client && self.cached.is_some() {
            "client"
        } else {
            self.source.kind()
        }
    }

    /// The PIN to log in with now, if any may be used without asking a client.
    pub fn current(&mut self) -> Result<Option<SecretString>, String> {
        self.expire();
        if let Some((pin, _)) = &self.cached {
            return Ok(Some(pin.clone()));
        }
        if self.locked || self.rejected {
            return Ok(None);
        }
        self.source.read()
    }

    /// The PIN for an explicit `login`: the one given (typed by the user; `true`), else the
    /// unattended source read now (`false`), else why there is none.
    pub fn for_login(
        &self,
        given: Option<SecretString>,
        token: &str,
    ) -> Result<(SecretString, bool), crate::token::TokenError> {
        use crate::token::TokenError;
        match given {
            Some(p) => Ok((p, true)),
            None => match self.read_source() {
                Ok(Some(p)) => Ok((p, false)),
                Ok(None) => Err(TokenError::PinRequired(token.to_string())),
                Err(msg) => Err(TokenError::PinSource(msg)),
            },
        }
    }

    /// The PIN a store may log in with by itself now ([`PinState::current`]); a source that
    /// cannot be read is logged and counts as none.
    pub fn usable(&mut self, token: &str) -> Option<SecretString> {
        match self.current() {
            Ok(p) => p,
            Err(msg) => {
                tracing::warn!(token = %token, "{msg}");
                None
            }
        }
    }

    /// Caches a PIN supplied by a client (or re-read from the source on explicit login).
    pub fn remember(&mut self, pin: SecretString, from_client: bool) {
        let expiry = if from_client {
            self.ttl.map(|t| Instant::now() + t)
        } else {
            None
        };
        self.cached = Some((pin, expiry));
        self.from_client = from_client;
        self.locked = false;
        self.rejected = false;
    }

    /// Reads the unattended source for an explicit `login` without a PIN.
    pub fn read_source(&self) -> Result<Option<SecretString>, String> {
        self.source.read()
    }

    /// When the unattended source's PIN was rejected (and not yet replaced by a `login`):
    /// the source, for the "needs its PIN" message.
    pub fn rejected_source(&self) -> Option<String> {
        if self.rejected && !self.locked {
            self.source.describe()
        } else {
            None
        }
    }

    /// The error for "this token needs a PIN now": it names the unattended source when
    /// that was refused (with `hint`/`tries_left`, what the token says of the tries left).
    pub fn needs_pin(
        &self,
        token: &str,
        hint: String,
        tries_left: Option<u32>,
    ) -> crate::token::TokenError {
        match self.rejected_source() {
            Some(origin) => crate::token::TokenError::PinSourceRefused {
                token: token.to_string(),
                origin,
                // " (one try left ...)" -> ", one try left ..." inside the parentheses
                hint: match hint.trim().trim_start_matches('(').trim_end_matches(')') {
                    "" => String::new(),
                    h => format!(", {h}"),
                },
                tries_left,
            },
            None => crate::token::TokenError::PinRequired(token.to_string()),
        }
    }

    /// Forgets the cached PIN after the token rejected it.
    pub fn reject(&mut self) {
        self.cached = None;
        self.rejected = true;
    }

    /// Forgets the cached PIN (card removed): a client PIN must be given again; an
    /// unattended source is read again at the next use.
    pub fn forget(&mut self) {
        self.cached = None;
    }

    /// `lock`: forget everything.
    pub fn lock(&mut self) {
        self.cached = None;
        self.locked = true;
    }

    /// Drops the cached PIN if its time ran out; returns true if it did.
    pub fn expire(&mut self) -> bool {
        if let Some((_, Some(at))) = &self.cached {
            if Instant::now() >= *at {
                self.cached = None;
                // A client PIN that timed out must be asked for again, not replaced by the source.
                self.locked = true;
                return true;
            }
        }
        false
    }

    /// True if a PIN is cached.
    pub fn has_cached(&self) -> bool {
        self.cached.is_some()
    }
}

/// Compares a PIN to a string without exposing it in logs (for tests).
pub fn pin_eq(pin: &SecretString, s: &str) -> bool {
    pin.expose_secret() == s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_source_strips_newline_and_lock_stops_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pin");
        std::fs::write(&p, "1234\n").expect("write");
        private(&p);
        let mut st = PinState::new(PinSource::File(p), None);
        let pin = st.current().expect("readable").expect("present");
        assert!(pin_eq(&pin, "1234"));
        st.lock();
        assert!(st.current().expect("ok").is_none());
        st.remember(SecretString::from("9999".to_string()), true);
        assert!(pin_eq(&st.current().expect("ok").expect("cached"), "9999"));
        st.reject();
        assert!(st.current().expect("ok").is_none());
    }

    fn private(p: &std::path::Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    #[test]
    fn a_pin_file_others_can_read_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pin");
        std::fs::write(&p, "1234\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = PinSource::File(p.clone()).read().expect_err("refused");
        assert!(e.contains("chmod 600") && e.contains("0644"), "{e}");
        assert!(!e.contains("1234"), "never the PIN: {e}");
        private(&p);
        assert!(PinSource::File(p).read().expect("read").is_some());
    }

    #[test]
    fn client_pin_expires() {
        let mut st = PinState::new(PinSource::None, Some(Duration::from_millis(1)));
        st.remember(SecretString::from("1".to_string()), true);
        std::thread::sleep(Duration::from_millis(5));
        assert!(st.expire());
        assert!(st.current().expect("ok").is_none());
    }
}
