//! A reload ([`Input::Reconfigure`](crate::io::Input::Reconfigure)): the live
//! parts of a new config take effect at once, in one input, so no output
//! ever sees half of it.
//!
//! The rule for work already under way, part by part:
//!
//! - **Limits**: a bound is checked when new work asks for room; lowered
//!   below what is open now, nothing is closed, and new work is refused
//!   until the count is under it again.
//! - **Timeouts**: deadlines already armed keep their instant; every
//!   deadline armed from now on uses the new value.
//! - **Exit policy** and the **agent's services and allow-list**: checked on
//!   every address dialed from now on (a session still resolving or trying
//!   its next address is checked against the new one); sessions already
//!   spliced keep running.
//! - **Listing** (an exit's country, labels and capacity; an agent's labels
//!   and services): registered again at every hub the node is ready at.
//! - **Hub keys**: a peer admitted under a key that is gone or changed
//!   (verifier, roles or pin) has its hub streams ended, and with them its
//!   registration and relay admission; peers under unchanged keys stay.
//! - **Gateway routes**: swapped in whole under the next version; requests
//!   already decided keep the version they were decided under.
//!
//! Everything else in the config (identity, hubs, roles, listeners, the
//! roles' credentials) must equal what the node runs with: the outside
//! refuses a reload that changes it, so it is not read here.

use super::Node;
use crate::agent::agent_labels;
use crate::config::NodeConfig;
use crate::io::Event;
use crate::record::{Attrs, Role};
use crate::time::Instant;

/// The role, attributes and capacity this node lists itself with at its
/// hubs, if it is listed (an exit, or an agent).
pub(super) fn listing(config: &NodeConfig) -> Option<(Role, Attrs, u32)> {
    match (&config.exit, &config.agent) {
        (Some(e), _) => Some((Role::Exit, e.attrs.clone(), e.capacity)),
        (None, Some(a)) => Some((
            Role::Agent,
            Attrs {
                country: None,
                // Checked at config time; what does not fit is not listed.
                labels: agent_labels(&a.labels, a.services.keys()).unwrap_or_default(),
            },
            u32::try_from(config.limits.max_agent_streams).unwrap_or(u32::MAX),
        )),
        (None, None) => None,
    }
}

impl Node {
    /// Applies the live parts of `new` (see the module's rule).
    pub(super) fn reconfigure(&mut self, now: Instant, new: &NodeConfig) {
        self.ctx.limits = new.limits;
        self.ctx.timeouts = new.timeouts;
        self.config.limits = new.limits;
        self.config.timeouts = new.timeouts;
        if let (Some(role), Some(config)) = (&mut self.roles.exit, &mut self.config.exit) {
            if let Some(e) = &new.exit {
                role.set_policy(&e.policy);
                config.policy = e.policy.clone();
                config.attrs = e.attrs.clone();
                config.capacity = e.capacity;
            }
        }
        if let (Some(role), Some(config), Some(a)) =
            (&mut self.roles.agent, &mut self.config.agent, &new.agent)
        {
            role.set_offer(a);
            config.labels = a.labels.clone();
            config.services = a.services.clone();
            config.allow = a.allow.clone();
        }
        let listed = listing(&self.config);
        if let (Some(links), Some((_, attrs, capacity))) = (&mut self.roles.links, listed) {
            if links.set_listing(attrs, capacity) {
                links.reregister_all(&mut self.ctx, now);
            }
        }
        let mut admissions_ended = 0;
        if let (Some(role), Some(config), Some(h)) =
            (&mut self.roles.hub, &mut self.config.hub, &new.hub)
        {
            admissions_ended = role.set_keys(&mut self.ctx, h.keys.clone());
            config.keys = h.keys.clone();
        }
        if let (Some(role), Some(config), Some(g)) =
            (&mut self.roles.gateway, &mut self.config.gateway, &new.gateway)
        {
            if !config.routes.same_routes(&g.routes) {
                let routes = g.routes.clone().with_version(role.routes_version() + 1);
                let version = routes.version();
                let accepted = role.reload(routes.clone()).is_ok();
                if accepted {
                    config.routes = routes;
                }
                self.ctx.event(Event::RoutesReloaded { version, accepted });
            }
        }
        self.ctx.event(Event::Reconfigured { admissions_ended });
    }
}
