//! The `[adversaries]` table (which misbehaving apps and peers a run starts;
//! the simulator plays them in `world/adversary`) and the `[limits]` table
//! (the nodes' table limits, so adversarial scenarios can set them small
//! enough to be hit).

use meshproxy_core::config::Limits;
use serde::Deserialize;

/// `[adversaries]`: how many misbehaving actors a run starts. Counts are per
/// client (app adversaries) or per target node (peer adversaries); each
/// starts at a time drawn from the workload window.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "an [adversaries] table")]
pub struct AdversarySpec {
    /// Apps per client that send a valid handshake a byte every 1–3 s (or a
    /// few bytes, then nothing), slower than the handshake deadline.
    pub slowloris: u32,
    /// Apps per client that connect and send nothing, or a greeting then FIN.
    pub half_open: u32,
    /// Apps per client that send random bytes instead of a handshake.
    pub garbage: u32,
    /// CONNECT floods per client: `flood_size` connections at one instant
    /// from one source address.
    pub connect_floods: u32,
    /// Connections per CONNECT flood.
    pub flood_size: u32,
    /// Oversized length prefixes per exit (`/meshproxy/proxy/1`) and per hub
    /// (`/meshproxy/hub/1`).
    pub oversized_frames: u32,
    /// Wrong protocol versions (and streams of the wrong protocol) per exit
    /// and per hub.
    pub wrong_versions: u32,
    /// Streams opened and abandoned (nothing sent, or a partial frame) per
    /// exit and per hub.
    pub abandoned_streams: u32,
    /// Stream floods per exit and per hub: `stream_flood_size` streams opened
    /// at once by one hostile peer and abandoned, beyond `max_hub_streams`
    /// and `max_sessions_per_peer`.
    pub stream_floods: u32,
    /// Streams per stream flood.
    pub stream_flood_size: u32,
    /// Registration floods per hub: `registration_flood_size` hostile peer
    /// ids registering under one leaked admission key.
    pub registration_floods: u32,
    /// Peer ids per registration flood.
    pub registration_flood_size: u32,
    /// Replayed challenge responses per hub.
    pub replays: u32,
    /// Hold honest apps to "must succeed" even while a registration flood's
    /// fake exits are in the directory (off by default: they fail there
    /// with 0x01 when every exit they try is fake; see scenarios/README.md).
    pub registration_flood_strict: bool,
    /// Directory entries the leaked exit key may hold (its own
    /// `AdmissionKey::max_registrations`, a fleet key's); absent: the
    /// scenario's `[limits] max_registrations_per_key`, else the core's default.
    pub leaked_key_registrations: Option<u32>,
    /// Role escalations per hub: a hostile peer holding a leaked client-role
    /// key asks to be admitted as an exit (→ `Forbidden`), and another,
    /// admitted as a client, sends `Register` (→ `Forbidden`).
    pub role_escalations: u32,
    /// Ticketless strangers per exit: each opens proxy streams with no
    /// ticket, another peer's, a forged, an expired, an exit-role and a
    /// foreign hub's ticket; every one must be answered `NotAllowed` with
    /// nothing resolved or dialed.
    pub ticketless: u32,
    /// Pre-auth floods per hub: `preauth_flood_peers` hostile identities each
    /// hold as many hub streams as one peer may, never authenticating, and
    /// open another whenever one is refused, for `preauth_flood_secs`.
    pub preauth_floods: u32,
    /// Identities per pre-auth flood.
    pub preauth_flood_peers: u32,
    /// How long a pre-auth flood lasts (default 15 s).
    pub preauth_flood_secs: Option<u32>,
}

impl AdversarySpec {
    /// Whether any adversary is turned on.
    pub fn any(&self) -> bool {
        self.slowloris
            + self.half_open
            + self.garbage
            + self.connect_floods * self.flood_size
            + self.oversized_frames
            + self.wrong_versions
            + self.abandoned_streams
            + self.stream_floods * self.stream_flood_size
            + self.registration_floods * self.registration_flood_size
            + self.replays
            + self.role_escalations
            + self.ticketless
            + self.preauth_floods * self.preauth_flood_peers
            > 0
    }
}

/// `[limits]`: the core's [`Limits`] for every node, under the keys a
/// node's config file uses (any the core has; absent ones keep the core's
/// defaults), so adversarial scenarios can set them small enough to be hit;
/// plus the hubs' directory size.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a [limits] table")]
pub struct ScenarioLimits {
    /// Every node's [`Limits`].
    #[serde(flatten)]
    pub nodes: Limits,
    /// The hubs' directory size (default 1024).
    pub max_directory_entries: Option<u32>,
}
