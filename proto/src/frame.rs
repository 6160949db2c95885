//! Framing: every frame starts with a 12-byte header.
//!
//! ```text
//! offset size field
//! 0      4    magic      b"TKML"
//! 4      1    ver_major  1
//! 5      1    ver_minor  0
//! 6      1    kind       1 = message (JSON), 2 = data chunk, 3 = end of data
//! 7      1    flags      0 (reserved; a receiver rejects non-zero)
//! 8      4    length     payload length, big-endian, at most MAX_FRAME
//! ```

use std::io::{Read, Write};

use crate::ProtoError;

/// Frame magic.
pub const MAGIC: [u8; 4] = *b"TKML";
/// Protocol major version spoken by this crate.
pub const VERSION_MAJOR: u8 = 1;
/// Protocol minor version spoken by this crate.
pub const VERSION_MINOR: u8 = 0;
/// Size of the frame header.
pub const HEADER_LEN: usize = 12;
/// Largest payload a peer may send in one frame (1 MiB).
pub const MAX_FRAME: usize = 1 << 20;
/// Size of the data chunks this crate sends in streams (64 KiB).
pub const CHUNK: usize = 64 * 1024;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameKind {
    /// A JSON request or response.
    Message = 1,
    /// A chunk of a data stream (raw bytes).
    Data = 2,
    /// The end of a data stream (empty payload).
    End = 3,
}

impl FrameKind {
    fn from_u8(b: u8) -> Result<Self, ProtoError> {
        match b {
            1 => Ok(FrameKind::Message),
            2 => Ok(FrameKind::Data),
            3 => Ok(FrameKind::End),
            other => Err(ProtoError::BadFrame(format!("unknown frame kind {other}"))),
        }
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Major version of the sender.
    pub ver_major: u8,
    /// Minor version of the sender.
    pub ver_minor: u8,
    /// Frame kind.
    pub kind: FrameKind,
    /// Payload length.
    pub len: u32,
}

impl Header {
    /// A header of our own version.
    pub fn new(kind: FrameKind, len: usize) -> Result<Self, ProtoError> {
        if len > MAX_FRAME {
            return Err(ProtoError::TooLarge(len));
        }
        Ok(Header {
            ver_major: VERSION_MAJOR,
            ver_minor: VERSION_MINOR,
            kind,
            len: len as u32,
        })
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&MAGIC);
        h[4] = self.ver_major;
        h[5] = self.ver_minor;
        h[6] = self.kind as u8;
        h[7] = 0;
        h[8..].copy_from_slice(&self.len.to_be_bytes());
        h
    }

    /// Decodes and checks a header: magic, major version, kind, flags and the size cap.
    pub fn decode(h: &[u8; HEADER_LEN]) -> Result<Self, ProtoError> {
        if h[..4] != MAGIC {
            return Err(ProtoError::BadMagic);
        }
        if h[4] != VERSION_MAJOR {
            return Err(ProtoError::UnsupportedVersion(h[4], h[5]));
        }
        let kind = FrameKind::from_u8(h[6])?;
        if h[7] != 0 {
            return Err(ProtoError::BadFrame("non-zero flags".into()));
        }
        let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        if len as usize > MAX_FRAME {
            return Err(ProtoError::TooLarge(len as usize));
        }
        if kind == FrameKind::End && len != 0 {
            return Err(ProtoError::BadFrame("end frame with a payload".into()));
        }
        Ok(Header {
            ver_major: h[4],
            ver_minor: h[5],
            kind,
            len,
        })
    }
}

/// Encodes one frame (header + payload) into a new buffer.
pub fn encode_frame(kind: FrameKind, payload: &[u8]) -> Result<Vec<u8>, ProtoError> {
    let h = Header::new(kind, payload.len())?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Writes one frame to a blocking writer.
pub fn write_frame<W: Write>(w: &mut W, kind: FrameKind, payload: &[u8]) -> Result<(), ProtoError> {
    let h = Header::new(kind, payload.len())?;
    w.write_all(&h.encode())?;
    w.write_all(payload)?;
    Ok(())
}

/// Reads one frame from a blocking reader. `Ok(None)` on a clean end of stream
/// before any header byte.
pub fn read_frame<R: Read>(r: &mut R) -> Result<Option<(Header, Vec<u8>)>, ProtoError> {
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut h[got..])?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(ProtoError::Truncated);
        }
        got += n;
    }
    let header = Header::decode(&h)?;
    let mut payload = vec![0u8; header.len as usize];
    r.read_exact(&mut payload).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtoError::Truncated
        } else {
            ProtoError::Io(e)
        }
    })?;
    Ok(Some((header, payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header::new(FrameKind::Data, 1234).expect("size within cap");
        assert_eq!(Header::decode(&h.encode()).expect("decodes"), h);
    }

    #[test]
    fn rejects_bad_magic_version_and_size() {
        let mut h = Header::new(FrameKind::Message, 1)
            .expect("size within cap")
            .encode();
        h[0] = b'X';
        assert!(matches!(Header::decode(&h), Err(ProtoError::BadMagic)));
        let mut h = Header::new(FrameKind::Message, 1)
            .expect("size within cap")
            .encode();
        h[4] = 2;
        assert!(matches!(
            Header::decode(&h),
            Err(ProtoError::UnsupportedVersion(2, 0))
        ));
        let mut h = Header::new(FrameKind::Message, 1)
            .expect("size within cap")
            .encode();
        h[8..].copy_from_slice(&((MAX_FRAME as u32) + 1).to_be_bytes());
        assert!(matches!(Header::decode(&h), Err(ProtoError::TooLarge(_))));
        assert!(matches!(
            Header::new(FrameKind::Data, MAX_FRAME + 1),
            Err(ProtoError::TooLarge(_))
        ));
    }

    #[test]
    fn truncated_frames_are_errors() {
        let f = encode_frame(FrameKind::Message, b"{}").expect("encodes");
        let mut r = &f[..5];
        assert!(matches!(read_frame(&mut r), Err(ProtoError::Truncated)));
        let mut r = &f[..f.len() - 1];
        assert!(matches!(read_frame(&mut r), Err(ProtoError::Truncated)));
        let mut r: &[u8] = &[];
        assert!(matches!(read_frame(&mut r), Ok(None)));
    }
}
