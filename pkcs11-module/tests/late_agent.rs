//! An application that loads the module before the agent runs: one empty slot, and the
//! agent's token in that slot once the agent answers (NSS polls the slot list and the slot
//! infos). Alone in its test binary: it sets TOKENMAIL_SOCK before C_Initialize.

// Calling a C ABI: every call is unsafe. Each block passes pointers to live locals.
#![allow(unsafe_code)]

use std::ptr;

use cryptoki_sys::*;

fn table() -> &'static CK_FUNCTION_LIST {
    let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
    // SAFETY: `list` is a valid out-pointer.
    assert_eq!(
        unsafe { tokenmail_pkcs11::C_GetFunctionList(&mut list) },
        CKR_OK
    );
    // SAFETY: the module hands out a pointer to its static table.
    unsafe { &*list }
}

fn slots(present: CK_BBOOL) -> Vec<CK_SLOT_ID> {
    let f = table().C_GetSlotList.expect("C_GetSlotList");
    let mut n: CK_ULONG = 0;
    // SAFETY: a NULL list asks for the count.
    assert_eq!(unsafe { f(present, ptr::null_mut(), &mut n) }, CKR_OK);
    let mut ids = vec![0 as CK_SLOT_ID; n as usize];
    // SAFETY: `ids` holds `n` elements.
    assert_eq!(unsafe { f(present, ids.as_mut_ptr(), &mut n) }, CKR_OK);
    ids.truncate(n as usize);
    ids
}

fn label(slot: CK_SLOT_ID) -> Result<String, CK_RV> {
    let f = table().C_GetTokenInfo.expect("C_GetTokenInfo");
    // SAFETY: CK_TOKEN_INFO is plain data; zero is a valid value of every field.
    let mut info: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    match unsafe { f(slot, &mut info) } {
        CKR_OK => Ok(String::from_utf8_lossy(&info.label).trim_end().to_string()),
        rv => Err(rv),
    }
}

#[test]
fn the_token_appears_when_the_agent_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let later = dir.path().join("agent.sock");
    std::env::set_var("TOKENMAIL_SOCK", &later);
    let init = table().C_Initialize.expect("C_Initialize");
    // SAFETY: NULL arguments are allowed.
    assert_eq!(unsafe { init(ptr::null_mut()) }, CKR_OK);
    assert_eq!(slots(CK_FALSE).len(), 1);
    assert!(slots(CK_TRUE).is_empty());
    assert_eq!(label(1), Err(CKR_TOKEN_NOT_PRESENT));

    // now an agent answers at that path
    tokenmail_pkcs11_tests::fixture_through_module();
    let real = std::env::var_os("TOKENMAIL_SOCK").expect("the fixture's socket");
    std::os::unix::fs::symlink(&real, &later).expect("symlink");
    assert_eq!(slots(CK_TRUE), vec![1]);
    assert_eq!(label(1).as_deref(), Ok("tokenmail-test"));
}
