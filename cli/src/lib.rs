//! The tokenmail command line as a library: the `tokenmail` and `tokenmail-gpgsm` binaries
//! share these modules (key resolution, signing through the agent, verification, output).
//!
//! Never links a token library: private-key operations go to tokenmail-agent over its
//! socket; everything else (CMS, MIME, AES) runs here.

pub mod agentkey;
pub mod audit;
/// Auto-start of the agent (shared with the PKCS#11 module, in tokenmail-proto).
pub use tokenmail_proto::autostart;
pub mod certs;
pub mod decrypt;
pub mod doctor;
pub mod encrypt;
pub mod enrol;
pub mod expiry;
pub mod gpgsm;
pub mod init;
pub mod ldap;
pub mod manual;
pub mod netfetch;
pub mod output;
pub mod piv;
pub mod policy;
pub mod receipt;
pub mod selfcert;
pub mod sendmail;
pub mod sign;
pub mod signcache;
pub mod store;
pub mod term;
pub mod verify;
