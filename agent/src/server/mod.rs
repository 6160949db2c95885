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

pub use stream::{
    set_spool_limit, set_stream_deadlines, spool_limit, DEFAULT_MAX_SPOOL, STREAM_IDLE,
    WRITE_TIMEOUT,
};

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
    /// A socket passed by systemd (`LISTEN_FDS`) that the agent cannot serve.
    #[error("socket activation: {0}")]
    Activation(String),
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

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: i32 = 3;

/// What systemd's socket activation says in the environment (sd_listen_fds(3)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenFds {
    /// `LISTEN_FDS`: how many descriptors, from fd 3.
    pub count: u32,
    /// `LISTEN_FDNAMES`, split at `:` (names from `FileDescriptorName=`), when set.
    pub names: Vec<String>,
}

/// Reads `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` and removes them from the
/// environment (always, as `sd_listen_fds(1)` does, so that no child of the agent —
/// pinentry — takes them for its own). `None` when they are absent or name another
/// process (`LISTEN_PID` is not our pid). Call before any thread is started.
pub fn take_listen_fds() -> Result<Option<ListenFds>, SocketError> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(v);
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    let me = std::process::id();
    if pid.trim().parse::<u32>().ok() != Some(me) {
        // meant for another process (a parent's leftovers): not ours to take
        return Ok(None);
    }
    let count: u32 = fds
        .trim()
        .parse()
        .map_err(|_| SocketError::Activation(format!("LISTEN_FDS={fds:?} is not a number")))?;
    match count {
        0 => Ok(None),
        1 => Ok(Some(ListenFds {
            count,
            names: names
                .map(|n| n.split(':').map(str::to_string).collect())
                .unwrap_or_default(),
        })),
        n => Err(SocketError::Activation(format!(
            "{n} sockets were passed (LISTEN_FDS={n}); the agent serves one: give the .socket unit a single ListenStream= line"
        ))),
    }
}

/// The listener of a descriptor passed by systemd, checked: a Unix-domain stream socket
/// that listens (`ListenStream=` with a path). Made close-on-exec. Returns it with its
/// path (`None` for an unnamed or abstract socket).
pub fn activated_listener(
    fd: std::os::fd::OwnedFd,
) -> Result<(StdListener, Option<PathBuf>), SocketError> {
    use nix::sys::socket::{
        getsockname, getsockopt, sockopt, SockType, SockaddrLike, SockaddrStorage,
    };
    use std::os::fd::AsRawFd;
    let bad = |why: &str| {
        SocketError::Activation(format!(
            "descriptor {} is {why}, not a listening Unix stream socket: use ListenStream=%t/tokenmail/agent.sock in the .socket unit (contrib/systemd/tokenmail-agent.socket)",
            fd.as_raw_fd()
        ))
    };
    let addr: SockaddrStorage = match getsockname(fd.as_raw_fd()) {
        Ok(a) => a,
        Err(nix::errno::Errno::ENOTSOCK) => return Err(bad("not a socket")),
        Err(e) => return Err(bad(&format!("unusable ({e})"))),
    };
    let Some(unix) = addr.as_unix_addr() else {
        return Err(bad(&format!(
            "a socket of another family ({:?})",
            addr.family()
        )));
    };
    match getsockopt(&fd, sockopt::SockType) {
        Ok(SockType::Stream) => {}
        Ok(t) => return Err(bad(&format!("a {t:?} socket"))),
        Err(e) => return Err(bad(&format!("unusable ({e})"))),
    }
    if !getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false) {
        return Err(bad("a socket that does not listen (a connection?)"));
    }
    nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| bad(&format!("unusable ({e})")))?;
    let path = unix.path().map(Path::to_path_buf);
    Ok((StdListener::from(fd), path))
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
    fn the_activation_variables_are_read_once_and_removed() {
        // (no other test of this binary reads LISTEN_*)
        let me = std::process::id().to_string();
        std::env::set_var("LISTEN_PID", &me);
        std::env::set_var("LISTEN_FDS", "1");
        std::env::set_var("LISTEN_FDNAMES", "tokenmail");
        let got = take_listen_fds().expect("valid");
        assert_eq!(
            got,
            Some(ListenFds {
                count: 1,
                names: vec!["tokenmail".into()]
            })
        );
        for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            assert!(std::env::var_os(v).is_none(), "{v} left for children");
        }
        assert_eq!(take_listen_fds().expect("none"), None);
        // another process's, or several sockets
        std::env::set_var("LISTEN_PID", "1");
        std::env::set_var("LISTEN_FDS", "1");
        assert_eq!(take_listen_fds().expect("not ours"), None);
        assert!(std::env::var_os("LISTEN_FDS").is_none());
        std::env::set_var("LISTEN_PID", &me);
        std::env::set_var("LISTEN_FDS", "2");
        let e = take_listen_fds().expect_err("two sockets");
        assert!(e.to_string().contains("single ListenStream="), "{e}");
    }

    #[test]
    fn a_passed_descriptor_must_be_a_listening_unix_stream_socket() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("a.sock");
        let listener = StdListener::bind(&path).expect("bind");
        let (l, p) = activated_listener(listener.into()).expect("a listening socket is taken");
        assert_eq!(p.as_deref(), Some(path.as_path()));
        drop(l);
        // a connected stream (Accept=yes units pass those), a datagram socket, a file
        let (a, _b) = StdStream::pair().expect("pair");
        let e = activated_listener(a.into()).expect_err("a connection");
        assert!(e.to_string().contains("does not listen"), "{e}");
        let d = std::os::unix::net::UnixDatagram::unbound().expect("dgram");
        let e = activated_listener(d.into()).expect_err("datagram");
        assert!(e.to_string().contains("Datagram"), "{e}");
        let f = std::fs::File::open(&path).map(std::os::fd::OwnedFd::from);
        if let Ok(f) = f {
            let e = activated_listener(f).expect_err("not a socket");
            assert!(e.to_string().contains("not a socket"), "{e}");
        }
        let t = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
        let e = activated_listener(t.into()).expect_err("tcp");
        assert!(e.to_string().contains("another family"), "{e}");
    }

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
