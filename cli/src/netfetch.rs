//! Revocation over the network: CRLs from distribution points and OCSP answers, over
//! plain http (CRLs and OCSP responses are signed; RFC 5280 §4.2.1.13 and RFC 6960
//! Appendix A use http), with a maintained client (ureq), one deadline for the whole
//! request ([`TIMEOUT`], redirects included), size caps (an announced length over the cap
//! is refused before the body is read), at most [`MAX_REDIRECTS`] redirects (http:// only:
//! never to https://, file:// or another scheme), the proxy from the environment, and a
//! disk cache that keeps a CRL or an OCSP answer until its nextUpdate.
//!
//! Proxy: `http_proxy` (else `HTTP_PROXY`, `all_proxy`, `ALL_PROXY`; an http:// proxy),
//! except for the hosts of `no_proxy` (else `NO_PROXY`: names with their subdomains, IP
//! addresses, networks as `10.0.0.0/8`, optional `:port`, `*`). The request goes to the
//! proxy in absolute form (`GET http://host/path`), not through a CONNECT tunnel, which
//! proxies commonly allow to port 443 only (ureq 3 tunnels every request, so proxied
//! requests are made here).
//!
//! Cache: `[trust] crl_cache` in the configuration, else `$XDG_CACHE_HOME/tokenmail/crl`
//! (`~/.cache/tokenmail/crl`); one file per URL (CRL) or per responder and certificate
//! (OCSP), named by a SHA-256 of the key, mode 0600 in a 0700 directory. A cached entry is
//! checked in full again when used; the cache only saves the download. A server that could
//! not be reached is not asked again for five minutes ([`DOWN_FOR`]).

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use tokenmail_smime::ocsp::{self, OcspQuery};
use tokenmail_smime::revcache;
use tokenmail_smime::revocation::{Crl, RevocationFetcher};

/// Largest CRL downloaded (what the cache reads back).
pub const MAX_CRL: u64 = revcache::MAX_ENTRY;
/// Whole-request deadline (redirects included).
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Connection deadline.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most redirects followed (each to an http:// URL).
pub const MAX_REDIRECTS: usize = 3;
/// Largest response head read from a proxy.
const MAX_HEAD: usize = 16 << 10;

/// The http fetcher with its cache.
pub struct HttpFetcher {
    /// Direct requests; no proxy, no redirects (both handled here).
    agent: ureq::Agent,
    /// The proxy from the environment (`Err`: one that is set and cannot be used).
    proxy: Option<Result<EnvProxy, String>>,
    cache: Option<PathBuf>,
    timeout: Duration,
    connect_timeout: Duration,
}

impl std::fmt::Debug for HttpFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFetcher")
            .field("cache", &self.cache)
            .field("proxy", &self.proxy)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The default cache directory ([`tokenmail_proto::crl_cache_dir`]).
pub fn default_cache_dir() -> Option<PathBuf> {
    tokenmail_proto::crl_cache_dir()
}

/// Why a request failed: `Down` when the server (or the proxy) could not be reached or did
/// not answer in time (remembered for [`DOWN_FOR`]), `Other` for any other failure.
#[derive(Debug)]
enum Failure {
    Down(String),
    Other(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Other(s)
    }
}

/// One request: GET, or POST with a content type and body.
#[derive(Clone, Copy)]
struct Req<'a> {
    post: Option<(&'a str, &'a [u8])>,
}

/// What one hop answered.
enum Hop {
    Body(Vec<u8>),
    Redirect(String),
}

impl HttpFetcher {
    /// A fetcher caching in `cache` (`None`: no cache), with the proxy from the environment.
    pub fn new(cache: Option<PathBuf>) -> Self {
        Self::with_deadlines(cache, TIMEOUT, CONNECT_TIMEOUT)
    }

    /// [`HttpFetcher::new`] with other deadlines (tests use short ones).
    fn with_deadlines(cache: Option<PathBuf>, timeout: Duration, connect: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(connect))
            .max_redirects(0)
            .http_status_as_error(false)
            .proxy(None)
            .user_agent(USER_AGENT)
            .build();
        HttpFetcher {
            agent: config.into(),
            proxy: EnvProxy::from_env(|v| std::env::var(v).ok()),
            cache,
            timeout,
            connect_timeout: connect,
        }
    }

    fn cache_path(&self, kind: &str, key: &str) -> Option<PathBuf> {
        Some(self.cache.as_ref()?.join(revcache::file_name(kind, key)))
    }

    fn cached(&self, kind: &str, key: &str) -> Option<Vec<u8>> {
        revcache::read_entry(std::fs::File::open(self.cache_path(kind, key)?).ok()?)
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

    /// `req` at `url`, redirects followed (http:// only), within the deadline, at most
    /// `limit` bytes of answer. A server found down is remembered.
    fn fetch(&self, url: &str, req: Req<'_>, limit: u64) -> Result<Vec<u8>, String> {
        check_url(url)?;
        self.not_known_down(url)?;
        self.exchange(url, req, limit).map_err(|f| match f {
            Failure::Down(why) => {
                self.store("down", server_of(url), why.as_bytes());
                why
            }
            Failure::Other(why) => why,
        })
    }

    fn exchange(&self, url: &str, req: Req<'_>, limit: u64) -> Result<Vec<u8>, Failure> {
        let deadline = Instant::now() + self.timeout;
        let mut url = url.to_string();
        // a redirected POST (an OCSP request) is sent again as it was, whatever the code
        for _ in 0..=MAX_REDIRECTS {
            check_url(&url)?;
            let hop = match self.proxy_for(&url)? {
                Some(p) => self.via_proxy(p, &url, req, limit, deadline)?,
                None => self.direct(&url, req, limit, deadline)?,
            };
            match hop {
                Hop::Body(b) => return Ok(b),
                Hop::Redirect(to) => url = redirect_target(&url, &to)?,
            }
        }
        Err(Failure::Other(format!(
            "more than {MAX_REDIRECTS} redirects (last to {url})"
        )))
    }

    /// The proxy for `url`, if one is set and `NO_PROXY` does not exclude the host.
    fn proxy_for(&self, url: &str) -> Result<Option<&EnvProxy>, String> {
        match &self.proxy {
            None => Ok(None),
            Some(Err(e)) => Err(e.clone()),
            Some(Ok(p)) => Ok((!p.excludes(url)).then_some(p)),
        }
    }

    fn timed_out(&self) -> Failure {
        Failure::Down(format!("no answer within {} s", self.timeout.as_secs_f32()))
    }

    /// One direct exchange through ureq.
    fn direct(
        &self,
        url: &str,
        req: Req<'_>,
        limit: u64,
        deadline: Instant,
    ) -> Result<Hop, Failure> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timed_out());
        }
        let sent = match req.post {
            None => self
                .agent
                .get(url)
                .config()
                .timeout_global(Some(left))
                .build()
                .call(),
            Some((ctype, body)) => self
                .agent
                .post(url)
                .config()
                .timeout_global(Some(left))
                .build()
                .header("Content-Type", ctype)
                .send(body),
        };
        let mut resp = sent.map_err(|e| self.ureq_failure(e))?;
        let code = resp.status().as_u16();
        if (300..400).contains(&code) {
            return match resp.headers().get("location").and_then(|l| l.to_str().ok()) {
                Some(l) => Ok(Hop::Redirect(l.to_string())),
                None => Err(format!("the server answered HTTP {code} without a Location").into()),
            };
        }
        if !(200..300).contains(&code) {
            return Err(format!("the server answered HTTP {code}").into());
        }
        if let Some(n) = resp.body().content_length() {
            if n > limit {
                return Err(too_large(limit).into());
            }
        }
        resp.body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map(Hop::Body)
            .map_err(|e| self.ureq_failure(e))
    }

    fn ureq_failure(&self, e: ureq::Error) -> Failure {
        match e {
            ureq::Error::Timeout(_) => self.timed_out(),
            ureq::Error::BodyExceedsLimit(n) => Failure::Other(too_large(n)),
            ureq::Error::Io(e) => Failure::Down(format!("cannot reach the server ({e})")),
            ureq::Error::HostNotFound => Failure::Down("the host name does not resolve".into()),
            ureq::Error::ConnectionFailed => Failure::Down("the connection failed".into()),
            other => Failure::Other(other.to_string()),
        }
    }

    /// One exchange through an http proxy: the request in absolute form (RFC 9112
    /// §3.2.2), HTTP/1.0 so that the answer is not chunked, the connection closed after.
    /// Not a CONNECT tunnel: proxies commonly allow CONNECT to port 443 only.
    fn via_proxy(
        &self,
        p: &EnvProxy,
        url: &str,
        req: Req<'_>,
        limit: u64,
        deadline: Instant,
    ) -> Result<Hop, Failure> {
        use std::io::Read;
        let proxy = format!("the proxy {}:{}", p.host, p.port);
        let left = |f: &Self| {
            let l = deadline.saturating_duration_since(Instant::now());
            if l.is_zero() {
                Err(f.timed_out())
            } else {
                Ok(l)
            }
        };
        let addrs: Vec<std::net::SocketAddr> = (p.host.as_str(), p.port)
            .to_socket_addrs()
            .map_err(|e| Failure::Down(format!("{proxy} does not resolve ({e})")))?
            .collect();
        let mut stream = None;
        let mut last = String::from("no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, left(self)?.min(self.connect_timeout)) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let mut s =
            stream.ok_or_else(|| Failure::Down(format!("cannot reach {proxy} ({last})")))?;
        let io = |f: &Self, e: std::io::Error| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => f.timed_out(),
            _ => Failure::Down(format!("{proxy}: {e}")),
        };
        let mut head = format!(
            "{} {url} HTTP/1.0\r\nHost: {}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n",
            if req.post.is_some() { "POST" } else { "GET" },
            host_port(url)
        );
        if let Some(a) = &p.auth {
            head.push_str(&format!("Proxy-Authorization: Basic {a}\r\n"));
        }
        if let Some((ctype, body)) = req.post {
            head.push_str(&format!(
                "Content-Type: {ctype}\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(req.post.map(|(_, b)| b).unwrap_or_default());
        s.set_write_timeout(Some(left(self)?))
            .map_err(|e| io(self, e))?;
        s.write_all(&out).map_err(|e| io(self, e))?;
        // the head, then the body, each read within what is left of the deadline
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                return Err(format!("{proxy} sent a response head over {MAX_HEAD} bytes").into());
            }
            s.set_read_timeout(Some(left(self)?))
                .map_err(|e| io(self, e))?;
            let n = s.read(&mut chunk).map_err(|e| io(self, e))?;
            if n == 0 {
                return Err(Failure::Down(format!(
                    "{proxy} closed the connection without an answer"
                )));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let text = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap_or_default();
        let code: u16 = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .filter(|_| status.starts_with("HTTP/1."))
            .ok_or_else(|| format!("{proxy} sent no HTTP status line"))?;
        let header = |name: &str| {
            text.split("\r\n").skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        if (300..400).contains(&code) {
            return match header("location") {
                Some(l) => Ok(Hop::Redirect(l)),
                None => Err(format!("the server answered HTTP {code} without a Location").into()),
            };
        }
        if code == 407 {
            return Err(format!("{proxy} asks for credentials (HTTP 407)").into());
        }
        if !(200..300).contains(&code) {
            return Err(format!("the server answered HTTP {code} (through {proxy})").into());
        }
        if header("transfer-encoding").is_some() {
            return Err(format!("{proxy} sent a Transfer-Encoding to an HTTP/1.0 request").into());
        }
        let length = match header("content-length") {
            Some(v) => Some(
                v.parse::<u64>()
                    .map_err(|_| format!("{proxy} sent a bad Content-Length ({v})"))?,
            ),
            None => None,
        };
        if length.is_some_and(|n| n > limit) {
            return Err(too_large(limit).into());
        }
        let mut body = buf.split_off(end);
        let want = length.unwrap_or(limit + 1);
        while (body.len() as u64) < want {
            s.set_read_timeout(Some(left(self)?))
                .map_err(|e| io(self, e))?;
            let n = s.read(&mut chunk).map_err(|e| io(self, e))?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        if body.len() as u64 > limit {
            return Err(too_large(limit).into());
        }
        if length.is_some_and(|n| body.len() as u64 != n) {
            return Err(format!(
                "the answer through {proxy} ended after {} of {} bytes",
                body.len(),
                length.unwrap_or_default()
            )
            .into());
        }
        Ok(Hop::Body(body))
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
}

const USER_AGENT: &str = concat!("tokenmail/", env!("CARGO_PKG_VERSION"));

/// How long a server that could not be reached is left alone.
pub const DOWN_FOR: Duration = Duration::from_secs(300);

fn too_large(limit: u64) -> String {
    format!("the answer is larger than {limit} bytes; not read")
}

/// `http://host:port` of a URL.
fn server_of(url: &str) -> &str {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let end = rest.find('/').map(|i| i + 7).unwrap_or(url.len());
    &url[..end.min(url.len())]
}

/// `host:port` (or `host`) of an http URL, without user information.
fn host_port(url: &str) -> &str {
    let s = server_of(url);
    let s = s.strip_prefix("http://").unwrap_or(s);
    s.rsplit_once('@').map(|(_, h)| h).unwrap_or(s)
}

/// The host of an http URL, lowercase, without brackets, and its port.
fn host_and_port(url: &str) -> (String, u16) {
    let hp = host_port(url);
    let (host, port) = match hp.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, rest)) => (h, rest.strip_prefix(':')),
            None => (v6, None),
        },
        None => match hp.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hp, None),
        },
    };
    let port = port.and_then(|p| p.parse().ok()).unwrap_or(80);
    (host.to_ascii_lowercase(), port)
}

fn check_url(url: &str) -> Result<(), String> {
    if !url.starts_with("http://") {
        return Err("only http:// URLs are fetched (CRLs and OCSP answers are signed)".into());
    }
    // the URL goes into a request line as it is (to a proxy): no spaces or controls
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "{}: a URL with spaces or control characters is not fetched",
            url.escape_debug()
        ));
    }
    Ok(())
}

/// Where a redirect from `from` to `location` goes; only http:// is followed.
fn redirect_target(from: &str, location: &str) -> Result<String, Failure> {
    let l = location.trim();
    let scheme = l
        .find(':')
        .filter(|&i| !l[..i].contains(['/', '?', '#']))
        .map(|i| &l[..i]);
    let to = match scheme {
        Some(s) if s.eq_ignore_ascii_case("http") => format!("http{}", &l[s.len()..]),
        Some(_) => {
            return Err(Failure::Other(format!(
                "redirected to {l}: only http:// redirects are followed"
            )))
        }
        None if l.starts_with("//") => format!("http:{l}"),
        None if l.starts_with('/') => format!("{}{l}", server_of(from)),
        None => {
            let path_end = from.find(['?', '#']).unwrap_or(from.len());
            let base = &from[..path_end];
            let dir = match base.rfind('/') {
                Some(i) if i >= "http://".len() => &base[..=i],
                _ => return Ok(format!("{base}/{l}")),
            };
            format!("{dir}{l}")
        }
    };
    Ok(to)
}

/// An http proxy from the environment, for plain http requests: `http_proxy` (then
/// `HTTP_PROXY`, `all_proxy`, `ALL_PROXY`), with the hosts of `no_proxy` (or `NO_PROXY`)
/// reached directly. `https_proxy` is not used: nothing here is https.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EnvProxy {
    host: String,
    port: u16,
    /// base64 of `user:password` for Basic authentication, when the proxy URL has them.
    auth: Option<String>,
    no_proxy: Vec<NoProxy>,
}

/// One entry of `no_proxy`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum NoProxy {
    /// `*`: no proxy at all.
    All,
    /// A host name and its subdomains (`example.com`, `.example.com`, `*.example.com`),
    /// or an IP address; with a port, only that port.
    Host(String, Option<u16>),
    /// An IP network (`10.0.0.0/8`, `fd00::/8`).
    Net(std::net::IpAddr, u8),
}

impl EnvProxy {
    /// The proxy the variables name (`var` reads one), if any; `Err` when one is set that
    /// cannot be used (another scheme than http, a bad port).
    fn from_env(var: impl Fn(&str) -> Option<String>) -> Option<Result<EnvProxy, String>> {
        let (name, value) = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
            .iter()
            .find_map(|n| Some((*n, var(n).filter(|v| !v.trim().is_empty())?)))?;
        let no_proxy = ["no_proxy", "NO_PROXY"]
            .iter()
            .find_map(|n| var(n))
            .unwrap_or_default();
        Some(Self::parse(&value, &no_proxy).map_err(|e| format!("{name}={value}: {e}")))
    }

    fn parse(value: &str, no_proxy: &str) -> Result<EnvProxy, String> {
        let v = value.trim();
        let rest = match v.split_once("://") {
            Some((s, r)) if s.eq_ignore_ascii_case("http") => r,
            Some((s, _)) => {
                return Err(format!(
                    "{s}:// proxies are not used for CRL, OCSP and time-stamp requests; give an http:// proxy"
                ))
            }
            None => v,
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (auth, hp) = match authority.rsplit_once('@') {
            Some((userinfo, hp)) => {
                use base64::Engine;
                let decoded = percent_decode(userinfo);
                let decoded = if decoded.contains(':') {
                    decoded
                } else {
                    format!("{decoded}:")
                };
                (
                    Some(base64::engine::general_purpose::STANDARD.encode(decoded)),
                    hp,
                )
            }
            None => (None, authority),
        };
        let (host, port) = host_and_port(&format!("http://{hp}/"));
        let explicit_port = match hp.strip_prefix('[') {
            Some(v6) => v6.split_once("]:").map(|(_, p)| p),
            None => hp.rsplit_once(':').map(|(_, p)| p),
        };
        if let Some(p) = explicit_port {
            if p.parse::<u16>().ok().filter(|&p| p != 0).is_none() {
                return Err(format!("bad proxy port {p:?}"));
            }
        }
        if host.is_empty() {
            return Err("no proxy host".into());
        }
        Ok(EnvProxy {
            host,
            port,
            auth,
            no_proxy: no_proxy
                .split([',', ' ', '\t'])
                .filter_map(NoProxy::parse)
                .collect(),
        })
    }

    /// `no_proxy` names the host of `url` (or everything).
    fn excludes(&self, url: &str) -> bool {
        let (host, port) = host_and_port(url);
        let ip = host.parse::<std::net::IpAddr>().ok();
        self.no_proxy.iter().any(|n| match n {
            NoProxy::All => true,
            NoProxy::Host(h, p) => {
                p.is_none_or(|p| p == port)
                    && (host == *h
                        || (ip.is_none()
                            && host.len() > h.len()
                            && host.ends_with(h.as_str())
                            && host.as_bytes()[host.len() - h.len() - 1] == b'.'))
            }
            NoProxy::Net(net, bits) => ip.is_some_and(|a| in_network(a, *net, *bits)),
        })
    }
}

impl NoProxy {
    fn parse(entry: &str) -> Option<NoProxy> {
        let e = entry.trim().to_ascii_lowercase();
        if e.is_empty() {
            return None;
        }
        if e == "*" {
            return Some(NoProxy::All);
        }
        if let Some((a, bits)) = e.split_once('/') {
            let a: std::net::IpAddr = a.parse().ok()?;
            let bits: u8 = bits.parse().ok()?;
            let max = if a.is_ipv4() { 32 } else { 128 };
            return (bits <= max).then_some(NoProxy::Net(a, bits));
        }
        let e = e.trim_start_matches("*.").trim_start_matches('.');
        let (h, port) = host_and_port(&format!("http://{e}/"));
        let has_port = match e.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => e.matches(':').count() == 1,
        };
        if h.is_empty() {
            return None;
        }
        // a bare IPv6 address (colons, no brackets) has no port
        if !has_port && e.contains(':') {
            return Some(NoProxy::Host(e.to_string(), None));
        }
        Some(NoProxy::Host(h, has_port.then_some(port)))
    }
}

fn in_network(a: std::net::IpAddr, net: std::net::IpAddr, bits: u8) -> bool {
    use std::net::IpAddr;
    let (a, n, width) = match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u32::from(a) as u128, u32::from(n) as u128, 32u32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128u32),
        _ => return false,
    };
    let shift = width - u32::from(bits);
    if shift >= 128 {
        return true;
    }
    (a >> shift) == (n >> shift)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl RevocationFetcher for HttpFetcher {
    fn crl(&self, url: &str) -> Result<Vec<u8>, String> {
        if let Some(data) = self.cached("crl", url) {
            if revcache::crl_is_fresh(&data, url, SystemTime::now()) {
                return Ok(data);
            }
        }
        let data = self.fetch(url, Req { post: None }, MAX_CRL)?;
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
        let req = Req {
            post: Some(("application/ocsp-request", &query.der[..])),
        };
        let data = self.fetch(url, req, ocsp::MAX_RESPONSE as u64)?;
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
///
/// [`tsp::MAX_RESPONSE`]: tokenmail_smime::tsp::MAX_RESPONSE
pub struct HttpTsa {
    http: HttpFetcher,
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
            http: HttpFetcher::new(None),
            url: url.to_string(),
        })
    }
}

impl tokenmail_smime::tsp::TsaTransport for HttpTsa {
    fn post(&self, request: &[u8]) -> Result<Vec<u8>, String> {
        let req = Req {
            post: Some(("application/timestamp-query", request)),
        };
        self.http
            .fetch(&self.url, req, tokenmail_smime::tsp::MAX_RESPONSE as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

    #[test]
    fn the_server_of_a_url() {
        assert_eq!(server_of("http://127.0.0.1:1/ocsp"), "http://127.0.0.1:1");
        assert_eq!(
            server_of("http://ca.example/crl/a.crl"),
            "http://ca.example"
        );
        assert_eq!(server_of("http://ca.example"), "http://ca.example");
        assert_eq!(
            host_and_port("http://CA.example/x"),
            ("ca.example".into(), 80)
        );
        assert_eq!(host_and_port("http://[::1]:8080/x"), ("::1".into(), 8080));
        assert_eq!(host_and_port("http://u:p@h:81"), ("h".into(), 81));
    }

    /// How the test server answers one connection (given the request head).
    type Answer = Box<dyn FnOnce(&str, TcpStream) + Send>;

    /// Reads one request head (and its Content-Length body) from `s`.
    fn read_request(s: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        let mut b = [0u8; 4096];
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// A loopback server answering `answers.len()` connections in turn, each with what
    /// its function returns for the request head; the heads go to the receiver.
    fn server(answers: Vec<Answer>) -> (u16, mpsc::Receiver<String>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for answer in answers {
                let Ok((mut s, _)) = l.accept() else { return };
                let head = read_request(&mut s);
                let _ = tx.send(head.clone());
                answer(&head, s);
            }
        });
        (port, rx)
    }

    fn reply(status: &str, headers: &str, body: &'static [u8]) -> Answer {
        let status = status.to_string();
        let headers = headers.to_string();
        Box::new(move |_, mut s| {
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
                body.len()
            );
            let _ = s.write_all(body);
        })
    }

    fn fetcher(timeout_ms: u64, proxy: Option<Result<EnvProxy, String>>) -> HttpFetcher {
        let mut f = HttpFetcher::with_deadlines(
            None,
            Duration::from_millis(timeout_ms),
            Duration::from_millis(timeout_ms),
        );
        f.proxy = proxy;
        f
    }

    fn get(f: &HttpFetcher, url: &str, limit: u64) -> Result<Vec<u8>, String> {
        f.fetch(url, Req { post: None }, limit)
    }

    #[test]
    fn a_server_that_never_answers_fails_within_the_deadline() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        thread::spawn(move || {
            // accept, read nothing, answer nothing, until the test is over
            let held: Vec<TcpStream> = l.incoming().take(2).filter_map(|s| s.ok()).collect();
            let _ = done_rx.recv_timeout(Duration::from_secs(10));
            drop(held);
        });
        let url = format!("http://127.0.0.1:{port}/crl/a.crl");
        // directly, then through a "proxy" that never answers
        let proxy = EnvProxy::parse(&format!("http://127.0.0.1:{port}"), "").expect("proxy");
        for f in [fetcher(400, None), fetcher(400, Some(Ok(proxy)))] {
            let t = Instant::now();
            let e = f.crl(&url).expect_err("no answer");
            assert!(e.contains("no answer within 0.4 s"), "{e}");
            assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        }
        let _ = done_tx.send(());
    }

    #[test]
    fn an_answer_over_the_cap_is_refused_without_reading_it() {
        // announced: refused from the Content-Length, before the body
        let (written_tx, written_rx) = mpsc::channel::<u64>();
        let big: Answer = Box::new(move |_, mut s| {
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                1u64 << 30
            );
            let chunk = vec![0u8; 1 << 16];
            let mut n = 0u64;
            while n < 1 << 30 && s.write_all(&chunk).is_ok() {
                n += chunk.len() as u64;
            }
            let _ = written_tx.send(n);
        });
        // not announced (read until close): refused after the cap
        let (written2_tx, written2_rx) = mpsc::channel::<u64>();
        let streamed: Answer = Box::new(move |_, mut s| {
            let _ = write!(s, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = vec![0u8; 1 << 16];
            let mut n = 0u64;
            while n < 1 << 30 && s.write_all(&chunk).is_ok() {
                n += chunk.len() as u64;
            }
            let _ = written2_tx.send(n);
        });
        let (port, _) = server(vec![big, streamed]);
        let f = fetcher(5000, None);
        let url = format!("http://127.0.0.1:{port}/crl/big.crl");
        let e = f.crl(&url).expect_err("too large");
        assert!(e.contains(&format!("larger than {MAX_CRL} bytes")), "{e}");
        let e = get(&f, &url, 100_000).expect_err("too large");
        assert!(e.contains("larger than 100000 bytes"), "{e}");
        for rx in [written_rx, written2_rx] {
            let n = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("server done");
            assert!(n < 1 << 30, "the whole answer was read ({n} bytes)");
        }
    }

    #[test]
    fn redirects_stay_on_http() {
        for to in [
            "https://127.0.0.1/a.crl",
            "file:///etc/passwd",
            "ftp://ca.example/a.crl",
        ] {
            let (port, _) = server(vec![reply(
                "302 Found",
                &format!("Location: {to}\r\n"),
                b"",
            )]);
            let e = get(
                &fetcher(5000, None),
                &format!("http://127.0.0.1:{port}/a.crl"),
                100,
            )
            .expect_err("another scheme");
            assert!(
                e.contains("only http:// redirects are followed") && e.contains(to),
                "{e}"
            );
        }
        // http redirects are followed, relative ones too, at most three
        let (port, rx) = server(vec![
            reply("301 Moved", "Location: /b.crl\r\n", b""),
            reply("307 Temporary", "Location: c.crl\r\n", b""),
            reply("200 OK", "", b"the body"),
        ]);
        let got = get(
            &fetcher(5000, None),
            &format!("http://127.0.0.1:{port}/x/a.crl"),
            100,
        );
        assert_eq!(got.as_deref(), Ok(&b"the body"[..]));
        let paths: Vec<String> = rx
            .try_iter()
            .map(|h| h.lines().next().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "GET /x/a.crl HTTP/1.1",
                "GET /b.crl HTTP/1.1",
                "GET /c.crl HTTP/1.1"
            ]
        );
        // a Location that would put spaces or controls into a request line
        let (port, _) = server(vec![reply("302 Found", "Location: /a b\r\n", b"")]);
        let e = get(
            &fetcher(5000, None),
            &format!("http://127.0.0.1:{port}/a"),
            100,
        )
        .expect_err("space");
        assert!(e.contains("spaces or control characters"), "{e}");
        let e = get(&fetcher(5000, None), "http://ca.example/a b", 100).expect_err("space");
        assert!(e.contains("spaces or control characters"), "{e}");
        let hops = (0..4)
            .map(|_| reply("302 Found", "Location: /again\r\n", b""))
            .collect();
        let (port, _) = server(hops);
        let e = get(
            &fetcher(5000, None),
            &format!("http://127.0.0.1:{port}/a"),
            100,
        )
        .expect_err("too many");
        assert!(e.contains("more than 3 redirects"), "{e}");
    }

    #[test]
    fn the_proxy_gets_the_absolute_form_and_no_proxy_is_honoured() {
        // the proxy sees the absolute URL, the Host and the credentials
        let (proxy_port, proxy_rx) = server(vec![
            reply("200 OK", "", b"crl bytes"),
            reply("200 OK", "", b"ocsp bytes"),
        ]);
        let p = EnvProxy::from_env(|v| {
            (v == "http_proxy").then(|| format!("http://u%40x:p%3A@127.0.0.1:{proxy_port}/"))
        });
        let f = fetcher(5000, p);
        let got = get(&f, "http://ca.example:8080/crl/a.crl", 100);
        assert_eq!(got.as_deref(), Ok(&b"crl bytes"[..]));
        let head = proxy_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("request");
        assert!(
            head.starts_with("GET http://ca.example:8080/crl/a.crl HTTP/1.0\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nHost: ca.example:8080\r\n"), "{head}");
        // base64("u@x:p:")
        assert!(
            head.contains("\r\nProxy-Authorization: Basic dUB4OnA6\r\n"),
            "{head}"
        );
        let got = f.fetch(
            "http://ca.example/ocsp",
            Req {
                post: Some(("application/ocsp-request", b"req")),
            },
            100,
        );
        assert_eq!(got.as_deref(), Ok(&b"ocsp bytes"[..]));
        let head = proxy_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("request");
        assert!(
            head.starts_with("POST http://ca.example/ocsp HTTP/1.0\r\n"),
            "{head}"
        );
        assert!(
            head.contains("Content-Type: application/ocsp-request"),
            "{head}"
        );

        // no_proxy (then NO_PROXY) names 127.0.0.1: asked directly, the proxy sees nothing
        for var in ["no_proxy", "NO_PROXY"] {
            let (direct, direct_rx) = server(vec![reply("200 OK", "", b"direct")]);
            let (proxy_port, proxy_rx) = server(vec![reply("200 OK", "", b"proxied")]);
            let p = EnvProxy::from_env(|v| match v {
                "HTTP_PROXY" => Some(format!("127.0.0.1:{proxy_port}")),
                v if v == var => Some("ca.example, 127.0.0.1".into()),
                _ => None,
            });
            let f = fetcher(5000, p);
            let got = get(&f, &format!("http://127.0.0.1:{direct}/crl/a.crl"), 100);
            assert_eq!(got.as_deref(), Ok(&b"direct"[..]), "{var}");
            let head = direct_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("request");
            assert!(head.starts_with("GET /crl/a.crl HTTP/1.1\r\n"), "{head}");
            assert!(proxy_rx.try_recv().is_err(), "{var}: the proxy was asked");
        }
    }

    #[test]
    fn proxy_settings_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |v: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == v)
                    .map(|(_, x)| x.to_string())
            }
        };
        // nothing set, or only an https proxy: direct
        assert_eq!(EnvProxy::from_env(env(&[])), None);
        assert_eq!(
            EnvProxy::from_env(env(&[("https_proxy", "http://p:3128")])),
            None
        );
        // http_proxy before HTTP_PROXY before all_proxy; port 80 by default
        let p = EnvProxy::from_env(env(&[
            ("ALL_PROXY", "http://all:1"),
            ("HTTP_PROXY", "http://upper:2"),
            ("http_proxy", "proxy.example"),
        ]))
        .expect("set")
        .expect("usable");
        assert_eq!(
            (p.host.as_str(), p.port, p.auth.as_deref()),
            ("proxy.example", 80, None)
        );
        // a SOCKS proxy or a bad port: an error naming the variable, at each request
        let e = EnvProxy::from_env(env(&[("all_proxy", "socks5://p:1080")]))
            .expect("set")
            .expect_err("socks");
        assert!(
            e.starts_with("all_proxy=socks5://p:1080: socks5:// proxies are not used"),
            "{e}"
        );
        let f = fetcher(1000, Some(Err(e)));
        assert!(get(&f, "http://ca.example/a.crl", 10)
            .expect_err("refused")
            .contains("socks5"));
        let e = EnvProxy::parse("http://p:99999", "").expect_err("port");
        assert!(e.contains("bad proxy port"), "{e}");

        let p = EnvProxy::parse(
            "http://p:3128",
            "localhost, .corp.example,*.lan ca.example,10.0.0.0/8,[::1]:8080,fd00::/8,host:81",
        )
        .expect("parses");
        for (url, direct) in [
            ("http://localhost/x", true),
            ("http://LOCALHOST:8000/x", true),
            ("http://crl.corp.example/x", true),
            ("http://corp.example/x", true),
            ("http://notcorp.example/x", false),
            ("http://a.lan/x", true),
            ("http://ca.example/x", true),
            ("http://sub.ca.example/x", true),
            ("http://ca.example.org/x", false),
            ("http://10.1.2.3/x", true),
            ("http://11.1.2.3/x", false),
            ("http://127.0.0.1/x", false),
            ("http://[::1]:8080/x", true),
            ("http://[::1]:8081/x", false),
            ("http://[fd00::5]/x", true),
            ("http://host:81/x", true),
            ("http://host/x", false),
        ] {
            assert_eq!(p.excludes(url), direct, "{url}");
        }
        let all = EnvProxy::parse("p:1", "*").expect("parses");
        assert!(all.excludes("http://anything.example/"));
    }
}
