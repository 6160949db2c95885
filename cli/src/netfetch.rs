//! Revocation over the network: CRLs from distribution points and OCSP answers, over
//! plain http (CRLs and OCSP responses are signed; RFC 5280 §4.2.1.13 and RFC 6960
//! Appendix A use http), with a maintained client (ureq), deadlines, size caps, at most
//! three redirects (never to another scheme), the proxy from the environment
//! (`http_proxy`, `ALL_PROXY`, `NO_PROXY`), and a disk cache that keeps a CRL or an OCSP
//! answer until its nextUpdate.
//!
//! Cache: `[trust] crl_cache` in the configuration, else `$XDG_CACHE_HOME/tokenmail/crl`
//! (`~/.cache/tokenmail/crl`); one file per URL (CRL) or per responder and certificate
//! (OCSP), named by a SHA-256 of the key, mode 0600 in a 0700 directory. A cached entry is
//! checked in full again when used; the cache only saves the download. A server that could
//! not be reached is not asked again for five minutes ([`DOWN_FOR`]).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokenmail_smime::ocsp::{self, OcspQuery};
use tokenmail_smime::revcache;
use tokenmail_smime::revocation::{Crl, RevocationFetcher};

/// Largest CRL downloaded.
pub const MAX_CRL: u64 = 16 << 20;
/// Whole-request deadline.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Connection deadline.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The http fetcher with its cache.
pub struct HttpFetcher {
    agent: ureq::Agent,
    cache: Option<PathBuf>,
}

impl std::fmt::Debug for HttpFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFetcher")
            .field("cache", &self.cache)
            .finish()
    }
}

/// The default cache directory ([`tokenmail_proto::crl_cache_dir`]).
pub fn default_cache_dir() -> Option<PathBuf> {
    tokenmail_proto::crl_cache_dir()
}

impl HttpFetcher {
    /// A fetcher caching in `cache` (`None`: no cache).
    pub fn new(cache: Option<PathBuf>) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .max_redirects(3)
            .http_status_as_error(true)
            .proxy(ureq::Proxy::try_from_env())
            .user_agent(concat!("tokenmail/", env!("CARGO_PKG_VERSION")))
            .build();
        HttpFetcher {
            agent: config.into(),
            cache,
        }
    }

    fn cache_path(&self, kind: &str, key: &str) -> Option<PathBuf> {
        Some(self.cache.as_ref()?.join(revcache::file_name(kind, key)))
    }

    fn cached(&self, kind: &str, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.cache_path(kind, key)?).ok()
    }

    /// Stores an entry (best effort: a cache that cannot be written is no cache).
    fn store(&self, kind: &str, key: &str, data: &[u8]) {
        let (Some(dir), Some(path)) = (self.cache.as_ref(), self.cache_path(kind, key)) else {
            return;
        };
        use std::os::unix::fs::DirBuilderExt;
        if std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .is_err()
        {
            return;
        }
        let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) else {
            return;
        };
        if tmp.write_all(data).is_ok() {
            let _ = tmp.persist(&path);
        }
    }

    fn get(&self, url: &str, limit: u64) -> Result<Vec<u8>, String> {
        check_url(url)?;
        self.not_known_down(url)?;
        let mut resp = self
            .agent
            .get(url)
            .call()
            .map_err(|e| self.failed(url, e))?;
        resp.body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| self.failed(url, e))
    }

    /// A server that could not be reached is not asked again for [`DOWN_FOR`]: a
    /// blackholed responder would otherwise cost every verification (every `git log`
    /// line) its full deadline. Kept in the cache directory, per scheme and host.
    fn not_known_down(&self, url: &str) -> Result<(), String> {
        let Some(path) = self.cache_path("down", server_of(url)) else {
            return Ok(());
        };
        let Ok(meta) = std::fs::metadata(&path) else {
            return Ok(());
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or(DOWN_FOR);
        if age >= DOWN_FOR {
            let _ = std::fs::remove_file(&path);
            return Ok(());
        }
        let why = std::fs::read_to_string(&path).unwrap_or_default();
        Err(format!(
            "{} was unreachable {} s ago ({why}); not asked again for {} s",
            server_of(url),
            age.as_secs(),
            (DOWN_FOR - age).as_secs()
        ))
    }

    /// Describes a failure; a server that cannot be reached is remembered as down.
    fn failed(&self, url: &str, e: ureq::Error) -> String {
        let down = matches!(
            e,
            ureq::Error::Timeout(_)
                | ureq::Error::Io(_)
                | ureq::Error::HostNotFound
                | ureq::Error::ConnectionFailed
        );
        let why = describe(e);
        if down {
            self.store("down", server_of(url), why.as_bytes());
        }
        why
    }
}

/// How long a server that could not be reached is left alone.
pub const DOWN_FOR: Duration = Duration::from_secs(300);

/// `http://host:port` of a URL.
fn server_of(url: &str) -> &str {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let end = rest.find('/').map(|i| i + 7).unwrap_or(url.len());
    &url[..end.min(url.len())]
}

fn check_url(url: &str) -> Result<(), String> {
    if !url.starts_with("http://") {
        return Err("only http:// URLs are fetched (CRLs and OCSP answers are signed)".into());
    }
    Ok(())
}

fn describe(e: ureq::Error) -> String {
    match e {
        ureq::Error::StatusCode(c) => format!("the server answered HTTP {c}"),
        ureq::Error::Timeout(_) => format!("no answer within {} s", TIMEOUT.as_secs()),
        ureq::Error::BodyExceedsLimit(n) => format!("the answer is larger than {n} bytes"),
        ureq::Error::Io(e) => format!("cannot reach the server ({e})"),
        ureq::Error::HostNotFound => "the host name does not resolve".into(),
        ureq::Error::ConnectionFailed => "the connection failed".into(),
        other => other.to_string(),
    }
}

impl RevocationFetcher for HttpFetcher {
    fn crl(&self, url: &str) -> Result<Vec<u8>, String> {
        if let Some(data) = self.cached("crl", url) {
            if revcache::crl_is_fresh(&data, url, SystemTime::now()) {
                return Ok(data);
            }
        }
        let data = self.get(url, MAX_CRL)?;
        // only what parses is kept
        if Crl::from_pem_or_der(&data, url).is_ok() {
            self.store("crl", url, &data);
        }
        Ok(data)
    }

    fn ocsp(&self, url: &str, query: &OcspQuery) -> Result<(Vec<u8>, bool), String> {
        check_url(url)?;
        let key = revcache::ocsp_key(url, query);
        if let Some(data) = self.cached("ocsp", &key) {
            if revcache::ocsp_is_fresh(&data, query, SystemTime::now()) {
                return Ok((data, true));
            }
        }
        self.not_known_down(url)?;
        let mut resp = self
            .agent
            .post(url)
            .header("Content-Type", "application/ocsp-request")
            .send(&query.der[..])
            .map_err(|e| self.failed(url, e))?;
        let data = resp
            .body_mut()
            .with_config()
            .limit(ocsp::MAX_RESPONSE as u64)
            .read_to_vec()
            .map_err(|e| self.failed(url, e))?;
        if ocsp::next_update(&data, query).is_some() {
            self.store("ocsp", &key, &data);
        }
        Ok((data, false))
    }
}

/// A time-stamping authority over http (`sign --timestamp URL`): the request is POSTed
/// as `application/timestamp-query`, with the same deadlines, redirect rule and proxy as
/// revocation fetching, and at most [`tsp::MAX_RESPONSE`] bytes read. No cache, and no
/// "known down" memory: a timestamp is asked for once per signature, and failing is loud.
pub struct HttpTsa {
    agent: ureq::Agent,
    url: String,
}

impl std::fmt::Debug for HttpTsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTsa").field("url", &self.url).finish()
    }
}

impl HttpTsa {
    /// The TSA at `url` (http:// only: the token is signed, and no TLS stack is linked).
    pub fn new(url: &str) -> Result<Self, String> {
        if !url.starts_with("http://") {
            return Err(format!(
                "--timestamp {url}: only http:// time-stamping authorities are supported (the token is signed; RFC 3161 §3.4)"
            ));
        }
        Ok(HttpTsa {
            agent: HttpFetcher::new(None).agent,
            url: url.to_string(),
        })
    }
}

impl tokenmail_smime::tsp::TsaTransport for HttpTsa {
    fn post(&self, request: &[u8]) -> Result<Vec<u8>, String> {
        let mut resp = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/timestamp-query")
            .send(request)
            .map_err(describe)?;
        resp.body_mut()
            .with_config()
            .limit(tokenmail_smime::tsp::MAX_RESPONSE as u64)
            .read_to_vec()
            .map_err(describe)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_server_of_a_url() {
        assert_eq!(
            super::server_of("http://127.0.0.1:1/ocsp"),
            "http://127.0.0.1:1"
        );
        assert_eq!(
            super::server_of("http://ca.example/crl/a.crl"),
            "http://ca.example"
        );
        assert_eq!(super::server_of("http://ca.example"), "http://ca.example");
    }
}
