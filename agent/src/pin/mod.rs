//! PINs: the cache and its sources ([`cache`]), the pinentry client that asks the user
//! ([`pinentry`]), and the wrapper that makes any key store ask through it ([`prompt`]).
//!
//! A PIN is never logged, never put in a child's argv or environment, and zeroized when
//! forgotten; see docs/security.md.

pub mod cache;
pub mod pinentry;
pub mod prompt;

pub use cache::{PinSource, PinState};
