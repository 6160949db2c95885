//! The framing codec for async streams (feature `tokio`): the same frames as
//! [`crate::frame`]'s blocking functions, for a server on tokio. One codec for the agent's
//! request loop and its stream operations.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroize;

use crate::frame::{FrameKind, Header, HEADER_LEN};
use crate::{encode_message, ProtoError};

/// How long a reader waits for a frame to start, and then for the rest of it.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// between frames (a connection may sit idle this long)
    pub idle: Duration,
    /// from a frame's first byte to its last
    pub frame: Duration,
}

/// Reads one frame; `Ok(None)` on a clean close between frames. A peer that stays silent
/// past `deadlines.idle`, or stops inside a frame for `deadlines.frame`, is an error.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    deadlines: Deadlines,
) -> Result<Option<(Header, Vec<u8>)>, ProtoError> {
    let mut h = [0u8; HEADER_LEN];
    let n = match tokio::time::timeout(deadlines.idle, r.read(&mut h[..1])).await {
        Err(_) => return Err(ProtoError::BadFrame("idle timeout".into())),
        Ok(n) => n?,
    };
    if n == 0 {
        return Ok(None);
    }
    let rest = async {
        r.read_exact(&mut h[1..]).await?;
        let header = Header::decode(&h)?;
        let mut payload = vec![0u8; header.len as usize];
        r.read_exact(&mut payload).await?;
        Ok::<_, ProtoError>((header, payload))
    };
    match tokio::time::timeout(deadlines.frame, rest).await {
        Err(_) => Err(ProtoError::BadFrame("frame not completed in time".into())),
        Ok(Err(ProtoError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(ProtoError::Truncated)
        }
        Ok(r) => r.map(Some),
    }
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: FrameKind,
    payload: &[u8],
) -> Result<(), ProtoError> {
    let header = Header::new(kind, payload.len())?;
    w.write_all(&header.encode()).await?;
    w.write_all(payload).await?;
    Ok(())
}

/// Writes a message (a request or a response) as one frame, in one write; the encoded
/// bytes are zeroized afterwards (a response may carry a secret).
pub async fn write_message<W: AsyncWrite + Unpin, T: serde::Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), ProtoError> {
    let mut payload = encode_message(msg)?;
    let header = Header::new(FrameKind::Message, payload.len())?;
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
    buf.extend_from_slice(&header.encode());
    buf.extend_from_slice(&payload);
    payload.zeroize();
    let res = w.write_all(&buf).await;
    buf.zeroize();
    res?;
    Ok(())
}
