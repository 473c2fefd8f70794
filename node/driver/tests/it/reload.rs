//! Hot reload as an operator meets it, against real `meshproxy run`
//! processes on 127.0.0.1: an edited config file takes effect without a
//! restart (seen with curl), a broken edit is refused by `meshproxy reload`
//! naming the key while the old config keeps serving, SIGHUP reloads, and a
//! hub's `meshproxy revoke` ends an exit's admission for good.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns fail the test by panicking
#![allow(clippy::disallowed_methods)] // wall-clock deadlines in a test harness

use crate::common::e2e::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const GW_TOKEN: &str = "t-gateway-token-0123456789";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn meshproxy(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_meshproxy")).args(&args).output().unwrap()
    })
    .await
    .unwrap()
}

/// The body curl gets from the gateway on `port` for `Host: static.example.com`.
async fn body(port: u16) -> Option<String> {
    let args = [
        "-sS",
        "--max-time",
        "5",
        "-H",
        "Host: static.example.com",
        &format!("http://127.0.0.1:{port}/"),
    ]
    .map(str::to_owned);
    let out =
        tokio::task::spawn_blocking(move || Command::new("curl").args(args).output().unwrap())
            .await
            .unwrap();
    out.status.success().then(|| text(&out.stdout))
}

/// A hub that is its own gateway, answering `static.example.com` with
/// `answer`; `extra` (tables) goes before `[hub]`.
fn gateway_toml(dir: &Scratch, port: u16, answer: &str, extra: &str) -> String {
    format!(
        r#"control = "{}"
listen = ["/ip4/127.0.0.1/tcp/0"]
{extra}
[hub]
keys = [{{ id = "gw", token = "{GW_TOKEN}", roles = ["gateway"] }}]
[gateway]
credential = {{ id = "gw", token = "{GW_TOKEN}" }}
[[gateway.listeners]]
name = "public"
listen = "127.0.0.1:{port}"
[[gateway.routes]]
id = "hello"
host = "static.example.com"
target = {{ static = {{ status = 200, body = "{answer}\n" }} }}
"#,
        dir.path("gw.sock").display()
    )
}

/// Replaces `path` the way many editors save: a new file renamed over it.
fn save(path: &Path, identity_line: &str, text: &str) {
    let tmp = path.with_extension("toml.swp");
    std::fs::write(&tmp, format!("{identity_line}\n{text}")).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn until_body(port: u16, want: &str) {
    poll_until(&format!("the gateway answers {want:?}"), Duration::from_secs(15), || async {
        (body(port).await.as_deref() == Some(want)).then_some(())
    })
    .await;
}

#[test]
fn an_edited_config_takes_effect_live_and_a_broken_one_is_refused_naming_the_key() {
    serial(Duration::from_secs(120), async {
        let dir = Scratch::new("reload-gw");
        let port = free_port();
        let id = identity(91);
        let gw = Proc::spawn("gw", &dir, &id, &gateway_toml(&dir, port, "v1", "")).await;
        let config = dir.path("gw.toml");
        let identity_line = std::fs::read_to_string(&config).unwrap();
        let identity_line = identity_line.lines().next().unwrap().to_owned();
        until_body(port, "v1\n").await;

        // An edit saved by rename: the file watch reloads it, no signal needed.
        save(&config, &identity_line, &gateway_toml(&dir, port, "v2", ""));
        until_body(port, "v2\n").await;

        // A broken edit: `meshproxy reload` refuses it, naming the key, and v2 still serves.
        let broken = "[limits]\nmax_registrations_per_key = 0\n";
        save(&config, &identity_line, &gateway_toml(&dir, port, "v3", broken));
        let sock = dir.path("gw.sock").display().to_string();
        let out = meshproxy(vec!["reload".into(), "--control".into(), sock.clone()]).await;
        assert!(!out.status.success(), "a refused reload exits non-zero");
        let err = text(&out.stderr);
        assert!(err.contains("limits.max_registrations_per_key"), "{err}");
        assert_eq!(body(port).await.as_deref(), Some("v2\n"));

        // A key that cannot change live is refused whole, named: the route edit with it too.
        let moved =
            gateway_toml(&dir, port, "v4", "").replace("tcp/0", &format!("tcp/{}", free_port()));
        save(&config, &identity_line, &moved);
        let out = meshproxy(vec!["reload".into(), "--control".into(), sock.clone()]).await;
        let err = text(&out.stderr);
        assert!(!out.status.success() && err.contains("listen cannot change"), "{err}");
        assert_eq!(body(port).await.as_deref(), Some("v2\n"));

        // A good edit again, applied by `meshproxy reload`, which names what changed.
        save(&config, &identity_line, &gateway_toml(&dir, port, "v5", ""));
        let out = meshproxy(vec!["reload".into(), "--control".into(), sock.clone()]).await;
        let said = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        // The file watch may have applied it first; either way v5 serves.
        assert!(said.starts_with("reloaded: "), "{said}");
        until_body(port, "v5\n").await;

        // SIGHUP reloads too (the log names the trigger).
        save(&config, &identity_line, &gateway_toml(&dir, port, "v6", ""));
        let kill = Command::new("kill").args(["-HUP", &gw.pid().to_string()]).status().unwrap();
        assert!(kill.success());
        until_body(port, "v6\n").await;
        let log = dir.path("gw.log");
        poll_until("the log shows the SIGHUP reload", Duration::from_secs(10), || async {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            // `"SIGHUP"` quoted: the trigger field of the reload it ran.
            (log.contains("SIGHUP: reloading the config") && log.contains("\"SIGHUP\""))
                .then_some(())
        })
        .await;
    });
}

/// The hub's status, as `meshproxy status --json` prints it.
async fn hub_status(sock: &Path) -> serde_json::Value {
    let args =
        vec!["status".into(), "--control".into(), sock.display().to_string(), "--json".into()];
    let out = meshproxy(args).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_revoked_exit_loses_its_registration_and_cannot_come_back() {
    serial(Duration::from_secs(120), async {
        let dir = Scratch::new("reload-revoke");
        let sock = dir.path("hub.sock");
        let hub_config = format!("control = \"{}\"\n{}", sock.display(), hub_toml(0));
        let hub = Proc::spawn("hub", &dir, &identity(92), &hub_config).await;
        let hub_addr = hub.p2p[0].rsplit_once("/p2p/").unwrap().0.to_owned();
        let hubs = hubs_toml(&identity(92), &hub_addr);
        let _exit = Proc::spawn("exit", &dir, &identity(93), &exit_toml(&hubs)).await;
        poll_until("the exit registers", Duration::from_secs(20), || async {
            let s = hub_status(&sock).await;
            (s["hub"]["directory_entries"] == 1).then_some(())
        })
        .await;

        let out = meshproxy(vec![
            "revoke".into(),
            "exit".into(),
            "--control".into(),
            sock.display().to_string(),
        ])
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("1 admitted hub streams ended"),
            "{}",
            text(&out.stdout)
        );
        poll_until("the registration ends", Duration::from_secs(10), || async {
            let s = hub_status(&sock).await;
            (s["hub"]["directory_entries"] == 0 && s["hub"]["admitted_peers"] == 0).then_some(())
        })
        .await;
        // The exit dials again (its link backs off and retries) and is refused each time.
        let exit_log = dir.path("exit.log");
        poll_until("the exit is refused again", Duration::from_secs(20), || async {
            let log = std::fs::read_to_string(&exit_log).unwrap_or_default();
            log.contains("the hub refused admission").then_some(())
        })
        .await;
        let s = hub_status(&sock).await;
        assert_eq!(s["hub"]["directory_entries"], 0, "{s}");

        // An unknown key is refused, naming it.
        let out = meshproxy(vec![
            "revoke".into(),
            "nobody".into(),
            "--control".into(),
            sock.display().to_string(),
        ])
        .await;
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("`nobody` is neither a peer id nor"),
            "{}",
            text(&out.stderr)
        );
    });
}
