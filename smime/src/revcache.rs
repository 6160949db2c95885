//! The layout of the revocation cache (`[trust] crl_cache`), shared by the CLI, which fills
//! it over http, and the agent, which only reads it (it never goes to the network while it
//! holds a worker). Sans I/O: names and freshness; the callers read and write the files.

use sha2::{Digest, Sha256};
use std::time::SystemTime;

use crate::ocsp::OcspQuery;
use crate::revocation::Crl;

/// Largest cache entry read, and the CLI's download limit for a CRL (an OCSP answer is
/// smaller): a longer file is not an entry the CLI wrote.
pub const MAX_ENTRY: u64 = 16 << 20;

/// Reads one cache entry from `r`, at most [`MAX_ENTRY`] bytes (what is cut off then fails
/// to parse, and the entry is not current).
pub fn read_entry(r: impl std::io::Read) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut data = Vec::new();
    r.take(MAX_ENTRY).read_to_end(&mut data).ok()?;
    Some(data)
}

/// The file name of a cache entry: `kind` is `crl` (keyed by the distribution point URL) or
/// `ocsp` (keyed by [`ocsp_key`]).
pub fn file_name(kind: &str, key: &str) -> String {
    let h = Sha256::digest(key.as_bytes());
    let name: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{name}.{kind}")
}

/// The cache key of an OCSP answer: the responder and the certificate asked about.
pub fn ocsp_key(url: &str, query: &OcspQuery) -> String {
    format!("{url}\n{}", query.cache_key)
}

/// Whether a cached CRL file (DER or PEM, from `url`) is still current at `now`: every CRL
/// in it parses and has a nextUpdate after `now`. (It is checked in full again when used.)
pub fn crl_is_fresh(data: &[u8], url: &str, now: SystemTime) -> bool {
    Crl::from_pem_or_der(data, url).ok().is_some_and(|crls| {
        crls.iter()
            .all(|c| c.next_update().is_some_and(|n| n > now))
    })
}

/// Whether a cached OCSP answer for `query` is still current at `now`.
pub fn ocsp_is_fresh(data: &[u8], query: &OcspQuery, now: SystemTime) -> bool {
    crate::ocsp::next_update(data, query).is_some_and(|n| n > now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable() {
        // the CLI and the agent, and an older tokenmail, must agree on them
        assert_eq!(
            file_name("crl", "http://127.0.0.1:9/crl/int.crl"),
            file_name("crl", "http://127.0.0.1:9/crl/int.crl")
        );
        assert_ne!(file_name("crl", "a"), file_name("ocsp", "a"));
        assert_eq!(file_name("crl", "").len(), 32 + 4);
    }
}
