//! Pumps (core-controlled streams) on real loopback TCP.
// Helpers outside #[test] fns panic on purpose too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use meshproxy::runtime::pump::{run, PumpCmd, PumpEvent};
use meshproxy::runtime::tcp::TcpIo;
use meshproxy_core::ids::StreamId;
use meshproxy_core::io::Close;
use std::io::ErrorKind;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

const S: StreamId = StreamId::outside(1);

/// (the remote end the test holds, commands to the pump, what the pump reports)
async fn pumped() -> (TcpStream, mpsc::Sender<PumpCmd>, mpsc::Receiver<(StreamId, PumpEvent)>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (remote, local) = tokio::join!(TcpStream::connect(l.local_addr().unwrap()), l.accept());
    let (cmd_tx, cmd_rx) = mpsc::channel(8);
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(run(S, Box::new(TcpIo::new(local.unwrap().0)), cmd_rx, tx));
    (remote.unwrap(), cmd_tx, rx)
}

async fn read_until_end(s: &mut TcpStream) -> (Vec<u8>, Result<(), ErrorKind>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e.kind())),
        }
    }
}

#[tokio::test]
async fn data_and_a_half_close_are_reported_and_writes_go_on_after_it() {
    timeout(Duration::from_secs(10), async {
        let (mut remote, cmds, mut rx) = pumped().await;
        remote.write_all(b"hello").await.unwrap();
        let Some((stream, PumpEvent::Data(data))) = rx.recv().await else { panic!() };
        assert_eq!((stream, &data[..]), (S, &b"hello"[..]));
        remote.shutdown().await.unwrap();
        let Some((S, PumpEvent::Closed(Close::Fin))) = rx.recv().await else {
            panic!("a FIN is reported as Fin")
        };
        cmds.send(PumpCmd::Write(Bytes::from_static(b"reply"))).await.unwrap();
        cmds.send(PumpCmd::Close(Close::Fin)).await.unwrap();
        assert_eq!(read_until_end(&mut remote).await, (b"reply".to_vec(), Ok(())));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn close_reset_resets_and_a_remote_reset_is_reported_as_reset() {
    timeout(Duration::from_secs(10), async {
        let (mut remote, cmds, _rx) = pumped().await;
        cmds.send(PumpCmd::Write(Bytes::from_static(b"x"))).await.unwrap();
        cmds.send(PumpCmd::Close(Close::Reset)).await.unwrap();
        let (_, end) = read_until_end(&mut remote).await;
        assert_eq!(end, Err(ErrorKind::ConnectionReset));

        let (remote, _cmds, mut rx) = pumped().await;
        remote.set_zero_linger().unwrap();
        drop(remote);
        let Some((S, PumpEvent::Closed(Close::Reset))) = rx.recv().await else {
            panic!("an RST is reported as Reset, never as Fin")
        };
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn detach_hands_the_stream_back_after_queued_writes() {
    timeout(Duration::from_secs(10), async {
        let (mut remote, cmds, mut rx) = pumped().await;
        cmds.send(PumpCmd::Write(Bytes::from_static(b"first"))).await.unwrap();
        cmds.send(PumpCmd::Detach).await.unwrap();
        let Some((stream, PumpEvent::Detached { mut io, state })) = rx.recv().await else {
            panic!("expected Detached")
        };
        assert_eq!(stream, S);
        assert!(!state.read_eof);
        let mut five = [0u8; 5];
        remote.read_exact(&mut five).await.unwrap();
        assert_eq!(&five, b"first", "writes queued before Detach are written");
        remote.write_all(b"after").await.unwrap();
        io.read_exact(&mut five).await.unwrap();
        assert_eq!(&five, b"after", "the detached stream is still whole");
    })
    .await
    .unwrap();
}
