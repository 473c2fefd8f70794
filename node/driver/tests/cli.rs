//! The `meshproxy` binary's subcommands.
// Helpers outside #[test] fns panic on purpose too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn meshproxy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshproxy")).args(args).output().unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshproxy-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn keygen_then_id_print_the_same_peer_id_and_keygen_never_overwrites() {
    let dir = temp_dir("keygen");
    let key = dir.join("node.key");
    let key = key.to_str().unwrap();
    let made = meshproxy(&["keygen", "--out", key]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let peer = text(&made.stdout).trim().to_string();
    assert!(peer.starts_with("12D3KooW"), "{peer}");
    let shown = meshproxy(&["id", "--identity", key]);
    assert!(shown.status.success());
    assert_eq!(text(&shown.stdout).trim(), peer);
    let again = meshproxy(&["keygen", "--out", key]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("already exists"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_validates_and_unknown_keys_are_named() {
    let dir = temp_dir("check");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        format!(
            "identity = \"{}\"\n[client]\ncredential = {{ id = \"c\", token = \"t\" }}\n\
             [[client.listeners]]\nbind = \"0.0.0.0:1080\"\n\
             [[hubs]]\npeer = \"12D3KooWBhbrxj5U4PNaMF1ZLsVPUBMBYQELFnTzVkGEjcLdKjBv\"\naddrs = [\"/ip4/127.0.0.1/tcp/4001\"]\n",
            dir.join("k.key").display()
        ),
    )
    .unwrap();
    let ok = meshproxy(&["check", "--config", good.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let out = text(&ok.stdout);
    assert!(out.contains("roles: client"), "{out}");
    assert!(out.contains("without authentication"), "{out}");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[client]\ncredentials = 1\n").unwrap();
    let err = meshproxy(&["check", "--config", bad.to_str().unwrap()]);
    assert!(!err.status.success());
    assert!(text(&err.stderr).contains("credentials"), "{}", text(&err.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_role_command_needs_a_config_with_that_role() {
    for role in ["hub", "exit", "client"] {
        let out = meshproxy(&[role]);
        assert_eq!(out.status.code(), Some(2), "{role}: --config is required (usage error)");
        assert!(text(&out.stderr).contains("--config"), "{role}");
    }
    let dir = std::env::temp_dir().join(format!("meshproxy-cli-role-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hub_only = dir.join("hub.toml");
    std::fs::write(&hub_only, "[hub]\nkeys = [{ id = \"a\", token = \"t\" }]\n").unwrap();
    let out = meshproxy(&["client", "--config", hub_only.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("has no [client] section"), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
