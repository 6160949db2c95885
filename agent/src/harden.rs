//! Process hardening at start: no core dumps (a core file would hold PINs and session
//! state) and not dumpable, so other processes of the same user cannot ptrace the agent or
//! read its memory through /proc (docs/security.md).

use nix::sys::resource::{setrlimit, Resource};

/// Disables core dumps and marks the process non-dumpable. Returns a warning for each step
/// that failed (the agent still runs).
pub fn harden() -> Vec<String> {
    let mut warnings = Vec::new();
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        warnings.push(format!("cannot disable core dumps: {e}"));
    }
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        warnings.push(format!("cannot mark the process non-dumpable: {e}"));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_core_dumps_and_not_dumpable() {
        assert!(harden().is_empty());
        assert_eq!(
            nix::sys::resource::getrlimit(Resource::RLIMIT_CORE).expect("getrlimit"),
            (0, 0)
        );
        assert!(!nix::sys::prctl::get_dumpable().expect("prctl"));
    }
}
