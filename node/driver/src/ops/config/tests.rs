use super::*;
use crate::ops::identity::{parse_peer_id, Identity};
use meshproxy_core::admission::RoleSet;
use meshproxy_core::config::DEFAULT_TICKET_LIFETIME;
use meshproxy_core::config::{ListenerProtocol, RelayMode, StickyMode, Timeouts};
use meshproxy_core::io::Reachability;
use meshproxy_core::record::{CountryCode, PeerAddr};
use meshproxy_core::ticket::ed25519_key_of;
use meshproxy_core::wire::hub::Role;
use std::net::SocketAddr;
use std::time::Duration;

fn hub_id() -> String {
    Identity::from_secret([1; 32]).peer_id_string()
}

fn fake_addr(s: &str) -> Result<PeerAddr, String> {
    if s.starts_with('/') {
        Ok(PeerAddr(s.as_bytes().to_vec()))
    } else {
        Err("not a multiaddr".into())
    }
}

/// The settings of `text` for a node with a fixed identity.
fn settings(text: &str) -> Result<Settings, ConfigError> {
    let file = FileConfig::parse(text).expect("parses");
    Settings::from_file(&file, &Identity::from_secret([5; 32]), &fake_addr)
}

fn full() -> String {
    format!(
        r#"
identity = "k.key"
state = "s.state"
listen = ["/ip4/0.0.0.0/tcp/4001"]
metrics = "127.0.0.1:9091"

[[hubs]]
peer = "{hub}"
addrs = ["/ip4/203.0.113.7/tcp/4001"]

[timeouts]
handshake_ms = 5000
idle_ms = 60000

[limits]
max_client_sessions = 10
max_sessions_per_listener = 9
max_sessions_per_source = 8
max_pending_dials = 7
max_registrations_per_key = 6

[hub]
ttl_ms = 20000
keys = [{{ id = "a", token = "a-token-0123456789abcdef" }}, {{ id = "b", verifier = "{sha}", roles = ["exit", "client"], peer = "{hub}", max_registrations = 3 }}]

[exit]
credential = {{ id = "e", token = "x-token-0123456789abcdef" }}
country = "de"
labels = ["dc", "dc", "isp:foo"]
allow = ["127.0.0.1:8080"]
allowed_ports = ["443", "8000-8080"]

[client]
credential = {{ id = "c", token = "y-token-0123456789abcdef" }}
refresh_ms = 1000

[[client.listeners]]
bind = "127.0.0.1:1080"
protocol = "socks5"
sticky = "session"
users = [{{ name = "u", password = "p" }}]

[[client.listeners]]
"#,
        hub = hub_id(),
        sha = "00".repeat(32)
    )
}

#[test]
fn a_full_config_maps_onto_the_core_config() {
    let file = FileConfig::parse(&full()).expect("parses");
    let node = file.to_node_config(&Identity::from_secret([5; 32]), &fake_addr).expect("valid");
    assert_eq!(node.hubs.len(), 1);
    assert_eq!(node.timeouts.handshake, Duration::from_millis(5000));
    assert_eq!(node.timeouts.request, Timeouts::default().request);
    assert_eq!(node.limits.max_client_sessions, 10);
    let l = node.limits;
    assert_eq!(
        (
            l.max_sessions_per_listener,
            l.max_sessions_per_source,
            l.max_pending_dials,
            l.max_registrations_per_key
        ),
        (9, 8, 7, 6)
    );
    let hub = node.hub.expect("hub role");
    assert_eq!(hub.keys.len(), 2);
    assert_eq!(hub.keys[0].roles, RoleSet::CLIENT);
    assert_eq!(hub.keys[1].verifier.0, [0; 32]);
    assert_eq!(hub.keys[1].roles, RoleSet::EXIT.with(Role::Client));
    assert_eq!(hub.keys[1].peer, parse_peer_id(&hub_id()));
    assert_eq!(hub.keys[1].max_registrations, Some(3));
    assert_eq!(hub.ticket_lifetime, DEFAULT_TICKET_LIFETIME);
    assert_eq!(node.hubs[0].ticket_key, ed25519_key_of(&node.hubs[0].peer));
    assert!(node.hubs[0].ticket_key.is_some());
    let exit = node.exit.expect("exit role");
    assert_eq!(exit.attrs.country, CountryCode::parse("DE"));
    assert_eq!(exit.attrs.labels, vec!["dc".to_string(), "isp:foo".to_string()]);
    assert_eq!(exit.policy.allowed_ports.len(), 2);
    let client = node.client.expect("client role");
    assert_eq!(client.listeners.len(), 2);
    assert_eq!(client.listeners[0].protocol, ListenerProtocol::Socks5);
    assert_eq!(client.listeners[0].sticky, StickyMode::Session);
    assert_eq!(client.listeners[1].protocol, ListenerProtocol::Both);
    let sockets = file.listener_sockets();
    assert!(sockets[0].has_auth && !sockets[1].has_auth);
    assert_eq!(sockets[1].bind, crate::runtime::listener::DEFAULT_BIND);
    assert_eq!(file.identity_path(), PathBuf::from("k.key"));
    assert_eq!(file.metrics, Some(SocketAddr::from(([127, 0, 0, 1], 9091))));
}

#[test]
fn the_metrics_address_is_optional_and_must_be_a_socket_address() {
    assert_eq!(FileConfig::parse("").expect("parses").metrics, None);
    let err = FileConfig::parse("metrics = \"localhost\"").expect_err("no port").to_string();
    assert!(err.contains("metrics"), "{err}");
}

#[test]
fn the_control_socket_defaults_beside_the_state_file_and_can_be_moved_or_turned_off() {
    let hub = "[hub]\nkeys = [{ id = \"a\", token = \"a-token-0123456789abcdef\" }]\n";
    let control = |top: &str| settings(&format!("{top}\n{hub}")).map(|s| s.control);
    let path = |s: &str| Some(std::path::PathBuf::from(s));
    assert_eq!(control("state = \"run/c.state\"").expect("valid"), path("run/c.sock"));
    assert_eq!(control("identity = \"hub.key\"").expect("valid"), path("hub.sock"));
    assert_eq!(control("control = \"/run/m.sock\"").expect("valid"), path("/run/m.sock"));
    assert_eq!(control("control = true").expect("valid"), path("meshproxy.sock"));
    assert_eq!(control("control = false").expect("valid"), None);
    let long = format!("control = \"/{}\"", "d".repeat(120));
    let err = control(&long).expect_err("too long").to_string();
    assert!(err.contains("control") && err.contains("1 to 107"), "{err}");
    // A default too long for a socket path turns the socket off rather than the node.
    let deep = format!("state = \"/{}/s.state\"", "d".repeat(120));
    assert_eq!(control(&deep).expect("valid"), None);
    let err = FileConfig::parse("control = 3").expect_err("not a path").to_string();
    assert!(err.contains("control"), "{err}");
}

#[test]
fn hubs_relay_by_default_and_the_relay_table_is_checked() {
    let hub = |extra: &str| settings(&format!("[hub]\n{extra}")).map(|s| s.relay);
    assert_eq!(hub("").expect("valid"), Some(RelayLimits::default()));
    assert_eq!(hub("relay = false").expect("valid"), None);
    let exit = format!(
        "[[hubs]]\npeer = \"{}\"\n[exit]\ncredential = {{ id = \"e\", token = \"x-token-0123456789abcdef\" }}",
        hub_id()
    );
    assert_eq!(settings(&exit).expect("valid").relay, None, "only hubs relay");
    let set = hub("relay_max_reservations = 10\nrelay_max_reservations_per_peer = 2\n\
         relay_reservation_ms = 60000\nrelay_max_circuits = 20\n\
         relay_max_circuits_per_peer = 3\nrelay_max_circuit_ms = 1000\n\
         relay_max_circuit_bytes = 4096")
    .expect("valid")
    .expect("relay on");
    assert_eq!(
        set,
        RelayLimits {
            max_reservations: 10,
            max_reservations_per_peer: 2,
            reservation_duration: Duration::from_secs(60),
            max_circuits: 20,
            max_circuits_per_peer: 3,
            max_circuit_duration: Duration::from_secs(1),
            max_circuit_bytes: 4096,
        }
    );
    for bad in [
        "relay_max_circuits = 0",
        "relay_max_reservations_per_peer = 0",
        "relay_max_circuit_ms = 0",
        "relay_reservation_ms = 604800001",
        "relay_max_circuit_bytes = 0",
    ] {
        let name = bad.split(' ').next().unwrap_or_default();
        let err = hub(bad).expect_err(bad).to_string();
        assert!(err.contains(&format!("hub.{name}")), "{bad} → {err}");
    }
    // A bad value under `relay = false` is ignored: nothing uses it.
    assert_eq!(hub("relay = false\nrelay_max_circuits = 0").expect("valid"), None);
    let err = FileConfig::parse("[hub]\nrelay_max_circuit = 5").expect_err("typo").to_string();
    assert!(err.contains("relay_max_circuit"), "{err}");
}

#[test]
fn unknown_keys_are_errors_that_name_the_key() {
    for (text, key) in [
        ("idenity = \"x\"", "idenity"),
        ("[timeouts]\nhandshake = 5", "handshake"),
        (
            "[client]\ncredential = { id = \"c\", token = \"t-token-0123456789abcdef\", extra = 1 }\nlisteners = []",
            "extra",
        ),
        ("[[hubs]]\npeer = \"x\"\naddr = []", "addr"),
    ] {
        let err = FileConfig::parse(text).expect_err(text).to_string();
        assert!(err.contains(key), "{text:?} → {err}");
    }
}

#[test]
fn nonsense_values_are_rejected_with_the_field_named() {
    // A hub alone needs no [[hubs]].
    assert!(FileConfig::parse("[hub]")
        .expect("parses")
        .to_node_config(&Identity::from_secret([1; 32]), &fake_addr)
        .is_ok());
    for (text, needle) in [
        ("[exit]\ncredential = { id = \"e\", token = \"x-token-0123456789abcdef\" }", "[[hubs]]"),
        ("", "no role"),
    ] {
        let err = FileConfig::parse(text)
            .expect("parses")
            .to_node_config(&Identity::from_secret([1; 32]), &fake_addr)
            .expect_err(text)
            .to_string();
        assert!(err.contains(needle), "{text:?} → {err}");
    }
    let bad = full().replace("protocol = \"socks5\"", "protocol = \"socks4\"");
    let err = FileConfig::parse(&bad)
        .expect("parses")
        .to_node_config(&Identity::from_secret([1; 32]), &fake_addr)
        .expect_err("socks4")
        .to_string();
    assert!(err.contains("client.listeners[0].protocol"), "{err}");
    let bad = full().replace("/ip4/203.0.113.7/tcp/4001", "203.0.113.7:4001");
    let err = FileConfig::parse(&bad)
        .expect("parses")
        .to_node_config(&Identity::from_secret([1; 32]), &fake_addr)
        .expect_err("addr")
        .to_string();
    assert!(err.contains("hubs[0].addrs"), "{err}");
    // A zero deadline is refused as the file is read, at its line.
    let bad = full().replace("idle_ms = 60000", "idle_ms = 0");
    let err = FileConfig::parse(&bad).expect_err("zero idle").to_string();
    let line = bad.lines().position(|l| l == "idle_ms = 0").expect("there") + 1;
    assert!(err.contains(&format!("line {line}")) && err.contains("at least 1"), "{err}");
}

/// Regression: a label with `-` passed the config but failed to encode on
/// the wire, so the exit never registered (found by `meshproxy demo`).
#[test]
fn labels_the_wire_cannot_carry_are_rejected_at_load() {
    let bad = full().replace("\"isp:foo\"", "\"exit-a\"");
    assert_ne!(bad, full(), "the fixture has the label");
    let err = FileConfig::parse(&bad)
        .expect("parses")
        .to_node_config(&Identity::from_secret([1; 32]), &fake_addr)
        .expect_err("label with -")
        .to_string();
    assert!(err.contains("exit.labels") && err.contains("`exit-a`"), "{err}");
}

#[test]
fn nat_keys_map_onto_the_core_config_and_bad_values_are_named() {
    let base = |top: &str, exit: &str, listener: &str| {
        format!(
            "{top}\n[[hubs]]\npeer = \"{}\"\n[exit]\ncredential = {{ id = \"e\", token = \"x-token-0123456789abcdef\" }}\n{exit}\n\
             [client]\ncredential = {{ id = \"c\", token = \"y-token-0123456789abcdef\" }}\n[[client.listeners]]\n{listener}\n",
            hub_id()
        )
    };
    let node = |text: &str| {
        FileConfig::parse(text)
            .expect("parses")
            .to_node_config(&Identity::from_secret([5; 32]), &fake_addr)
    };
    // Defaults: autonat decides, reserve when unreachable, relayed paths allowed.
    assert_eq!(settings(&base("", "", "")).expect("valid").reachability, None);
    let d = node(&base("", "", "")).expect("valid");
    assert_eq!(d.exit.expect("exit").relay, RelayMode::Auto);
    assert!(d.client.expect("client").listeners[0].relayed);
    for (word, mode) in
        [("auto", RelayMode::Auto), ("always", RelayMode::Always), ("off", RelayMode::Off)]
    {
        let n = node(&base("", &format!("relay = \"{word}\""), "")).expect("valid");
        assert_eq!(n.exit.expect("exit").relay, mode);
    }
    let n = node(&base("", "", "relayed = false")).expect("valid");
    assert!(!n.client.expect("client").listeners[0].relayed);
    for (word, r) in [
        ("auto", None),
        ("public", Some(Reachability::Public)),
        ("private", Some(Reachability::Private)),
    ] {
        let s = settings(&base(&format!("reachability = \"{word}\""), "", "")).expect("valid");
        assert_eq!(s.reachability, r);
    }
    assert!(!settings(&base("", "", "")).expect("valid").autonat_private_ips);
    assert!(
        settings(&base("autonat_private_ips = true", "", "")).expect("valid").autonat_private_ips
    );
    let err = node(&base("reachability = \"behind-nat\"", "", "")).expect_err("bad").to_string();
    assert!(err.contains("reachability") && err.contains("behind-nat"), "{err}");
    let err = node(&base("", "relay = \"sometimes\"", "")).expect_err("bad").to_string();
    assert!(err.contains("exit.relay") && err.contains("sometimes"), "{err}");
    let err = FileConfig::parse(&base("", "", "relayed = \"no\"")).expect_err("bool").to_string();
    assert!(err.contains("relayed"), "{err}");
}

#[test]
fn threads_are_one_per_cpu_unless_set_and_out_of_range_counts_are_named() {
    let with = |top: &str| format!("{top}\n[hub]\n");
    let threads = |top: &str| settings(&with(top)).map(|s| s.threads);
    assert_eq!(threads("").expect("valid"), None);
    assert_eq!(threads("threads = 1").expect("valid"), Some(1));
    let most = format!("threads = {MAX_THREADS}");
    assert_eq!(threads(&most).expect("valid"), Some(MAX_THREADS));
    for bad in ["threads = 0", "threads = 1025"] {
        let err = threads(bad).expect_err(bad).to_string();
        assert!(err.contains(bad) && err.contains("1 to 1024"), "{err}");
        // The core config is refused as well, whatever path loads the file.
        let file = FileConfig::parse(&with(bad)).expect("parses");
        let err = file.to_node_config(&Identity::from_secret([5; 32]), &fake_addr).expect_err(bad);
        assert!(err.to_string().contains("threads"), "{err}");
    }
    let err = FileConfig::parse(&with("threads = -1")).expect_err("negative").to_string();
    assert!(err.contains("threads"), "{err}");
}

#[test]
fn admission_settings_are_checked_where_they_are_read() {
    let node = |text: &str| {
        FileConfig::parse(text)
            .expect("parses")
            .to_node_config(&Identity::from_secret([5; 32]), &fake_addr)
    };
    let exit = |extra: &str, hub_peer: &str| {
        format!(
            "[[hubs]]\npeer = \"{hub_peer}\"\n[exit]\n\
             credential = {{ id = \"e\", token = \"e-token-0123456789abcdef\" }}\n{extra}"
        )
    };
    // Exits are closed unless they say otherwise.
    assert!(!node(&exit("", &hub_id())).expect("valid").exit.expect("exit").open);
    assert!(node(&exit("open = true", &hub_id())).expect("valid").exit.expect("exit").open);
    // A closed exit must be able to check its hubs' tickets: an RSA-style
    // (SHA-256) peer id carries no Ed25519 key.
    let rsa = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N";
    let err = node(&exit("", rsa)).expect_err("no ticket key").to_string();
    assert!(err.contains("hubs[0].peer") && err.contains("tickets"), "{err}");
    assert!(node(&exit("open = true", rsa)).is_ok(), "an open exit checks no tickets");
    // Short tokens, anywhere a token is given.
    let short = "[[hubs]]\npeer = \"P\"\n[exit]\ncredential = { id = \"e\", token = \"tiny\" }\n"
        .replace('P', &hub_id());
    let err = node(&short).expect_err("short token").to_string();
    assert!(err.contains("exit.credential.token") && err.contains("token new"), "{err}");
    let hub = |keys: &str| format!("[hub]\n{keys}");
    let err =
        node(&hub("keys = [{ id = \"a\", token_sha256 = \"00\" }]")).expect_err("old").to_string();
    assert!(err.contains("token_sha256: no longer accepted"), "{err}");
    for (bad, field) in [
        ("ticket_lifetime_ms = 5000", "hub.ticket_lifetime_ms"),
        (
            "keys = [{ id = \"a\", token = \"a-token-0123456789abcdef\", roles = [\"root\"] }]",
            "hub.keys[0].roles",
        ),
    ] {
        let err = node(&hub(bad)).expect_err(bad).to_string();
        assert!(err.contains(field), "{bad}: {err}");
    }
    let err =
        node("[limits]\nmax_hub_streams_per_peer = 0\n[hub]\n").expect_err("zero").to_string();
    assert!(err.contains("limits.max_hub_streams_per_peer"), "{err}");
}

#[test]
fn one_limits_table_feeds_the_core_and_the_peer_network() {
    let s = settings(
        "[limits]\nmax_sessions_per_exit = 3\nmax_pending_connections = 7\n\
         max_incoming_connections = 9\nmax_streams_per_connection = 100\n[hub]\n",
    )
    .expect("valid");
    let core = meshproxy_core::config::Limits { max_sessions_per_exit: 3, ..Default::default() };
    assert_eq!(s.node.limits, core);
    let net = NetLimits {
        max_pending: 7,
        max_established_incoming: 9,
        max_streams_per_connection: 100,
        ..NetLimits::default()
    };
    assert_eq!(s.net, net);
    let err = FileConfig::parse("[limits]\nmax_connections = 3").expect_err("typo").to_string();
    assert!(err.contains("unknown field `max_connections`"), "{err}");
}

#[test]
fn an_exit_without_advertise_advertises_and_denies_what_it_bound_unless_private() {
    let exit = |top: &str, extra: &str| {
        format!(
            "{top}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n[[hubs]]\npeer = \"{}\"\n[exit]\n\
             credential = {{ id = \"e\", token = \"x-token-0123456789abcdef\" }}\n{extra}",
            hub_id()
        )
    };
    let bound = ["/ip4/192.0.2.9/tcp/4001".to_owned()];
    let mut s = settings(&exit("", "")).expect("valid");
    assert!(!s.advertise_bound(&bound, &fake_addr), "it advertises something");
    let e = s.node.exit.as_ref().expect("exit");
    assert_eq!(e.addrs, vec![PeerAddr(bound[0].as_bytes().to_vec())]);
    let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
    assert_eq!(e.own_addrs, vec![ip("127.0.0.1"), ip("192.0.2.9")]);
    // Told where to be reached, or behind NAT: the bound addresses stay out.
    let mut s = settings(&exit("", "advertise = [\"/ip4/198.51.100.1/tcp/1\"]")).expect("valid");
    s.advertise_bound(&bound, &fake_addr);
    assert_eq!(s.node.exit.as_ref().expect("exit").addrs.len(), 1);
    assert!(!s.node.exit.as_ref().expect("exit").own_addrs.contains(&ip("192.0.2.9")));
    let mut s = settings(&exit("reachability = \"private\"", "")).expect("valid");
    assert!(!s.advertise_bound(&bound, &fake_addr));
    assert!(s.node.exit.as_ref().expect("exit").addrs.is_empty());
    // Bound nowhere: the caller warns.
    let mut s = settings(&exit("", "")).expect("valid");
    assert!(s.advertise_bound(&[], &fake_addr));
}

/// The shipped example configs keep loading as the schema changes (their
/// `HUB_PEER_ID` placeholders are for the operator to fill in, so only the hub's
/// builds into settings).
#[test]
fn the_example_configs_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let file = FileConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
            if file.hub.is_some() && file.hubs.is_empty() {
                Settings::from_file(&file, &Identity::from_secret([5; 32]), &fake_addr)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            seen += 1;
        }
    }
    assert!(seen >= 4, "hub, exit, client and agent examples");
}

fn agent(table: &str) -> String {
    format!(
        r#"
[[hubs]]
peer = "{hub}"

[agent]
credential = {{ id = "a", token = "a-token-0123456789abcdef" }}
{table}
"#,
        hub = hub_id()
    )
}

#[test]
fn an_agent_table_maps_onto_the_core_config() {
    let s = settings(&agent(
        r#"labels = { site = "home", tier = "gold" }
services = { web = "127.0.0.1:8080", wiki = "Wiki.LAN:80" }
allow = ["192.168.1.0/24:80-443"]
relay = "always"
advertise = ["/ip4/203.0.113.9/tcp/4003"]"#,
    ))
    .expect("valid");
    let a = s.node.agent.expect("an agent");
    assert_eq!(a.relay, RelayMode::Always);
    assert_eq!(a.addrs, [PeerAddr(b"/ip4/203.0.113.9/tcp/4003".to_vec())]);
    assert_eq!(a.labels.get("site").map(String::as_str), Some("home"));
    let services: Vec<String> = a.services.iter().map(|(n, o)| format!("{n}={o}")).collect();
    assert_eq!(services, ["web=127.0.0.1:8080", "wiki=wiki.lan:80"]);
    assert_eq!(a.allow.len(), 1);
    assert!(s.node.exit.is_none());
    assert_eq!(s.node.hubs[0].ticket_key, ed25519_key_of(&s.node.hubs[0].peer));
}

#[test]
fn agent_values_that_make_no_sense_are_refused_naming_the_key() {
    for (table, needle) in [
        ("", "agent.services: at least one service"),
        (r#"services = { "my-web" = "127.0.0.1:80" }"#, "agent.services.my-web:"),
        (r#"services = { Web = "127.0.0.1:80" }"#, "agent.services.Web: not a service name"),
        (r#"services = { web = "127.0.0.1" }"#, "agent.services.web: `127.0.0.1` is not HOST:PORT"),
        (r#"services = { web = "a b:80" }"#, "agent.services.web:"),
        (
            r#"services = { web = "h:80" }
labels = { "Site" = "x" }"#,
            "agent.labels.Site:",
        ),
        (
            r#"services = { web = "h:80" }
labels = { service = "x" }"#,
            "agent.labels.service: the key `service` is reserved",
        ),
        (
            r#"services = { web = "h:80" }
allow = ["10.0.0.0/8:0-99999"]"#,
            "agent.allow:",
        ),
        (
            r#"services = { web = "h:80" }
relay = "maybe""#,
            "agent.relay: `maybe`",
        ),
    ] {
        let err = settings(&agent(table)).expect_err(table).to_string();
        assert!(err.contains(needle), "{table:?} → {err}");
    }
    let both = format!(
        "{}\n[exit]\ncredential = {{ id = \"e\", token = \"x-token-0123456789abcdef\" }}\n",
        agent(r#"services = { web = "h:80" }"#)
    );
    let err = settings(&both).expect_err("exit and agent").to_string();
    assert!(err.contains("[exit] and [agent] together"), "{err}");
    let no_hub = "[agent]\ncredential = { id = \"a\", token = \"a-token-0123456789abcdef\" }\nservices = { web = \"h:80\" }\n";
    let err = settings(no_hub).expect_err("no hub").to_string();
    assert!(err.contains("at least one [[hubs]] entry"), "{err}");
}
