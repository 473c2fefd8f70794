//! `meshproxy tui`, the real binary in a real terminal: tmux runs it against
//! real `meshproxy run` processes (a hub, an exit, a client) on 127.0.0.1;
//! the test types keys with `send-keys` and reads the screen with
//! `capture-pane`. Under CI (`CI=true`) a missing tmux fails the test;
//! `.ci/run` installs it.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns fail the test by panicking
#![allow(clippy::disallowed_methods)] // wall-clock deadlines in a test harness

use crate::common::e2e::*;
use meshproxy::ops::control::render::short_peer;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long any one screen may take to appear.
const SCREEN_DEADLINE: Duration = Duration::from_secs(15);

/// A tmux server of the test's own (`-L`), killed on drop with whatever it runs.
struct Tmux {
    server: String,
}

impl Tmux {
    /// A detached 120×40 session running `sh`.
    fn start() -> Tmux {
        let server = format!("meshproxy-tui-test-{}", std::process::id());
        let tmux = Tmux { server };
        tmux.run(&["new-session", "-d", "-s", "tui", "-x", "120", "-y", "40", "sh"]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").args(["-L", &self.server]).args(args).output().unwrap();
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `keys` (tmux key names: `Enter`, `q`, a literal line).
    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "tui"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// The visible screen as text.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "tui"])
    }

    /// Polls the screen until `ready` holds, failing with the last screen after the deadline.
    fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SCREEN_DEADLINE;
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {SCREEN_DEADLINE:?}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.server, "kill-server"]).output();
    }
}

/// An origin that accepts connections and holds them open.
async fn holding_origin() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

fn tmux_present() -> bool {
    Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success())
}

#[cfg(target_os = "linux")]
#[test]
fn the_tui_shows_a_live_client_switches_panes_survives_its_stop_and_quits_to_the_shell() {
    if !tmux_present() {
        assert!(
            std::env::var("CI").map_or(true, |ci| ci != "true"),
            "tmux is missing under CI=true: .ci/run installs it (Debian package tmux)"
        );
        eprintln!("skipped: no tmux here (CI installs it)");
        return;
    }
    serial(Duration::from_secs(90), async {
        let scratch = Scratch::new("tui");
        let hub_id = identity(71);
        let hub = Proc::spawn("hub", &scratch, &hub_id, &hub_toml(0)).await;
        let hub_addr = hub.p2p[0].rsplit_once("/p2p/").unwrap().0.to_owned();
        let hubs = hubs_toml(&hub_id, &hub_addr);
        let exit = Proc::spawn("exit", &scratch, &identity(72), &exit_toml(&hubs)).await;
        let mut client = Proc::spawn("client", &scratch, &identity(73), &client_toml(&hubs)).await;
        // No state file: the socket sits beside the identity file, named by the peer id.
        let socket = scratch.path(&format!("{}.sock", client.peer_id));
        let (client_id, exit_peer, hub_peer) =
            (client.peer_id.clone(), short_peer(&exit.peer_id), short_peer(&hub.peer_id));

        // A session held open: the client dials the exit (connections are made on demand),
        // so the exits pane has a path to show.
        let origin = holding_origin().await;
        let (code, held) = socks5(client.listeners[0], &Dest::Ip(origin)).await.unwrap();
        assert_eq!(code, 0, "SOCKS5 success");

        let tmux = Tmux::start();
        let command =
            format!("{} tui --control {}", env!("CARGO_BIN_EXE_meshproxy"), socket.display());
        let tmux = tokio::task::spawn_blocking(move || {
            tmux.send(&[&command, "Enter"]);
            tmux.wait_for("the overview with the client's peer id", |s| {
                s.contains(&client_id) && s.contains("1 Overview") && s.contains("Sessions open")
            });
            tmux.send(&["2"]);
            let screen = tmux.wait_for("the exits pane listing the exit, direct", |s| {
                s.contains("Exits (1 of 1)")
                    && s.lines().any(|l| l.contains(&exit_peer) && l.contains("direct"))
            });
            let row = screen.lines().find(|l| l.contains(&exit_peer)).unwrap_or_default();
            let cells: Vec<&str> = row.split_whitespace().collect();
            let breaker = cells.iter().position(|c| *c == "closed");
            let breaker = breaker.unwrap_or_else(|| panic!("its breaker, closed: {screen}"));
            assert_eq!(cells.get(breaker + 1), Some(&"1"), "one session through it: {row}");
            tmux.send(&["3"]);
            tmux.wait_for("the hubs pane listing the hub", |s| {
                s.contains("Hubs (1 of 1)")
                    && s.lines().any(|l| l.contains(&hub_peer) && l.contains("yes"))
            });
            tmux
        })
        .await
        .unwrap();

        // The node goes away: the view stays and says so.
        drop(held);
        client.kill();
        let tmux = tokio::task::spawn_blocking(move || {
            tmux.wait_for("the lost node shown", |s| s.contains("disconnected, retrying"));
            tmux.send(&["q"]);
            tmux.wait_for("the shell back after q", |s| !s.contains("1 Overview"));
            tmux.send(&["echo tui-exit-$?", "Enter"]);
            tmux.wait_for("the shell running the next command", |s| {
                s.lines().any(|l| l.trim() == "tui-exit-0")
            });
            tmux
        })
        .await
        .unwrap();
        drop(tmux);
    });
}
