//! Fork safety: a child inherits the parent's module state but must call C_Initialize
//! again (PKCS#11 §6.7.7); until it does, the module answers CKR_CRYPTOKI_NOT_INITIALIZED,
//! and afterwards it works with connections of its own. Alone in its test binary: no other
//! test thread can hold the module's lock while it forks.

// fork() and the C ABI are unsafe; the child only calls the module and exits.
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

fn slot_count() -> (CK_RV, CK_ULONG) {
    let mut n: CK_ULONG = 0;
    let f = table().C_GetSlotList.expect("C_GetSlotList");
    // SAFETY: a valid out-pointer; a NULL list asks for the count.
    let rv = unsafe { f(CK_TRUE, ptr::null_mut(), &mut n) };
    (rv, n)
}

#[test]
fn a_forked_child_initializes_again() {
    tokenmail_pkcs11_tests::fixture_through_module();
    let init = table().C_Initialize.expect("C_Initialize");
    // SAFETY: NULL arguments are allowed.
    assert_eq!(unsafe { init(ptr::null_mut()) }, CKR_OK);
    assert_eq!(slot_count(), (CKR_OK, 1));
    // SAFETY: the child runs only the code below and exits.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => {
            let before = slot_count().0;
            // SAFETY: as above.
            let again = unsafe { init(ptr::null_mut()) };
            let after = slot_count();
            let ok =
                before == CKR_CRYPTOKI_NOT_INITIALIZED && again == CKR_OK && after == (CKR_OK, 1);
            std::process::exit(if ok { 0 } else { 1 });
        }
        nix::unistd::ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
            assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            // the parent's state is untouched
            assert_eq!(slot_count(), (CKR_OK, 1));
        }
    }
}
