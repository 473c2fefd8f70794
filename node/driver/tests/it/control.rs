//! The control socket, `meshproxy status` and `meshproxy state show` against
//! real `meshproxy run` processes on 127.0.0.1 (a hub, an exit and a client),
//! with curl as the app: what the status shows after a proxied request, the
//! protocol's refusals, the event stream, the socket's mode, and the state
//! file the client wrote (and a corrupted copy).
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns fail the test by panicking
#![allow(clippy::disallowed_methods)] // wall-clock deadlines in a test harness

use crate::common::e2e::*;
use meshproxy::ops::control::protocol::EventLine;
use meshproxy::ops::control::render::short_peer;
use meshproxy::ops::control::StatusSnapshot;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BODY: &str = "hello through the mesh\n";

/// A client with one SOCKS5 listener that pins its sessions to an exit, and a
/// state file keeping the pins.
fn client_toml(hubs: &str, state: &Path) -> String {
    format!(
        r#"state = "{}"
{hubs}
[client]
credential = {{ id = "client", token = "t-client-token-01234567" }}
refresh_ms = 200
[[client.listeners]]
bind = "127.0.0.1:0"
protocol = "socks5"
sticky = "listener"
"#,
        state.display()
    )
}

/// An HTTP origin answering every request with [`BODY`].
async fn page_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
                    BODY.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// An origin that accepts connections and holds them open.
async fn holding_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

/// Runs a program off the runtime's threads.
async fn run(program: &'static str, args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(program).args(&args).output().unwrap())
        .await
        .unwrap()
}

async fn meshproxy(args: &[&str]) -> Output {
    let args = args.iter().map(|a| (*a).to_owned()).collect();
    run(env!("CARGO_BIN_EXE_meshproxy"), args).await
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `meshproxy status --control SOCKET --json`, parsed.
async fn status_json(socket: &Path) -> StatusSnapshot {
    let out = meshproxy(&["status", "--control", socket.to_str().unwrap(), "--json"]).await;
    assert!(out.status.success(), "status --json: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

/// Sends `lines` on one connection, reading one reply line after each.
fn exchange(socket: &Path, lines: &[&[u8]]) -> (Vec<serde_json::Value>, BufReader<UnixStream>) {
    let stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(stream);
    let mut replies = Vec::new();
    for line in lines {
        reader.get_mut().write_all(line).unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        assert!(reply.ends_with('\n'), "one whole line: {reply:?}");
        replies.push(serde_json::from_str(&reply).unwrap());
    }
    (replies, reader)
}

fn error_of(reply: &serde_json::Value) -> String {
    assert_eq!(reply["v"], 1);
    assert_eq!(reply["ok"], false, "{reply}");
    reply["error"].as_str().unwrap().to_owned()
}

/// curl through the client's SOCKS5 listener; asserts the page came back.
async fn fetch(listener: SocketAddr, origin: SocketAddr) {
    let args = vec![
        "-sS".into(),
        "--max-time".into(),
        "20".into(),
        "--socks5-hostname".into(),
        listener.to_string(),
        format!("http://{origin}/"),
    ];
    let out = run("curl", args).await;
    assert!(out.status.success(), "curl: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), BODY);
}

#[cfg(target_os = "linux")]
#[test]
fn status_shows_the_clients_exit_with_path_and_breaker_its_hub_and_its_sessions() {
    serial(Duration::from_secs(150), async {
        let scratch = Scratch::new("control");
        let hub_id = identity(61);
        let hub = Proc::spawn("hub", &scratch, &hub_id, &hub_toml(0)).await;
        let hub_addr = hub.p2p[0].rsplit_once("/p2p/").unwrap().0.to_owned();
        let hubs = hubs_toml(&hub_id, &hub_addr);
        let exit = Proc::spawn("exit", &scratch, &identity(62), &exit_toml(&hubs)).await;
        let state = scratch.path("client.state");
        let mut client =
            Proc::spawn("client", &scratch, &identity(63), &client_toml(&hubs, &state)).await;
        // The default path: beside the state file, named like it.
        let socket = scratch.path("client.sock");
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the socket is the owner's only: {mode:o}");

        poll_until("the client learning its exit", Duration::from_secs(20), || async {
            (status_json(&socket).await.exits.len() == 1).then_some(())
        })
        .await;
        let listener = client.listeners[0];
        fetch(listener, page_origin().await).await;
        // A session that stays open while the status is taken.
        let (code, _held) = socks5(listener, &Dest::Ip(holding_origin().await)).await.unwrap();
        assert_eq!(code, 0, "SOCKS5 success");

        // The curl session may still be closing: wait for the held one alone.
        let s = poll_until("one session open", Duration::from_secs(10), || async {
            let s = status_json(&socket).await;
            (s.sessions == 1).then_some(s)
        })
        .await;
        assert_eq!(s.peer_id, client.peer_id);
        assert_eq!(s.roles, ["client"]);
        let [h] = &s.hubs[..] else { panic!("one hub: {:?}", s.hubs) };
        assert_eq!(h.peer, hub.peer_id);
        assert!(h.admitted, "{h:?}");
        assert_eq!((h.connected.as_deref(), h.link.as_str()), (Some("direct"), "ready"));
        let [e] = &s.exits[..] else { panic!("one exit: {:?}", s.exits) };
        assert_eq!(e.peer, exit.peer_id);
        assert_eq!(e.path.as_deref(), Some("direct"), "{e:?}");
        assert_eq!(e.breaker, "closed");
        assert_eq!((e.sessions, e.failures), (1, 0), "{e:?}");
        assert!(e.latency_ms.is_some_and(|ms| ms > 0.0), "measured: {e:?}");
        let [l] = &s.listeners[..] else { panic!("one listener: {:?}", s.listeners) };
        assert_eq!((l.bind.clone(), l.sessions), (Some(listener.to_string()), 1));
        assert_eq!(s.sessions, 1);
        let [pin] = &s.pins[..] else { panic!("one pin: {:?}", s.pins) };
        assert_eq!(
            (pin.listener, pin.session.as_deref(), pin.exit.as_str()),
            (0, None, &*exit.peer_id)
        );
        assert!(s.connections.direct >= 2, "to the hub and the exit: {:?}", s.connections);

        // The same as text, found through the config file.
        let config = scratch.path("client.toml");
        let out = meshproxy(&["status", "-c", config.to_str().unwrap()]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let screen = text(&out.stdout);
        let exit_row = screen
            .lines()
            .find(|l| l.starts_with(&short_peer(&exit.peer_id)))
            .unwrap_or_else(|| panic!("an exit row:\n{screen}"));
        let cells: Vec<&str> = exit_row.split_whitespace().collect();
        assert_eq!(&cells[1..2], ["direct"], "{exit_row}");
        assert!(cells.contains(&"closed"), "{exit_row}");
        assert!(screen.contains("EXITS (1)") && screen.contains("STICKY PINS (1)"), "{screen}");
        let hub_row = screen.lines().find(|l| l.starts_with(&short_peer(&hub.peer_id))).unwrap();
        assert_eq!(hub_row.split_whitespace().take(3).collect::<Vec<_>>()[1..], ["direct", "yes"]);

        // The hub and the exit answer too: the exit is registered, the hub admitted both.
        let hub_socket = scratch.path(&format!("{}.sock", hub.peer_id));
        let exit_socket = scratch.path(&format!("{}.sock", exit.peer_id));
        let e = status_json(&exit_socket).await;
        assert!(e.hubs.iter().all(|h| h.registered && h.admitted), "{:?}", e.hubs);
        let h = status_json(&hub_socket).await;
        let held = h.hub.unwrap();
        assert_eq!((held.admitted_peers, held.directory_entries), (2, 1), "{held:?}");

        protocol_refusals(&socket).await;
        events_follow_a_session(&socket, listener).await;
        state_show(&scratch, &state, &exit.peer_id).await;

        // A killed node leaves its socket behind; `status` says nobody answers there.
        client.kill();
        let out = meshproxy(&["status", "--control", socket.to_str().unwrap()]).await;
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(err.contains("nothing answers on") && err.contains("client.sock"), "{err}");
        let missing = scratch.path("none.sock");
        let out = meshproxy(&["status", "--control", missing.to_str().unwrap()]).await;
        let err = text(&out.stderr);
        assert!(err.contains("no control socket at") && err.contains("`control` key"), "{err}");
    });
}

/// A malformed line, an unknown op, an unsupported op and another version
/// are refused on the same connection, which stays open; an oversized line
/// is refused and closes it; the endpoint goes on serving another client.
async fn protocol_refusals(socket: &Path) {
    let socket = socket.to_owned();
    tokio::task::spawn_blocking(move || {
        let oversized = [vec![b'x'; 5000], b"\n".to_vec()].concat();
        let lines: [&[u8]; 5] = [
            b"not json\n",
            b"{\"v\":1,\"op\":\"dance\"}\n",
            b"{\"v\":1,\"op\":\"revoke\"}\n",
            b"{\"v\":7,\"op\":\"status\"}\n",
            &oversized,
        ];
        let (replies, mut reader) = exchange(&socket, &lines);
        assert!(error_of(&replies[0]).starts_with("malformed request"), "{}", replies[0]);
        assert!(error_of(&replies[1]).contains("unknown op `dance`"), "{}", replies[1]);
        assert!(error_of(&replies[2]).contains("revoke needs \"target\""), "{}", replies[2]);
        assert!(error_of(&replies[3]).contains("version 7 is not supported"), "{}", replies[3]);
        assert!(error_of(&replies[4]).contains("longer than 4096 bytes"), "{}", replies[4]);
        let mut rest = Vec::new();
        assert_eq!(reader.read_to_end(&mut rest).unwrap(), 0, "closed after the oversized line");
        let (replies, _) = exchange(&socket, &[b"{\"v\":1,\"op\":\"status\"}\n"]);
        assert_eq!(replies[0]["ok"], true, "another client is served");
        assert!(replies[0]["status"]["peer_id"].is_string());
    })
    .await
    .unwrap();
}

/// An `events` client sees the events of a session it did not start.
async fn events_follow_a_session(socket: &Path, listener: SocketAddr) {
    let socket: PathBuf = socket.to_owned();
    let (replies, reader) =
        tokio::task::spawn_blocking(move || exchange(&socket, &[b"{\"v\":1,\"op\":\"events\"}\n"]))
            .await
            .unwrap();
    assert_eq!(replies[0], serde_json::json!({"v": 1, "ok": true, "events": "streaming"}));
    fetch(listener, page_origin().await).await;
    let kinds = tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut kinds = Vec::new();
        while !kinds.iter().any(|k| k == "SessionClosed") {
            assert!(Instant::now() < deadline, "no SessionClosed event: {kinds:?}");
            let mut line = String::new();
            assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended: {kinds:?}");
            let event: EventLine = serde_json::from_str(&line).unwrap();
            assert_eq!(event.v, 1);
            kinds.push(event.event.kind);
        }
        kinds
    })
    .await
    .unwrap();
    assert!(kinds.iter().any(|k| k == "SessionEstablished"), "{kinds:?}");
}

/// `state show` on the file the client wrote, and on corrupted copies.
async fn state_show(scratch: &Scratch, state: &Path, exit: &str) {
    poll_until("the client writing its state file", Duration::from_secs(10), || async {
        state.exists().then_some(())
    })
    .await;
    let path = state.to_str().unwrap();
    let out = meshproxy(&["state", "show", path]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    assert!(listing.starts_with(&format!("{path}: 1 sticky pins")), "{listing}");
    assert!(
        listing.contains(&short_peer(exit)) && listing.contains("(whole listener)"),
        "{listing}"
    );
    let out = meshproxy(&["state", "show", path, "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["pins"][0]["exit"], exit);
    assert_eq!(json["pins"][0]["listener"], 0);
    assert_eq!(json["pins"].as_array().unwrap().len(), 1);

    let bytes = std::fs::read(state).unwrap();
    let cut = scratch.path("cut.state");
    std::fs::write(&cut, &bytes[..bytes.len() - 1]).unwrap();
    let out = meshproxy(&["state", "show", cut.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("cut.state is corrupt") && err.contains("truncated"), "{err}");
    let foreign = scratch.path("foreign.state");
    std::fs::write(&foreign, b"hello").unwrap();
    let out = meshproxy(&["state", "show", foreign.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is not a meshproxy state file"), "{}", text(&out.stderr));
}
