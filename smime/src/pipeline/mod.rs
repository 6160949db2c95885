//! Whole-message streaming drivers — sign, verify, encrypt, decrypt — shared by the command
//! line (`tokenmail sign|verify|encrypt|decrypt`) and the agent's stream operations
//! (docs/protocol.md §12): one engine, with the CLI and the agent as adapters (I/O, options,
//! error translation).
//!
//! They are written over [`std::io::Read`] and [`std::io::Write`]: the caller opens the
//! files, sockets or spools and decides what to do with the output; nothing here knows a
//! path or the agent's protocol. Memory stays bounded (a few [`CHUNK`]s) whatever the
//! message size.
//!
//! Speed (docs/performance.md): input is read in 1 MiB chunks, and the second half of the
//! work runs on a second thread ([`BackgroundFeed`]): hashing while verifying, writing while
//! encrypting. Chunks are handed over by value and their buffers come back for reuse.

use std::io::{self, Read, Write};

use crate::alg::{ContentHasher, MultiHasher};
use crate::envelope::mime::MAX_HEADER_BLOCK;
use crate::envelope::EncryptError;
use crate::SmimeError;

mod decrypt;
mod encrypt;
mod sign;
mod verify;

pub use decrypt::{decrypt_stream, CipherPolicy, DecryptFailure, DecryptOutcome, DecryptStream};
pub use encrypt::{encrypt_stream, encrypt_stream_with, EntityReader};
pub use sign::{sign_stream, SignForm, SignStream};
pub use verify::{verify_stream, ContentSink, Reopen, VerifyStream};

/// Read size: big reads keep per-call costs (syscalls, thread hand-overs) negligible.
pub const CHUNK: usize = 1 << 20;
/// Output of one encrypted chunk: base64 of the ciphertext (4/3, plus CRLF every 76
/// characters).
pub const OUT_CHUNK: usize = CHUNK / 57 * 78 + 1024;
/// What went wrong in a streaming driver. The I/O variants say which side failed, so that
/// each caller can answer in its own terms.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading the input failed.
    #[error("cannot read the input")]
    Read(#[source] io::Error),
    /// Writing the output failed.
    #[error("cannot write the output")]
    Write(#[source] io::Error),
    /// The signed message or signature cannot be read.
    #[error("cannot verify: {0}")]
    Verify(SmimeError),
    /// The detached signature is not a CMS structure.
    #[error("the detached signature is neither DER nor PEM CMS")]
    SignatureNotCms,
    /// A signed form that is verified in memory is larger than the caller allows.
    #[error("this form of signed message is verified in memory, up to {limit} bytes")]
    TooLargeForMemory {
        /// the caller's limit, in bytes
        limit: usize,
    },
    /// The content written so far could not be opened again (for a second hash).
    #[error("cannot reread the content")]
    Reread(#[source] io::Error),
    /// The input could not be opened again (for a second hash).
    #[error("cannot read the input again")]
    Reopen(#[source] io::Error),
    /// The message to encrypt has a header block over [`MAX_HEADER_BLOCK`].
    #[error("the input's header block is larger than {MAX_HEADER_BLOCK} bytes")]
    HeaderTooLarge,
    /// Encryption failed (recipient, randomness).
    #[error("cannot encrypt")]
    Encrypt(#[source] EncryptError),
    /// The message to sign cannot be signed as it is (MIME structure, encoding).
    #[error("cannot sign: {0}")]
    Sign(SmimeError),
    /// The signer (token, agent) failed or refused.
    #[error("cannot sign: {0}")]
    Signer(SmimeError),
    /// Nothing to sign.
    #[error("empty input: nothing to sign")]
    Empty,
    /// The hashing thread stopped.
    #[error("{0}")]
    Background(io::Error),
}

pub(crate) fn read_chunk(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize, PipelineError> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PipelineError::Read(e)),
        }
    }
}

// ------------------------------------------------------------------ background thread

/// Something fed chunk by chunk on a background thread: a content hasher, or a writer.
pub trait Feed: Send + 'static {
    /// Feed one chunk.
    fn feed(&mut self, chunk: &[u8]) -> io::Result<()>;
}

impl Feed for ContentHasher {
    fn feed(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.update(chunk);
        Ok(())
    }
}

impl Feed for MultiHasher {
    fn feed(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.update(chunk);
        Ok(())
    }
}

/// A [`Write`] fed by a background thread.
#[derive(Debug)]
pub struct WriteFeed<W>(pub W);

impl<W: Write + Send + 'static> Feed for WriteFeed<W> {
    fn feed(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.0.write_all(chunk)
    }
}

/// Runs a [`Feed`] (hashing, or writing) on a second thread, so that it overlaps reading and
/// transforming the next chunk: on a 2-core machine the wall time becomes the larger of the
/// two instead of their sum. Chunks are handed over by value and their buffers come back for
/// reuse, so memory stays at a few chunks.
#[derive(Debug)]
pub struct BackgroundFeed<F: Feed> {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    handle: Option<std::thread::JoinHandle<io::Result<F>>>,
}

impl<F: Feed> BackgroundFeed<F> {
    /// Starts the thread.
    pub fn new(mut feed: F) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(1);
        let (back_tx, back) = std::sync::mpsc::channel::<Vec<u8>>();
        let handle = std::thread::spawn(move || {
            for buf in rx {
                feed.feed(&buf)?;
                let _ = back_tx.send(buf);
            }
            Ok(feed)
        });
        Self {
            tx: Some(tx),
            back,
            handle: Some(handle),
        }
    }

    /// An empty buffer to fill: a returned one when there is one.
    pub fn buffer(&self, capacity: usize) -> Vec<u8> {
        match self.back.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => Vec::with_capacity(capacity),
        }
    }

    /// Hands a chunk over (blocks while one is waiting). When the thread stopped on an
    /// error, that error is returned.
    pub fn feed(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let failed = match &self.tx {
            Some(tx) => tx.send(chunk).is_err(),
            None => true,
        };
        if failed {
            self.tx = None;
            return Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("the background thread stopped")));
        }
        Ok(())
    }

    fn join(&mut self) -> io::Result<F> {
        drop(self.tx.take());
        let h = self
            .handle
            .take()
            .ok_or_else(|| io::Error::other("the background thread is gone"))?;
        h.join()
            .map_err(|_| io::Error::other("the background thread panicked"))?
    }

    /// Waits for the thread and returns the feed.
    pub fn finish(mut self) -> io::Result<F> {
        self.join()
    }
}

/// Dropped without [`BackgroundFeed::finish`] (a driver returning early on an error): the
/// thread is told to stop and waited for, so that no work outlives the call that started it
/// (the fuzzer's leak check saw the hashing thread still running after `verify_stream`
/// returned).
impl<F: Feed> Drop for BackgroundFeed<F> {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Where a streaming driver puts its output chunks: written in place, or handed to a
/// writing thread.
pub trait ChunkSink {
    /// An empty buffer for the next chunk.
    fn buffer(&mut self, capacity: usize) -> Vec<u8>;
    /// Writes (or hands over) a chunk.
    fn put(&mut self, chunk: Vec<u8>) -> io::Result<()>;
}

impl<F: Feed> ChunkSink for BackgroundFeed<F> {
    fn buffer(&mut self, capacity: usize) -> Vec<u8> {
        BackgroundFeed::buffer(self, capacity)
    }
    fn put(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        self.feed(chunk)
    }
}

/// A [`ChunkSink`] that writes each chunk in place, on the caller's thread (one buffer,
/// reused).
#[derive(Debug)]
pub struct WriteChunks<W> {
    w: W,
    spare: Vec<u8>,
}

impl<W: Write> WriteChunks<W> {
    /// Writes to `w`.
    pub fn new(w: W) -> Self {
        Self {
            w,
            spare: Vec::new(),
        }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.w
    }
}

impl<W: Write> ChunkSink for WriteChunks<W> {
    fn buffer(&mut self, capacity: usize) -> Vec<u8> {
        let mut b = std::mem::take(&mut self.spare);
        b.clear();
        b.reserve(capacity);
        b
    }
    fn put(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        self.w.write_all(&chunk)?;
        self.spare = chunk;
        Ok(())
    }
}

#[cfg(test)]
mod background_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Slow(Arc<AtomicUsize>);

    impl Feed for Slow {
        fn feed(&mut self, _chunk: &[u8]) -> io::Result<()> {
            std::thread::sleep(std::time::Duration::from_millis(50));
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn a_feed_dropped_without_finish_waits_for_its_thread() {
        let fed = Arc::new(AtomicUsize::new(0));
        let mut b = BackgroundFeed::new(Slow(Arc::clone(&fed)));
        b.feed(vec![1]).expect("handed over");
        b.feed(vec![2]).expect("handed over");
        drop(b);
        // every chunk handed over was fed before the drop returned: the thread is gone
        assert_eq!(fed.load(Ordering::SeqCst), 2);
    }
}
