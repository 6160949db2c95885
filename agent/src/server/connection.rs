//! One connection: the peer-uid check, the hello, then requests in a loop (stream
//! operations handed to [`super::stream`], `wait-token` without a worker, the rest to the
//! service).

use std::sync::Arc;
use std::time::Duration;

use tokenmail_proto::codec::{self, Deadlines};
use tokenmail_proto::frame::Header;
use tokenmail_proto::v1::{Request, Response};
use tokenmail_proto::{decode_message, FrameKind, ProtoError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tracing::{debug, warn};
use zeroize::Zeroize;

use super::{FRAME_TIMEOUT, IDLE_TIMEOUT};
use crate::error::AgentError;
use crate::service::Service;

const DEADLINES: Deadlines = Deadlines {
    idle: IDLE_TIMEOUT,
    frame: FRAME_TIMEOUT,
};

/// Writes a response frame.
pub(crate) async fn write_response(
    stream: &mut UnixStream,
    resp: &Response,
) -> Result<(), ProtoError> {
    codec::write_message(stream, resp).await
}

/// Reads one frame; `Ok(None)` on a clean close between frames.
pub(crate) async fn read_frame(
    stream: &mut UnixStream,
) -> Result<Option<(Header, Vec<u8>)>, ProtoError> {
    codec::read_frame(stream, DEADLINES).await
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

pub(super) async fn connection(stream: UnixStream, svc: Arc<Service>, my_uid: u32) {
    let mut stream = stream;
    if serve_connection(&mut stream, svc, my_uid).await {
        close_gracefully(stream).await;
    }
}

/// The frame loop; returns true when it ended on an error it answered.
async fn serve_connection(stream: &mut UnixStream, mut svc: Arc<Service>, my_uid: u32) -> bool {
    let Some(pid) = check_peer(stream, my_uid).await else {
        return true;
    };
    let mut greeted = false;
    loop {
        let req = match next_request(stream, greeted).await {
            Next::Request(r) => r,
            Next::Answered => continue,
            Next::Closed => return false,
            Next::Refused => return true,
        };
        if let Request::Hello { client, pin_prompt } = &req {
            debug!(pid = ?pid, client = %client, pin_prompt, "hello");
            greeted = true;
            svc = Arc::new(svc.for_peer(crate::audit::Peer::new(my_uid, pid, client)));
            if !pin_prompt {
                if let Some(view) = svc.for_client_without_prompt(requester(pid, client)) {
                    svc = Arc::new(view);
                }
            }
        }
        let resp = match req {
            // §12: the client's Data frames and End follow; output, End, final message.
            r if r.is_stream() => {
                debug!(op = op_name(&r), "stream");
                match super::stream::serve(stream, svc.clone(), r).await {
                    super::stream::Flow::Continue => continue,
                    super::stream::Flow::Closed => return false,
                    super::stream::Flow::Answered => return true,
                }
            }
            Request::WaitToken {
                token,
                timeout_secs,
            } => match wait_token(stream, &svc, token, timeout_secs).await {
                Some(resp) => resp,
                None => {
                    debug!("client went away while waiting for a token");
                    return false;
                }
            },
            r => handle(&svc, r),
        };
        if let Err(e) = write_response(stream, &resp).await {
            debug!("client went away: {e}");
            return false;
        }
    }
}

/// The peer's pid when it runs as our user; another user is refused (answered).
async fn check_peer(stream: &mut UnixStream, my_uid: u32) -> Option<Option<i32>> {
    let peer = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            warn!("cannot read peer credentials, closing: {e}");
            return None;
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
            &AgentError::bad("refused: this agent serves only its own user").into(),
        )
        .await;
        return None;
    }
    Some(peer.pid())
}

/// Who asks, for the PIN dialog: the peer's program name (from /proc) and pid, else the
/// name the client gave in `hello`.
fn requester(pid: Option<i32>, client: &str) -> Option<String> {
    let comm = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok());
    match (comm, pid) {
        (Some(c), Some(p)) => Some(format!("{} (pid {p})", c.trim())),
        _ if !client.is_empty() => Some(client.chars().take(64).collect()),
        _ => None,
    }
}

/// What the next frame turned out to be.
enum Next {
    /// a request to serve
    Request(Request),
    /// an unknown operation, answered; the connection goes on
    Answered,
    /// the peer went away
    Closed,
    /// a framing or protocol error, answered; the connection ends
    Refused,
}

/// Reads and decodes the next request (the first must be `hello`).
async fn next_request(stream: &mut UnixStream, greeted: bool) -> Next {
    let (header, mut payload) = match read_frame(stream).await {
        Ok(Some(f)) => f,
        Ok(None) => return Next::Closed,
        Err(e) => {
            debug!("closing connection: {e}");
            let _ = write_response(stream, &AgentError::from(e).into()).await;
            return Next::Refused;
        }
    };
    if header.kind != FrameKind::Message {
        let _ = write_response(stream, &AgentError::bad("unexpected data frame").into()).await;
        return Next::Refused;
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
            let resp = AgentError::bad(format!(
                "unknown operation; this agent serves: {}",
                tokenmail_proto::v1::OPERATIONS.join(", ")
            ))
            .into();
            return match write_response(stream, &resp).await {
                Ok(()) => Next::Answered,
                Err(_) => Next::Closed,
            };
        }
        Err(e) => {
            debug!("malformed request, closing: {e}");
            let _ = write_response(stream, &AgentError::bad(e.to_string()).into()).await;
            return Next::Refused;
        }
    };
    if !greeted && !matches!(req, Request::Hello { .. }) {
        let _ = write_response(
            stream,
            &AgentError::bad("the first request must be hello").into(),
        )
        .await;
        return Next::Refused;
    }
    Next::Request(req)
}

/// A request for the service. Token calls block: they run on this worker thread (tokio
/// moves the other tasks away) rather than on the blocking pool, whose hand-off costs as
/// much as a software ECDSA signature. A panic in a handler answers `internal`.
fn handle(svc: &Service, req: Request) -> Response {
    let op = op_name(&req);
    // (hello, and a signature known to be fast, run inline instead: crate::inline.)
    let resp = crate::inline::run(crate::inline::policy(&req), || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| svc.handle(req)))
    })
    .unwrap_or_else(|_| {
        warn!("request handler panicked");
        AgentError::Internal("internal error; see the agent's log".into()).into()
    });
    debug!(op, ok = !matches!(resp, Response::Error(_)), "request done");
    resp
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
            Ok(Err(e)) => return Some(e.into()),
            Err(_) => return Some(AgentError::Internal("internal error".into()).into()),
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
            Err(_) => return Some(AgentError::Internal("internal error".into()).into()),
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
