//! The PKCS#11 entry points. Each one catches panics (none may cross the C ABI), checks
//! its pointers, and works on the shared state in `state`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use cryptoki_sys::*;
use tokenmail_proto::v1::{
    Bytes, DecryptAlgorithm, HashAlgorithm, Pin, Request, Response, SignAlgorithm,
};

use crate::asn1;
use crate::backend;
use crate::objects::{self, KeyKind, KeyUse};
use crate::state::{self, DecryptOp, Module, SignMech, SignOp, FRESH};

/// Runs an entry point: its error as the return value, a panic as CKR_GENERAL_ERROR.
fn guard(f: impl FnOnce() -> Result<(), CK_RV>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(rv)) => rv,
        Err(_) => CKR_GENERAL_ERROR,
    }
}

/// Writes `v` through an out-pointer; NULL is CKR_ARGUMENTS_BAD.
unsafe fn put<T>(p: *mut T, v: T) -> Result<(), CK_RV> {
    if p.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: `p` is non-null and, by the PKCS#11 calling convention, points to a
    // writable `T` owned by the caller for the duration of the call.
    unsafe { p.write_unaligned(v) };
    Ok(())
}

/// Reads a CK_ULONG in-out length.
unsafe fn get_len(p: *const CK_ULONG) -> Result<CK_ULONG, CK_RV> {
    if p.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-null, points to the caller's CK_ULONG.
    Ok(unsafe { p.read_unaligned() })
}

/// The caller's input bytes.
unsafe fn bytes<'a>(p: *const u8, n: CK_ULONG) -> Result<&'a [u8], CK_RV> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: the caller passes `n` readable bytes at `p` (PKCS#11 buffer convention).
    Ok(unsafe { std::slice::from_raw_parts(p, n as usize) })
}

/// A template to read (values copied out).
unsafe fn template_in(
    p: *const CK_ATTRIBUTE,
    n: CK_ULONG,
) -> Result<Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>, CK_RV> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: the caller passes an array of `n` CK_ATTRIBUTEs at `p`.
    let attrs = unsafe { std::slice::from_raw_parts(p, n as usize) };
    attrs
        .iter()
        .map(|a| {
            // SAFETY: each attribute's pValue holds ulValueLen bytes (checked for NULL).
            let v = unsafe { bytes(a.pValue as *const u8, a.ulValueLen) }?;
            Ok((a.type_, v.to_vec()))
        })
        .collect()
}

/// Returns `data` in the caller's buffer by the PKCS#11 rules (§5.2): NULL buffer →
/// length only; too small → CKR_BUFFER_TOO_SMALL with the length.
unsafe fn out_buf(p: *mut u8, len: *mut CK_ULONG, data: &[u8]) -> Result<(), CK_RV> {
    // SAFETY: see get_len/put.
    let have = unsafe { get_len(len) }?;
    let need = data.len() as CK_ULONG;
    // SAFETY: `len` checked non-null above.
    unsafe { put(len, need) }?;
    if p.is_null() {
        return Ok(());
    }
    if have < need {
        return Err(CKR_BUFFER_TOO_SMALL);
    }
    // SAFETY: the caller's buffer holds `have` ≥ `need` writable bytes.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
    Ok(())
}

/// A mechanism's parameter as a `T`.
unsafe fn param<T: Copy>(m: &CK_MECHANISM) -> Result<T, CK_RV> {
    if m.pParameter.is_null() || m.ulParameterLen as usize != std::mem::size_of::<T>() {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    // SAFETY: non-null and exactly the size of a `T`, as the mechanism defines it.
    Ok(unsafe { (m.pParameter as *const T).read_unaligned() })
}

/// The caller's mechanism.
unsafe fn mechanism(p: *const CK_MECHANISM) -> Result<CK_MECHANISM, CK_RV> {
    if p.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-null, points to the caller's CK_MECHANISM.
    Ok(unsafe { p.read_unaligned() })
}

/// `s` blank-padded (or cut at a character boundary) to `N` bytes.
fn pad<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let mut end = s.len().min(N);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&s.as_bytes()[..end]);
    out
}

const VERSION: CK_VERSION = CK_VERSION { major: 0, minor: 1 };

/// The mechanisms of every slot: (type, min key size, max key size, flags). The agent
/// checks the token's own list at use (`mechanism-unsupported`).
const MECHANISMS: &[(CK_MECHANISM_TYPE, CK_ULONG, CK_ULONG, CK_FLAGS)] = &[
    (CKM_RSA_PKCS, 1024, 4096, CKF_HW | CKF_SIGN | CKF_DECRYPT),
    (CKM_SHA256_RSA_PKCS, 1024, 4096, CKF_HW | CKF_SIGN),
    (CKM_SHA384_RSA_PKCS, 1024, 4096, CKF_HW | CKF_SIGN),
    (CKM_SHA512_RSA_PKCS, 1024, 4096, CKF_HW | CKF_SIGN),
    (CKM_RSA_PKCS_PSS, 1024, 4096, CKF_HW | CKF_SIGN),
    (CKM_SHA256_RSA_PKCS_PSS, 1024, 4096, CKF_HW | CKF_SIGN),
    (CKM_SHA384_RSA_PKCS_PSS, 1024, 4096, CKF_HW | CKF_SIGN),
    (CKM_SHA512_RSA_PKCS_PSS, 1024, 4096, CKF_HW | CKF_SIGN),
    (CKM_RSA_PKCS_OAEP, 1024, 4096, CKF_HW | CKF_DECRYPT),
    (CKM_ECDSA, 256, 384, CKF_HW | CKF_SIGN | EC_FLAGS),
    (CKM_ECDSA_SHA256, 256, 384, CKF_HW | CKF_SIGN | EC_FLAGS),
    (CKM_ECDSA_SHA384, 256, 384, CKF_HW | CKF_SIGN | EC_FLAGS),
    (CKM_ECDSA_SHA512, 256, 384, CKF_HW | CKF_SIGN | EC_FLAGS),
    (CKM_ECDH1_DERIVE, 256, 384, CKF_HW | CKF_DERIVE | EC_FLAGS),
];
const EC_FLAGS: CK_FLAGS = CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS;

/// Asks the agent for its tokens when the slot facts are older than `max_age` (or
/// always, with None).
fn refresh_slots(max_age: Option<std::time::Duration>) -> Result<(), CK_RV> {
    let (socket, fresh) = state::with(|m| {
        let fresh = match (m.refreshed, max_age) {
            (Some(t), Some(age)) => t.elapsed() < age,
            _ => false,
        };
        Ok((m.socket.clone(), fresh))
    })?;
    if fresh {
        return Ok(());
    }
    let tokens = backend::tokens(&socket);
    state::with(|m| {
        m.merge_tokens(tokens.as_deref());
        Ok(())
    })
}

/// Lists the keys again for the session's slot when the last listing is older than
/// [`FRESH`] (the objects follow the agent: new certificates, a key removed).
fn refresh_objects(session: CK_SESSION_HANDLE) -> Result<(), CK_RV> {
    let (socket, slot, fresh) = state::with(|m| {
        let slot = m.session(session)?.slot;
        let fresh = m.slot(slot)?.listed.is_some_and(|t| t.elapsed() < FRESH);
        Ok((m.socket.clone(), slot, fresh))
    })?;
    if fresh {
        return Ok(());
    }
    // a failed listing keeps the last one: the token may only need a login
    if let Ok(keys) = backend::keys(&socket) {
        state::with(|m| {
            m.merge_keys(slot, &keys)?;
            m.slot_mut(slot)?.listed = Some(Instant::now());
            Ok(())
        })?;
    }
    Ok(())
}

pub(crate) unsafe extern "C" fn C_Initialize(args: *mut std::os::raw::c_void) -> CK_RV {
    guard(|| {
        if !args.is_null() {
            // SAFETY: a non-null argument is a CK_C_INITIALIZE_ARGS (PKCS#11 §5.4).
            let a = unsafe { (args as *const CK_C_INITIALIZE_ARGS).read_unaligned() };
            if !a.pReserved.is_null() {
                return Err(CKR_ARGUMENTS_BAD);
            }
            let given = [
                a.CreateMutex.is_some(),
                a.DestroyMutex.is_some(),
                a.LockMutex.is_some(),
                a.UnlockMutex.is_some(),
            ];
            if given.iter().any(|g| *g) && !given.iter().all(|g| *g) {
                return Err(CKR_ARGUMENTS_BAD);
            }
            // the module locks with the OS's primitives; it cannot use the caller's
            if given[0] && a.flags & CKF_OS_LOCKING_OK == 0 {
                return Err(CKR_CANT_LOCK);
            }
        }
        let mut g = state::lock();
        if g.is_some() {
            return Err(CKR_CRYPTOKI_ALREADY_INITIALIZED);
        }
        let uid = nix::unistd::getuid().as_raw();
        let mut m = Module::new(tokenmail_proto::default_socket_path(uid));
        // TOKENMAIL_PKCS11_PROTECTED_AUTH=1: applications ask for no PIN; the agent's own
        // PIN handling (PIN file, cache, pinentry) answers (docs/thunderbird.md)
        m.protected_auth = std::env::var("TOKENMAIL_PKCS11_PROTECTED_AUTH")
            .is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"));
        *g = Some(m);
        Ok(())
    })
}

pub(crate) unsafe extern "C" fn C_Finalize(reserved: *mut std::os::raw::c_void) -> CK_RV {
    guard(|| {
        if !reserved.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let mut g = state::lock();
        if g.take().is_none() {
            return Err(CKR_CRYPTOKI_NOT_INITIALIZED);
        }
        Ok(())
    })
}

pub(crate) unsafe extern "C" fn C_GetInfo(info: *mut CK_INFO) -> CK_RV {
    guard(|| {
        state::with(|_| Ok(()))?;
        let i = CK_INFO {
            cryptokiVersion: CK_VERSION {
                major: 2,
                minor: 40,
            },
            manufacturerID: pad("tokenmail"),
            flags: 0,
            libraryDescription: pad("tokenmail agent (forwarding)"),
            libraryVersion: VERSION,
        };
        // SAFETY: see put.
        unsafe { put(info, i) }
    })
}

/// The module's function table.
///
/// # Safety
/// `list` must be NULL or point to storage for one pointer (PKCS#11 §5.2).
#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    guard(|| {
        let table = &crate::table::FUNCTION_LIST as *const CK_FUNCTION_LIST;
        // SAFETY: see put. Callers only read the table; the cast to *mut is the C API's type.
        unsafe { put(list, table as *mut CK_FUNCTION_LIST) }
    })
}

pub(crate) unsafe extern "C" fn C_GetSlotList(
    present: CK_BBOOL,
    list: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        // the length query asks the agent; the second call answers from the same facts
        let never = state::with(|m| Ok(m.refreshed.is_none()))?;
        if list.is_null() || never {
            refresh_slots(None)?;
        }
        let ids: Vec<CK_SLOT_ID> = state::with(|m| {
            Ok(m.slots
                .iter()
                .filter(|s| present == CK_FALSE || s.present)
                .map(|s| s.id)
                .collect())
        })?;
        // SAFETY: see get_len.
        let have = unsafe { get_len(count) }?;
        // SAFETY: see put.
        unsafe { put(count, ids.len() as CK_ULONG) }?;
        if list.is_null() {
            return Ok(());
        }
        if (have as usize) < ids.len() {
            return Err(CKR_BUFFER_TOO_SMALL);
        }
        for (i, id) in ids.iter().enumerate() {
            // SAFETY: the caller's array has `have` ≥ ids.len() elements.
            unsafe { list.add(i).write_unaligned(*id) };
        }
        Ok(())
    })
}

pub(crate) unsafe extern "C" fn C_GetSlotInfo(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO) -> CK_RV {
    guard(|| {
        // NSS polls this for removable tokens: ask the agent at most once per FRESH
        refresh_slots(Some(FRESH))?;
        let i = state::with(|m| {
            let s = m.slot(slot)?;
            let desc = if s.placeholder {
                "tokenmail: no agent answers".to_string()
            } else {
                format!("tokenmail: {}", s.label)
            };
            Ok(CK_SLOT_INFO {
                slotDescription: pad(&desc),
                manufacturerID: pad("tokenmail"),
                flags: CKF_REMOVABLE_DEVICE
                    | CKF_HW_SLOT
                    | if s.present { CKF_TOKEN_PRESENT } else { 0 },
                hardwareVersion: VERSION,
                firmwareVersion: VERSION,
            })
        })?;
        // SAFETY: see put.
        unsafe { put(info, i) }
    })
}

pub(crate) unsafe extern "C" fn C_GetTokenInfo(
    slot: CK_SLOT_ID,
    info: *mut CK_TOKEN_INFO,
) -> CK_RV {
    guard(|| {
        refresh_slots(Some(FRESH))?;
        let i = state::with(|m| {
            let sessions = m.sessions.values().filter(|s| s.slot == slot);
            let (all, rw) = sessions.fold((0, 0), |(a, r), s| (a + 1, r + s.rw as CK_ULONG));
            let protected = m.protected_auth;
            let s = m.slot(slot)?;
            if !s.present {
                return Err(CKR_TOKEN_NOT_PRESENT);
            }
            Ok(CK_TOKEN_INFO {
                label: pad(&s.label),
                manufacturerID: pad("tokenmail"),
                model: pad(&s.model),
                serialNumber: pad(&s.serial),
                flags: CKF_RNG
                    | CKF_LOGIN_REQUIRED
                    | CKF_USER_PIN_INITIALIZED
                    | CKF_TOKEN_INITIALIZED
                    | if protected {
                        CKF_PROTECTED_AUTHENTICATION_PATH
                    } else {
                        0
                    },
                ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
                ulSessionCount: all,
                ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
                ulRwSessionCount: rw,
                ulMaxPinLen: 256,
                ulMinPinLen: 1,
                ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
                ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
                ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
                ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
                hardwareVersion: VERSION,
                firmwareVersion: VERSION,
                utcTime: [b' '; 16],
            })
        })?;
        // SAFETY: see put.
        unsafe { put(info, i) }
    })
}

fn present_slot(m: &Module, slot: CK_SLOT_ID) -> Result<(), CK_RV> {
    if m.slot(slot)?.present {
        Ok(())
    } else {
        Err(CKR_TOKEN_NOT_PRESENT)
    }
}

pub(crate) unsafe extern "C" fn C_GetMechanismList(
    slot: CK_SLOT_ID,
    list: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        state::with(|m| present_slot(m, slot))?;
        // SAFETY: see get_len.
        let have = unsafe { get_len(count) }?;
        // SAFETY: see put.
        unsafe { put(count, MECHANISMS.len() as CK_ULONG) }?;
        if list.is_null() {
            return Ok(());
        }
        if (have as usize) < MECHANISMS.len() {
            return Err(CKR_BUFFER_TOO_SMALL);
        }
        for (i, m) in MECHANISMS.iter().enumerate() {
            // SAFETY: the caller's array has `have` ≥ MECHANISMS.len() elements.
            unsafe { list.add(i).write_unaligned(m.0) };
        }
        Ok(())
    })
}

pub(crate) unsafe extern "C" fn C_GetMechanismInfo(
    slot: CK_SLOT_ID,
    mech: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    guard(|| {
        state::with(|m| present_slot(m, slot))?;
        let (_, min, max, flags) = MECHANISMS
            .iter()
            .find(|m| m.0 == mech)
            .ok_or(CKR_MECHANISM_INVALID)?;
        let i = CK_MECHANISM_INFO {
            ulMinKeySize: *min,
            ulMaxKeySize: *max,
            flags: *flags,
        };
        // SAFETY: see put.
        unsafe { put(info, i) }
    })
}

pub(crate) unsafe extern "C" fn C_OpenSession(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    _app: *mut std::os::raw::c_void,
    _notify: CK_NOTIFY,
    session: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    guard(|| {
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(CKR_SESSION_PARALLEL_NOT_SUPPORTED);
        }
        if session.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let h = state::with(|m| {
            present_slot(m, slot)?;
            Ok(m.open_session(slot, flags & CKF_RW_SESSION != 0))
        })?;
        // SAFETY: see put.
        unsafe { put(session, h) }
    })
}

pub(crate) unsafe extern "C" fn C_CloseSession(session: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| {
        state::with(|m| {
            m.close_session(session)
                .map(|_| ())
                .ok_or(CKR_SESSION_HANDLE_INVALID)
        })
    })
}

pub(crate) unsafe extern "C" fn C_CloseAllSessions(slot: CK_SLOT_ID) -> CK_RV {
    guard(|| {
        state::with(|m| {
            m.slot(slot)?;
            let all: Vec<CK_SESSION_HANDLE> = m
                .sessions
                .iter()
                .filter(|(_, s)| s.slot == slot)
                .map(|(h, _)| *h)
                .collect();
            for h in all {
                m.close_session(h);
            }
            Ok(())
        })
    })
}

pub(crate) unsafe extern "C" fn C_GetSessionInfo(
    session: CK_SESSION_HANDLE,
    info: *mut CK_SESSION_INFO,
) -> CK_RV {
    guard(|| {
        let i = state::with(|m| {
            let (slot, rw) = {
                let s = m.session(session)?;
                (s.slot, s.rw)
            };
            let user = m.slot(slot)?.logged_in;
            Ok(CK_SESSION_INFO {
                slotID: slot,
                state: match (rw, user) {
                    (false, false) => CKS_RO_PUBLIC_SESSION,
                    (true, false) => CKS_RW_PUBLIC_SESSION,
                    (false, true) => CKS_RO_USER_FUNCTIONS,
                    (true, true) => CKS_RW_USER_FUNCTIONS,
                },
                flags: CKF_SERIAL_SESSION | if rw { CKF_RW_SESSION } else { 0 },
                ulDeviceError: 0,
            })
        })?;
        // SAFETY: see put.
        unsafe { put(info, i) }
    })
}

pub(crate) unsafe extern "C" fn C_Login(
    session: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let (socket, slot, label, logged_in) = state::with(|m| {
            let slot = m.session(session)?.slot;
            let s = m.slot(slot)?;
            Ok((m.socket.clone(), slot, s.label.clone(), s.logged_in))
        })?;
        match user {
            CKU_USER if logged_in => return Err(CKR_USER_ALREADY_LOGGED_IN),
            CKU_USER | CKU_CONTEXT_SPECIFIC => {}
            CKU_SO => return Err(CKR_USER_TYPE_INVALID),
            _ => return Err(CKR_USER_TYPE_INVALID),
        }
        // SAFETY: see bytes.
        let raw = unsafe { bytes(pin, len) }?;
        let pin = if raw.is_empty() {
            None
        } else {
            let text = std::str::from_utf8(raw).map_err(|_| CKR_PIN_INVALID)?;
            Some(Pin::new(text.to_string()))
        };
        let mark = || {
            state::with(|m| {
                let s = m.slot_mut(slot)?;
                s.logged_in = true;
                s.listed = None;
                Ok(())
            })
        };
        let Some(pin) = pin else {
            // An empty or NULL PIN (a protected authentication path): the agent's own PIN
            // handling answers. A login it holds already is kept (a `login` would log the
            // token out first); else its unattended source (PIN file, env) is tried; else
            // the operations themselves get the agent's pinentry, or CKR_USER_NOT_LOGGED_IN.
            let held = backend::token(&socket, &label).is_some_and(|t| t.logged_in);
            if !held {
                let req = Request::Login {
                    token: Some(label),
                    pin: None,
                };
                if let Err(e) = backend::call(&socket, &req) {
                    if e.code() != Some(tokenmail_proto::v1::ErrorCode::PinRequired) {
                        return Err(backend::rv(&e));
                    }
                }
            }
            return mark();
        };
        let req = Request::Login {
            token: Some(label),
            pin: Some(pin),
        };
        match backend::call(&socket, &req) {
            Ok(_) => mark(),
            Err(e) => Err(match e.code() {
                Some(tokenmail_proto::v1::ErrorCode::BadRequest) => CKR_PIN_LEN_RANGE,
                _ => backend::rv(&e),
            }),
        }
    })
}

pub(crate) unsafe extern "C" fn C_Logout(session: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| {
        // The agent's `lock` logs every token out for every client: the module only
        // forgets this application's login (private objects are hidden again).
        state::with(|m| {
            let slot = m.session(session)?.slot;
            let s = m.slot_mut(slot)?;
            if !s.logged_in {
                return Err(CKR_USER_NOT_LOGGED_IN);
            }
            s.logged_in = false;
            Ok(())
        })
    })
}

pub(crate) unsafe extern "C" fn C_GetAttributeValue(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let o = state::with(|m| m.object(session, object))?;
        if count > 0 && template.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let mut rv = CKR_OK;
        for i in 0..count as usize {
            // SAFETY: the caller's template has `count` attributes.
            let a = unsafe { &mut *template.add(i) };
            let value = if o.sensitive.contains(&a.type_) {
                if rv == CKR_OK {
                    rv = CKR_ATTRIBUTE_SENSITIVE;
                }
                None
            } else {
                let v = o.get(a.type_);
                if v.is_none() && rv == CKR_OK {
                    rv = CKR_ATTRIBUTE_TYPE_INVALID;
                }
                v
            };
            match value {
                None => a.ulValueLen = CK_UNAVAILABLE_INFORMATION,
                Some(v) if a.pValue.is_null() => a.ulValueLen = v.len() as CK_ULONG,
                Some(v) if (a.ulValueLen as usize) < v.len() => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    if rv == CKR_OK {
                        rv = CKR_BUFFER_TOO_SMALL;
                    }
                }
                Some(v) => {
                    // SAFETY: pValue holds ulValueLen ≥ v.len() writable bytes.
                    unsafe {
                        std::ptr::copy_nonoverlapping(v.as_ptr(), a.pValue as *mut u8, v.len())
                    };
                    a.ulValueLen = v.len() as CK_ULONG;
                }
            }
        }
        if rv == CKR_OK {
            Ok(())
        } else {
            Err(rv)
        }
    })
}

pub(crate) unsafe extern "C" fn C_FindObjectsInit(
    session: CK_SESSION_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: see template_in.
        let tmpl = unsafe { template_in(template, count) }?;
        if state::with(|m| Ok(m.session(session)?.find.is_some()))? {
            return Err(CKR_OPERATION_ACTIVE);
        }
        refresh_objects(session)?;
        state::with(|m| {
            let found: Vec<CK_OBJECT_HANDLE> = m
                .visible(session)?
                .into_iter()
                .filter(|o| o.matches(&tmpl))
                .map(|o| o.handle)
                .collect();
            m.session(session)?.find = Some((found, 0));
            Ok(())
        })
    })
}

pub(crate) unsafe extern "C" fn C_FindObjects(
    session: CK_SESSION_HANDLE,
    out: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        if count.is_null() || (out.is_null() && max > 0) {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let next: Vec<CK_OBJECT_HANDLE> = state::with(|m| {
            let s = m.session(session)?;
            let (found, pos) = s.find.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
            let n = (found.len() - *pos).min(max as usize);
            let next = found[*pos..*pos + n].to_vec();
            *pos += n;
            Ok(next)
        })?;
        for (i, h) in next.iter().enumerate() {
            // SAFETY: the caller's array has `max` ≥ next.len() elements.
            unsafe { out.add(i).write_unaligned(*h) };
        }
        // SAFETY: see put.
        unsafe { put(count, next.len() as CK_ULONG) }
    })
}

pub(crate) unsafe extern "C" fn C_FindObjectsFinal(session: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| {
        state::with(|m| {
            m.session(session)?
                .find
                .take()
                .map(|_| ())
                .ok_or(CKR_OPERATION_NOT_INITIALIZED)
        })
    })
}

pub(crate) unsafe extern "C" fn C_DestroyObject(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        state::with(|m| {
            m.object(session, object)?;
            let before = m.session_objects.len();
            m.session_objects.retain(|(_, o)| o.handle != object);
            if m.session_objects.len() == before {
                // the token's objects belong to the agent
                return Err(CKR_ACTION_PROHIBITED);
            }
            Ok(())
        })
    })
}

/// The private key behind `object`, if the session may use it.
fn key_of(
    m: &mut Module,
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
) -> Result<KeyUse, CK_RV> {
    m.object(session, object)
        .map_err(|_| CKR_KEY_HANDLE_INVALID)?
        .key
        .ok_or(CKR_KEY_TYPE_INCONSISTENT)
}

fn hash_of(mech: CK_MECHANISM_TYPE) -> Option<HashAlgorithm> {
    match mech {
        CKM_SHA_1 => Some(HashAlgorithm::Sha1),
        CKM_SHA256 => Some(HashAlgorithm::Sha256),
        CKM_SHA384 => Some(HashAlgorithm::Sha384),
        CKM_SHA512 => Some(HashAlgorithm::Sha512),
        _ => None,
    }
}

fn mgf_of(hash: HashAlgorithm) -> CK_RSA_PKCS_MGF_TYPE {
    match hash {
        HashAlgorithm::Sha1 => CKG_MGF1_SHA1,
        HashAlgorithm::Sha256 => CKG_MGF1_SHA256,
        HashAlgorithm::Sha384 => CKG_MGF1_SHA384,
        HashAlgorithm::Sha512 => CKG_MGF1_SHA512,
    }
}

/// PSS parameters the agent signs with: MGF1 with the same hash, salt = hash length.
unsafe fn pss_hash(
    m: &CK_MECHANISM,
    expect: Option<HashAlgorithm>,
) -> Result<HashAlgorithm, CK_RV> {
    // SAFETY: see param.
    let p: CK_RSA_PKCS_PSS_PARAMS = unsafe { param(m) }?;
    let hash = hash_of(p.hashAlg)
        .filter(|h| *h != HashAlgorithm::Sha1)
        .ok_or(CKR_MECHANISM_PARAM_INVALID)?;
    if expect.is_some_and(|e| e != hash)
        || p.mgf != mgf_of(hash)
        || p.sLen as usize != hash.digest_len()
    {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    Ok(hash)
}

unsafe fn sign_mech(m: &CK_MECHANISM, kind: KeyKind) -> Result<SignMech, CK_RV> {
    let rsa = matches!(kind, KeyKind::Rsa { .. });
    let (mech, wants_rsa) = match m.mechanism {
        CKM_RSA_PKCS => (SignMech::RsaPkcsDigestInfo, true),
        CKM_SHA256_RSA_PKCS => (SignMech::RsaPkcsHash(HashAlgorithm::Sha256), true),
        CKM_SHA384_RSA_PKCS => (SignMech::RsaPkcsHash(HashAlgorithm::Sha384), true),
        CKM_SHA512_RSA_PKCS => (SignMech::RsaPkcsHash(HashAlgorithm::Sha512), true),
        CKM_RSA_PKCS_PSS => {
            // SAFETY: see param.
            let hash = unsafe { pss_hash(m, None) }?;
            (
                SignMech::RsaPss {
                    hash,
                    prehashed: true,
                },
                true,
            )
        }
        CKM_SHA256_RSA_PKCS_PSS | CKM_SHA384_RSA_PKCS_PSS | CKM_SHA512_RSA_PKCS_PSS => {
            let want = match m.mechanism {
                CKM_SHA256_RSA_PKCS_PSS => HashAlgorithm::Sha256,
                CKM_SHA384_RSA_PKCS_PSS => HashAlgorithm::Sha384,
                _ => HashAlgorithm::Sha512,
            };
            // SAFETY: see param.
            let hash = unsafe { pss_hash(m, Some(want)) }?;
            (
                SignMech::RsaPss {
                    hash,
                    prehashed: false,
                },
                true,
            )
        }
        CKM_ECDSA => (SignMech::Ecdsa { hash: None }, false),
        CKM_ECDSA_SHA256 => (
            SignMech::Ecdsa {
                hash: Some(HashAlgorithm::Sha256),
            },
            false,
        ),
        CKM_ECDSA_SHA384 => (
            SignMech::Ecdsa {
                hash: Some(HashAlgorithm::Sha384),
            },
            false,
        ),
        CKM_ECDSA_SHA512 => (
            SignMech::Ecdsa {
                hash: Some(HashAlgorithm::Sha512),
            },
            false,
        ),
        _ => return Err(CKR_MECHANISM_INVALID),
    };
    if wants_rsa != rsa {
        return Err(CKR_KEY_TYPE_INCONSISTENT);
    }
    Ok(mech)
}

pub(crate) unsafe extern "C" fn C_SignInit(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        // SAFETY: see mechanism.
        let mech = unsafe { mechanism(mech) }?;
        state::with(|m| {
            if m.session(session)?.sign.is_some() {
                return Err(CKR_OPERATION_ACTIVE);
            }
            let key = key_of(m, session, key)?;
            if !key.sign {
                return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
            }
            // SAFETY: the mechanism's parameter is the caller's, read during this call.
            let mech = unsafe { sign_mech(&mech, key.kind) }?;
            m.session(session)?.sign = Some(SignOp {
                key,
                mech,
                data: Vec::new(),
            });
            Ok(())
        })
    })
}

fn signature_len(kind: KeyKind) -> usize {
    match kind {
        KeyKind::Rsa { bytes } => bytes,
        KeyKind::Ec { field } => 2 * field,
    }
}

/// The digest CKM_ECDSA's input stands for, in a length the agent accepts: longer than
/// the field → its leftmost field bytes (as ECDSA itself truncates); shorter than
/// 32/48/64 bytes → zeros in front, which leaves the integer ECDSA signs unchanged.
fn ecdsa_digest(input: &[u8], field: usize) -> (HashAlgorithm, Vec<u8>) {
    let input = &input[..input.len().min(field)];
    let hash = match input.len() {
        0..=32 => HashAlgorithm::Sha256,
        33..=48 => HashAlgorithm::Sha384,
        _ => HashAlgorithm::Sha512,
    };
    let mut d = vec![0u8; hash.digest_len() - input.len()];
    d.extend_from_slice(input);
    (hash, d)
}

fn sign_alg(mech: SignMech, hash: HashAlgorithm) -> Result<SignAlgorithm, CK_RV> {
    use HashAlgorithm::*;
    Ok(match (mech, hash) {
        (SignMech::RsaPkcsDigestInfo | SignMech::RsaPkcsHash(_), Sha256) => {
            SignAlgorithm::RsaPkcs1Sha256
        }
        (SignMech::RsaPkcsDigestInfo | SignMech::RsaPkcsHash(_), Sha384) => {
            SignAlgorithm::RsaPkcs1Sha384
        }
        (SignMech::RsaPkcsDigestInfo | SignMech::RsaPkcsHash(_), Sha512) => {
            SignAlgorithm::RsaPkcs1Sha512
        }
        (SignMech::RsaPss { .. }, Sha256) => SignAlgorithm::RsaPssSha256,
        (SignMech::RsaPss { .. }, Sha384) => SignAlgorithm::RsaPssSha384,
        (SignMech::RsaPss { .. }, Sha512) => SignAlgorithm::RsaPssSha512,
        (SignMech::Ecdsa { .. }, Sha256) => SignAlgorithm::EcdsaSha256,
        (SignMech::Ecdsa { .. }, Sha384) => SignAlgorithm::EcdsaSha384,
        (SignMech::Ecdsa { .. }, Sha512) => SignAlgorithm::EcdsaSha512,
        (_, Sha1) => return Err(CKR_DATA_INVALID),
    })
}

/// Signs `input` through the agent; the signature as PKCS#11 returns it.
fn sign_through_agent(
    socket: &std::path::Path,
    op: &SignOp,
    input: &[u8],
) -> Result<Vec<u8>, CK_RV> {
    let (hash, digest) = match op.mech {
        SignMech::RsaPkcsDigestInfo => {
            // only DigestInfo of SHA-256/384/512: the agent signs no raw blocks
            let (hash, d) = asn1::parse_digest_info(input).ok_or(CKR_DATA_INVALID)?;
            (hash, d.to_vec())
        }
        SignMech::RsaPkcsHash(h) => (h, asn1::hash(h, input)),
        SignMech::RsaPss {
            hash,
            prehashed: true,
        } => {
            if input.len() != hash.digest_len() {
                return Err(CKR_DATA_LEN_RANGE);
            }
            (hash, input.to_vec())
        }
        SignMech::RsaPss {
            hash,
            prehashed: false,
        } => (hash, asn1::hash(hash, input)),
        SignMech::Ecdsa { hash: Some(h) } => (h, asn1::hash(h, input)),
        SignMech::Ecdsa { hash: None } => match op.key.kind {
            KeyKind::Ec { field } => ecdsa_digest(input, field),
            KeyKind::Rsa { .. } => return Err(CKR_KEY_TYPE_INCONSISTENT),
        },
    };
    let req = Request::SignDigest {
        key: op.key.name.clone(),
        algorithm: sign_alg(op.mech, hash)?,
        digest: Bytes(digest),
    };
    let sig = match backend::call(socket, &req) {
        Ok(Response::Signature { signature, .. }) => signature.0,
        Ok(_) => return Err(CKR_DEVICE_ERROR),
        Err(e) => return Err(backend::rv(&e)),
    };
    match op.key.kind {
        KeyKind::Rsa { .. } => Ok(sig),
        KeyKind::Ec { field } => asn1::ecdsa_raw(&sig, field).ok_or(CKR_DEVICE_ERROR),
    }
}

/// C_Sign and C_SignFinal: `data` completes the input.
unsafe fn finish_sign(
    session: CK_SESSION_HANDLE,
    data: &[u8],
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> Result<(), CK_RV> {
    let (socket, op) = state::with(|m| {
        let socket = m.socket.clone();
        let op = m
            .session(session)?
            .sign
            .clone()
            .ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        Ok((socket, op))
    })?;
    let end = || {
        state::with(|m| {
            m.session(session)?.sign = None;
            Ok(())
        })
    };
    if sig_len.is_null() {
        end()?;
        return Err(CKR_ARGUMENTS_BAD);
    }
    let need = signature_len(op.key.kind) as CK_ULONG;
    // SAFETY: checked non-null above.
    let have = unsafe { get_len(sig_len) }?;
    if sig.is_null() || have < need {
        // a length query (or too small a buffer) leaves the operation active
        // SAFETY: see put.
        unsafe { put(sig_len, need) }?;
        return if sig.is_null() {
            Ok(())
        } else {
            Err(CKR_BUFFER_TOO_SMALL)
        };
    }
    end()?;
    let mut input = op.data.clone();
    input.extend_from_slice(data);
    let out = sign_through_agent(&socket, &op, &input)?;
    // SAFETY: see out_buf.
    unsafe { out_buf(sig, sig_len, &out) }
}

pub(crate) unsafe extern "C" fn C_Sign(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: see bytes.
        let data = unsafe { bytes(data, len) }?;
        // SAFETY: see finish_sign.
        unsafe { finish_sign(session, data, sig, sig_len) }
    })
}

pub(crate) unsafe extern "C" fn C_SignUpdate(
    session: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: see bytes.
        let part = unsafe { bytes(part, len) }?;
        state::with(|m| {
            let op = m
                .session(session)?
                .sign
                .as_mut()
                .ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
            op.data.extend_from_slice(part);
            Ok(())
        })
    })
}

pub(crate) unsafe extern "C" fn C_SignFinal(
    session: CK_SESSION_HANDLE,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: see finish_sign.
    guard(|| unsafe { finish_sign(session, &[], sig, sig_len) })
}

unsafe fn decrypt_alg(m: &CK_MECHANISM) -> Result<DecryptAlgorithm, CK_RV> {
    match m.mechanism {
        CKM_RSA_PKCS => Ok(DecryptAlgorithm::RsaPkcs1),
        CKM_RSA_PKCS_OAEP => {
            // SAFETY: see param.
            let p: CK_RSA_PKCS_OAEP_PARAMS = unsafe { param(m) }?;
            let hash = hash_of(p.hashAlg).ok_or(CKR_MECHANISM_PARAM_INVALID)?;
            // the agent decrypts OAEP with an empty label only
            let label_empty = p.ulSourceDataLen == 0 || p.pSourceData.is_null();
            if p.mgf != mgf_of(hash)
                || (p.source != 0 && p.source != CKZ_DATA_SPECIFIED)
                || !label_empty
            {
                return Err(CKR_MECHANISM_PARAM_INVALID);
            }
            Ok(match hash {
                HashAlgorithm::Sha1 => DecryptAlgorithm::RsaOaepSha1,
                HashAlgorithm::Sha256 => DecryptAlgorithm::RsaOaepSha256,
                HashAlgorithm::Sha384 => DecryptAlgorithm::RsaOaepSha384,
                HashAlgorithm::Sha512 => DecryptAlgorithm::RsaOaepSha512,
            })
        }
        _ => Err(CKR_MECHANISM_INVALID),
    }
}

pub(crate) unsafe extern "C" fn C_DecryptInit(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        // SAFETY: see mechanism.
        let mech = unsafe { mechanism(mech) }?;
        state::with(|m| {
            if m.session(session)?.decrypt.is_some() {
                return Err(CKR_OPERATION_ACTIVE);
            }
            let key = key_of(m, session, key)?;
            // SAFETY: the mechanism's parameter is the caller's, read during this call.
            let alg = unsafe { decrypt_alg(&mech) }?;
            if !matches!(key.kind, KeyKind::Rsa { .. }) {
                return Err(CKR_KEY_TYPE_INCONSISTENT);
            }
            if !key.decrypt {
                return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
            }
            m.session(session)?.decrypt = Some(DecryptOp {
                key,
                alg,
                done: None,
            });
            Ok(())
        })
    })
}

pub(crate) unsafe extern "C" fn C_Decrypt(
    session: CK_SESSION_HANDLE,
    enc: *mut CK_BYTE,
    enc_len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: see bytes.
        let enc = unsafe { bytes(enc, enc_len) }?;
        let (socket, op) = state::with(|m| {
            let socket = m.socket.clone();
            let op = m
                .session(session)?
                .decrypt
                .clone()
                .ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
            Ok((socket, op))
        })?;
        let end = || {
            state::with(|m| {
                m.session(session)?.decrypt = None;
                Ok(())
            })
        };
        if out_len.is_null() {
            end()?;
            return Err(CKR_ARGUMENTS_BAD);
        }
        let plain = match op.done {
            Some(p) => p,
            None => {
                if out.is_null() {
                    // length query: at most the modulus
                    // SAFETY: checked non-null above.
                    return unsafe { put(out_len, signature_len(op.key.kind) as CK_ULONG) };
                }
                let req = Request::DecryptKey {
                    key: op.key.name.clone(),
                    algorithm: op.alg,
                    wrapped: Bytes(enc.to_vec()),
                };
                match backend::call(&socket, &req) {
                    Ok(Response::Secret { secret }) => secret.0,
                    Ok(_) => {
                        end()?;
                        return Err(CKR_DEVICE_ERROR);
                    }
                    Err(e) => {
                        end()?;
                        return Err(backend::rv(&e));
                    }
                }
            }
        };
        // SAFETY: see out_buf.
        match unsafe { out_buf(out, out_len, &plain) } {
            Err(CKR_BUFFER_TOO_SMALL) => {
                state::with(|m| {
                    if let Some(d) = m.session(session)?.decrypt.as_mut() {
                        d.done = Some(plain);
                    }
                    Ok(())
                })?;
                Err(CKR_BUFFER_TOO_SMALL)
            }
            Ok(()) if out.is_null() => {
                // a length query after the result is known keeps it
                state::with(|m| {
                    if let Some(d) = m.session(session)?.decrypt.as_mut() {
                        d.done = Some(plain);
                    }
                    Ok(())
                })
            }
            r => {
                end()?;
                r
            }
        }
    })
}

pub(crate) unsafe extern "C" fn C_DeriveKey(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    base: CK_OBJECT_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    new_key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        // SAFETY: see mechanism.
        let mech = unsafe { mechanism(mech) }?;
        if mech.mechanism != CKM_ECDH1_DERIVE {
            return Err(CKR_MECHANISM_INVALID);
        }
        if new_key.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: see param.
        let p: CK_ECDH1_DERIVE_PARAMS = unsafe { param(&mech) }?;
        // the raw shared secret only: a KDF would be the caller's (CKD_NULL)
        if p.kdf != CKD_NULL || p.ulSharedDataLen != 0 {
            return Err(CKR_MECHANISM_PARAM_INVALID);
        }
        // SAFETY: see bytes.
        let public = unsafe { bytes(p.pPublicData, p.ulPublicDataLen) }?;
        let peer = asn1::peer_point(public).to_vec();
        // SAFETY: see template_in.
        let tmpl = unsafe { template_in(template, count) }?;
        let (socket, key) = state::with(|m| Ok((m.socket.clone(), key_of(m, session, base)?)))?;
        if !matches!(key.kind, KeyKind::Ec { .. }) {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        if !key.derive {
            return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
        }
        let req = Request::Derive {
            key: key.name.clone(),
            peer_point: Bytes(peer),
        };
        let secret = match backend::call(&socket, &req) {
            Ok(Response::Secret { secret }) => secret.0,
            Ok(_) => return Err(CKR_DEVICE_ERROR),
            Err(e) => {
                return Err(match e.code() {
                    Some(tokenmail_proto::v1::ErrorCode::BadRequest) => CKR_MECHANISM_PARAM_INVALID,
                    _ => backend::rv(&e),
                })
            }
        };
        // CKA_VALUE_LEN shorter than the secret: its low-order bytes, as NSS does
        let want = tmpl
            .iter()
            .find(|(t, _)| *t == CKA_VALUE_LEN)
            .and_then(|(_, v)| <[u8; std::mem::size_of::<CK_ULONG>()]>::try_from(v.as_slice()).ok())
            .map(|v| CK_ULONG::from_ne_bytes(v) as usize);
        let value: &[u8] = match want {
            Some(n) if n > secret.len() => return Err(CKR_TEMPLATE_INCONSISTENT),
            Some(n) if n > 0 => &secret[secret.len() - n..],
            _ => &secret,
        };
        let h = state::with(|m| {
            let o = objects::secret_object(format!("derived|{session}"), &tmpl, value);
            Ok(m.add_session_object(session, o))
        })?;
        // SAFETY: see put.
        unsafe { put(new_key, h) }
    })
}

pub(crate) unsafe extern "C" fn C_GenerateRandom(
    session: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        state::with(|m| m.session(session).map(|_| ()))?;
        if len == 0 {
            return Ok(());
        }
        if out.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: the caller's buffer holds `len` writable bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(out, len as usize) };
        getrandom::fill(buf).map_err(|_| CKR_FUNCTION_FAILED)
    })
}
