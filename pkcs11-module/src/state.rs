//! The module's state: slots (one per agent token), sessions, objects, operations.
//! One mutex guards it; calls to the agent are made with the mutex released, over a
//! fresh connection each, so a slow token (a PIN prompt, a card) blocks no other thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki_sys::*;
use tokenmail_proto::v1::{DecryptAlgorithm, HashAlgorithm, KeyInfo, TokenStatus};
use zeroize::Zeroizing;

use crate::objects::{self, KeyUse, Object};

/// A slot: one token of the agent.
#[derive(Debug)]
pub(crate) struct Slot {
    /// CK_SLOT_ID.
    pub id: CK_SLOT_ID,
    /// The token's label (also the name `login` is sent with).
    pub label: String,
    /// The name the agent's key listings give the token (its configured name, which may
    /// differ from the label; the label when the agent does not say).
    pub name: String,
    /// Serial number, "" while unknown.
    pub serial: String,
    /// Manufacturer and model.
    pub model: String,
    /// The agent's backend string.
    pub backend: String,
    /// The token is there (as the agent says).
    pub present: bool,
    /// A placeholder while no agent answers: a slot without a token.
    pub placeholder: bool,
    /// The application logged in through this module (PKCS#11 login state is per
    /// application and slot).
    pub logged_in: bool,
    /// Token objects from the last key listing.
    pub objects: Vec<Object>,
    /// When the keys were last listed (a login or a new session lists them again).
    pub listed: Option<Instant>,
}

impl Slot {
    fn uid(&self) -> String {
        format!("{}/{}", self.label, self.serial)
    }
}

/// The mechanism of an active signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignMech {
    /// CKM_RSA_PKCS: the input is a DigestInfo.
    RsaPkcsDigestInfo,
    /// CKM_SHAxxx_RSA_PKCS: the module hashes.
    RsaPkcsHash(HashAlgorithm),
    /// CKM_RSA_PKCS_PSS (input: the digest) or CKM_SHAxxx_RSA_PKCS_PSS (hashed here).
    RsaPss {
        hash: HashAlgorithm,
        prehashed: bool,
    },
    /// CKM_ECDSA (input: the digest) or CKM_ECDSA_SHAxxx (hashed here).
    Ecdsa { hash: Option<HashAlgorithm> },
}

/// An active C_SignInit.
#[derive(Debug, Clone)]
pub(crate) struct SignOp {
    pub key: KeyUse,
    pub mech: SignMech,
    pub data: Vec<u8>,
}

/// An active C_DecryptInit.
#[derive(Debug, Clone)]
pub(crate) struct DecryptOp {
    pub key: KeyUse,
    pub alg: DecryptAlgorithm,
    /// A result kept for the retry after CKR_BUFFER_TOO_SMALL.
    pub done: Option<Zeroizing<Vec<u8>>>,
}

/// An open session.
#[derive(Debug)]
pub(crate) struct Session {
    pub slot: CK_SLOT_ID,
    pub rw: bool,
    pub find: Option<(Vec<CK_OBJECT_HANDLE>, usize)>,
    pub sign: Option<SignOp>,
    pub decrypt: Option<DecryptOp>,
}

/// Everything the module holds between calls.
#[derive(Debug)]
pub(crate) struct Module {
    /// The process that called C_Initialize (a forked child must initialize again).
    pub pid: u32,
    /// The agent's socket.
    pub socket: PathBuf,
    pub slots: Vec<Slot>,
    pub sessions: HashMap<CK_SESSION_HANDLE, Session>,
    next_session: CK_SESSION_HANDLE,
    /// Object handles by object uid, stable while the module is initialized.
    handles: HashMap<String, CK_OBJECT_HANDLE>,
    next_object: CK_OBJECT_HANDLE,
    /// Session objects (derived secrets) and the session that owns each.
    pub session_objects: Vec<(CK_SESSION_HANDLE, Object)>,
    /// When the slots were last refreshed from the agent.
    pub refreshed: Option<Instant>,
    /// Tokens report CKF_PROTECTED_AUTHENTICATION_PATH: applications log in with no PIN.
    pub protected_auth: bool,
}

static STATE: Mutex<Option<Module>> = Mutex::new(None);

/// The state, whatever a panicking thread left (entries catch panics; the state stays
/// consistent because every change is a single assignment under the lock).
pub(crate) fn lock() -> MutexGuard<'static, Option<Module>> {
    let mut g = STATE.lock().unwrap_or_else(|e| e.into_inner());
    // fork: the child inherits the parent's state but must call C_Initialize itself
    if g.as_ref().is_some_and(|m| m.pid != std::process::id()) {
        *g = None;
    }
    g
}

/// Runs `f` on the initialized module.
pub(crate) fn with<R>(f: impl FnOnce(&mut Module) -> Result<R, CK_RV>) -> Result<R, CK_RV> {
    let mut g = lock();
    let m = g.as_mut().ok_or(CKR_CRYPTOKI_NOT_INITIALIZED)?;
    f(m)
}

/// How old the slot facts may be before GetSlotInfo / GetTokenInfo ask the agent again.
pub(crate) const FRESH: Duration = Duration::from_secs(1);

impl Module {
    pub fn new(socket: PathBuf) -> Module {
        Module {
            pid: std::process::id(),
            socket,
            slots: Vec::new(),
            sessions: HashMap::new(),
            next_session: 1,
            handles: HashMap::new(),
            next_object: 1,
            session_objects: Vec::new(),
            refreshed: None,
            protected_auth: false,
        }
    }

    pub fn slot(&self, id: CK_SLOT_ID) -> Result<&Slot, CK_RV> {
        self.slots
            .iter()
            .find(|s| s.id == id)
            .ok_or(CKR_SLOT_ID_INVALID)
    }

    pub fn slot_mut(&mut self, id: CK_SLOT_ID) -> Result<&mut Slot, CK_RV> {
        self.slots
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or(CKR_SLOT_ID_INVALID)
    }

    pub fn session(&mut self, h: CK_SESSION_HANDLE) -> Result<&mut Session, CK_RV> {
        self.sessions.get_mut(&h).ok_or(CKR_SESSION_HANDLE_INVALID)
    }

    /// Merges the agent's tokens (None: no agent answered) into the slots. A slot keeps
    /// its id while its token is known by serial or label; tokens that went away, and
    /// every token while no agent answers, are absent.
    pub fn merge_tokens(&mut self, tokens: Option<&[TokenStatus]>) {
        self.refreshed = Some(Instant::now());
        let Some(tokens) = tokens else {
            for s in &mut self.slots {
                s.present = false;
            }
            if self.slots.is_empty() {
                self.slots.push(Slot {
                    id: 1,
                    label: "tokenmail (no agent)".into(),
                    name: String::new(),
                    serial: String::new(),
                    model: String::new(),
                    backend: String::new(),
                    present: false,
                    placeholder: true,
                    logged_in: false,
                    objects: Vec::new(),
                    listed: None,
                });
            }
            self.drop_absent();
            return;
        };
        let mut seen = Vec::new();
        for t in tokens {
            let idx = self
                .slots
                .iter()
                .position(|s| !s.placeholder && !t.serial.is_empty() && s.serial == t.serial)
                .or_else(|| {
                    self.slots
                        .iter()
                        .position(|s| !s.placeholder && s.label == t.label)
                })
                .or_else(|| self.slots.iter().position(|s| s.placeholder));
            let idx = match idx {
                Some(i) => i,
                None => {
                    let id = self.slots.iter().map(|s| s.id).max().unwrap_or(0) + 1;
                    self.slots.push(Slot {
                        id,
                        label: String::new(),
                        name: String::new(),
                        serial: String::new(),
                        model: String::new(),
                        backend: String::new(),
                        present: false,
                        placeholder: false,
                        logged_in: false,
                        objects: Vec::new(),
                        listed: None,
                    });
                    self.slots.len() - 1
                }
            };
            let s = &mut self.slots[idx];
            s.placeholder = false;
            s.label = t.label.clone();
            s.name = if t.name.is_empty() {
                t.label.clone()
            } else {
                t.name.clone()
            };
            s.serial = t.serial.clone();
            s.model = t.model.clone();
            s.backend = t.backend.clone();
            s.present = t.present;
            seen.push(idx);
        }
        for (i, s) in self.slots.iter_mut().enumerate() {
            if !seen.contains(&i) && !s.placeholder {
                s.present = false;
            }
        }
        self.drop_absent();
    }

    /// Sessions on a slot whose token is gone are closed, and its login forgotten.
    fn drop_absent(&mut self) {
        let absent: Vec<CK_SLOT_ID> = self
            .slots
            .iter()
            .filter(|s| !s.present)
            .map(|s| s.id)
            .collect();
        for s in self.slots.iter_mut().filter(|s| !s.present) {
            s.logged_in = false;
            s.objects.clear();
            s.listed = None;
        }
        let gone: Vec<CK_SESSION_HANDLE> = self
            .sessions
            .iter()
            .filter(|(_, s)| absent.contains(&s.slot))
            .map(|(h, _)| *h)
            .collect();
        for h in gone {
            self.close_session(h);
        }
    }

    /// Replaces the token objects of `slot` with those of the listed keys that belong to
    /// it: keys whose token name is the slot's (the agent's name for it), or all keys when
    /// the agent has one token.
    pub fn merge_keys(&mut self, slot: CK_SLOT_ID, keys: &[KeyInfo]) -> Result<(), CK_RV> {
        let single = self.slots.iter().filter(|s| !s.placeholder).count() == 1;
        let s = self.slot(slot)?;
        let (name, uid) = (s.name.clone(), s.uid());
        let mut objs = Vec::new();
        let mut cas: Vec<Vec<u8>> = Vec::new();
        for k in keys.iter().filter(|k| single || k.token == name) {
            objs.extend(objects::key_objects(&uid, k));
            for c in &k.chain {
                if !cas.contains(&c.0) {
                    cas.push(c.0.clone());
                }
            }
        }
        objs.extend(cas.iter().map(|c| objects::ca_object(&uid, c)));
        for o in &mut objs {
            o.handle = self.handle_for(&o.uid);
        }
        self.slot_mut(slot)?.objects = objs;
        Ok(())
    }

    fn handle_for(&mut self, uid: &str) -> CK_OBJECT_HANDLE {
        if let Some(h) = self.handles.get(uid) {
            return *h;
        }
        let h = self.next_object;
        self.next_object += 1;
        self.handles.insert(uid.to_string(), h);
        h
    }

    /// A new session object owned by `session`.
    pub fn add_session_object(
        &mut self,
        session: CK_SESSION_HANDLE,
        mut o: Object,
    ) -> CK_OBJECT_HANDLE {
        let h = self.next_object;
        self.next_object += 1;
        o.handle = h;
        self.session_objects.push((session, o));
        h
    }

    /// The objects visible in `session`: the slot's token objects (private ones only
    /// after a login) and the session objects.
    pub fn visible(&mut self, session: CK_SESSION_HANDLE) -> Result<Vec<&Object>, CK_RV> {
        let slot = self.session(session)?.slot;
        let owners: Vec<CK_SESSION_HANDLE> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.slot == slot)
            .map(|(h, _)| *h)
            .collect();
        let s = self.slot(slot)?;
        let logged_in = s.logged_in;
        let mut out: Vec<&Object> = s
            .objects
            .iter()
            .filter(|o| logged_in || !o.private)
            .collect();
        out.extend(
            self.session_objects
                .iter()
                .filter(|(owner, _)| owners.contains(owner))
                .map(|(_, o)| o),
        );
        Ok(out)
    }

    /// The object `h` as seen from `session`.
    pub fn object(
        &mut self,
        session: CK_SESSION_HANDLE,
        h: CK_OBJECT_HANDLE,
    ) -> Result<Object, CK_RV> {
        self.visible(session)?
            .into_iter()
            .find(|o| o.handle == h)
            .cloned()
            .ok_or(CKR_OBJECT_HANDLE_INVALID)
    }

    pub fn open_session(&mut self, slot: CK_SLOT_ID, rw: bool) -> CK_SESSION_HANDLE {
        let h = self.next_session;
        self.next_session += 1;
        self.sessions.insert(
            h,
            Session {
                slot,
                rw,
                find: None,
                sign: None,
                decrypt: None,
            },
        );
        h
    }

    /// Closes a session and its objects; the last session of a slot ends its login.
    pub fn close_session(&mut self, h: CK_SESSION_HANDLE) -> Option<Session> {
        let s = self.sessions.remove(&h)?;
        self.session_objects.retain(|(owner, _)| *owner != h);
        if !self.sessions.values().any(|o| o.slot == s.slot) {
            if let Ok(slot) = self.slot_mut(s.slot) {
                slot.logged_in = false;
            }
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenmail_proto::v1::{Bytes, KeyInfo};

    fn token(label: &str, name: &str, serial: &str) -> TokenStatus {
        TokenStatus {
            label: label.into(),
            name: name.into(),
            serial: serial.into(),
            model: String::new(),
            backend: "pkcs11:/m.so".into(),
            present: true,
            logged_in: false,
            pin_source: "none".into(),
            locked: false,
            pin_warnings: Vec::new(),
        }
    }

    fn key(token: &str, id: &str) -> KeyInfo {
        KeyInfo {
            label: format!("key-{id}"),
            id: id.into(),
            token: token.into(),
            algorithm: "ec-p256".into(),
            usage: vec!["sign".into()],
            certificate: None,
            chain: Vec::new(),
            touch: None,
            pin_policy: None,
            exportable: false,
            public_key: Some(Bytes(vec![0x30, 0x00])),
        }
    }

    /// Two tokens whose configured names are not their labels (configured by serial, or a
    /// named PIV card): each slot gets the keys the agent lists under its name.
    #[test]
    fn keys_go_to_the_slot_of_the_agents_name_for_the_token() {
        let mut m = Module::new(PathBuf::from("/nonexistent"));
        let tokens = [
            token("Work HSM", "serial:0001", "0001"),
            token("PIV", "yubikey", "12345678"),
        ];
        m.merge_tokens(Some(&tokens));
        let keys = [
            key("serial:0001", "01"),
            key("yubikey", "9c"),
            key("yubikey", "9d"),
        ];
        let ids: Vec<CK_SLOT_ID> = m.slots.iter().map(|s| s.id).collect();
        assert_eq!(ids.len(), 2);
        for id in &ids {
            m.merge_keys(*id, &keys).expect("merge");
        }
        let count = |m: &Module, i: usize| m.slots[i].objects.len();
        assert!(
            count(&m, 0) > 0 && count(&m, 1) > 0,
            "both slots have objects"
        );
        assert!(
            count(&m, 1) > count(&m, 0),
            "two keys on the card, one on the HSM"
        );
        // an agent that does not send names: the label is the name
        let mut old = Module::new(PathBuf::from("/nonexistent"));
        old.merge_tokens(Some(&[token("work", "", "1"), token("other", "", "2")]));
        assert_eq!(old.slots[0].name, "work");
    }
}
