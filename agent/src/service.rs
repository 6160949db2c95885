//! The agent's request handling, independent of the socket: key resolution across
//! tokens, status, and the mapping of token errors to wire errors.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use secrecy::SecretString;
use tokenmail_proto::v1::{AgentStatus, EmailSelection, KeyInfo, Request, Response, SecretBytes};
use tracing::debug;

use crate::error::AgentError;
use crate::token::{cert, KeyEntry, KeyStore, TokenError};

/// The agent's name and version.
pub const AGENT: &str = concat!("tokenmail-agent/", env!("CARGO_PKG_VERSION"));

/// All tokens and the key-selection preferences.
#[derive(Debug)]
pub struct Service {
    stores: Vec<Arc<dyn KeyStore>>,
    /// email (lower-case) → preferred key label or hex id.
    prefer: HashMap<String, String>,
    /// Asks for PINs through pinentry for clients that cannot.
    prompter: Option<Arc<crate::pin::prompt::Prompter>>,
    /// The content-encryption algorithms the `decrypt` operation accepts.
    cipher_policy: tokenmail_smime::pipeline::CipherPolicy,
    /// `[trust]` for the `verify` operation.
    trust: Arc<TrustState>,
    /// The audit log of private-key operations, when on.
    audit: Option<Arc<crate::audit::AuditLog>>,
}

/// The configuration's trust policy, loaded at start.
#[derive(Debug, Default)]
pub struct TrustState {
    /// `[trust] anchors`, read (used when a `verify` request sends none).
    pub anchors: Vec<tokenmail_smime::path::CertEntry>,
    /// `[trust] intermediates`, read.
    pub intermediates: Vec<tokenmail_smime::path::CertEntry>,
    /// The rest of `[trust]`.
    pub config: tokenmail_smime::trust::TrustConfig,
}

impl TrustState {
    /// Reads the certificate files `config` names.
    pub fn load(config: tokenmail_smime::trust::TrustConfig) -> Result<Self, String> {
        let read = |paths: &[std::path::PathBuf], what: &str| {
            let mut out = Vec::new();
            for p in paths {
                let data =
                    std::fs::read(p).map_err(|e| format!("[trust] {what} {}: {e}", p.display()))?;
                out.extend(
                    tokenmail_smime::path::CertEntry::from_pem_or_der(&data).map_err(|e| {
                        format!("[trust] {what} {} is not a certificate: {e}", p.display())
                    })?,
                );
            }
            Ok::<_, String>(out)
        };
        Ok(TrustState {
            anchors: read(&config.anchors, "anchor")?,
            intermediates: read(&config.intermediates, "intermediate")?,
            config,
        })
    }

    /// The revocation cache the CLI fills (`[trust] crl_cache`, else the default), read
    /// only; `None` when there is none.
    pub fn cache(&self) -> Option<crate::revcache::CacheOnly> {
        self.config
            .crl_cache
            .clone()
            .or_else(tokenmail_proto::crl_cache_dir)
            .filter(|d| d.is_dir())
            .map(crate::revcache::CacheOnly::new)
    }
}

/// A key found by name.
#[derive(Debug)]
struct Found {
    store: Arc<dyn KeyStore>,
    key: KeyEntry,
}

/// Longest `wait-token`.
pub const MAX_WAIT_SECS: u64 = 600;
/// How often a `wait-token` looks at the tokens.
pub const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(400);

fn not_piv(name: &str) -> AgentError {
    AgentError::bad(format!(
        "token {name:?} is not a PIV card; `tokenmail piv` works on cards configured with --piv"
    ))
}

fn bad_slot(slot: &str) -> AgentError {
    AgentError::bad(format!("PIV slot {slot:?}: use 9a, 9c, 9d, 9e or 82..95 (or authentication, signature, key-management, card-authentication, retired1..retired20)"))
}

#[cfg(feature = "piv")]
fn parse_piv_slot(s: &str) -> Option<u8> {
    crate::token::piv::parse_slot(s)
}

#[cfg(not(feature = "piv"))]
fn parse_piv_slot(_: &str) -> Option<u8> {
    None
}

/// What email selection needs of a certificate: its emails (as [`cert::emails`]) and
/// validity (seconds since the epoch). `None` if it does not parse.
fn selection_facts(der: &[u8]) -> Option<(Vec<String>, u64, u64)> {
    use x509_cert::der::Decode;
    let c = x509_cert::Certificate::from_der(der).ok()?;
    let v = c.tbs_certificate().validity();
    let not_before = v.not_before.to_unix_duration().as_secs();
    let not_after = v.not_after.to_unix_duration().as_secs();
    Some((cert::emails(&c), not_before, not_after))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Service {
    /// A service over these tokens.
    pub fn new(stores: Vec<Arc<dyn KeyStore>>, prefer: HashMap<String, String>) -> Self {
        let prefer = prefer
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        Service {
            stores,
            prefer,
            prompter: None,
            cipher_policy: Default::default(),
            trust: Arc::new(TrustState::default()),
            audit: None,
        }
    }

    /// Writes every private-key operation to `log` (through [`Service::for_peer`]).
    pub fn with_audit(mut self, log: Option<Arc<crate::audit::AuditLog>>) -> Self {
        self.audit = log;
        self
    }

    /// The view of one connection: its stores write what they do to the audit log with
    /// `peer` as the one who asked. The same service when the log is off.
    pub fn for_peer(&self, peer: crate::audit::Peer) -> Service {
        let Some(log) = &self.audit else {
            return self.clone_view(self.stores.clone());
        };
        let stores = self
            .stores
            .iter()
            .map(|s| {
                Arc::new(crate::audit::AuditedStore::new(
                    s.clone(),
                    log.clone(),
                    peer.clone(),
                )) as Arc<dyn KeyStore>
            })
            .collect();
        self.clone_view(stores)
    }

    fn clone_view(&self, stores: Vec<Arc<dyn KeyStore>>) -> Service {
        Service {
            stores,
            prefer: self.prefer.clone(),
            prompter: self.prompter.clone(),
            cipher_policy: self.cipher_policy,
            trust: self.trust.clone(),
            audit: self.audit.clone(),
        }
    }

    /// Sets the trust policy of the `verify` operation.
    pub fn with_trust(mut self, trust: TrustState) -> Self {
        self.trust = Arc::new(trust);
        self
    }

    /// The trust policy of the `verify` operation.
    pub fn trust(&self) -> &TrustState {
        &self.trust
    }

    /// Sets the ciphers the `decrypt` operation accepts (`[decrypt] accept`).
    pub fn with_cipher_policy(mut self, policy: tokenmail_smime::pipeline::CipherPolicy) -> Self {
        self.cipher_policy = policy;
        self
    }

    /// The ciphers the `decrypt` operation accepts.
    pub fn cipher_policy(&self) -> tokenmail_smime::pipeline::CipherPolicy {
        self.cipher_policy
    }

    /// Sets the pinentry used for clients without a terminal.
    pub fn with_prompter(mut self, prompter: Option<Arc<crate::pin::prompt::Prompter>>) -> Self {
        self.prompter = prompter;
        self
    }

    /// The view of a connection whose client said it cannot ask for PINs: every token
    /// asks through pinentry when it needs one. `None` when no pinentry is configured.
    pub fn for_client_without_prompt(&self, requester: Option<String>) -> Option<Service> {
        let p = self.prompter.as_ref()?;
        Some(Service {
            stores: self
                .stores
                .iter()
                .map(|s| {
                    Arc::new(
                        crate::pin::prompt::PromptingStore::new(s.clone(), p.clone())
                            .for_requester(requester.clone()),
                    ) as Arc<dyn KeyStore>
                })
                .collect(),
            prefer: self.prefer.clone(),
            prompter: None,
            cipher_policy: self.cipher_policy,
            trust: self.trust.clone(),
            audit: self.audit.clone(),
        })
    }

    /// The tokens.
    pub fn stores(&self) -> &[Arc<dyn KeyStore>] {
        &self.stores
    }

    /// Resolves a key name as the requests do (label, hex id, `sha256:`, email): the
    /// token and the key. For the stream operations (stream.rs).
    pub fn find_key(&self, name: &str) -> Result<(Arc<dyn KeyStore>, KeyEntry), TokenError> {
        self.resolve(name).map(|f| (f.store, f.key))
    }

    /// Keys of every present token with their token. For the stream operations.
    pub fn keys(&self) -> Vec<(Arc<dyn KeyStore>, KeyEntry)> {
        self.all_keys()
    }

    /// Keys of every present token (absent tokens are skipped).
    fn all_keys(&self) -> Vec<(Arc<dyn KeyStore>, KeyEntry)> {
        let mut out = Vec::new();
        for s in &self.stores {
            match s.keys() {
                Ok(keys) => out.extend(keys.into_iter().map(|k| (s.clone(), k))),
                Err(e) => debug!(token = s.name(), "cannot list keys: {e}"),
            }
        }
        out
    }

    /// Which key each email selects, with the reason.
    fn selections(&self, keys: &[(Arc<dyn KeyStore>, KeyEntry)]) -> Vec<EmailSelection> {
        let now = now_secs();
        let mut by_email: BTreeMap<String, Vec<(&str, &KeyEntry, u64, bool)>> = BTreeMap::new();
        for (store, k) in keys {
            let Some(der) = &k.certificate else { continue };
            // Only emails and validity: not cert::facts, whose DN strings and dates cost
            // more than the rest of a sign-digest naming a key by email.
            let Some((emails, not_before, not_after)) = selection_facts(der) else {
                continue;
            };
            let valid = not_before <= now && now <= not_after;
            for e in emails {
                by_email
                    .entry(e)
                    .or_default()
                    .push((store.name(), k, not_after, valid));
            }
        }
        let mut out = Vec::new();
        for (email, cands) in by_email {
            let preferred = self.prefer.get(&email).and_then(|p| {
                cands
                    .iter()
                    .find(|(_, k, _, _)| &k.label == p || &hex::encode(&k.id) == p)
            });
            let (chosen, reason) = if let Some(c) = preferred {
                (c, "preference")
            } else if cands.len() == 1 {
                (&cands[0], "only")
            } else {
                // valid certificates first, then the one that expires last
                let best = cands
                    .iter()
                    .max_by_key(|(_, _, na, valid)| (*valid, *na))
                    .unwrap_or(&cands[0]);
                (best, "latest-expiry")
            };
            out.push(EmailSelection {
                email,
                token: chosen.0.to_string(),
                key: chosen.1.label.clone(),
                id: hex::encode(&chosen.1.id),
                reason: reason.into(),
            });
        }
        out
    }

    /// Resolves a key name: CKA_LABEL, hex CKA_ID, `sha256:` + its certificate's SHA-256
    /// fingerprint (unique across tokens), or an email in its certificate.
    fn resolve(&self, name: &str) -> Result<Found, TokenError> {
        match self.resolve_once(name) {
            // The tokens are there but the name matched nothing: the key lists were
            // dropped by `check_present`; look once more at fresh ones (a list cached while
            // a token went away and came back may be stale).
            Err(TokenError::NoSuchKey(_)) => self.resolve_once(name),
            r => r,
        }
    }

    fn resolve_once(&self, name: &str) -> Result<Found, TokenError> {
        let keys = self.all_keys();
        if keys.is_empty() {
            // Say why: no token present, or a PIN needed to see private keys.
            for s in &self.stores {
                s.keys()?;
                s.check_present()?;
            }
            return Err(TokenError::NoSuchKey(name.to_string()));
        }
        let by = |pred: &dyn Fn(&KeyEntry) -> bool| -> Vec<&(Arc<dyn KeyStore>, KeyEntry)> {
            keys.iter().filter(|(_, k)| pred(k)).collect()
        };
        let mut hits = by(&|k| k.label == name);
        if hits.is_empty() {
            let lower = name.to_ascii_lowercase();
            hits = by(&|k| hex::encode(&k.id) == lower);
        }
        if hits.is_empty() {
            if let Some(fp) = name.strip_prefix("sha256:") {
                let fp = fp.to_ascii_lowercase();
                hits = by(&|k| {
                    k.certificate.as_deref().is_some_and(|der| {
                        use sha2::Digest;
                        hex::encode(sha2::Sha256::digest(der)) == fp
                            && selection_facts(der).is_some()
                    })
                });
            }
        }
        if hits.is_empty() && name.contains('@') {
            let email = name.to_ascii_lowercase();
            let sel = self.selections(&keys);
            if let Some(s) = sel.iter().find(|s| s.email == email) {
                hits = keys
                    .iter()
                    .filter(|(st, k)| {
                        st.name() == s.token && k.label == s.key && hex::encode(&k.id) == s.id
                    })
                    .collect();
            }
        }
        match hits.as_slice() {
            [one] => Ok(Found {
                store: one.0.clone(),
                key: one.1.clone(),
            }),
            [] => {
                // The key may be on a token that is not there: say which to insert. A key
                // list may also be stale (a module that answers from the state of a deleted
                // token): check that the tokens are really there.
                for s in &self.stores {
                    if let Err(
                        e @ (TokenError::CardAbsent(_)
                        | TokenError::NotPresent(_)
                        | TokenError::NotInModule { .. }),
                    ) = s.keys().and_then(|_| s.check_present())
                    {
                        return Err(e);
                    }
                }
                Err(TokenError::NoSuchKey(name.to_string()))
            }
            many => {
                let mut tokens: Vec<&str> = many.iter().map(|(s, _)| s.name()).collect();
                tokens.dedup();
                Err(TokenError::KeyMismatch(format!(
                    "{name:?} names {} keys (on {}); name the key by its hex id or by email, or set a preference (see `tokenmail status`)",
                    many.len(),
                    tokens.join(", ")
                )))
            }
        }
    }

    fn key_info(store: &dyn KeyStore, k: &KeyEntry) -> KeyInfo {
        let mut usage = Vec::new();
        if k.can_sign {
            usage.push("sign".to_string());
        }
        if k.can_decrypt {
            usage.push("decrypt".to_string());
        }
        if k.can_derive {
            usage.push("derive".to_string());
        }
        KeyInfo {
            label: k.label.clone(),
            id: hex::encode(&k.id),
            token: store.name().to_string(),
            algorithm: k.public.algorithm_name(),
            usage,
            certificate: k
                .certificate
                .as_deref()
                .and_then(cert::facts)
                .map(|f| f.summary),
            chain: k
                .chain
                .iter()
                .cloned()
                .map(tokenmail_proto::v1::Bytes)
                .collect(),
            touch: k.touch.clone(),
            pin_policy: k.pin_policy.clone(),
            exportable: k.exportable,
            public_key: k.public.to_spki_der().ok().map(tokenmail_proto::v1::Bytes),
        }
    }

    /// What the owner of the keys should hear about, for the log at start and once a day:
    /// private keys the token lets be read off it (extractable or not sensitive), and
    /// certificates of the keys that expire within 30 days or have expired.
    pub fn key_warnings(&self) -> Vec<String> {
        let now = now_secs();
        let mut out = Vec::new();
        for (store, k) in self.all_keys() {
            if k.exportable {
                out.push(format!(
                    "key {:?} on token {:?} is extractable or not sensitive: its value can be read off the token; generate a new key with `tokenmail keygen` (or set CKA_SENSITIVE / clear CKA_EXTRACTABLE)",
                    k.label,
                    store.name()
                ));
            }
            let Some((_, _, not_after)) = k.certificate.as_deref().and_then(selection_facts) else {
                continue;
            };
            if not_after <= now {
                out.push(format!(
                    "the certificate of key {:?} on token {:?} has expired ({}): signing with it is refused; renew it (`tokenmail renew --key {}`)",
                    k.label,
                    store.name(),
                    cert::rfc3339(not_after),
                    k.label
                ));
            } else if not_after - now <= 30 * 86_400 {
                out.push(format!(
                    "the certificate of key {:?} on token {:?} expires in {} day(s) ({}): renew it (`tokenmail renew --key {}`)",
                    k.label,
                    store.name(),
                    (not_after - now).div_ceil(86_400),
                    cert::rfc3339(not_after),
                    k.label
                ));
            }
        }
        out
    }

    /// Handles one request (blocking: call from a blocking thread).
    pub fn handle(&self, req: Request) -> Response {
        match req {
            Request::Hello { .. } => Response::Hello {
                operations: tokenmail_proto::v1::OPERATIONS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                agent: AGENT.into(),
                protocol: format!(
                    "{}.{}",
                    tokenmail_proto::frame::VERSION_MAJOR,
                    tokenmail_proto::frame::VERSION_MINOR
                ),
            },
            Request::Status => {
                // Keys first: listing connects and logs in where a PIN may be used, so the
                // token states below are the ones after that, not before.
                let keys = self.all_keys();
                let tokens = self
                    .stores
                    .iter()
                    .map(|s| {
                        let mut st = s.status();
                        if st.label != s.name() {
                            st.name = s.name().to_string();
                        }
                        st
                    })
                    .collect();
                let emails = self.selections(&keys);
                Response::Status(AgentStatus {
                    agent_version: AGENT.into(),
                    protocol: format!(
                        "{}.{}",
                        tokenmail_proto::frame::VERSION_MAJOR,
                        tokenmail_proto::frame::VERSION_MINOR
                    ),
                    tokens,
                    keys: keys
                        .iter()
                        .map(|(s, k)| Self::key_info(s.as_ref(), k))
                        .collect(),
                    emails,
                })
            }
            Request::ListKeys => Response::Keys {
                keys: self
                    .all_keys()
                    .iter()
                    .map(|(s, k)| Self::key_info(s.as_ref(), k))
                    .collect(),
            },
            Request::SignDigest {
                key,
                algorithm,
                digest,
            } => match self.resolve(&key).and_then(|f| {
                let scheme = algorithm
                    .to_scheme()
                    .ok_or_else(|| TokenError::Mechanism(algorithm.name().to_string()))?;
                f.store
                    .sign_digest(&f.key.id, scheme, &digest.0)
                    .map(|sig| (f.key.label, sig))
            }) {
                Ok((key, sig)) => Response::Signature {
                    key,
                    signature: tokenmail_proto::v1::Bytes(sig),
                },
                Err(e) => AgentError::from(e).into(),
            },
            Request::SignDigestCert {
                key,
                certificate,
                algorithm,
                digest,
            } => self
                .sign_digest_cert(&key, &certificate, algorithm, &digest.0)
                .unwrap_or_else(Response::from),
            Request::DecryptKey {
                key,
                algorithm,
                wrapped,
            } => match self.resolve(&key).and_then(|f| {
                let transport = algorithm
                    .to_key_transport()
                    .ok_or_else(|| TokenError::Mechanism(format!("{algorithm:?}")))?;
                f.store.decrypt(&f.key.id, transport, &wrapped.0)
            }) {
                Ok(secret) => Response::Secret {
                    secret: SecretBytes(secret),
                },
                Err(e) => AgentError::from(e).into(),
            },
            Request::Derive { key, peer_point } => match self
                .resolve(&key)
                .and_then(|f| f.store.derive(&f.key.id, &peer_point.0))
            {
                Ok(secret) => Response::Secret {
                    secret: SecretBytes(secret),
                },
                Err(e) => AgentError::from(e).into(),
            },
            Request::Login { token, pin } => {
                let store = match self.pick_store(token.as_deref()) {
                    Ok(s) => s,
                    Err(e) => return e.into(),
                };
                let pin = pin.map(|p| SecretString::from(p.expose().to_string()));
                match store.login(pin) {
                    Ok(()) => Response::Ok,
                    Err(e) => AgentError::from(e).into(),
                }
            }
            Request::Lock => {
                for s in &self.stores {
                    s.lock();
                }
                Response::Ok
            }
            Request::WaitToken {
                token,
                timeout_secs,
            } => self.wait_token(token.as_deref(), timeout_secs),
            Request::PivStatus { token } => match self.pick_piv(token.as_deref()) {
                Ok(store) => match store.piv().map(|p| p.piv_status()) {
                    Some(Ok(st)) => Response::PivStatus(Box::new(st)),
                    Some(Err(e)) => AgentError::from(e).into(),
                    None => not_piv(store.name()).into(),
                },
                Err(e) => e.into(),
            },
            Request::PivKeygen {
                token,
                slot,
                algorithm,
                pin_policy,
                touch_policy,
                management_key,
            } => {
                let (store, slot) = match self.piv_slot(token.as_deref(), &slot) {
                    Ok(t) => t,
                    Err(e) => return e.into(),
                };
                let req = crate::token::PivKeygen {
                    slot,
                    algorithm,
                    pin_policy,
                    touch_policy,
                    management_key: management_key.map(|k| k.0),
                };
                let r = store.piv().map(|p| p.piv_keygen(&req));
                if let Some(r) = &r {
                    store.audit_admin(
                        "keygen",
                        &[slot],
                        None,
                        r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
                    );
                }
                match r {
                    Some(Ok((spki, warnings))) => Response::PivKey {
                        public_key: tokenmail_proto::v1::Bytes(spki),
                        warnings,
                    },
                    Some(Err(e)) => AgentError::from(e).into(),
                    None => not_piv(store.name()).into(),
                }
            }
            Request::PivImportCert {
                token,
                slot,
                certificate,
                management_key,
            } => {
                let (store, slot) = match self.piv_slot(token.as_deref(), &slot) {
                    Ok(t) => t,
                    Err(e) => return e.into(),
                };
                let mk = management_key.as_ref().map(|k| k.0.as_slice());
                let r = store
                    .piv()
                    .map(|p| p.piv_import_cert(slot, &certificate.0, mk));
                if let Some(r) = &r {
                    store.audit_admin(
                        "import-cert",
                        &[slot],
                        None,
                        r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
                    );
                }
                match r {
                    Some(Ok(warnings)) => Response::Done { warnings },
                    Some(Err(e)) => AgentError::from(e).into(),
                    None => not_piv(store.name()).into(),
                }
            }
            Request::Keygen {
                token,
                label,
                algorithm,
                id,
                pin_policy,
                touch_policy,
                management_key,
            } => self
                .keygen(enrol::Keygen {
                    token,
                    label,
                    algorithm,
                    id: id.map(|b| b.0),
                    pin_policy,
                    touch_policy,
                    management_key,
                })
                .unwrap_or_else(Response::from),
            Request::ImportCert {
                key,
                certificate,
                chain,
                management_key,
            } => {
                let chain: Vec<Vec<u8>> = chain.into_iter().map(|b| b.0).collect();
                let mk = management_key.as_ref().map(|k| k.0.as_slice());
                self.import_cert(&key, &certificate.0, &chain, mk)
                    .unwrap_or_else(Response::from)
            }
            Request::ImportKey {
                token,
                label,
                id,
                private_key,
                certificate,
                chain,
                management_key,
            } => {
                let chain: Vec<Vec<u8>> = chain.into_iter().map(|b| b.0).collect();
                self.import_key(
                    token.as_deref(),
                    &label,
                    id.as_ref().map(|b| b.0.as_slice()),
                    &private_key.0,
                    &certificate.0,
                    &chain,
                    management_key.as_ref().map(|k| k.0.as_slice()),
                )
                .unwrap_or_else(Response::from)
            }
            _ => AgentError::bad("request not supported by this agent").into(),
        }
    }

    /// `wait-token`: the tokens to wait for. With a token named, that token; without,
    /// every token absent now (empty = nothing to wait for).
    pub fn wait_set(&self, token: Option<&str>) -> Result<Vec<Arc<dyn KeyStore>>, AgentError> {
        match token {
            Some(_) => self.pick_store(token).map(|s| vec![s]),
            None => Ok(self
                .stores
                .iter()
                .filter(|s| !s.status().present)
                .cloned()
                .collect()),
        }
    }

    /// One look at the tokens of a wait: `Some(answer)` when the wait is over (one of
    /// them is present, or `deadline` passed), else `None`.
    pub fn wait_check(
        set: &[Arc<dyn KeyStore>],
        timeout_secs: u64,
        deadline: std::time::Instant,
    ) -> Option<Response> {
        if set.is_empty() || set.iter().any(|s| s.status().present) {
            return Some(Response::Ok);
        }
        if std::time::Instant::now() < deadline {
            return None;
        }
        // A token the module does not have (a wrong label) will not come: say that, with
        // the labels the module has, rather than "insert it".
        for s in set {
            if let Err(e @ TokenError::NotInModule { .. }) = s.check_present() {
                return Some(Response::from(AgentError::Token(e)));
            }
        }
        let names: Vec<String> = set
            .iter()
            .map(|s| {
                let st = s.status();
                if st.serial.is_empty() {
                    st.label
                } else {
                    format!("{} (serial {})", st.label, st.serial)
                }
            })
            .collect();
        Some(Response::from(AgentError::NoToken(format!(
            "still not present after {timeout_secs} s: {}: insert it",
            names.join(", ")
        ))))
    }

    /// `wait-token`, blocking (the server runs its own loop that also notices a client
    /// that went away; this is for direct callers). A card insertion is noticed within
    /// half a second.
    fn wait_token(&self, token: Option<&str>, timeout_secs: u64) -> Response {
        let set = match self.wait_set(token) {
            Ok(s) => s,
            Err(e) => return e.into(),
        };
        let timeout_secs = timeout_secs.min(MAX_WAIT_SECS);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_secs);
        loop {
            if let Some(resp) = Self::wait_check(&set, timeout_secs, deadline) {
                return resp;
            }
            std::thread::sleep(WAIT_POLL);
        }
    }

    /// The PIV card and the slot byte a `piv-*` request names.
    fn piv_slot(
        &self,
        token: Option<&str>,
        slot: &str,
    ) -> Result<(Arc<dyn KeyStore>, u8), AgentError> {
        let store = self.pick_piv(token)?;
        let slot = parse_piv_slot(slot).ok_or_else(|| bad_slot(slot))?;
        Ok((store, slot))
    }

    /// The PIV card named by label/serial, or the only one.
    fn pick_piv(&self, token: Option<&str>) -> Result<Arc<dyn KeyStore>, AgentError> {
        if token.is_some() {
            return self.pick_store(token);
        }
        let cards: Vec<&Arc<dyn KeyStore>> =
            self.stores.iter().filter(|s| s.piv().is_some()).collect();
        match cards.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(AgentError::NoToken(
                "the agent has no PIV card configured: start it with --piv (or a [[token]] with type = \"piv\")".into(),
            )),
            _ => Err(AgentError::bad("several PIV cards: name one with --token NAME or SERIAL")),
        }
    }

    fn pick_store(&self, token: Option<&str>) -> Result<Arc<dyn KeyStore>, AgentError> {
        match token {
            Some(t) => self
                .stores
                .iter()
                .find(|s| s.name() == t || s.status().label == t || s.status().serial == t)
                .cloned()
                .ok_or_else(|| {
                    AgentError::NoToken(format!(
                        "no token {t:?} is configured; see `tokenmail status`"
                    ))
                }),
            None => match self.stores.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err(AgentError::NoToken(
                    "the agent has no token configured".into(),
                )),
                _ => {
                    // The first token that is present and not logged in.
                    self.stores
                        .iter()
                        .find(|s| {
                            let st = s.status();
                            st.present && !st.logged_in
                        })
                        .cloned()
                        .ok_or_else(|| {
                            AgentError::bad("several tokens: name one with --token LABEL")
                        })
                }
            },
        }
    }

    /// `sign-digest-cert`: sign only if the key the name selects still has the certificate
    /// the client built its signed attributes around (`certificate`: its SHA-256, hex).
    fn sign_digest_cert(
        &self,
        key: &str,
        certificate: &str,
        algorithm: tokenmail_proto::v1::SignAlgorithm,
        digest: &[u8],
    ) -> Result<Response, AgentError> {
        let f = self.resolve(key)?;
        let same = f.key.certificate.as_deref().is_some_and(|der| {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(der)).eq_ignore_ascii_case(certificate)
        });
        if !same {
            return Err(AgentError::CertificateChanged(format!(
                "key {:?} no longer has the certificate sha256:{certificate} (it was replaced, or {key:?} now selects another key); nothing was signed: look it up again",
                f.key.label
            )));
        }
        let scheme = algorithm
            .to_scheme()
            .ok_or_else(|| TokenError::Mechanism(algorithm.name().to_string()))?;
        let sig = f.store.sign_digest(&f.key.id, scheme, digest)?;
        Ok(Response::Signature {
            key: f.key.label,
            signature: tokenmail_proto::v1::Bytes(sig),
        })
    }

    /// Runs the periodic PIN-expiry check on every token.
    pub fn expire_pins(&self) {
        for s in &self.stores {
            s.expire_pin();
        }
    }

    /// SIGHUP: release every token's sessions.
    pub fn release_all(&self) {
        for s in &self.stores {
            s.release();
        }
    }
}

#[cfg(test)]
mod service_tests;

mod enrol;
