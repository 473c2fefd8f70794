//! Client listeners on loopback.
// Helpers outside #[test] fns panic on purpose too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use meshproxy::runtime::listener::{accept_loop, bind, exposed_without_auth};
use meshproxy::runtime::runner::RunnerMsg;
use meshproxy_core::ids::ListenerId;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

#[test]
fn only_unauthenticated_non_loopback_binds_are_exposed() {
    assert!(!exposed_without_auth("127.0.0.1:1080".parse().unwrap(), false));
    assert!(!exposed_without_auth("[::1]:1080".parse().unwrap(), false));
    assert!(exposed_without_auth("0.0.0.0:1080".parse().unwrap(), false));
    assert!(!exposed_without_auth("0.0.0.0:1080".parse().unwrap(), true));
}

#[tokio::test]
async fn each_accepted_connection_reaches_the_runner_with_its_source() {
    timeout(Duration::from_secs(10), async {
        let listener = bind("127.0.0.1:0".parse().unwrap(), false).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(accept_loop(listener, ListenerId(3), tx));
        for _ in 0..2 {
            let mut app = TcpStream::connect(addr).await.unwrap();
            let Some(RunnerMsg::AppAccepted { listener, source, mut io }) = rx.recv().await else {
                panic!("expected an accepted connection");
            };
            assert_eq!(listener, ListenerId(3));
            assert_eq!(source, app.local_addr().unwrap());
            app.write_all(b"hi").await.unwrap();
            let mut two = [0u8; 2];
            io.read_exact(&mut two).await.unwrap();
            assert_eq!(&two, b"hi");
        }
        drop(rx);
        // The loop ends once the runner is gone (after the next accept).
        let _ = TcpStream::connect(addr).await;
        task.await.unwrap();
    })
    .await
    .unwrap();
}
