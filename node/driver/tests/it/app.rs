//! A client node assembled from a TOML config (real listener socket), with a
//! hub and an exit on the in-memory fake network.
// Helpers outside #[test] fns panic on purpose too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use crate::common::{echo_origin, exit_config, hub_config, status, wait_for_exit, FakeNet};
use meshproxy::ops::assemble::{start_node, NetworkStarter, RunningNode, StartError};
use meshproxy::ops::config::FileConfig;
use meshproxy::ops::identity::Identity;
use meshproxy::runtime::runner::RunnerMsg;
use meshproxy_core::record::PeerAddr;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

fn any_addr(s: &str) -> Result<PeerAddr, String> {
    Ok(PeerAddr(s.as_bytes().to_vec()))
}

/// Hub and exit runners plus a client node from TOML; (client node, hub, exit).
async fn setup() -> (RunningNode, mpsc::Sender<RunnerMsg>, mpsc::Sender<RunnerMsg>) {
    setup_with("", "").await
}

/// [`setup`], with extra top-level and listener TOML lines.
async fn setup_with(
    extra: &str,
    listener: &str,
) -> (RunningNode, mpsc::Sender<RunnerMsg>, mpsc::Sender<RunnerMsg>) {
    let net = FakeNet::default();
    let hub = Identity::from_secret([1; 32]);
    let exit = Identity::from_secret([2; 32]);
    let client = Identity::from_secret([3; 32]);
    let hub_tx = net.spawn_runner(hub_config(hub.peer_id()), 1);
    let exit_tx = net.spawn_runner(exit_config(exit.peer_id(), hub.peer_id()), 2);
    let text = format!(
        r#"{extra}
[[hubs]]
peer = "{hub}"
[client]
credential = {{ id = "client", token = "token-client-0123456789abcdef" }}
refresh_ms = 200
[[client.listeners]]
bind = "127.0.0.1:0"
protocol = "both"
{listener}
"#,
        hub = hub.peer_id_string()
    );
    let file = FileConfig::parse(&text).unwrap();
    let node =
        start_node(&file, &client, 3, &any_addr, net.starter(client.peer_id())).await.unwrap();
    wait_for_exit(&node.runner()).await;
    (node, hub_tx, exit_tx)
}

async fn http_connect(node: &RunningNode, origin: SocketAddr, early: &[u8]) -> TcpStream {
    let mut app = TcpStream::connect(node.listen_addrs[0]).await.unwrap();
    let request = format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    app.write_all(&[request.as_bytes(), early].concat()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        app.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    app
}

#[tokio::test]
async fn http_connect_through_a_configured_client_listener() {
    timeout(Duration::from_secs(20), async {
        let origin = echo_origin().await;
        let (node, hub_tx, exit_tx) = setup().await;
        let mut app = http_connect(&node, origin, b"early").await;
        app.write_all(b" and late").await.unwrap();
        app.shutdown().await.unwrap();
        let mut body = Vec::new();
        app.read_to_end(&mut body).await.unwrap();
        assert_eq!(body, b"early and late");
        let client_tx = node.runner();
        while status(&client_tx).await.resources.sessions > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        node.shutdown().await;
        assert!(client_tx.send(RunnerMsg::Shutdown).await.is_err(), "the runner is gone");
        let _ = hub_tx.send(RunnerMsg::Shutdown).await;
        let _ = exit_tx.send(RunnerMsg::Shutdown).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn graceful_shutdown_stops_accepting_and_lets_a_session_finish() {
    timeout(Duration::from_secs(20), async {
        let origin = echo_origin().await;
        let (node, hub_tx, exit_tx) = setup().await;
        let listen = node.listen_addrs[0];
        let mut app = http_connect(&node, origin, b"").await;
        let stopping = tokio::spawn(node.shutdown_gracefully(Duration::from_secs(10)));
        // New apps are turned away while the running session goes on: the
        // listener closes (waited for, within a bound, not assumed after a nap).
        let closing = tokio::time::Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(listen).await.is_ok() {
            assert!(tokio::time::Instant::now() < closing, "the listener is still open after 5 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        app.write_all(b"still here").await.unwrap();
        let mut got = [0u8; 10];
        app.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"still here");
        assert!(!stopping.is_finished(), "waits for the session");
        app.shutdown().await.unwrap();
        let mut rest = Vec::new();
        app.read_to_end(&mut rest).await.unwrap();
        stopping.await.unwrap();
        let _ = hub_tx.send(RunnerMsg::Shutdown).await;
        let _ = exit_tx.send(RunnerMsg::Shutdown).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn sticky_pins_are_persisted_to_the_state_file() {
    timeout(Duration::from_secs(20), async {
        let dir = std::env::temp_dir().join(format!("meshproxy-app-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("state");
        let origin = echo_origin().await;
        let extra = format!("state = \"{}\"", state.display());
        let (node, hub_tx, exit_tx) = setup_with(&extra, "sticky = \"listener\"").await;
        let mut app = http_connect(&node, origin, b"").await;
        app.shutdown().await.unwrap();
        let mut rest = Vec::new();
        app.read_to_end(&mut rest).await.unwrap();
        // Written by a background task: wait for it.
        let snapshot = loop {
            if let Some(s) = meshproxy::ops::state::load(&state).unwrap() {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(!snapshot.sticky.is_empty(), "the pin is in the snapshot");
        node.shutdown().await;
        let _ = hub_tx.send(RunnerMsg::Shutdown).await;
        let _ = exit_tx.send(RunnerMsg::Shutdown).await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .unwrap();
}

/// A peer network that cannot start stops the node's start with
/// `StartError::Network`, which keeps the network's own error as its source.
#[tokio::test]
async fn a_network_that_does_not_start_is_a_start_error_keeping_its_cause() {
    let file = FileConfig::parse("[hub]\n").unwrap();
    let starter: NetworkStarter = Box::new(|_sink| {
        Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "peer port taken").into())
    });
    let identity = Identity::from_secret([9; 32]);
    let started = start_node(&file, &identity, 9, &any_addr, starter);
    let err = match timeout(Duration::from_secs(10), started).await.expect("in time") {
        Ok(_) => panic!("started without a network"),
        Err(err) => err,
    };
    assert_eq!(err.to_string(), "network: peer port taken");
    let StartError::Network(cause) = &err else { panic!("not a network error: {err:?}") };
    let io = cause.downcast_ref::<std::io::Error>().expect("the network's own error type");
    assert_eq!(io.kind(), std::io::ErrorKind::AddrInUse);
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert_eq!(source.as_deref(), Some("peer port taken"));
}
