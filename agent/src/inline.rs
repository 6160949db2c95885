//! Where a `sign-digest` runs: on the connection's worker thread itself, or handed off
//! with `block_in_place`.
//!
//! `block_in_place` gives the worker's scheduler core to another thread for the duration
//! of the call (a futex wake-up and a thread switch per request). For a token that signs
//! in well under a millisecond (SoftHSM, any software token) that hand-off was the largest
//! cost the agent added to a signature: ≈ 35–45 µs of CPU per request, against ≈ 1 µs of
//! JSON and base64 (docs/performance.md, "Agent overhead: sign-digest"). So a
//! `sign-digest`/`sign-digest-cert` runs inline when the previous one with the same key
//! name took less than [`FAST`] and the runtime has at least two workers; otherwise
//! (first use of a name, a smart card, a touch, a PIN prompt) it is handed off as before.
//! `hello`, which never touches a token, always runs inline (one hand-off less per
//! connection: the CLI opens one per command).
//! A call that unexpectedly takes long while inline (a PIN prompt after the PIN cache
//! expired, say) holds one worker for its duration; the others keep serving, and the next
//! request with that name is handed off again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokenmail_proto::v1::Request;

/// A signature that took less than this last time runs inline.
pub const FAST: Duration = Duration::from_millis(2);

/// Key names tracked at most (the table is cleared when full).
const MAX_NAMES: usize = 256;

/// How long the last signature with each key name took.
static LAST: Mutex<Option<HashMap<String, Duration>>> = Mutex::new(None);

/// How a request runs.
#[derive(Debug)]
pub enum Policy {
    /// Never blocks (`hello`): inline.
    Inline,
    /// A signature with this key name: inline when the last one was fast.
    Sign(String),
    /// Anything else: `block_in_place`.
    HandOff,
}

/// The policy for `req`.
pub fn policy(req: &Request) -> Policy {
    match req {
        Request::Hello { .. } => Policy::Inline,
        Request::SignDigest { key, .. } | Request::SignDigestCert { key, .. } => {
            Policy::Sign(key.clone())
        }
        _ => Policy::HandOff,
    }
}

fn was_fast(key: &str) -> bool {
    let last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    last.as_ref()
        .and_then(|m| m.get(key))
        .is_some_and(|d| *d < FAST)
}

fn remember(key: String, took: Duration) {
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let m = last.get_or_insert_with(HashMap::new);
    if m.len() >= MAX_NAMES && !m.contains_key(&key) {
        m.clear();
    }
    m.insert(key, took);
}

fn workers() -> usize {
    tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_workers())
        .unwrap_or(0)
}

/// Runs a request handler that may block: inline for `hello` and for a signature known
/// to be fast (see the module documentation), else with `block_in_place`.
pub fn run<R>(policy: Policy, f: impl FnOnce() -> R) -> R {
    let key = match policy {
        Policy::Inline => return f(),
        Policy::HandOff => return tokio::task::block_in_place(f),
        Policy::Sign(key) => key,
    };
    let inline = was_fast(&key) && workers() >= 2;
    let t = Instant::now();
    let r = if inline {
        f()
    } else {
        tokio::task::block_in_place(f)
    };
    remember(key, t.elapsed());
    r
}
