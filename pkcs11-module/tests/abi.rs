//! The module's C ABI called directly (through the rlib's `C_GetFunctionList`), against an
//! agent on a provisioned SoftHSM token: the PKCS#11 rules applications rely on — length
//! queries, attribute errors, login-gated private objects, operation state, threads, fork.

// Calling a C ABI: every call is unsafe. Each block passes pointers to live locals.
#![allow(unsafe_code)]

use std::ptr;

use cryptoki_sys::*;

fn table() -> &'static CK_FUNCTION_LIST {
    let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
    // SAFETY: `list` is a valid out-pointer.
    let rv = unsafe { tokenmail_pkcs11::C_GetFunctionList(&mut list) };
    assert_eq!(rv, CKR_OK);
    // SAFETY: the module hands out a pointer to its static table.
    unsafe { &*list }
}

macro_rules! call {
    ($f:ident ( $($a:expr),* )) => {{
        let f = table().$f.expect(stringify!($f));
        // SAFETY: the arguments are live locals or null where PKCS#11 allows it.
        unsafe { f($($a),*) }
    }};
}

fn ul_attr(t: CK_ATTRIBUTE_TYPE, v: &mut CK_ULONG) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: t,
        pValue: v as *mut CK_ULONG as *mut std::ffi::c_void,
        ulValueLen: std::mem::size_of::<CK_ULONG>() as CK_ULONG,
    }
}

/// Initialized module, one slot: (slot, session logged in).
fn setup() -> (CK_SLOT_ID, CK_SESSION_HANDLE) {
    let f = tokenmail_pkcs11_tests::fixture_through_module();
    let rv = call!(C_Initialize(ptr::null_mut()));
    assert!(
        rv == CKR_OK || rv == CKR_CRYPTOKI_ALREADY_INITIALIZED,
        "{rv:#x}"
    );
    let mut n: CK_ULONG = 0;
    assert_eq!(
        call!(C_GetSlotList(CK_TRUE, ptr::null_mut(), &mut n)),
        CKR_OK
    );
    assert_eq!(n, 1);
    let mut slot: CK_SLOT_ID = 0;
    assert_eq!(call!(C_GetSlotList(CK_TRUE, &mut slot, &mut n)), CKR_OK);
    let mut s: CK_SESSION_HANDLE = 0;
    assert_eq!(
        call!(C_OpenSession(
            slot,
            CKF_SERIAL_SESSION,
            ptr::null_mut(),
            None,
            &mut s
        )),
        CKR_OK
    );
    let mut pin = f.pin().into_bytes();
    let rv = call!(C_Login(
        s,
        CKU_USER,
        pin.as_mut_ptr(),
        pin.len() as CK_ULONG
    ));
    assert!(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN, "{rv:#x}");
    (slot, s)
}

fn find(s: CK_SESSION_HANDLE, class: CK_OBJECT_CLASS, id: Option<u8>) -> Vec<CK_OBJECT_HANDLE> {
    let mut class = class;
    let mut id = id.map(|i| [i]);
    let mut t = vec![ul_attr(CKA_CLASS, &mut class)];
    if let Some(id) = id.as_mut() {
        t.push(CK_ATTRIBUTE {
            type_: CKA_ID,
            pValue: id.as_mut_ptr() as *mut std::ffi::c_void,
            ulValueLen: 1,
        });
    }
    assert_eq!(
        call!(C_FindObjectsInit(s, t.as_mut_ptr(), t.len() as CK_ULONG)),
        CKR_OK
    );
    let mut out = [0 as CK_OBJECT_HANDLE; 16];
    let mut n: CK_ULONG = 0;
    assert_eq!(
        call!(C_FindObjects(s, out.as_mut_ptr(), 16, &mut n)),
        CKR_OK
    );
    assert_eq!(call!(C_FindObjectsFinal(s)), CKR_OK);
    out[..n as usize].to_vec()
}

#[test]
fn attributes_follow_the_pkcs11_rules() {
    let (_, s) = setup();
    let keys = find(s, CKO_PRIVATE_KEY, Some(1));
    assert_eq!(keys.len(), 1);
    let mut modulus = [0u8; 8];
    let mut t = [
        CK_ATTRIBUTE {
            type_: CKA_VALUE,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        },
        CK_ATTRIBUTE {
            type_: CKA_MODULUS,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        },
        CK_ATTRIBUTE {
            type_: CKA_APPLICATION,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        },
    ];
    assert_eq!(
        call!(C_GetAttributeValue(s, keys[0], t.as_mut_ptr(), 3)),
        CKR_ATTRIBUTE_SENSITIVE
    );
    assert_eq!(t[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    assert_eq!(t[1].ulValueLen, 256);
    assert_eq!(t[2].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    // too small a buffer
    let mut t = [CK_ATTRIBUTE {
        type_: CKA_MODULUS,
        pValue: modulus.as_mut_ptr() as *mut std::ffi::c_void,
        ulValueLen: 8,
    }];
    assert_eq!(
        call!(C_GetAttributeValue(s, keys[0], t.as_mut_ptr(), 1)),
        CKR_BUFFER_TOO_SMALL
    );
    assert_eq!(t[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    // booleans
    let mut sensitive: CK_BBOOL = 0;
    let mut extractable: CK_BBOOL = 1;
    let mut t = [
        CK_ATTRIBUTE {
            type_: CKA_SENSITIVE,
            pValue: &mut sensitive as *mut u8 as *mut _,
            ulValueLen: 1,
        },
        CK_ATTRIBUTE {
            type_: CKA_EXTRACTABLE,
            pValue: &mut extractable as *mut u8 as *mut _,
            ulValueLen: 1,
        },
    ];
    assert_eq!(
        call!(C_GetAttributeValue(s, keys[0], t.as_mut_ptr(), 2)),
        CKR_OK
    );
    assert_eq!((sensitive, extractable), (CK_TRUE, CK_FALSE));
    // three certificates of the keys and the intermediate from the chain
    assert_eq!(find(s, CKO_CERTIFICATE, None).len(), 4);
    assert_eq!(
        call!(C_GetAttributeValue(s, 999_999, t.as_mut_ptr(), 2)),
        CKR_OBJECT_HANDLE_INVALID
    );
}

#[test]
fn private_keys_need_a_login_and_signing_keeps_its_state() {
    let (slot, logged_in) = setup();
    let mut s: CK_SESSION_HANDLE = 0;
    assert_eq!(
        call!(C_OpenSession(
            slot,
            CKF_SERIAL_SESSION,
            ptr::null_mut(),
            None,
            &mut s
        )),
        CKR_OK
    );
    // login state is the application's: the new session sees the private keys too
    assert_eq!(find(s, CKO_PRIVATE_KEY, None).len(), 3);
    let key = find(s, CKO_PRIVATE_KEY, Some(2))[0];
    let mut mech = CK_MECHANISM {
        mechanism: CKM_ECDSA,
        pParameter: ptr::null_mut(),
        ulParameterLen: 0,
    };
    assert_eq!(call!(C_SignInit(s, &mut mech, key)), CKR_OK);
    assert_eq!(call!(C_SignInit(s, &mut mech, key)), CKR_OPERATION_ACTIVE);
    let mut digest = [7u8; 32];
    let mut len: CK_ULONG = 0;
    assert_eq!(
        call!(C_Sign(
            s,
            digest.as_mut_ptr(),
            32,
            ptr::null_mut(),
            &mut len
        )),
        CKR_OK
    );
    assert_eq!(len, 64);
    let mut sig = [0u8; 64];
    len = 10;
    assert_eq!(
        call!(C_Sign(
            s,
            digest.as_mut_ptr(),
            32,
            sig.as_mut_ptr(),
            &mut len
        )),
        CKR_BUFFER_TOO_SMALL
    );
    len = 64;
    assert_eq!(
        call!(C_Sign(
            s,
            digest.as_mut_ptr(),
            32,
            sig.as_mut_ptr(),
            &mut len
        )),
        CKR_OK
    );
    assert_eq!(len, 64);
    assert_ne!(sig, [0u8; 64]);
    assert_eq!(
        call!(C_Sign(
            s,
            digest.as_mut_ptr(),
            32,
            sig.as_mut_ptr(),
            &mut len
        )),
        CKR_OPERATION_NOT_INITIALIZED
    );
    // an RSA mechanism on an EC key
    mech.mechanism = CKM_RSA_PKCS;
    assert_eq!(
        call!(C_SignInit(s, &mut mech, key)),
        CKR_KEY_TYPE_INCONSISTENT
    );
    // not implemented: said so
    assert_eq!(
        call!(C_EncryptInit(s, &mut mech, key)),
        CKR_FUNCTION_NOT_SUPPORTED
    );
    let mut rnd = [0u8; 32];
    assert_eq!(call!(C_GenerateRandom(s, rnd.as_mut_ptr(), 32)), CKR_OK);
    assert_ne!(rnd, [0u8; 32]);
    assert_eq!(call!(C_CloseSession(s)), CKR_OK);
    assert_eq!(call!(C_CloseSession(s)), CKR_SESSION_HANDLE_INVALID);
    let _ = logged_in;
}

#[test]
fn threads_sign_at_once() {
    let (slot, _) = setup();
    let workers: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s: CK_SESSION_HANDLE = 0;
                assert_eq!(
                    call!(C_OpenSession(
                        slot,
                        CKF_SERIAL_SESSION,
                        ptr::null_mut(),
                        None,
                        &mut s
                    )),
                    CKR_OK
                );
                let key = find(s, CKO_PRIVATE_KEY, Some(1))[0];
                let mut mech = CK_MECHANISM {
                    mechanism: CKM_SHA256_RSA_PKCS,
                    pParameter: ptr::null_mut(),
                    ulParameterLen: 0,
                };
                let mut data = [i as u8; 100];
                let mut sig = [0u8; 256];
                let mut len: CK_ULONG = 256;
                assert_eq!(call!(C_SignInit(s, &mut mech, key)), CKR_OK);
                assert_eq!(
                    call!(C_Sign(
                        s,
                        data.as_mut_ptr(),
                        100,
                        sig.as_mut_ptr(),
                        &mut len
                    )),
                    CKR_OK
                );
                assert_eq!(len, 256);
                assert_eq!(call!(C_CloseSession(s)), CKR_OK);
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
}
