//! The control endpoint: a Unix socket serving the [protocol](super::protocol).
//!
//! - The socket is created mode 0600, and a client whose uid (the kernel's
//!   peer credentials) is not the socket owner's is hung up on: the file
//!   mode alone leaves a moment between bind and chmod.
//! - A socket file left by a node that died is replaced; one a live node
//!   answers on is not (the start fails, naming the path), and a path that is
//!   not a socket is never touched.
//! - At most [`ControlLimits::max_clients`] clients are served at once; one
//!   more is told so in one line and closed.
//! - A request line longer than [`MAX_REQUEST_LINE`] is answered with an
//!   error and the connection closed; a malformed or unknown request is
//!   answered with an error and the connection stays open for the next one.
//! - A client that sends no complete line within
//!   [`ControlLimits::read_deadline`] is told so and closed; a write that
//!   does not finish within [`ControlLimits::write_deadline`] ends the
//!   connection.

use super::events::{DropReason, EventFeed};
use super::protocol::{framing, parse_request, Reply, Request, RequestError, MAX_REQUEST_LINE};
use super::snapshot::{NodeInfo, StatusSnapshot};
use crate::ops::reload::ReloadHandle;
use crate::runtime::runner::RunnerMsg;
use futures::StreamExt;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{broadcast, mpsc, oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tokio_util::codec::{AnyDelimiterCodecError, FramedRead};

/// Time a `reload` or `revoke` has to finish (a reload reads one file and
/// feeds one input: far less, unless the node is overloaded); within the
/// 10 s `meshproxy reload` waits.
const RELOAD_DEADLINE: Duration = Duration::from_secs(8);

/// Bounds on the endpoint's clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlLimits {
    /// Clients served at once.
    pub max_clients: usize,
    /// Time for a client to send its next whole request line.
    pub read_deadline: Duration,
    /// Time for one reply or event line to be taken by the client.
    pub write_deadline: Duration,
    /// Time the node has to answer `status`.
    pub status_deadline: Duration,
}

impl Default for ControlLimits {
    fn default() -> ControlLimits {
        ControlLimits {
            max_clients: 16,
            read_deadline: Duration::from_secs(10),
            write_deadline: Duration::from_secs(5),
            status_deadline: Duration::from_secs(5),
        }
    }
}

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A running node answers on the path.
    #[error("control socket {0}: another node is serving it (stop it, or set `control` to another path)")]
    InUse(PathBuf),
    /// Something other than a socket is at the path.
    #[error(
        "control socket {0}: the path exists and is not a socket (set `control` to another path)"
    )]
    NotASocket(PathBuf),
    /// The OS refused.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket's path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// What every client's task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) runner: mpsc::Sender<RunnerMsg>,
    pub(crate) feed: Arc<EventFeed>,
    pub(crate) info: NodeInfo,
    pub(crate) limits: ControlLimits,
    /// Where `reload` and `revoke` go (`None`: a node run without one).
    pub(crate) reload: Option<ReloadHandle>,
}

/// The running endpoint; dropping it stops serving and removes the socket file.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl ControlServer {
    /// Opens the socket at `path` and serves the node whose runner is
    /// `runner` and whose events `feed` carries.
    pub fn bind(
        path: &Path,
        runner: mpsc::Sender<RunnerMsg>,
        feed: Arc<EventFeed>,
        info: NodeInfo,
        limits: ControlLimits,
    ) -> Result<ControlServer, ControlError> {
        Self::bind_with_reload(path, runner, feed, info, limits, None)
    }

    /// [`bind`](Self::bind), answering `reload` and `revoke` through `reload`.
    pub fn bind_with_reload(
        path: &Path,
        runner: mpsc::Sender<RunnerMsg>,
        feed: Arc<EventFeed>,
        info: NodeInfo,
        limits: ControlLimits,
        reload: Option<ReloadHandle>,
    ) -> Result<ControlServer, ControlError> {
        let io_err = |source| ControlError::Io { path: path.to_owned(), source };
        clear_stale(path)?;
        let listener = UnixListener::bind(path).map_err(io_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        let owner = std::fs::metadata(path).map_err(io_err)?.uid();
        let shared = Arc::new(Shared { runner, feed, info, limits, reload });
        let task = tokio::spawn(accept_loop(listener, owner, shared));
        Ok(ControlServer { path: path.to_owned(), task })
    }

    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes a socket file no one answers on (left by a node that died).
fn clear_stale(path: &Path) -> Result<(), ControlError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(ControlError::Io { path: path.to_owned(), source }),
    };
    if !meta.file_type().is_socket() {
        return Err(ControlError::NotASocket(path.to_owned()));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ControlError::InUse(path.to_owned()));
    }
    std::fs::remove_file(path).map_err(|source| ControlError::Io { path: path.to_owned(), source })
}

async fn accept_loop(listener: UnixListener, owner: u32, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(shared.limits.max_clients));
    let mut clients = JoinSet::new();
    loop {
        while clients.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: wait rather than spin.
                tracing::warn!(error = %e, "control socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == owner => {}
            other => {
                tracing::warn!(?other, "control socket: a client of another user was refused");
                continue;
            }
        }
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let shared = shared.clone();
                clients.spawn(async move {
                    serve(stream, &shared).await;
                    drop(slot);
                });
            }
            Err(_) => {
                // Written without waiting (a fresh socket's buffer takes one short line), so a
                // flood of connections costs no task each; dropping the stream closes it.
                let max = shared.limits.max_clients;
                let reply = Reply::error(format!("too many control clients ({max}); try again"));
                let _ = stream.try_write(&reply.to_line());
            }
        }
    }
}

/// Writes `bytes` within the write deadline; false if the client did not take them.
async fn send<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8], limits: &ControlLimits) -> bool {
    matches!(timeout(limits.write_deadline, w.write_all(bytes)).await, Ok(Ok(())))
}

/// Serves one client until it hangs up, breaks a bound, or follows events
/// until it falls behind.
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Send + 'static>(io: S, shared: &Arc<Shared>) {
    let limits = shared.limits;
    let (r, mut w) = tokio::io::split(io);
    let mut lines = FramedRead::new(r, framing());
    loop {
        let line = match timeout(limits.read_deadline, lines.next()).await {
            Err(_) => {
                let secs = limits.read_deadline.as_secs();
                let reply = Reply::error(format!("no request within {secs} s; closing"));
                let _ = send(&mut w, &reply.to_line(), &limits).await;
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(AnyDelimiterCodecError::MaxChunkLengthExceeded))) => {
                let reply = Reply::error(RequestError::TooLong.to_string());
                let _ = send(&mut w, &reply.to_line(), &limits).await;
                return;
            }
            Ok(Some(Err(AnyDelimiterCodecError::Io(_)))) => return,
            Ok(Some(Ok(line))) => line,
        };
        debug_assert!(line.len() <= MAX_REQUEST_LINE);
        let reply = match parse_request(&line) {
            Err(e) => Reply::error(e.to_string()),
            Ok(Request::Status) => status(shared).await,
            Ok(Request::Reload) => match &shared.reload {
                Some(reload) => {
                    match timeout(RELOAD_DEADLINE, reload.reload("control socket")).await {
                        Ok(Ok(changed)) => Reply::reloaded(changed),
                        Ok(Err(e)) => Reply::error(format!("reload refused: {e}")),
                        Err(_) => Reply::error("the reload did not finish within 8 s"),
                    }
                }
                None => Reply::error("this node was started without a config to reload"),
            },
            Ok(Request::Revoke(target)) => match &shared.reload {
                Some(reload) => match timeout(RELOAD_DEADLINE, reload.revoke(target)).await {
                    Ok(Ok(ended)) => Reply::revoked(ended),
                    Ok(Err(e)) => Reply::error(e),
                    Err(_) => Reply::error("the revocation did not finish within 8 s"),
                },
                None => Reply::error("this node was started without a config to revoke from"),
            },
            Ok(Request::Events) => {
                if send(&mut w, &Reply::streaming().to_line(), &limits).await {
                    follow(lines, w, shared).await;
                }
                return;
            }
        };
        if !send(&mut w, &reply.to_line(), &limits).await {
            return;
        }
    }
}

/// Asks the runner for the core's status and builds the snapshot.
async fn status(shared: &Shared) -> Reply {
    let ask = async {
        let (reply, answer) = oneshot::channel();
        shared.runner.send(RunnerMsg::Inspect(reply)).await.ok()?;
        answer.await.ok()
    };
    match timeout(shared.limits.status_deadline, ask).await {
        Ok(Some(seen)) => Reply::status(StatusSnapshot::new(
            &seen.status,
            seen.uptime,
            &shared.info,
            &shared.feed,
        )),
        Ok(None) => Reply::error("the node is stopping"),
        Err(_) => {
            let secs = shared.limits.status_deadline.as_secs();
            Reply::error(format!("the node did not answer within {secs} s (overloaded?)"))
        }
    }
}

/// Streams events to a client until it hangs up or is dropped for falling behind.
async fn follow<R, W>(
    mut lines: FramedRead<R, tokio_util::codec::AnyDelimiterCodec>,
    mut w: W,
    shared: &Arc<Shared>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let limits = shared.limits;
    let (mut events, _follower) = shared.feed.follow();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(line) => {
                    if !send(&mut w, &line, &limits).await {
                        shared.feed.dropped(DropReason::Stalled);
                        tracing::warn!("control socket: an events client stopped reading; dropped");
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    shared.feed.dropped(DropReason::Lagged);
                    tracing::warn!(missed, "control socket: an events client fell behind; dropped");
                    let reply = Reply::error(format!("dropped: fell {missed} events behind"));
                    let _ = timeout(Duration::from_millis(100), w.write_all(&reply.to_line())).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            // A following client sends nothing more; reading notices it hang up.
            more = lines.next() => if !matches!(more, Some(Ok(_))) {
                return;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::control::events::EVENT_QUEUE;
    use meshproxy_core::ids::PeerId;
    use meshproxy_core::io::Event;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tracing::Level;

    fn shared() -> Arc<Shared> {
        let (runner, _) = mpsc::channel(1);
        Arc::new(Shared {
            runner,
            feed: EventFeed::new(),
            info: NodeInfo::default(),
            limits: ControlLimits::default(),
            reload: None,
        })
    }

    /// A client that asks for events and then never reads is dropped (and
    /// counted) while the publisher goes on without waiting.
    #[tokio::test(start_paused = true)]
    async fn an_events_client_that_never_reads_is_dropped_and_counted() {
        let shared = shared();
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let server = tokio::spawn({
            let shared = shared.clone();
            async move { serve(ours, &shared).await }
        });
        theirs.write_all(b"{\"v\":1,\"op\":\"events\"}\n").await.expect("request");
        let mut reader = BufReader::new(&mut theirs);
        let mut first = String::new();
        reader.read_line(&mut first).await.expect("reply");
        assert_eq!(first, "{\"v\":1,\"ok\":true,\"events\":\"streaming\"}\n");
        while shared.feed.counts().event_clients == 0 {
            tokio::task::yield_now().await;
        }
        // From here on the client reads nothing.
        let event = Event::HubLinkLost { hub: PeerId::from_u64(1) };
        for _ in 0..10 * EVENT_QUEUE {
            shared.feed.publish(Level::DEBUG, &event, None);
            tokio::task::yield_now().await;
        }
        timeout(Duration::from_secs(60), server).await.expect("dropped in time").expect("task");
        let counts = shared.feed.counts();
        assert_eq!(counts.dropped_lagged + counts.dropped_stalled, 1, "{counts:?}");
        assert_eq!(counts.event_clients, 0);
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mp-ctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn bind(path: &Path, limits: ControlLimits) -> Result<ControlServer, ControlError> {
        let s = shared();
        ControlServer::bind(path, s.runner.clone(), s.feed.clone(), NodeInfo::default(), limits)
    }

    /// A live node's socket is not taken over, a file that is not a socket
    /// is never touched, a dead node's socket is replaced, and the socket is
    /// gone once the server is.
    #[tokio::test]
    async fn binding_replaces_only_a_dead_nodes_socket() {
        let dir = scratch("bind");
        let path = dir.join("n.sock");
        let first = bind(&path, ControlLimits::default()).expect("bound");
        let mode = std::fs::metadata(&path).expect("socket").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = bind(&path, ControlLimits::default()).expect_err("in use");
        assert!(matches!(again, ControlError::InUse(_)), "{again}");
        // A socket file nobody answers on, as a killed node leaves it.
        drop(std::os::unix::net::UnixListener::bind(dir.join("dead.sock")).expect("bind"));
        let revived = bind(&dir.join("dead.sock"), ControlLimits::default()).expect("replaced");
        drop(revived);
        assert!(!dir.join("dead.sock").exists(), "removed when the server stops");
        std::fs::write(dir.join("notes"), b"keep me").expect("write");
        let err = bind(&dir.join("notes"), ControlLimits::default()).expect_err("not a socket");
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(std::fs::read(dir.join("notes")).expect("kept"), b"keep me");
        drop(first);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// One client past the limit is told so and closed; the others are served.
    #[tokio::test]
    async fn a_client_past_the_limit_is_told_and_closed() {
        let dir = scratch("cap");
        let path = dir.join("n.sock");
        let limits = ControlLimits { max_clients: 1, ..ControlLimits::default() };
        let _server = bind(&path, limits).expect("bound");
        let mut first = tokio::net::UnixStream::connect(&path).await.expect("connect");
        // The first client is served: it is answered (with an error, for a bad line).
        first.write_all(b"{}\n").await.expect("write");
        let mut first = BufReader::new(first);
        let mut line = String::new();
        first.read_line(&mut line).await.expect("reply");
        assert!(line.contains("without \\\"v\\\""), "{line}");
        let second = tokio::net::UnixStream::connect(&path).await.expect("connect");
        let mut second = BufReader::new(second);
        let mut line = String::new();
        second.read_line(&mut line).await.expect("reply");
        assert!(line.contains("too many control clients (1)"), "{line}");
        line.clear();
        assert_eq!(second.read_line(&mut line).await.expect("end"), 0, "closed");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_told_and_closed_at_the_read_deadline() {
        let shared = shared();
        let (ours, theirs) = tokio::io::duplex(4096);
        let server = tokio::spawn({
            let shared = shared.clone();
            async move { serve(ours, &shared).await }
        });
        let mut reader = BufReader::new(theirs);
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("reply");
        assert!(line.contains("no request within 10 s"), "{line}");
        server.await.expect("ended");
    }
}
