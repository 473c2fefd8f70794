//! How an agent's labels and services travel in its directory record, with no
//! change to the hub wire: record labels are `[a-z0-9_.:]{1,32}`
//! ([`valid_label`]), so a label `key=value` becomes `key:value` and each
//! service `name` becomes `service:name`. [`agent_labels`] writes them (the
//! agent, and its config check); [`ingress_agent`] reads them back (the
//! gateway, from a `Find` answer). The two are each other's inverse.
//!
//! Keys and values use the part of the charset that a gateway's label
//! selector ([`crate::ingress::LabelSelector`]) also accepts, so every label
//! an agent carries can be selected: keys `[a-z0-9_.]`, values `[a-z0-9_.]*`.

use crate::ingress::Agent;
use crate::record::{valid_label, PeerRecord, Role, MAX_LABELS, MAX_LABEL_LEN};
use crate::wire::ingress::ServiceName;
use std::collections::BTreeMap;

/// The label prefix that marks a service name.
pub const SERVICE_PREFIX: &str = "service:";
/// The label key reserved for services.
const SERVICE_KEY: &str = "service";

/// Why an agent's labels or services do not fit its record; the `Display`
/// names the offending key, so config errors can point at it.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ListingError {
    /// A label key or value outside the charset, or `key:value` too long.
    #[error(
        "labels.{key}: `{key}={value}` does not fit a record label (key: 1 or more of a-z 0-9 _ ., \
         value: a-z 0-9 _ ., together at most {max} bytes as `key:value`)",
        max = MAX_LABEL_LEN
    )]
    BadLabel {
        /// The key.
        key: String,
        /// Its value.
        value: String,
    },
    /// The label key `service` is where services are listed.
    #[error("labels.service: the key `service` is reserved for the agent's services")]
    ReservedKey,
    /// A service name that does not fit a record label.
    #[error(
        "services.{name}: a service name must be 1 to {max} of a-z 0-9 _ . (no `-`), starting \
         with a letter or digit, to be listed as `service:{name}`",
        max = MAX_LABEL_LEN - SERVICE_PREFIX.len()
    )]
    BadService {
        /// The name.
        name: String,
    },
    /// More labels and services together than a record carries.
    #[error("labels and services: {count} together, more than the {max} a record carries", max = MAX_LABELS)]
    TooMany {
        /// How many there are.
        count: usize,
    },
}

fn key_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.')
}

/// The record labels for an agent with `labels` (`key=value`) and
/// `services`: `key:value` and `service:name`, sorted and unique.
///
/// # Errors
/// The first label or service that does not fit, or too many of them.
pub fn agent_labels<'a>(
    labels: &BTreeMap<String, String>,
    services: impl IntoIterator<Item = &'a ServiceName>,
) -> Result<Vec<String>, ListingError> {
    let mut out = Vec::new();
    for (key, value) in labels {
        if key == SERVICE_KEY {
            return Err(ListingError::ReservedKey);
        }
        let label = format!("{key}:{value}");
        if key.is_empty() || !key.bytes().all(key_byte) || !value.bytes().all(key_byte) {
            return Err(ListingError::BadLabel { key: key.clone(), value: value.clone() });
        }
        if !valid_label(&label) {
            return Err(ListingError::BadLabel { key: key.clone(), value: value.clone() });
        }
        out.push(label);
    }
    for name in services {
        let label = format!("{SERVICE_PREFIX}{name}");
        if !valid_label(&label) {
            return Err(ListingError::BadService { name: name.to_string() });
        }
        out.push(label);
    }
    out.sort();
    out.dedup();
    if out.len() > MAX_LABELS {
        return Err(ListingError::TooMany { count: out.len() });
    }
    Ok(out)
}

/// What a gateway knows of the agent `record` describes (available, nothing
/// in flight yet); `None` unless the record is an agent's. Labels that are
/// neither `key:value` nor `service:name` (no agent writes them) are skipped.
pub fn ingress_agent(record: &PeerRecord) -> Option<Agent> {
    if record.role != Role::Agent {
        return None;
    }
    let mut labels = BTreeMap::new();
    let mut services = Vec::new();
    for label in &record.attrs.labels {
        if let Some(name) = label.strip_prefix(SERVICE_PREFIX) {
            services.push(name.to_owned());
        } else if let Some((key, value)) = label.split_once(':') {
            labels.insert(key.to_owned(), value.to_owned());
        }
    }
    Some(Agent { id: record.peer, labels, services, available: true, active: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PeerId;
    use crate::record::Attrs;
    use proptest::prelude::*;

    fn record(role: Role, labels: Vec<String>) -> PeerRecord {
        PeerRecord {
            peer: PeerId::from_u64(7),
            role,
            addrs: Vec::new(),
            attrs: Attrs { country: None, labels },
            capacity: 1,
            relays: Vec::new(),
        }
    }

    fn svc(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }

    #[test]
    fn labels_and_services_become_record_labels_and_come_back() {
        let labels = BTreeMap::from([("site".into(), "home".into()), ("tier".into(), "".into())]);
        let got = agent_labels(&labels, [&svc("web"), &svc("api.v2")]).unwrap();
        assert_eq!(got, ["service:api.v2", "service:web", "site:home", "tier:"]);
        let agent = ingress_agent(&record(Role::Agent, got)).unwrap();
        assert_eq!(agent.labels, labels);
        assert_eq!(agent.services, ["api.v2", "web"]);
        assert_eq!((agent.id, agent.available, agent.active), (PeerId::from_u64(7), true, 0));
    }

    #[test]
    fn only_agents_records_are_agents() {
        assert!(ingress_agent(&record(Role::Exit, vec!["service:web".into()])).is_none());
    }

    #[test]
    fn what_does_not_fit_is_refused_naming_its_key() {
        let one = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        let none: [&ServiceName; 0] = [];
        for (k, v) in
            [("Site", "home"), ("si-te", "home"), ("site", "Home"), ("a:b", "c"), ("", "x")]
        {
            let err = agent_labels(&one(k, v), none).unwrap_err();
            assert_eq!(err, ListingError::BadLabel { key: k.into(), value: v.into() });
            assert!(err.to_string().starts_with(&format!("labels.{k}:")), "{err}");
        }
        let long = "v".repeat(MAX_LABEL_LEN);
        assert!(matches!(agent_labels(&one("k", &long), none), Err(ListingError::BadLabel { .. })));
        assert_eq!(agent_labels(&one("service", "x"), none), Err(ListingError::ReservedKey));
        let dashed = svc("my-web");
        let err = agent_labels(&BTreeMap::new(), [&dashed]).unwrap_err();
        assert!(err.to_string().starts_with("services.my-web:"), "{err}");
        let longest = svc(&"s".repeat(MAX_LABEL_LEN - SERVICE_PREFIX.len()));
        assert!(agent_labels(&BTreeMap::new(), [&longest]).is_ok());
        let too_long = svc(&"s".repeat(MAX_LABEL_LEN - SERVICE_PREFIX.len() + 1));
        assert!(agent_labels(&BTreeMap::new(), [&too_long]).is_err());
        let many: BTreeMap<String, String> =
            (0..=MAX_LABELS).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert_eq!(agent_labels(&many, none), Err(ListingError::TooMany { count: MAX_LABELS + 1 }));
    }

    proptest! {
        #[test]
        fn agent_labels_and_ingress_agent_are_inverse(
            labels in proptest::collection::btree_map("[a-z0-9_.]{1,8}", "[a-z0-9_.]{0,8}", 0..6),
            services in proptest::collection::btree_set("[a-z0-9][a-z0-9_.]{0,15}", 0..6),
        ) {
            prop_assume!(!labels.contains_key(SERVICE_KEY));
            let names: Vec<ServiceName> = services.iter().map(|s| svc(s)).collect();
            let listed = agent_labels(&labels, &names).unwrap();
            prop_assert!(listed.iter().all(|l| valid_label(l)));
            let agent = ingress_agent(&record(Role::Agent, listed)).unwrap();
            prop_assert_eq!(agent.labels, labels);
            prop_assert_eq!(agent.services, services.into_iter().collect::<Vec<_>>());
        }
    }
}
