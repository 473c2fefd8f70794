//! Assembles a running node from a config file: identity, core config, state
//! file, runner, client listeners and the peer network, plus graceful stop.
//!
//! The peer network is passed in as a [`NetworkStarter`], so the node can run
//! over libp2p (`p2p/network/`) or over an in-memory fake in tests.

use crate::ops::config::{ConfigError, FileConfig, Settings};
use crate::ops::control::EventFeed;
use crate::ops::identity::Identity;
use crate::ops::metrics::{Metrics, MetricsServer, ServeLimits};
use crate::ops::state::{self, StateError};
use crate::p2p::{shed_inbound_stream, InboundGate, NetCommand, NetEvent};
use crate::runtime::listener;
use crate::runtime::runner::{NodeRunner, RunnerMsg, RunnerStatus};
use crate::runtime::sockets::{Sockets, TokioSockets};
use meshproxy_core::ids::ListenerId;
use meshproxy_core::record::PeerAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Commands queued for the network before the runner treats it as congested.
pub const NET_QUEUE: usize = 1024;

/// A sink for network events, as the network actor wants it.
pub type EventSink = Box<dyn Fn(NetEvent) + Send + Sync + 'static>;

/// The runtime a node runs on: `threads` workers (checked by
/// [`Settings::from_file`]), or one per CPU.
pub fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n);
    }
    builder.enable_all().build()
}

/// Starts the peer network: takes where to report events, returns where to
/// send commands.
pub type NetworkStarter =
    Box<dyn FnOnce(EventSink) -> Result<mpsc::Sender<NetCommand>, NetworkError> + Send>;

/// Why a [`NetworkStarter`] could not start the peer network: the network's
/// own error, kept whole (a caller may downcast it) rather than flattened to
/// a string.
pub type NetworkError = Box<dyn std::error::Error + Send + Sync>;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state file could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// A client listener could not be bound.
    #[error("listener {index} on {addr}: {source}")]
    Listen {
        /// Its position in the config.
        index: usize,
        /// Its address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The metrics endpoint could not be bound.
    #[error("metrics endpoint on {addr}: {source}")]
    Metrics {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The peer network did not start.
    #[error("network: {0}")]
    Network(#[source] NetworkError),
}

/// Forwards network events into the runner's channel, in order, from a plain
/// (non-async) callback.
///
/// The callback cannot wait, so events go through an unbounded hop. Inbound
/// streams in it are capped at [`crate::p2p::INBOUND_STREAM_QUEUE`]: beyond that a new one
/// is reset (counted in [`crate::p2p::inbound_streams_shed`]). Other events
/// are bounded by the network's connection and stream limits.
pub fn event_sink(runner: mpsc::Sender<RunnerMsg>) -> EventSink {
    let (tx, mut rx) = mpsc::unbounded_channel::<NetEvent>();
    let gate = InboundGate::default();
    let leaving = gate.clone();
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            let inbound = matches!(event, NetEvent::InboundStream { .. });
            let sent = runner.send(RunnerMsg::Net(event)).await;
            if inbound {
                leaving.leave();
            }
            if sent.is_err() {
                return;
            }
        }
    });
    Box::new(move |event| {
        if matches!(event, NetEvent::InboundStream { .. }) && !gate.enter() {
            shed_inbound_stream("runner queue");
            return; // dropping the stream resets it
        }
        let _ = tx.send(event);
    })
}

/// A node that is running.
#[derive(Debug)]
pub struct RunningNode {
    runner: mpsc::Sender<RunnerMsg>,
    task: JoinHandle<()>,
    listeners: Vec<JoinHandle<()>>,
    /// The bound addresses of the client listeners, in config order.
    pub listen_addrs: Vec<SocketAddr>,
    /// Where the metrics endpoint listens (the real port), if configured.
    pub metrics_addr: Option<SocketAddr>,
    metrics: Option<MetricsServer>,
    events: Arc<EventFeed>,
}

impl RunningNode {
    /// A sender into the runner (status queries, tests).
    pub fn runner(&self) -> mpsc::Sender<RunnerMsg> {
        self.runner.clone()
    }

    /// The events the runner logs and the recent warnings, for a control
    /// endpoint ([`crate::ops::control`]).
    pub fn events(&self) -> Arc<EventFeed> {
        self.events.clone()
    }

    /// A summary of the node; `None` once the runner has stopped.
    pub async fn status(&self) -> Option<RunnerStatus> {
        let (reply, answer) = oneshot::channel();
        self.runner.send(RunnerMsg::Status(reply)).await.ok()?;
        answer.await.ok()
    }

    /// Stops accepting app connections, lets running sessions finish for up
    /// to `grace`, then stops (aborting whatever is left).
    pub async fn shutdown_gracefully(self, grace: Duration) {
        for l in &self.listeners {
            l.abort();
        }
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            match self.status().await {
                Some(s) if s.resources.sessions > 0 => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => break,
            }
        }
        self.shutdown().await;
    }

    /// Stops accepting, stops the runner (aborting every stream) and waits for it.
    pub async fn shutdown(self) {
        for l in &self.listeners {
            l.abort();
        }
        let _ = self.runner.send(RunnerMsg::Shutdown).await;
        let _ = self.task.await;
        if let Some(m) = self.metrics {
            m.stop().await;
        }
    }
}

/// Starts the node `file` describes: builds its [`Settings`], restores the
/// state file, starts the network, binds the client listeners and spawns the
/// runner.
pub async fn start_node(
    file: &FileConfig,
    identity: &Identity,
    seed: u64,
    parse_addr: &dyn Fn(&str) -> Result<PeerAddr, String>,
    start_network: NetworkStarter,
) -> Result<RunningNode, StartError> {
    start_node_with(file, identity, seed, parse_addr, start_network, Arc::new(TokioSockets)).await
}

/// [`start_node`], with client listeners, origin connects and name lookups
/// going through `sockets` rather than the operating system. (A hub's relay
/// learns whom to serve from the core's `Admit`/`Revoke`, passed to the
/// network as commands.)
pub async fn start_node_with(
    file: &FileConfig,
    identity: &Identity,
    seed: u64,
    parse_addr: &dyn Fn(&str) -> Result<PeerAddr, String>,
    start_network: NetworkStarter,
    sockets: Arc<dyn Sockets>,
) -> Result<RunningNode, StartError> {
    let settings = Settings::from_file(file, identity, parse_addr)?;
    start_with_settings(settings, identity, seed, start_network, sockets).await
}

/// [`start_node_with`] for settings already built.
pub async fn start_with_settings(
    settings: Settings,
    identity: &Identity,
    seed: u64,
    start_network: NetworkStarter,
    sockets: Arc<dyn Sockets>,
) -> Result<RunningNode, StartError> {
    let Settings { node: config, reachability, listeners, metrics, state, .. } = settings;
    if config.exit.as_ref().is_some_and(|e| e.open) {
        tracing::warn!(
            "exit.open = true: this exit serves any peer that reaches it, admitted or not; \
             what leaves its address is the operator's responsibility"
        );
    }
    let snapshot = match &state {
        Some(path) => state::load(path)?,
        None => None,
    };
    let mut bound = Vec::new();
    for (index, s) in listeners.into_iter().enumerate() {
        listener::warn_if_exposed(s.bind, s.has_auth);
        let l = sockets.bind(s.bind).await.map_err(|source| StartError::Listen {
            index,
            addr: s.bind,
            source,
        })?;
        bound.push(l);
    }
    let metrics = match metrics {
        Some(addr) => Some(serve_metrics(addr).await?),
        None => None,
    };
    let (net_tx, mut net_rx) = mpsc::channel::<NetCommand>(NET_QUEUE);
    let events = EventFeed::new();
    let mut runner =
        NodeRunner::new(config, seed, net_tx).with_sockets(sockets).with_events(events.clone());
    if let Some(path) = state {
        runner = runner.with_state_file(path);
    }
    if let Some((_, m)) = &metrics {
        runner = runner.with_metrics(m.clone());
    }
    if let Some(snapshot) = snapshot {
        runner.restore(snapshot);
    }
    if let Some(reachability) = reachability {
        runner.set_reachability(reachability);
    }
    let runner_tx = runner.sender();
    let network = start_network(event_sink(runner_tx.clone())).map_err(StartError::Network)?;
    tokio::spawn(async move {
        while let Some(cmd) = net_rx.recv().await {
            if network.send(cmd).await.is_err() {
                return;
            }
        }
    });
    let mut listen_addrs = Vec::new();
    let mut listeners = Vec::new();
    for (i, l) in bound.into_iter().enumerate() {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, listener = i, "client listener ready");
            listen_addrs.push(addr);
        }
        let id = ListenerId(i as u64);
        listeners.push(tokio::spawn(listener::accept_loop(l, id, runner_tx.clone())));
    }
    tracing::info!(peer = %identity.peer_id_string(), "node running");
    let task = tokio::spawn(runner.run());
    let metrics = metrics.map(|(server, _)| server);
    let metrics_addr = metrics.as_ref().map(MetricsServer::local_addr);
    Ok(RunningNode {
        runner: runner_tx,
        task,
        listeners,
        listen_addrs,
        metrics_addr,
        metrics,
        events,
    })
}

/// Binds the metrics endpoint; warns when it is reachable beyond this host,
/// since it answers anyone without authentication.
async fn serve_metrics(addr: SocketAddr) -> Result<(MetricsServer, Arc<Metrics>), StartError> {
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "metrics endpoint is not on loopback: anyone who can reach it can read the node's metrics");
    }
    let metrics = Arc::new(Metrics::new());
    let server = MetricsServer::bind(addr, metrics.clone(), ServeLimits::default())
        .await
        .map_err(|source| StartError::Metrics { addr, source })?;
    tracing::info!(addr = %server.local_addr(), "metrics endpoint ready");
    Ok((server, metrics))
}

/// Waits for Ctrl-C or (on unix) SIGTERM.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::p2p::{inbound_streams_shed, INBOUND_STREAM_QUEUE};
    use meshproxy_core::ids::PeerId;
    use meshproxy_core::io::Protocol;
    use tokio::io::{AsyncReadExt as _, DuplexStream};

    fn inbound() -> (NetEvent, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(64);
        let event = NetEvent::InboundStream {
            peer: PeerId::from_u64(1),
            protocol: Protocol::Proxy,
            io: Box::new(ours),
        };
        (event, theirs)
    }

    #[tokio::test]
    async fn the_sink_resets_inbound_streams_beyond_its_queue_and_counts_them() {
        // A runner that takes one message and then nothing.
        let (runner, _held) = mpsc::channel(1);
        let sink = event_sink(runner);
        let shed_before = inbound_streams_shed();
        // Nothing runs between these calls (one thread): the queue fills up.
        let mut peers: Vec<_> = (0..INBOUND_STREAM_QUEUE + 3)
            .map(|_| {
                let (event, peer) = inbound();
                sink(event);
                peer
            })
            .collect();
        assert_eq!(inbound_streams_shed() - shed_before, 3);
        // The shed streams are gone (their peers read the end); queued ones are not.
        for peer in &mut peers[INBOUND_STREAM_QUEUE..] {
            assert_eq!(peer.read(&mut [0; 1]).await.expect("end"), 0);
        }
        let mut byte = [0; 1];
        let queued = futures::FutureExt::now_or_never(peers[0].read(&mut byte));
        assert!(queued.is_none(), "a queued stream stays open");
        // Other events are never shed.
        sink(NetEvent::DialFailed { peer: PeerId::from_u64(2) });
        assert_eq!(inbound_streams_shed() - shed_before, 3);
        // One stream moves on into the runner's channel: room for one more.
        tokio::task::yield_now().await;
        let (event, _peer) = inbound();
        sink(event);
        assert_eq!(inbound_streams_shed() - shed_before, 3);
        let (event, mut peer) = inbound();
        sink(event);
        assert_eq!(inbound_streams_shed() - shed_before, 4);
        assert_eq!(peer.read(&mut [0; 1]).await.expect("end"), 0);
    }

    #[test]
    fn the_runtime_has_the_workers_asked_for() {
        for n in [1, 3] {
            let runtime = super::runtime(Some(n)).expect("runtime");
            assert_eq!(runtime.metrics().num_workers(), n);
        }
        // One per CPU, unless TOKIO_WORKER_THREADS (tokio's own override) says otherwise.
        let default = super::runtime(None).expect("runtime");
        let from_env = std::env::var("TOKIO_WORKER_THREADS").ok().and_then(|v| v.parse().ok());
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(default.metrics().num_workers(), from_env.unwrap_or(cpus));
    }
}
