//! Admission keys and credentials as config files and flags spell them, and
//! `meshproxy token new`.
//!
//! A hub lists the keys it admits; each names its roles (client only unless it
//! says so), may be pinned to one peer, and (for exits and agents, the roles
//! listed in the directory) how many directory entries it may hold:
//!
//! ```toml
//! [[hub.keys]]
//! id = "exit-1"
//! verifier = "…64 hex digits…"   # what `meshproxy token new` prints for the hub
//! roles = ["exit"]                # client | exit | agent | gateway (default ["client"])
//! peer = "12D3KooW…"              # optional: only this node may use the key
//! max_registrations = 1           # exit and agent keys: directory entries at once (default: limits.max_registrations_per_key)
//! ```
//!
//! A key may give `token` instead of `verifier` (the hub derives the verifier
//! at load); then the hub's config holds a login credential, so prefer the
//! verifier. The old `token_sha256` is refused: that hash was itself enough
//! to log in (see `meshproxy_core::admission`), and a verifier cannot be made
//! from it — issue a new token.

use crate::ops::config::ConfigError;
use crate::ops::identity::parse_peer_id;
use base64::Engine as _;
use meshproxy_core::admission::{AdmissionKey, Credential, RoleSet, Verifier, MIN_TOKEN_LEN};
use meshproxy_core::wire::hub::{valid_key_id, Role};
use serde::Deserialize;
use std::collections::BTreeSet;

/// A node's proof of admission: the key id and the token the hub operator issued.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CredentialFile {
    /// The key id.
    pub id: String,
    /// The secret token (at least 22 characters; `meshproxy token new` makes one).
    pub token: String,
}

/// One admitted key at a hub.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// The key id.
    pub id: String,
    /// The verifier `meshproxy token new` printed: 64 hex digits.
    pub verifier: Option<String>,
    /// The token itself, instead of its verifier.
    pub token: Option<String>,
    /// Refused at load (see the module docs); kept so the error can say how to migrate.
    pub token_sha256: Option<String>,
    /// The roles the key admits: `client`, `exit`, `agent`, `gateway` (default: client only).
    pub roles: Option<Vec<String>>,
    /// Only this peer id may use the key.
    pub peer: Option<String>,
    /// (Exit keys) directory entries the key may hold at once.
    pub max_registrations: Option<usize>,
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// Checks a key id and token as a node's credential.
pub fn credential(field: &str, c: &CredentialFile) -> Result<Credential, ConfigError> {
    if !valid_key_id(&c.id) {
        return Err(invalid(format!(
            "{field}.id: `{}` must be 1 to 64 of A-Z a-z 0-9 _ . -",
            c.id
        )));
    }
    check_token(&format!("{field}.token"), &c.token)?;
    Ok(Credential::new(c.id.clone(), c.token.as_bytes()))
}

fn check_token(field: &str, token: &str) -> Result<(), ConfigError> {
    if token.chars().count() < MIN_TOKEN_LEN {
        return Err(invalid(format!(
            "{field}: a token must be at least {MIN_TOKEN_LEN} characters (128 random bits); \
             make one with `meshproxy token new`"
        )));
    }
    Ok(())
}

/// The roles a config list names.
pub fn roles(field: &str, names: &[String]) -> Result<RoleSet, ConfigError> {
    let mut set = RoleSet::NONE;
    for name in names {
        let role = Role::from_name(name).ok_or_else(|| {
            invalid(format!(
                "{field}: `{name}` is not a role (expected client, exit, agent or gateway)"
            ))
        })?;
        set = set.with(role);
    }
    if set == RoleSet::NONE {
        return Err(invalid(format!(
            "{field}: name at least one role (client, exit, agent, gateway)"
        )));
    }
    Ok(set)
}

/// The hub's keys, checked: each has exactly one of `verifier` and `token`,
/// valid roles, and an id no other key has.
pub fn admission_keys(keys: &[KeyFile]) -> Result<Vec<AdmissionKey>, ConfigError> {
    let mut ids = BTreeSet::new();
    let mut out = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        let field = |f: &str| format!("hub.keys[{i}].{f}");
        if !valid_key_id(&k.id) {
            return Err(invalid(format!(
                "{}: `{}` must be 1 to 64 of A-Z a-z 0-9 _ . -",
                field("id"),
                k.id
            )));
        }
        if !ids.insert(k.id.as_str()) {
            return Err(invalid(format!("{}: `{}` is given twice", field("id"), k.id)));
        }
        if k.token_sha256.is_some() {
            return Err(invalid(format!(
                "{}: no longer accepted: SHA-256(token) was itself enough to log in. Issue a new \
                 token with `meshproxy token new` and store the `verifier` it prints (or put \
                 the original token in `token`)",
                field("token_sha256")
            )));
        }
        let verifier = match (&k.verifier, &k.token) {
            (Some(hex), None) => Verifier::from_hex(hex)
                .ok_or_else(|| invalid(format!("{}: expected 64 hex digits", field("verifier"))))?,
            (None, Some(token)) => {
                check_token(&field("token"), token)?;
                Credential::new(k.id.clone(), token.as_bytes()).verifier()
            }
            _ => {
                return Err(invalid(format!(
                    "hub.keys[{i}]: give exactly one of `verifier` and `token`"
                )))
            }
        };
        let roles = match &k.roles {
            Some(names) => roles(&field("roles"), names)?,
            None => RoleSet::CLIENT,
        };
        let peer = match &k.peer {
            Some(s) => Some(
                parse_peer_id(s)
                    .ok_or_else(|| invalid(format!("{}: `{s}` is not a peer id", field("peer"))))?,
            ),
            None => None,
        };
        if k.max_registrations == Some(0) {
            return Err(invalid(format!("{}: must be at least 1", field("max_registrations"))));
        }
        if k.max_registrations.is_some() && !roles.iter().any(Role::is_listed) {
            return Err(invalid(format!(
                "{}: only exit and agent keys register (add \"exit\" or \"agent\" to roles)",
                field("max_registrations")
            )));
        }
        out.push(AdmissionKey {
            key_id: k.id.clone(),
            verifier,
            roles,
            peer,
            max_registrations: k.max_registrations,
        });
    }
    Ok(out)
}

/// `--key ID=TOKEN[,roles=exit+client][,peer=PEER_ID][,max=N]`, or with
/// `verifier` true `--key-verifier ID=HEX[,…]`.
pub fn key_flag(flag: &str, s: &str, verifier: bool) -> Result<KeyFile, ConfigError> {
    let mut parts = s.split(',');
    let first = parts.next().unwrap_or_default();
    let Some((id, secret)) = first.split_once('=').filter(|(a, b)| !a.is_empty() && !b.is_empty())
    else {
        let what = if verifier { "ID=HEX" } else { "ID=TOKEN" };
        return Err(invalid(format!(
            "--{flag} `{first}`: expected {what}[,roles=…][,peer=…][,max=N]"
        )));
    };
    let mut key = KeyFile { id: id.into(), ..KeyFile::default() };
    if verifier {
        key.verifier = Some(secret.into());
    } else {
        key.token = Some(secret.into());
    }
    for part in parts {
        match part.split_once('=') {
            Some(("roles", list)) => key.roles = Some(list.split('+').map(str::to_owned).collect()),
            Some(("peer", peer)) => key.peer = Some(peer.into()),
            Some(("max", n)) => {
                key.max_registrations = Some(n.parse().map_err(|_| {
                    invalid(format!("--{flag} `{part}`: max takes a whole number"))
                })?);
            }
            _ => {
                return Err(invalid(format!(
                    "--{flag} `{part}`: expected roles=ROLE[+ROLE], peer=PEER_ID or max=N"
                )))
            }
        }
    }
    Ok(key)
}

/// A fresh token: 32 bytes of OS randomness in unpadded base64url (43 characters).
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What `meshproxy token new` prints: the token for the node, and what the
/// hub stores.
pub fn token_instructions(id: &str, token: &str, roles: RoleSet) -> String {
    let verifier = Credential::new(id, token.as_bytes()).verifier().to_hex();
    let role_list: Vec<String> = roles.iter().map(|r| format!("\"{}\"", r.name())).collect();
    let flag_roles: Vec<&str> = roles.iter().map(Role::name).collect();
    format!(
        "token:    {token}\n\
         verifier: {verifier}\n\
         \n\
         # on the node (keep the token secret):\n\
         credential = {{ id = \"{id}\", token = \"{token}\" }}\n\
         #   or: --credential {id}={token}\n\
         \n\
         # on the hub (the verifier cannot log in):\n\
         [[hub.keys]]\n\
         id = \"{id}\"\n\
         verifier = \"{verifier}\"\n\
         roles = [{}]\n\
         #   or: --key-verifier {id}={verifier},roles={}\n",
        role_list.join(", "),
        flag_roles.join("+"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "abcdefghijklmnopqrstuvwxyz";

    fn key(f: impl FnOnce(&mut KeyFile)) -> KeyFile {
        let mut k = KeyFile { id: "k".into(), token: Some(TOKEN.into()), ..KeyFile::default() };
        f(&mut k);
        k
    }

    fn err(keys: &[KeyFile]) -> String {
        admission_keys(keys).expect_err("refused").to_string()
    }

    #[test]
    fn keys_default_to_clients_and_name_their_roles() {
        let keys = admission_keys(&[
            key(|_| {}),
            key(|k| {
                k.id = "e".into();
                k.roles = Some(vec!["exit".into()]);
                k.max_registrations = Some(3);
            }),
        ])
        .expect("valid");
        assert_eq!(keys[0].roles, RoleSet::CLIENT);
        assert_eq!(keys[1].roles, RoleSet::EXIT);
        assert_eq!(keys[1].max_registrations, Some(3));
        assert_eq!(keys[0].verifier, Credential::new("k", TOKEN.as_bytes()).verifier());
    }

    #[test]
    fn a_token_and_its_verifier_make_the_same_key() {
        let v = Credential::new("k", TOKEN.as_bytes()).verifier().to_hex();
        let by_verifier =
            admission_keys(&[key(|k| (k.token, k.verifier) = (None, Some(v.clone())))])
                .expect("ok");
        assert_eq!(by_verifier, admission_keys(&[key(|_| {})]).expect("ok"));
    }

    #[test]
    fn bad_keys_are_refused_with_the_field_named() {
        let cases: Vec<(KeyFile, &str)> = vec![
            (
                key(|k| k.token = Some("short".into())),
                "hub.keys[0].token: a token must be at least 22",
            ),
            (
                key(|k| k.token_sha256 = Some("00".repeat(32))),
                "hub.keys[0].token_sha256: no longer accepted",
            ),
            (
                key(|k| k.verifier = Some("00".repeat(32))),
                "give exactly one of `verifier` and `token`",
            ),
            (key(|k| k.token = None), "give exactly one of `verifier` and `token`"),
            (
                key(|k| (k.token, k.verifier) = (None, Some("xyz".into()))),
                "hub.keys[0].verifier: expected 64 hex",
            ),
            (
                key(|k| k.roles = Some(vec!["admin".into()])),
                "hub.keys[0].roles: `admin` is not a role",
            ),
            (key(|k| k.roles = Some(vec![])), "name at least one role"),
            (key(|k| k.peer = Some("nope".into())), "hub.keys[0].peer: `nope` is not a peer id"),
            (key(|k| k.max_registrations = Some(2)), "only exit and agent keys register"),
            (key(|k| k.id = "bad id".into()), "hub.keys[0].id: `bad id`"),
        ];
        for (k, want) in cases {
            let got = err(std::slice::from_ref(&k));
            assert!(got.contains(want), "{k:?}: {got}");
        }
        assert!(err(&[key(|_| {}), key(|_| {})]).contains("hub.keys[1].id: `k` is given twice"));
    }

    #[test]
    fn key_flags() {
        let k = key_flag("key", &format!("e={TOKEN},roles=exit+client,max=4"), false).expect("ok");
        assert_eq!(k.roles, Some(vec!["exit".to_owned(), "client".to_owned()]));
        assert_eq!(k.max_registrations, Some(4));
        assert_eq!(k.token.as_deref(), Some(TOKEN));
        let v = key_flag("key-verifier", "e=abcd", true).expect("ok");
        assert_eq!((v.verifier.as_deref(), v.token), (Some("abcd"), None));
        for bad in ["e", "=x", "e=x,roles", "e=x,max=many", "e=x,colour=red"] {
            assert!(key_flag("key", bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn new_tokens_are_long_random_and_their_instructions_verify() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        let text = token_instructions("alice", &a, RoleSet::CLIENT);
        let verifier = text
            .lines()
            .find_map(|l| l.strip_prefix("verifier: "))
            .and_then(Verifier::from_hex)
            .expect("verifier line");
        let cred =
            credential("client.credential", &CredentialFile { id: "alice".into(), token: a })
                .expect("the new token is accepted");
        assert_eq!(cred.verifier(), verifier);
        assert!(text.contains("roles = [\"client\"]"));
    }
}
