//! The client side of the control socket, as `meshproxy status` uses it:
//! one request, one reply, each bounded in size and time, and errors that
//! say what to check.

use super::protocol::{line, Reply};
use super::snapshot::StatusSnapshot;
use futures::StreamExt;
use serde::Serialize;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::time::timeout;
use tokio_util::codec::{AnyDelimiterCodec, FramedRead};

/// Longest reply read (a status with many thousand pins stays far below).
pub const MAX_REPLY: usize = 32 << 20;
/// Time the node has to answer.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Why the node could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// No socket at the path.
    #[error("no control socket at {0}: is the node running? (its path is the config's `control` key; by default the state file's, or else the identity file's, name ending in .sock)")]
    Missing(PathBuf),
    /// A socket file no one answers on.
    #[error("nothing answers on {0}: the node is not running (a node that was killed leaves its socket behind)")]
    Refused(PathBuf),
    /// The socket belongs to another user.
    #[error(
        "{0}: permission denied (the control socket is mode 0600: run this as the node's user)"
    )]
    Denied(PathBuf),
    /// Any other OS error.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// No (complete) answer in time.
    #[error("control socket {0}: no answer within {DEADLINE:?}")]
    Timeout(PathBuf),
    /// The node answered with something that is not a reply.
    #[error("control socket {path}: unreadable reply ({why})")]
    BadReply {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// The node refused the request.
    #[error("the node refused: {0}")]
    Refusal(String),
}

/// Sends `request` (one JSON object) and reads the one reply line.
pub async fn ask<T: Serialize>(path: &Path, request: &T) -> Result<Reply, AskError> {
    let exchange = async {
        let mut stream = UnixStream::connect(path).await.map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => AskError::Missing(path.to_owned()),
            io::ErrorKind::ConnectionRefused => AskError::Refused(path.to_owned()),
            io::ErrorKind::PermissionDenied => AskError::Denied(path.to_owned()),
            _ => AskError::Io { path: path.to_owned(), source: e },
        })?;
        let io_err = |source| AskError::Io { path: path.to_owned(), source };
        stream.write_all(&line(request)).await.map_err(io_err)?;
        let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), MAX_REPLY);
        let bad = |why: String| AskError::BadReply { path: path.to_owned(), why };
        match FramedRead::new(stream, codec).next().await {
            None => Err(bad("the node closed the connection".into())),
            Some(Err(e)) => Err(bad(e.to_string())),
            Some(Ok(bytes)) => serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string())),
        }
    };
    timeout(DEADLINE, exchange).await.map_err(|_| AskError::Timeout(path.to_owned()))?
}

/// The node's status snapshot.
pub async fn status(path: &Path) -> Result<StatusSnapshot, AskError> {
    let reply =
        ask(path, &serde_json::json!({ "v": super::protocol::VERSION, "op": "status" })).await?;
    match reply {
        Reply { ok: true, status: Some(status), .. } => Ok(*status),
        Reply { error: Some(error), .. } => Err(AskError::Refusal(error)),
        _ => Err(AskError::BadReply { path: path.to_owned(), why: "no status in it".into() }),
    }
}

/// Asks the node to reload its config; the keys it changed.
pub async fn reload(path: &Path) -> Result<Vec<String>, AskError> {
    let reply =
        ask(path, &serde_json::json!({ "v": super::protocol::VERSION, "op": "reload" })).await?;
    match reply {
        Reply { ok: true, changed: Some(changed), .. } => Ok(changed),
        Reply { error: Some(error), .. } => Err(AskError::Refusal(error)),
        _ => Err(AskError::BadReply { path: path.to_owned(), why: "no `changed` in it".into() }),
    }
}

/// Asks a hub to revoke a key id or a peer id; the admitted streams it ended.
pub async fn revoke(path: &Path, target: &str) -> Result<usize, AskError> {
    let request =
        serde_json::json!({ "v": super::protocol::VERSION, "op": "revoke", "target": target });
    match ask(path, &request).await? {
        Reply { ok: true, ended: Some(ended), .. } => Ok(ended),
        Reply { error: Some(error), .. } => Err(AskError::Refusal(error)),
        _ => Err(AskError::BadReply { path: path.to_owned(), why: "no `ended` in it".into() }),
    }
}
