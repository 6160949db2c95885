//! PIN entry for clients without a terminal (git, mail clients, scripts): when an
//! operation needs a PIN that is not cached, the agent asks through a pinentry program
//! (Assuan; pinentry-gnome3/-qt/-curses/-tty), logs in, and runs the operation.
//!
//! Clients that ask their user themselves (the CLI at a terminal) say so in `hello`
//! (`pin_prompt`) and get `pin-required` as before. One pinentry at a time: concurrent
//! requests for the same token wait and then find it logged in.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokenmail_proto::v1::TokenStatus;
use tokenmail_smime::alg::SignatureScheme;
use tokenmail_smime::envelope::KeyTransport;
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::pin::pinentry::{self, PinentryError, PinentryRequest};
use crate::token::{KeyEntry, KeyStore, PivAdmin, TokenError};

/// Default seconds the user has to type the PIN.
pub const DEFAULT_TIMEOUT: u64 = 60;
/// Most PIN attempts per request (each wrong one costs a try on the token).
const MAX_ATTEMPTS: usize = 3;
/// After the user cancels a dialog (or it times out, fails, or takes three wrong PINs),
/// no new dialog for that token for this long: requests that were queued behind it, or a
/// client retrying in a loop, get the answer at once instead of dialog after dialog.
pub const COOLDOWN: Duration = Duration::from_secs(10);

/// The pinentry program and its settings.
#[derive(Debug)]
pub struct Prompter {
    program: PathBuf,
    timeout: Duration,
    one_at_a_time: Mutex<()>,
    /// token → when its last dialog ended without a PIN, and how
    quiet: Mutex<HashMap<String, (Instant, &'static str)>>,
}

impl Prompter {
    fn with(program: PathBuf, timeout: Duration) -> Prompter {
        Prompter {
            program,
            timeout,
            one_at_a_time: Mutex::new(()),
            quiet: Mutex::new(HashMap::new()),
        }
    }

    /// Remembers that a dialog for `token` ended without a PIN.
    fn hush(&self, token: &str, how: &'static str) {
        self.quiet
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_string(), (Instant::now(), how));
    }

    /// The error for a request inside the cooldown of `token`, if it is.
    fn cooling(&self, token: &str) -> Option<TokenError> {
        let mut quiet = self.quiet.lock().unwrap_or_else(|p| p.into_inner());
        let (since, how) = *quiet.get(token)?;
        let elapsed = since.elapsed();
        if elapsed >= COOLDOWN {
            quiet.remove(token);
            return None;
        }
        let wait = (COOLDOWN - elapsed).as_secs() + 1;
        Some(TokenError::PinSource(format!(
            "the PIN dialog for token {token:?} {how} a moment ago; not asking again for {wait} s: run `tokenmail login`, or try again then"
        )))
    }
}

impl Prompter {
    /// From `[pin] pinentry` (`auto` = search $PATH, `none` = never, or a path).
    pub fn from_config(setting: Option<&str>, timeout_secs: Option<u64>) -> Option<Arc<Prompter>> {
        let program = match setting.unwrap_or("auto") {
            "none" | "" => return None,
            "auto" => {
                // The agent has no terminal to lend a curses/tty pinentry: without a
                // graphical session, clients get `pin-required` (the CLI asks itself).
                let graphical = ["DISPLAY", "WAYLAND_DISPLAY"]
                    .iter()
                    .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
                if !graphical {
                    return None;
                }
                graphical_pinentry()?
            }
            p => PathBuf::from(p),
        };
        Some(Arc::new(Prompter::with(
            program,
            Duration::from_secs(timeout_secs.unwrap_or(DEFAULT_TIMEOUT).max(5)),
        )))
    }

    /// The program.
    pub fn program(&self) -> &std::path::Path {
        &self.program
    }
}

/// The first pinentry on $PATH that draws its own window (curses and tty pinentries
/// need a terminal the agent does not have; `/usr/bin/pinentry` may point to one).
fn graphical_pinentry() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in pinentry::PINENTRY_PROGRAMS {
        for dir in std::env::split_paths(&path).filter(|d| d.is_absolute()) {
            let candidate = dir.join(name);
            let Ok(real) = std::fs::canonicalize(&candidate) else {
                continue;
            };
            let file = real.file_name().and_then(|f| f.to_str()).unwrap_or("");
            if file.ends_with("-curses") || file.ends_with("-tty") {
                continue;
            }
            if std::fs::metadata(&real).is_ok_and(|m| m.is_file()) {
                return Some(candidate);
            }
        }
    }
    None
}

/// A token seen by a client that cannot prompt: operations that need a PIN ask
/// through pinentry first.
#[derive(Debug)]
pub struct PromptingStore {
    inner: Arc<dyn KeyStore>,
    prompter: Arc<Prompter>,
    /// the program that asks (named in the dialog, so the user knows what the PIN is for)
    requester: Option<String>,
}

impl PromptingStore {
    /// Wraps a store.
    pub fn new(inner: Arc<dyn KeyStore>, prompter: Arc<Prompter>) -> Self {
        PromptingStore {
            inner,
            prompter,
            requester: None,
        }
    }

    /// Names the program that asks, in the dialog.
    pub fn for_requester(mut self, requester: Option<String>) -> Self {
        self.requester = requester;
        self
    }

    fn describe(&self, what: &str) -> String {
        let st = self.inner.status();
        let device = if st.serial.is_empty() {
            format!("token \"{}\"", st.label)
        } else {
            format!("token \"{}\" (serial {})", st.label, st.serial)
        };
        match &self.requester {
            Some(r) => format!("{r} asks tokenmail for the PIN of {device} to {what}."),
            None => format!("tokenmail needs the PIN of {device} to {what}."),
        }
    }

    fn with_pin<T>(
        &self,
        what: &str,
        op: impl Fn() -> Result<T, TokenError>,
    ) -> Result<T, TokenError> {
        let token = match op() {
            Err(TokenError::PinRequired(t))
            | Err(TokenError::PinSourceRefused { token: t, .. }) => t,
            other => return other,
        };
        if let Some(e) = self.prompter.cooling(&token) {
            return Err(e);
        }
        let _one = self
            .prompter
            .one_at_a_time
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Another request may have logged in while we waited for the prompt, or the
        // dialog we waited behind may have been cancelled.
        match op() {
            Err(TokenError::PinRequired(_)) | Err(TokenError::PinSourceRefused { .. }) => {}
            other => return other,
        }
        if let Some(e) = self.prompter.cooling(&token) {
            return Err(e);
        }
        let description = self.describe(what);
        let mut error: Option<String> = None;
        let mut last_tries: Option<u32> = None;
        for _ in 0..MAX_ATTEMPTS {
            let req = PinentryRequest {
                program: &self.prompter.program,
                title: "tokenmail",
                description: &description,
                prompt: "PIN:",
                error: error.as_deref(),
                keyinfo: None,
                timeout: self.prompter.timeout,
                tty: None,
            };
            let pin: SecretString = match pinentry::get_pin(&req) {
                Ok(p) => p,
                Err(PinentryError::Cancelled | PinentryError::EmptyPin) => {
                    info!(token = %token, "PIN entry cancelled by the user");
                    self.prompter.hush(&token, "was cancelled");
                    return Err(TokenError::PinSource(format!(
                        "PIN entry for token {token:?} was cancelled"
                    )));
                }
                Err(e) => {
                    warn!(token = %token, program = %self.prompter.program.display(), "pinentry failed: {e}");
                    self.prompter.hush(&token, "failed or timed out");
                    return Err(TokenError::PinRequired(token));
                }
            };
            match self.inner.login(Some(pin)) {
                Ok(()) => return op(),
                Err(TokenError::PinIncorrect {
                    hint, tries_left, ..
                }) => {
                    // One try left: asking again could block the card on a typo. Say so
                    // and stop; the user decides (`tokenmail login`).
                    if tries_left.is_some_and(|t| t <= 1) {
                        warn!(token = %token, "wrong PIN, one try left: not asking again");
                        return Err(TokenError::PinIncorrect {
                            token,
                            hint: format!(
                                "{hint}; not asked again, so that a typo cannot block it: run `tokenmail login`"
                            ),
                            tries_left,
                        });
                    }
                    error = Some(format!("Wrong PIN{hint}."));
                    last_tries = tries_left;
                }
                Err(e) => return Err(e),
            }
        }
        self.prompter.hush(&token, "took three wrong PINs");
        Err(TokenError::PinIncorrect {
            token,
            hint: format!(" ({MAX_ATTEMPTS} wrong PINs typed in pinentry)"),
            tries_left: last_tries,
        })
    }
}

impl KeyStore for PromptingStore {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn status(&self) -> TokenStatus {
        self.inner.status()
    }
    fn keys(&self) -> Result<Vec<KeyEntry>, TokenError> {
        self.inner.keys()
    }
    fn check_present(&self) -> Result<(), TokenError> {
        self.inner.check_present()
    }
    fn login(&self, pin: Option<SecretString>) -> Result<(), TokenError> {
        self.inner.login(pin)
    }
    fn lock(&self) {
        self.inner.lock()
    }
    fn release(&self) {
        self.inner.release()
    }
    fn expire_pin(&self) {
        self.inner.expire_pin()
    }
    fn sign_digest(
        &self,
        id: &[u8],
        scheme: SignatureScheme,
        digest: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        self.with_pin("sign", || self.inner.sign_digest(id, scheme, digest))
    }
    fn decrypt(
        &self,
        id: &[u8],
        alg: KeyTransport,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        self.with_pin("decrypt a message", || self.inner.decrypt(id, alg, wrapped))
    }
    fn derive(&self, id: &[u8], peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        self.with_pin("decrypt a message", || self.inner.derive(id, peer_point))
    }
    fn piv(&self) -> Option<&dyn PivAdmin> {
        self.inner.piv()
    }
    fn audit_admin(&self, op: &str, id: &[u8], label: Option<&str>, result: Result<(), String>) {
        self.inner.audit_admin(op, id, label, result)
    }
    fn generate_key(
        &self,
        label: &str,
        alg: crate::token::KeyAlgorithm,
        id: Option<&[u8]>,
    ) -> Result<KeyEntry, TokenError> {
        self.with_pin("generate a key", || self.inner.generate_key(label, alg, id))
    }
    fn store_certificate(
        &self,
        key: &KeyEntry,
        certificate: &[u8],
        chain: &[Vec<u8>],
    ) -> Result<Vec<String>, TokenError> {
        self.with_pin("store a certificate", || {
            self.inner.store_certificate(key, certificate, chain)
        })
    }
    fn create_key(
        &self,
        label: &str,
        id: Option<&[u8]>,
        key: &crate::token::PrivateKeyParts,
        certificate: &[u8],
        chain: &[Vec<u8>],
    ) -> Result<KeyEntry, TokenError> {
        self.with_pin("import a key", || {
            self.inner.create_key(label, id, key, certificate, chain)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::soft::test_support::{store, PIN};
    use tokenmail_smime::alg::{HashAlg, SignatureScheme};

    /// A pinentry that always answers a wrong PIN (the agent's own fake, mode "ok").
    fn wrong_pinentry(dir: &std::path::Path) -> Arc<Prompter> {
        fake_pinentry(dir, "ok")
    }

    /// The agent's fake pinentry in `mode`.
    fn fake_pinentry(dir: &std::path::Path, mode: &str) -> Arc<Prompter> {
        // A symbolic link, not a copy: a copy is a file just written, and a process that
        // another test thread forks at that moment inherits the open file until it execs,
        // so running the copy can fail with ETXTBSY (the dialog then "fails").
        let program = dir.join(format!("fake-pinentry-{mode}"));
        std::os::unix::fs::symlink(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake-pinentry.py"),
            &program,
        )
        .expect("link the fake pinentry");
        Arc::new(Prompter::with(program, Duration::from_secs(10)))
    }

    #[test]
    fn no_pinentry_retry_when_one_try_is_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner: Arc<dyn KeyStore> = Arc::new(store().with_pin_tries(3));
        let prompting = PromptingStore::new(inner.clone(), wrong_pinentry(dir.path()))
            .for_requester(Some("git (pid 4242)".into()));
        let e = prompting
            .sign_digest(
                &[1],
                SignatureScheme::RsaPkcs1v15(HashAlg::Sha256),
                &[7; 32],
            )
            .expect_err("the fake types a wrong PIN");
        match e {
            TokenError::PinIncorrect {
                tries_left, hint, ..
            } => {
                assert_eq!(tries_left, Some(1), "{hint}");
                assert!(hint.contains("not asked again"), "{hint}");
            }
            other => panic!("expected PinIncorrect, got {other:?}"),
        }
        // the dialog names the program that asks
        let transcript =
            std::fs::read_to_string(dir.path().join("fake-pinentry-ok.log")).unwrap_or_default();
        assert!(
            transcript
                .lines()
                .any(|l| l.starts_with("SETDESC git (pid 4242) asks tokenmail for the PIN")),
            "{transcript}"
        );
        // the last try is still there: the right PIN works
        inner
            .login(Some(SecretString::from(PIN.to_string())))
            .expect("not blocked");
    }

    /// One cancelled dialog, not one per waiting request: requests queued behind it and
    /// a client retrying at once get the answer without a new dialog, until the cooldown
    /// has passed.
    #[test]
    fn a_cancelled_dialog_is_not_followed_by_more() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner: Arc<dyn KeyStore> = Arc::new(store());
        let prompter = fake_pinentry(dir.path(), "cancel");
        let prompting = Arc::new(PromptingStore::new(inner, prompter.clone()));
        let sign = |p: &PromptingStore| {
            p.sign_digest(
                &[1],
                SignatureScheme::RsaPkcs1v15(HashAlg::Sha256),
                &[7; 32],
            )
        };
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let p = prompting.clone();
                std::thread::spawn(move || sign(&p).expect_err("cancelled").to_string())
            })
            .collect();
        let errors: Vec<String> = threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        let dialogs = || {
            std::fs::read_to_string(dir.path().join("fake-pinentry-cancel.log"))
                .unwrap_or_default()
                .lines()
                .filter(|l| *l == "GETPIN")
                .count()
        };
        assert_eq!(dialogs(), 1, "{errors:?}");
        assert_eq!(
            errors
                .iter()
                .filter(|e| e.contains("not asking again"))
                .count(),
            3,
            "{errors:?}"
        );
        let again = sign(&prompting).expect_err("still cooling").to_string();
        assert!(again.contains("tokenmail login"), "{again}");
        assert_eq!(dialogs(), 1);
        // Once the cooldown is over, the user is asked again.
        let token = prompter
            .quiet
            .lock()
            .expect("lock")
            .keys()
            .next()
            .cloned()
            .expect("remembered");
        prompter.quiet.lock().expect("lock").insert(
            token,
            (
                Instant::now().checked_sub(COOLDOWN).expect("uptime"),
                "was cancelled",
            ),
        );
        sign(&prompting).expect_err("cancelled again");
        assert_eq!(dialogs(), 2);
    }
}
