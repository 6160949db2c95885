//! tokenmail-agent: holds logged-in sessions to hardware tokens and serves their
//! private-key operations on a local socket (protocol: docs/protocol.md).
//!
//! Layers: [`token`] (key stores: PKCS#11), [`service`] (requests → token calls,
//! key selection, error mapping), [`server`] (socket, peer credentials, frames).
#![warn(missing_docs)]

pub mod audit;
pub mod config;
pub mod error;
pub mod harden;
pub mod inline;
pub mod pin;
pub mod revcache;
pub mod server;
pub mod service;
pub mod token;
