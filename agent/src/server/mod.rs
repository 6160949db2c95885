//! The local socket: path rules, permissions, the listener ([`serve`]); the
//! per-connection frame loop with the peer-credential check ([`connection`]); and the
//! stream operations ([`stream`]).

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdListener, UnixStream as StdStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::error::AgentError;
use crate::service::Service;

mod connection;
pub(crate) mod stream;

pub use stream::{set_spool_limit, spool_limit, DEFAULT_MAX_SPOOL};

use connection::{connection, write_response};

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
    /// The agent's own socket directory is a symbolic link (someone may have planted it).
    #[error("socket directory {0} is a symbolic link; remove it (the agent creates its own directory) or choose another --socket")]
    LinkedDir(PathBuf),
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

/// The socket's directory, made ready for [`bind`]: created 0700 when missing; the agent's
/// own (`dedicated`) one checked (not a link, this user's) and tightened to 0700. Called
/// before the log file is opened too, since the default log lives beside the socket.
pub fn prepare_dir(path: &Path, dedicated: bool) -> Result<(), SocketError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let uid = nix::unistd::getuid().as_raw();
    // the agent's own directory is checked as it is, never through a link
    if dedicated && std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(SocketError::LinkedDir(dir.to_path_buf()));
    }
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
    prepare_dir(path, dedicated)?;
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
                            &AgentError::Busy("the agent is busy: too many connections; try again".into()).into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linked_socket_directory_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let link = tmp.path().join("tokenmail-link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        match bind(&link.join("agent.sock"), true) {
            Err(SocketError::LinkedDir(d)) => assert_eq!(d, link),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(
            !real.join("agent.sock").exists(),
            "nothing bound through the link"
        );
        // a directory named by --socket (not the agent's own) is used as it is
        assert!(bind(&link.join("agent.sock"), false).is_ok());
    }
}
