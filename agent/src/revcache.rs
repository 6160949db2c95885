//! The agent's revocation source: the cache `tokenmail verify` fills (`[trust] crl_cache`),
//! read only. The agent never goes to the network while it holds a worker; a CRL or OCSP
//! answer the CLI fetched before is used while it is current (and checked in full, as any
//! CRL or answer is).

use std::path::PathBuf;
use std::time::SystemTime;

use tokenmail_smime::ocsp::OcspQuery;
use tokenmail_smime::revcache;
use tokenmail_smime::revocation::RevocationFetcher;

/// Reads current entries of the revocation cache; never fetches.
#[derive(Debug)]
pub struct CacheOnly {
    dir: PathBuf,
}

impl CacheOnly {
    /// The cache at `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn read(&self, kind: &str, key: &str) -> Option<Vec<u8>> {
        revcache::read_entry(
            std::fs::File::open(self.dir.join(revcache::file_name(kind, key))).ok()?,
        )
    }
}

impl RevocationFetcher for CacheOnly {
    fn crl(&self, url: &str) -> Result<Vec<u8>, String> {
        match self.read("crl", url) {
            Some(d) if revcache::crl_is_fresh(&d, url, SystemTime::now()) => Ok(d),
            _ => Err(format!(
                "no current CRL from {url} in the cache (the agent does not fetch; `tokenmail verify` does and fills the cache)"
            )),
        }
    }

    fn ocsp(&self, url: &str, query: &OcspQuery) -> Result<(Vec<u8>, bool), String> {
        match self.read("ocsp", &revcache::ocsp_key(url, query)) {
            Some(d) if revcache::ocsp_is_fresh(&d, query, SystemTime::now()) => Ok((d, true)),
            _ => Err(format!(
                "no current OCSP answer from {url} in the cache (the agent does not fetch; `tokenmail verify` does and fills the cache)"
            )),
        }
    }
}
