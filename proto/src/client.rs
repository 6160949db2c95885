//! A blocking client over a Unix socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use zeroize::Zeroize;

use crate::frame::{read_frame, write_frame, FrameKind, CHUNK};
use crate::v1::{ErrorCode, ErrorInfo, Request, Response};
use crate::{decode_message, encode_message, ProtoError};

/// Client-side errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No agent listens on the socket.
    #[error("no tokenmail agent at {path}: start one with `eval \"$(tokenmail-agent ...)\"` (see tokenmail-agent --help), or pass --socket / set TOKENMAIL_SOCK")]
    NoAgent {
        /// The socket path tried.
        path: PathBuf,
    },
    /// The socket path names something that is not a socket (a regular file, a
    /// directory…): a wrong `--socket` / `TOKENMAIL_SOCK`, not a stopped agent.
    #[error("{path} is {what}, not a socket: pass the agent's socket with --socket or TOKENMAIL_SOCK (tokenmail-agent prints it when it starts)")]
    NotASocket {
        /// The path tried.
        path: PathBuf,
        /// What is there: `a directory`, `a regular file`, …
        what: &'static str,
    },
    /// The agent answered with an error.
    #[error("{}", .0.message)]
    Agent(ErrorInfo),
    /// Protocol failure, or the connection lost (the agent stopped, crashed or restarted:
    /// said so plainly).
    #[error("{}", proto_message(.0))]
    Proto(#[from] ProtoError),
    /// The agent sent something unexpected.
    #[error("unexpected answer from the agent: {0}")]
    Unexpected(String),
    /// The socket is served by another user: nothing (no PIN) is sent to it.
    #[error("the socket {path} is served by uid {uid}, not by you: refusing to talk to it (PINs would go to that user); check --socket / TOKENMAIL_SOCK")]
    ForeignAgent {
        /// The socket path.
        path: PathBuf,
        /// The uid of the process that serves it.
        uid: u32,
    },
}

/// The text of [`ClientError::Proto`]. The I/O error itself follows in the error chain
/// (its source), so it is not repeated here for a lost connection.
fn proto_message(e: &ProtoError) -> String {
    if connection_lost(e) {
        "the agent closed the connection (did it stop or restart? try again)".into()
    } else {
        format!("agent protocol error: {e}")
    }
}

/// The connection ended under the client: end of stream inside a frame, reset, broken pipe.
fn connection_lost(e: &ProtoError) -> bool {
    match e {
        ProtoError::Truncated => true,
        ProtoError::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

impl ClientError {
    /// The agent's error code, if this is an agent error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Agent(e) => Some(e.code),
            _ => None,
        }
    }
}

/// Why connecting to `path` failed: something other than a socket is there, or no
/// agent listens (nothing there, or a socket no process serves).
fn connect_error(path: &Path) -> ClientError {
    use std::os::unix::fs::FileTypeExt;
    let what = match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Some("a directory"),
        Ok(m) if m.is_file() => Some("a regular file"),
        Ok(m) if m.file_type().is_fifo() => Some("a FIFO"),
        Ok(m) if m.file_type().is_char_device() || m.file_type().is_block_device() => {
            Some("a device")
        }
        _ => None,
    };
    match what {
        Some(what) => ClientError::NotASocket {
            path: path.to_path_buf(),
            what,
        },
        None => ClientError::NoAgent {
            path: path.to_path_buf(),
        },
    }
}

/// The socket path by the contract's rules, without `--socket`:
/// `$TOKENMAIL_SOCK`, else `$XDG_RUNTIME_DIR/tokenmail/agent.sock`, else `/tmp/tokenmail-$UID/agent.sock`.
pub fn default_socket_path(uid: u32) -> PathBuf {
    if let Some(p) = std::env::var_os("TOKENMAIL_SOCK").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(d).join("tokenmail").join("agent.sock");
    }
    PathBuf::from(format!("/tmp/tokenmail-{uid}/agent.sock"))
}

/// tokenmail's cache directory: `$XDG_CACHE_HOME/tokenmail` (an absolute path; relative
/// values are invalid per the XDG spec and ignored), else `~/.cache/tokenmail`; `None`
/// without either.
pub fn cache_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?).join(".cache"),
    };
    base.is_absolute().then(|| base.join("tokenmail"))
}

/// The default revocation cache (`[trust] crl_cache`): `crl` in [`cache_dir`]. The CLI
/// fills it; the agent reads it.
pub fn crl_cache_dir() -> Option<PathBuf> {
    cache_dir().map(|d| d.join("crl"))
}

/// Where tokenmail keeps state (the audit log, messages tokenmail-sendmail could not send):
/// `$XDG_STATE_HOME/tokenmail` (an absolute path), else `~/.local/state/tokenmail`;
/// `None` without either.
pub fn state_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("state")))
        .map(|s| s.join("tokenmail"))
}

/// A connected, handshaken client.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    agent: String,
}

impl Client {
    /// Connects to the agent at `path` and performs the `hello` handshake, as a client
    /// that does not ask its user for PINs (the agent may use pinentry).
    pub fn connect(path: &Path, client_name: &str) -> Result<Self, ClientError> {
        Self::connect_with(path, client_name, false)
    }

    /// As [`Client::connect`]; `pin_prompt` says the client asks its user for PINs
    /// itself (it answers `pin-required` with `login`).
    pub fn connect_with(
        path: &Path,
        client_name: &str,
        pin_prompt: bool,
    ) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|_| connect_error(path))?;
        // The agent must run as this user: a socket planted by someone else would receive
        // the PINs a client sends (SO_PEERCRED, checked before anything is sent).
        let peer =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                .map_err(|e| {
                    ClientError::Unexpected(format!("cannot read the agent's credentials: {e}"))
                })?;
        let me = nix::unistd::geteuid().as_raw();
        if peer.uid() != me {
            return Err(ClientError::ForeignAgent {
                path: path.to_path_buf(),
                uid: peer.uid(),
            });
        }
        let mut c = Client {
            stream,
            agent: String::new(),
        };
        match c.call(&Request::Hello {
            client: client_name.to_string(),
            pin_prompt,
        })? {
            Response::Hello { agent, .. } => {
                c.agent = agent;
                Ok(c)
            }
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// [`Client::connect_with`] and a first request in one round trip: the `hello` and
    /// `req` frames go out in one write, then both answers are read. The handshake's
    /// failure is the outer error; `req`'s answer (agent errors as `ClientError::Agent`)
    /// is the inner result, and the connection stays usable after it.
    ///
    /// `req` must be an operation every agent either serves or answers as unknown with
    /// the connection left open (not a stream operation, docs/protocol.md §12.4).
    pub fn connect_and_call(
        path: &Path,
        client_name: &str,
        pin_prompt: bool,
        req: &Request,
    ) -> Result<(Self, Result<Response, ClientError>), ClientError> {
        if req.is_stream() {
            return Err(ClientError::Unexpected(
                "a stream operation cannot follow hello unanswered".into(),
            ));
        }
        let stream = UnixStream::connect(path).map_err(|_| connect_error(path))?;
        let mut c = Client {
            stream,
            agent: String::new(),
        };
        let hello = encode_message(&Request::Hello {
            client: client_name.to_string(),
            pin_prompt,
        })?;
        let mut payload = encode_message(req)?;
        let mut both = crate::frame::encode_frame(FrameKind::Message, &hello)?;
        let second = crate::frame::encode_frame(FrameKind::Message, &payload);
        payload.zeroize();
        let mut second = second?;
        both.extend_from_slice(&second);
        second.zeroize();
        let sent = c.stream.write_all(&both);
        both.zeroize();
        sent.map_err(ProtoError::Io)?;
        match c.read_response()? {
            Response::Hello { agent, .. } => c.agent = agent,
            other => return Err(ClientError::Unexpected(format!("{other:?}"))),
        }
        let answer = c.read_response();
        Ok((c, answer))
    }

    /// Reads one response frame. Agent errors become `ClientError::Agent`.
    fn read_response(&mut self) -> Result<Response, ClientError> {
        let (header, mut payload) = read_frame(&mut self.stream)?.ok_or(ProtoError::Truncated)?;
        if header.kind != FrameKind::Message {
            return Err(ClientError::Unexpected(
                "a data frame instead of a response".into(),
            ));
        }
        let resp = decode_message::<Response>(&payload);
        payload.zeroize();
        match resp? {
            Response::Error(e) => Err(ClientError::Agent(e)),
            r => Ok(r),
        }
    }

    /// The agent's name and version from the handshake.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// Sends one request and reads its response. Agent errors become `ClientError::Agent`.
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        let mut payload = encode_message(req)?;
        // Header and payload in one write: the agent wakes once per request, not twice.
        let frame = crate::frame::encode_frame(FrameKind::Message, &payload);
        payload.zeroize();
        let mut frame = frame?;
        let sent = self.stream.write_all(&frame);
        frame.zeroize();
        sent.map_err(ProtoError::Io)?;
        self.read_response()
    }

    /// Runs a stream operation (`sign`, `verify`, `encrypt`, `decrypt`; docs/protocol.md
    /// §12): sends `req`, then `input` as Data frames of [`CHUNK`] bytes and an End frame,
    /// then copies the agent's Data frames to `output` until its End, and returns the
    /// final response. Agent errors become `ClientError::Agent`; the connection stays
    /// usable after them.
    ///
    /// Writing all input before reading is safe with this agent: it sends nothing before
    /// it has read the End frame. `output` gets data only when the operation succeeded,
    /// but a caller should still treat it as final only on `Ok`.
    pub fn call_stream(
        &mut self,
        req: &Request,
        mut input: impl Read,
        mut output: impl Write,
    ) -> Result<Response, ClientError> {
        if !req.is_stream() {
            return Err(ClientError::Unexpected(
                "call_stream needs a stream request (sign, verify, encrypt, decrypt)".into(),
            ));
        }
        let payload = encode_message(req)?;
        let sent = (|| -> Result<(), ClientError> {
            write_frame(&mut self.stream, FrameKind::Message, &payload)?;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(ProtoError::Io(e).into()),
                };
                write_frame(&mut self.stream, FrameKind::Data, &buf[..n])?;
            }
            write_frame(&mut self.stream, FrameKind::End, &[])?;
            Ok(())
        })();
        if let Err(ClientError::Proto(ProtoError::Io(e))) = sent {
            // The agent may have answered with an error and closed (e.g. a malformed
            // request): report its answer if it is there.
            if let Ok(Some((h, p))) = read_frame(&mut self.stream) {
                if h.kind == FrameKind::Message {
                    if let Ok(Response::Error(info)) = decode_message::<Response>(&p) {
                        return Err(ClientError::Agent(info));
                    }
                }
            }
            return Err(ProtoError::Io(e).into());
        }
        sent?;
        loop {
            let (header, payload) = read_frame(&mut self.stream)?.ok_or(ProtoError::Truncated)?;
            match header.kind {
                FrameKind::Data => output.write_all(&payload).map_err(ProtoError::Io)?,
                FrameKind::End => break,
                _ => {
                    // An error frame instead of the output: the agent closes after it.
                    return match decode_message::<Response>(&payload)? {
                        Response::Error(e) => Err(ClientError::Agent(e)),
                        other => Err(ClientError::Unexpected(format!(
                            "a response before the end of the output: {other:?}"
                        ))),
                    };
                }
            }
        }
        output.flush().map_err(ProtoError::Io)?;
        let (header, payload) = read_frame(&mut self.stream)?.ok_or(ProtoError::Truncated)?;
        if header.kind != FrameKind::Message {
            return Err(ClientError::Unexpected(
                "a data frame instead of the final response".into(),
            ));
        }
        match decode_message::<Response>(&payload)? {
            Response::Error(e) => Err(ClientError::Agent(e)),
            r => Ok(r),
        }
    }

    /// The underlying stream (for streamed operations).
    pub fn stream(&mut self) -> &mut UnixStream {
        &mut self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_said_plainly_and_once() {
        let reset = ClientError::from(ProtoError::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        let text = anyhow_like(&reset);
        assert!(
            text.starts_with("the agent closed the connection"),
            "{text}"
        );
        assert_eq!(text.matches("reset").count(), 1, "{text}");
        let cut = ClientError::from(ProtoError::Truncated);
        assert!(cut
            .to_string()
            .starts_with("the agent closed the connection"));
        let other = ClientError::from(ProtoError::BadMagic);
        assert!(other
            .to_string()
            .starts_with("agent protocol error: bad frame magic"));
    }

    /// The error and its sources joined by ": ", as `anyhow`'s `{:#}` prints them.
    fn anyhow_like(e: &dyn std::error::Error) -> String {
        let mut s = e.to_string();
        let mut cur = e.source();
        while let Some(c) = cur {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cur = c.source();
        }
        s
    }
}
