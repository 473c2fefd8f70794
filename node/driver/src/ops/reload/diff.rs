//! Which keys a new config changes, and whether each can change live.
//!
//! Every field of [`FileConfig`] and its role tables is named here once, by
//! an exhaustive destructuring: a field added to the schema does not
//! compile until it is sorted into "live" or "restart".

use crate::ops::config::{AgentFile, ClientFile, ExitFile, FileConfig, GatewayFile, HubFile};

/// The keys a reload changes, split by whether they apply live.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Keys applied live, as dotted names (`exit.allow`, `gateway.routes`).
    pub live: Vec<String>,
    /// Keys that take a restart.
    pub restart: Vec<String>,
}

impl Changes {
    fn check<T: PartialEq>(&mut self, live: bool, key: &str, old: &T, new: &T) {
        if old != new {
            let list = if live { &mut self.live } else { &mut self.restart };
            list.push(key.to_owned());
        }
    }

    /// The refusal naming every key that takes a restart, if any does.
    pub fn refusal(&self) -> Option<String> {
        if self.restart.is_empty() {
            return None;
        }
        Some(format!(
            "{} cannot change while the node runs (restart it to apply); nothing was changed",
            self.restart.join(", ")
        ))
    }
}

/// Compares the config the node runs with and a new one.
pub fn changes(old: &FileConfig, new: &FileConfig) -> Changes {
    let mut c = Changes::default();
    let FileConfig {
        identity,
        state,
        listen,
        control,
        metrics,
        hubs,
        timeouts,
        limits,
        hub,
        exit,
        client,
        gateway,
        agent,
        reachability,
        autonat_private_ips,
        threads,
    } = old;
    c.check(false, "identity", identity, &new.identity);
    c.check(false, "state", state, &new.state);
    c.check(false, "listen", listen, &new.listen);
    c.check(false, "control", control, &new.control);
    c.check(false, "metrics", metrics, &new.metrics);
    c.check(false, "hubs", hubs, &new.hubs);
    c.check(true, "timeouts", timeouts, &new.timeouts);
    c.check(true, "limits", &limits.core, &new.limits.core);
    c.check(false, "limits (the peer network's keys)", &limits.net, &new.limits.net);
    c.check(false, "reachability", reachability, &new.reachability);
    c.check(false, "autonat_private_ips", autonat_private_ips, &new.autonat_private_ips);
    c.check(false, "threads", threads, &new.threads);
    role(&mut c, "hub", hub, &new.hub, hub_changes);
    role(&mut c, "exit", exit, &new.exit, exit_changes);
    role(&mut c, "client", client, &new.client, client_changes);
    role(&mut c, "gateway", gateway, &new.gateway, gateway_changes);
    role(&mut c, "agent", agent, &new.agent, agent_changes);
    c
}

/// A role table: added or removed takes a restart (the role set is fixed);
/// present in both, compared key by key.
fn role<T>(
    c: &mut Changes,
    name: &str,
    old: &Option<T>,
    new: &Option<T>,
    f: fn(&mut Changes, &T, &T),
) {
    match (old, new) {
        (Some(old), Some(new)) => f(c, old, new),
        (None, None) => {}
        (None, Some(_)) => c.restart.push(format!("[{name}] (added: the roles)")),
        (Some(_), None) => c.restart.push(format!("[{name}] (removed: the roles)")),
    }
}

fn hub_changes(c: &mut Changes, old: &HubFile, new: &HubFile) {
    let HubFile { ttl_ms, max_entries, max_find, keys, ticket_lifetime_ms, relay, relay_limits } =
        old;
    c.check(true, "hub.keys", keys, &new.keys);
    c.check(false, "hub.ttl_ms", ttl_ms, &new.ttl_ms);
    c.check(false, "hub.max_entries", max_entries, &new.max_entries);
    c.check(false, "hub.max_find", max_find, &new.max_find);
    c.check(false, "hub.ticket_lifetime_ms", ticket_lifetime_ms, &new.ticket_lifetime_ms);
    c.check(false, "hub.relay", relay, &new.relay);
    c.check(false, "hub.relay_* limits", relay_limits, &new.relay_limits);
}

fn exit_changes(c: &mut Changes, old: &ExitFile, new: &ExitFile) {
    let ExitFile {
        credential,
        advertise,
        capacity,
        country,
        labels,
        own_addrs,
        allow,
        deny,
        allowed_ports,
        default_deny_ranges,
        relay,
        open,
    } = old;
    c.check(true, "exit.allow", allow, &new.allow);
    c.check(true, "exit.deny", deny, &new.deny);
    c.check(true, "exit.allowed_ports", allowed_ports, &new.allowed_ports);
    c.check(true, "exit.default_deny_ranges", default_deny_ranges, &new.default_deny_ranges);
    c.check(true, "exit.capacity", capacity, &new.capacity);
    c.check(true, "exit.country", country, &new.country);
    c.check(true, "exit.labels", labels, &new.labels);
    c.check(false, "exit.credential", credential, &new.credential);
    c.check(false, "exit.advertise", advertise, &new.advertise);
    c.check(false, "exit.own_addrs", own_addrs, &new.own_addrs);
    c.check(false, "exit.relay", relay, &new.relay);
    c.check(false, "exit.open", open, &new.open);
}

fn agent_changes(c: &mut Changes, old: &AgentFile, new: &AgentFile) {
    let AgentFile { credential, advertise, labels, services, allow, relay } = old;
    c.check(true, "agent.labels", labels, &new.labels);
    c.check(true, "agent.services", services, &new.services);
    c.check(true, "agent.allow", allow, &new.allow);
    c.check(false, "agent.credential", credential, &new.credential);
    c.check(false, "agent.advertise", advertise, &new.advertise);
    c.check(false, "agent.relay", relay, &new.relay);
}

fn gateway_changes(c: &mut Changes, old: &GatewayFile, new: &GatewayFile) {
    let GatewayFile {
        credential,
        refresh_ms,
        header_read_timeout_ms,
        max_head_bytes,
        max_headers,
        max_connections,
        max_connections_per_ip,
        response_timeout_ms,
        upgrade_idle_timeout_ms,
        listeners,
        routes,
    } = old;
    c.check(true, "gateway.routes", routes, &new.routes);
    c.check(false, "gateway.credential", credential, &new.credential);
    c.check(false, "gateway.refresh_ms", refresh_ms, &new.refresh_ms);
    let http = "gateway.header_read_timeout_ms";
    c.check(false, http, header_read_timeout_ms, &new.header_read_timeout_ms);
    c.check(false, "gateway.max_head_bytes", max_head_bytes, &new.max_head_bytes);
    c.check(false, "gateway.max_headers", max_headers, &new.max_headers);
    c.check(false, "gateway.max_connections", max_connections, &new.max_connections);
    let per_ip = "gateway.max_connections_per_ip";
    c.check(false, per_ip, max_connections_per_ip, &new.max_connections_per_ip);
    c.check(false, "gateway.response_timeout_ms", response_timeout_ms, &new.response_timeout_ms);
    let idle = "gateway.upgrade_idle_timeout_ms";
    c.check(false, idle, upgrade_idle_timeout_ms, &new.upgrade_idle_timeout_ms);
    c.check(false, "gateway.listeners", listeners, &new.listeners);
}

fn client_changes(c: &mut Changes, old: &ClientFile, new: &ClientFile) {
    let ClientFile {
        credential,
        listeners,
        refresh_ms,
        find_limit,
        sticky_capacity,
        sticky_ttl_ms,
        latency_alpha,
        backoff_base_ms,
        backoff_max_ms,
        breaker_failures,
        breaker_open_ms,
        breaker_half_open_probes,
    } = old;
    // The client's listeners and selection are not reloaded yet.
    c.check(false, "client.credential", credential, &new.credential);
    c.check(false, "client.listeners", listeners, &new.listeners);
    c.check(false, "client.refresh_ms", refresh_ms, &new.refresh_ms);
    c.check(false, "client.find_limit", find_limit, &new.find_limit);
    c.check(false, "client.sticky_capacity", sticky_capacity, &new.sticky_capacity);
    c.check(false, "client.sticky_ttl_ms", sticky_ttl_ms, &new.sticky_ttl_ms);
    c.check(false, "client.latency_alpha", latency_alpha, &new.latency_alpha);
    c.check(false, "client.backoff_base_ms", backoff_base_ms, &new.backoff_base_ms);
    c.check(false, "client.backoff_max_ms", backoff_max_ms, &new.backoff_max_ms);
    c.check(false, "client.breaker_failures", breaker_failures, &new.breaker_failures);
    c.check(false, "client.breaker_open_ms", breaker_open_ms, &new.breaker_open_ms);
    let probes = "client.breaker_half_open_probes";
    c.check(false, probes, breaker_half_open_probes, &new.breaker_half_open_probes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> FileConfig {
        FileConfig::parse(text).expect("valid toml")
    }

    const EXIT: &str = r#"
listen = ["/ip4/127.0.0.1/tcp/0"]
[exit]
credential = { id = "exit", token = "t" }
allow = ["127.0.0.0/8"]
"#;

    #[test]
    fn live_keys_and_restart_keys_are_told_apart_and_named() {
        let old = parse(EXIT);
        assert_eq!(changes(&old, &old), Changes::default());
        let policy = parse(&format!("{EXIT}deny = [\"10.0.0.0/8\"]\n"));
        let c = changes(&old, &policy);
        assert_eq!(c.live, vec!["exit.deny"]);
        assert!(c.refusal().is_none());
        let moved = parse(&EXIT.replace("tcp/0", "tcp/4001"));
        let c = changes(&old, &moved);
        assert_eq!(c.restart, vec!["listen"]);
        assert!(c.refusal().expect("refused").starts_with("listen cannot change"));
        let more = parse(&format!("{EXIT}[hub]\nkeys = []\n"));
        assert_eq!(changes(&old, &more).restart, vec!["[hub] (added: the roles)"]);
        let limits = parse(&format!("{EXIT}[limits]\nmax_exit_sessions = 3\n"));
        assert_eq!(changes(&old, &limits).live, vec!["limits"]);
    }
}
