//! Hot reload: the node's one way to take a changed config without a
//! restart (and, on hubs, to revoke a key or a peer).
//!
//! Three triggers — SIGHUP, the control socket's `reload` (`meshproxy
//! reload`), and a change of the config file ([`watch`]) — all ask one
//! task, the [`Reloader`], which runs one reload at a time: asks that
//! arrive while one runs are answered together by the next one, so a storm
//! of edits or signals costs one reload after the one in flight.
//!
//! A reload re-reads the config the way the node was started (the file,
//! with the same command-line flags over it), builds its
//! [`Settings`] with the same checks as start-up and `meshproxy check`, and
//! compares it with the config in force ([`diff`]). Any error — a file that
//! does not parse (say, caught mid-write), a value that makes no sense, or
//! a changed key that cannot change live — is logged and answered, naming
//! the key, and nothing changes. Otherwise the core gets the new config in
//! one input (`Input::Reconfigure`), which applies its live parts at once
//! (the rules for work under way are in the README's "Reload" section).

pub mod diff;
#[cfg(unix)]
pub mod watch;

use crate::ops::config::{ConfigError, FileConfig, Settings};
use crate::ops::identity::{parse_peer_id, Identity};
use crate::ops::launch::parse_addr;
use crate::runtime::runner::RunnerMsg;
use meshproxy_core::io::{NewConfig, Revocation};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Re-reads the node's config as it was first read (the file and the
/// flags over it).
pub type Loader = Arc<dyn Fn() -> Result<FileConfig, ConfigError> + Send + Sync>;

/// What a reload answers: the keys it changed (none: the config is the one
/// in force), or why nothing changed.
pub type ReloadResult = Result<Vec<String>, String>;

/// What a revocation answers: the admitted hub streams it ended, or why not.
pub type RevokeResult = Result<usize, String>;

/// Asks queued before the reloader takes them; more are answered by the
/// reload already pending (see [`ReloadHandle::trigger`]).
const QUEUE: usize = 64;

enum Ask {
    /// Reload; the answer goes to `reply` if someone waits for it.
    Reload { why: &'static str, reply: Option<oneshot::Sender<ReloadResult>> },
    /// Revoke a key id or a peer id (hubs).
    Revoke { target: String, reply: oneshot::Sender<RevokeResult> },
}

/// Where reloads and revocations are asked for.
#[derive(Clone, Debug)]
pub struct ReloadHandle {
    tx: mpsc::Sender<Ask>,
}

impl ReloadHandle {
    /// Asks for a reload without waiting for it (a signal, a file change).
    /// If the queue is full, reloads are already pending and will read the
    /// file after this change: nothing is lost by dropping the ask.
    pub fn trigger(&self, why: &'static str) {
        let _ = self.tx.try_send(Ask::Reload { why, reply: None });
    }

    /// Reloads and waits for the answer.
    pub async fn reload(&self, why: &'static str) -> ReloadResult {
        let (reply, answer) = oneshot::channel();
        let ask = Ask::Reload { why, reply: Some(reply) };
        self.tx.send(ask).await.map_err(|_| "the node is stopping".to_owned())?;
        answer.await.map_err(|_| "the node is stopping".to_owned())?
    }

    /// Revokes a hub key (by id) or a peer (by peer id) and waits for the answer.
    pub async fn revoke(&self, target: String) -> RevokeResult {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Ask::Revoke { target, reply }).await.map_err(|_| "the node is stopping")?;
        answer.await.map_err(|_| "the node is stopping".to_owned())?
    }
}

/// The task that owns the config in force and applies reloads, one at a time.
pub struct Reloader {
    loader: Loader,
    identity: Identity,
    current: FileConfig,
    runner: mpsc::Sender<RunnerMsg>,
    rx: mpsc::Receiver<Ask>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader for the node whose runner is `runner`, started from
    /// `current` (as `loader` read it) with `identity`; spawn
    /// [`run`](Self::run) and ask through the handle.
    pub fn new(
        loader: Loader,
        identity: Identity,
        current: FileConfig,
        runner: mpsc::Sender<RunnerMsg>,
    ) -> (Reloader, ReloadHandle) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Reloader { loader, identity, current, runner, rx }, ReloadHandle { tx })
    }

    /// Serves asks until every handle is gone.
    pub async fn run(mut self) {
        while let Some(ask) = self.rx.recv().await {
            match ask {
                Ask::Revoke { target, reply } => {
                    let _ = reply.send(self.revoke(&target).await);
                }
                Ask::Reload { why, reply } => {
                    // Every reload asked for meanwhile is answered by this one:
                    // it reads the file as it is now.
                    let mut replies: Vec<_> = reply.into_iter().collect();
                    let mut later = Vec::new();
                    while let Ok(more) = self.rx.try_recv() {
                        match more {
                            Ask::Reload { reply, .. } => replies.extend(reply),
                            revoke @ Ask::Revoke { .. } => later.push(revoke),
                        }
                    }
                    let result = self.reload(why).await;
                    for reply in replies {
                        let _ = reply.send(result.clone());
                    }
                    for ask in later {
                        if let Ask::Revoke { target, reply } = ask {
                            let _ = reply.send(self.revoke(&target).await);
                        }
                    }
                }
            }
        }
    }

    async fn reload(&mut self, why: &'static str) -> ReloadResult {
        let result = self.try_reload().await;
        match &result {
            Ok(changed) if changed.is_empty() => {
                tracing::info!(trigger = why, "reload: the config is unchanged");
            }
            Ok(changed) => tracing::info!(trigger = why, changed = %changed.join(", "), "reloaded"),
            Err(e) => tracing::warn!(trigger = why, "reload refused, nothing changed: {e}"),
        }
        result
    }

    async fn try_reload(&mut self) -> ReloadResult {
        let file = (self.loader)().map_err(|e| e.to_string())?;
        // The same checks as start-up, whole, before anything is compared or applied.
        let settings =
            Settings::from_file(&file, &self.identity, &parse_addr).map_err(|e| e.to_string())?;
        let changes = diff::changes(&self.current, &file);
        if let Some(refusal) = changes.refusal() {
            return Err(refusal);
        }
        if changes.live.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, applied) = oneshot::channel();
        let config = NewConfig(Arc::new(settings.node));
        let stopping = "the node is stopping".to_owned();
        if self.runner.send(RunnerMsg::Reconfigure(config, reply)).await.is_err() {
            return Err(stopping);
        }
        applied.await.map_err(|_| stopping)?;
        self.current = file;
        Ok(changes.live)
    }

    async fn revoke(&mut self, target: &str) -> RevokeResult {
        let Some(hub) = &self.current.hub else {
            return Err("revoke: this node is not a hub".into());
        };
        let what = if let Some(peer) = parse_peer_id(target) {
            Revocation::Peer(peer)
        } else if hub.keys.iter().any(|k| k.id == target) {
            Revocation::Key(target.to_owned())
        } else {
            let target: String = target.chars().take(64).collect();
            return Err(format!(
                "revoke: `{target}` is neither a peer id nor the id of a key in hub.keys"
            ));
        };
        let (reply, ended) = oneshot::channel();
        let sent = self.runner.send(RunnerMsg::Revoke(what.clone(), reply)).await;
        let ended = match sent {
            Ok(()) => ended.await.map_err(|_| "the node is stopping".to_owned())?,
            Err(_) => return Err("the node is stopping".into()),
        };
        tracing::warn!(?what, ended, "revoked by the operator until hub.keys changes");
        Ok(ended)
    }
}
