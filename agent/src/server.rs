//! The local socket: path rules, permissions, peer credentials, and the per-connection
//! frame loop.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdListener, UnixStream as StdStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokenmail_proto::frame::{Header, HEADER_LEN};
use tokenmail_proto::v1::{ErrorCode, Request, Response};
use tokenmail_proto::{decode_message, encode_message, FrameKind, ProtoError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};
use zeroize::Zeroize;

use crate::service::Service;

/// How long a connection may sit idle between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a peer may take to send the rest of a frame once it started one.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 256;

/// Errors preparing the socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// Another agent answers on the socket.
    #[error(
        "another tokenmail agent is already running on {0}; stop it first, or use --socket PATH"
    )]
    Live(PathBuf),
    /// A non-socket file sits at the path.
    #[error("{0} exists and is not a socket; remove it or choose another --socket")]
    NotSocket(PathBuf),
    /// The directory belongs to someone else.
    #[error("socket directory {0} belongs to another user; choose another --socket")]
    ForeignDir(PathBuf),
    /// I/O.
    #[error("{what} {path}: {source}")]
    Io {
        /// What failed.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// Error.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SocketError + 'a {
    move |source| SocketError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The socket path by the contract: `--socket`, else the client rules.
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    match explicit {
        Some(p) => p.to_path_buf(),
        None => tokenmail_proto::default_socket_path(nix::unistd::getuid().as_raw()),
    }
}

/// Fails when another agent answers on `path` or a non-socket file sits there.
pub fn check_free(path: &Path) -> Result<(), SocketError> {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(SocketError::NotSocket(path.to_path_buf()));
        }
        if StdStream::connect(path).is_ok() {
            return Err(SocketError::Live(path.to_path_buf()));
        }
    }
    Ok(())
}

/// Creates the directory (0700) when missing, refuses a live agent, replaces a stale
/// socket, binds with mode 0600.
///
/// `dedicated`: the directory is the agent's own (the default `…/tokenmail` or
/// `/tmp/tokenmail-$UID`), so an existing one with loose modes is tightened to 0700.
/// A directory named by `--socket` that already exists is never modified (it may be
/// `/tmp` or a home directory); the socket's 0600 mode and the peer-uid check protect it.
pub fn bind(path: &Path, dedicated: bool) -> Result<StdListener, SocketError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let uid = nix::unistd::getuid().as_raw();
    match std::fs::metadata(dir) {
        Ok(m) => {
            if m.uid() != uid && dedicated {
                return Err(SocketError::ForeignDir(dir.to_path_buf()));
            }
            if m.mode() & 0o077 != 0 {
                if dedicated {
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                        .map_err(io_err("cannot restrict", dir))?;
                } else {
                    warn!(
                        "socket directory {} is accessible by other users; the socket is 0600 and other uids are refused, but a private directory is better",
                        dir.display()
                    );
                }
            }
        }
        Err(_) => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("cannot create", dir))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err("cannot restrict", dir))?;
        }
    }
    check_free(path)?;
    if std::fs::symlink_metadata(path).is_ok() {
        info!("replacing stale socket {}", path.display());
        std::fs::remove_file(path).map_err(io_err("cannot remove stale socket", path))?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = StdListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(io_err("cannot bind", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("cannot restrict", path))?;
    Ok(listener)
}

/// Accepts connections until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    svc: Arc<Service>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let my_uid = nix::unistd::getuid().as_raw();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    warn!("too many connections; refusing one");
                    tokio::spawn(async move {
                        let mut stream = stream;
                        let _ = write_response(
                            &mut stream,
                            &Response::error(ErrorCode::Internal, "the agent is busy: too many connections"),
                        )
                        .await;
                    });
                    continue;
                };
                let svc = svc.clone();
                tokio::spawn(async move {
                    connection(stream, svc, my_uid).await;
                    drop(permit);
                });
            }
        }
    }
}

pub(crate) async fn write_response(
    stream: &mut UnixStream,
    resp: &Response,
) -> Result<(), ProtoError> {
    let mut payload = encode_message(resp)?;
    let header = Header::new(FrameKind::Message, payload.len())?;
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
    buf.extend_from_slice(&header.encode());
    buf.extend_from_slice(&payload);
    payload.zeroize();
    let res = stream.write_all(&buf).await;
    buf.zeroize();
    res?;
    Ok(())
}

/// Reads one frame; `Ok(None)` on a clean close between frames.
pub(crate) async fn read_frame(
    stream: &mut UnixStream,
) -> Result<Option<(Header, Vec<u8>)>, ProtoError> {
    let mut h = [0u8; HEADER_LEN];
    // The first byte may take as long as the idle timeout; the rest of the frame must follow promptly.
    let n = match tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut h[..1])).await {
        Err(_) => return Err(ProtoError::BadFrame("idle timeout".into())),
        Ok(r) => r?,
    };
    if n == 0 {
        return Ok(None);
    }
    let rest = async {
        stream.read_exact(&mut h[1..]).await?;
        let header = Header::decode(&h)?;
        let mut payload = vec![0u8; header.len as usize];
        stream.read_exact(&mut payload).await?;
        Ok::<_, ProtoError>((header, payload))
    };
    match tokio::time::timeout(FRAME_TIMEOUT, rest).await {
        Err(_) => Err(ProtoError::BadFrame("frame not completed in time".into())),
        Ok(Err(ProtoError::Io(e))) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err(ProtoError::Truncated)
        }
        Ok(r) => r.map(Some),
    }
}

/// Ends a connection after an error answer: shuts down our side, then drains what the
/// peer still sends (bounded in bytes and time) so it reads our answer rather than a reset.
async fn close_gracefully(mut stream: UnixStream) {
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 8192];
    let mut left: usize = 1 << 20;
    let drain = async {
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

async fn connection(stream: UnixStream, svc: Arc<Service>, my_uid: u32) {
    let mut stream = stream;
    if serve_connection(&mut stream, svc, my_uid).await {
        close_gracefully(stream).await;
    }
}

/// The frame loop; returns true when it ended on an error it answered.
async fn serve_connection(stream: &mut UnixStream, mut svc: Arc<Service>, my_uid: u32) -> bool {
    let peer = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            warn!("cannot read peer credentials, closing: {e}");
            return false;
        }
    };
    if peer.uid() != my_uid {
        warn!(
            peer_uid = peer.uid(),
            peer_pid = ?peer.pid(),
            "refused a connection from another user"
        );
        let _ = write_response(
            stream,
            &Response::error(
                ErrorCode::BadRequest,
                "refused: this agent serves only its own user",
            ),
        )
        .await;
        return true;
    }
    let mut greeted = false;
    loop {
        let (header, mut payload) = match read_frame(stream).await {
            Ok(Some(f)) => f,
            Ok(None) => return false,
            Err(e) => {
                debug!(pid = ?peer.pid(), "closing connection: {e}");
                let code = match e {
                    ProtoError::UnsupportedVersion(..) => ErrorCode::UnsupportedVersion,
                    _ => ErrorCode::BadRequest,
                };
                let _ = write_response(stream, &Response::error(code, e.to_string())).await;
                return true;
            }
        };
        if header.kind != FrameKind::Message {
            let _ = write_response(
                stream,
                &Response::error(ErrorCode::BadRequest, "unexpected data frame"),
            )
            .await;
            return true;
        }
        let req = decode_message::<Request>(&payload);
        // Keep only whether it was a JSON object with an unknown "op" (no secrets kept).
        let unknown_op = req.is_err() && op_is_unknown(&payload);
        payload.zeroize();
        let req = match req {
            Ok(r) => r,
            Err(e) if greeted && unknown_op => {
                // A well-formed request for an operation we do not serve: answer, stay open.
                debug!("unknown operation: {e}");
                let resp = Response::error(
                    ErrorCode::BadRequest,
                    format!(
                        "unknown operation; this agent serves: {}",
                        tokenmail_proto::v1::OPERATIONS.join(", ")
                    ),
                );
                if write_response(stream, &resp).await.is_err() {
                    return false;
                }
                continue;
            }
            Err(e) => {
                debug!("malformed request, closing: {e}");
                let _ = write_response(
                    stream,
                    &Response::error(ErrorCode::BadRequest, e.to_string()),
                )
                .await;
                return true;
            }
        };
        if !greeted && !matches!(req, Request::Hello { .. }) {
            let _ = write_response(
                stream,
                &Response::error(ErrorCode::BadRequest, "the first request must be hello"),
            )
            .await;
            return true;
        }
        if let Request::Hello { client, pin_prompt } = &req {
            debug!(pid = ?peer.pid(), client = %client, pin_prompt, "hello");
            greeted = true;
            if !pin_prompt {
                if let Some(view) = svc.for_client_without_prompt() {
                    svc = Arc::new(view);
                }
            }
        }
        if req.is_stream() {
            // §12: the client's Data frames and End follow; output, End, final message.
            debug!(op = op_name(&req), "stream");
            match crate::stream::serve(stream, svc.clone(), req).await {
                crate::stream::Flow::Continue => continue,
                crate::stream::Flow::Closed => return false,
                crate::stream::Flow::Answered => return true,
            }
        }
        if let Request::WaitToken {
            token,
            timeout_secs,
        } = &req
        {
            match wait_token(stream, &svc, token.clone(), *timeout_secs).await {
                Some(resp) => {
                    if let Err(e) = write_response(stream, &resp).await {
                        debug!("client went away: {e}");
                        return false;
                    }
                    continue;
                }
                None => {
                    debug!("client went away while waiting for a token");
                    return false;
                }
            }
        }
        let op = op_name(&req);
        // Token calls block. Run them on this worker thread (tokio moves the other tasks
        // away) rather than handing each request to the blocking pool: the hand-off cost
        // as much as a software ECDSA signature. A panic in a handler answers `internal`.
        // (hello, and a signature known to be fast, run inline instead: crate::inline.)
        let resp = crate::inline::run(crate::inline::policy(&req), || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| svc.handle(req)))
        })
        .unwrap_or_else(|_| {
            warn!("request handler panicked");
            Response::error(ErrorCode::Internal, "internal error; see the agent's log")
        });
        debug!(op, ok = !matches!(resp, Response::Error(_)), "request done");
        if let Err(e) = write_response(stream, &resp).await {
            debug!("client went away: {e}");
            return false;
        }
    }
}

/// `wait-token` without holding a worker: looks at the tokens every 400 ms on the
/// blocking pool and stops early when the client closes the connection (Ctrl-C).
/// `None` = the client went away.
async fn wait_token(
    stream: &mut UnixStream,
    svc: &Arc<Service>,
    token: Option<String>,
    timeout_secs: u64,
) -> Option<Response> {
    let timeout_secs = timeout_secs.min(crate::service::MAX_WAIT_SECS);
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout_secs);
    let set = {
        let svc = svc.clone();
        match tokio::task::spawn_blocking(move || svc.wait_set(token.as_deref())).await {
            Ok(Ok(set)) => set,
            Ok(Err(resp)) => return Some(resp),
            Err(_) => return Some(Response::error(ErrorCode::Internal, "internal error")),
        }
    };
    loop {
        let look = {
            let set = set.clone();
            tokio::task::spawn_blocking(move || Service::wait_check(&set, timeout_secs, deadline))
        };
        match look.await {
            Ok(Some(resp)) => return Some(resp),
            Ok(None) => {}
            Err(_) => return Some(Response::error(ErrorCode::Internal, "internal error")),
        }
        tokio::select! {
            _ = tokio::time::sleep(crate::service::WAIT_POLL) => {}
            r = stream.readable() => {
                // A client waiting for its answer sends nothing: readable means closed
                // (or a protocol error, which ends the connection too).
                let mut probe = [0u8; 1];
                match r.and_then(|_| stream.try_read(&mut probe)) {
                    Ok(0) => return None,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    _ => return None,
                }
            }
        }
    }
}

fn op_is_unknown(payload: &[u8]) -> bool {
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(serde_json::Value::Object(m)) => m
            .get("op")
            .and_then(|v| v.as_str())
            .is_some_and(|op| !tokenmail_proto::v1::OPERATIONS.contains(&op)),
        _ => false,
    }
}

fn op_name(r: &Request) -> &'static str {
    match r {
        Request::Hello { .. } => "hello",
        Request::Status => "status",
        Request::ListKeys => "list-keys",
        Request::SignDigest { .. } => "sign-digest",
        Request::SignDigestCert { .. } => "sign-digest-cert",
        Request::DecryptKey { .. } => "decrypt-key",
        Request::Derive { .. } => "derive",
        Request::Login { .. } => "login",
        Request::Lock => "lock",
        Request::Sign { .. } => "sign",
        Request::Verify { .. } => "verify",
        Request::Encrypt { .. } => "encrypt",
        Request::Decrypt => "decrypt",
        _ => "other",
    }
}
