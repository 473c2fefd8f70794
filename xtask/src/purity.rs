//! `cargo xtask purity`: the core and the simulator must not depend on an
//! async runtime or on sockets, or "the same machines run in the simulator and
//! in production" silently stops being true.
//!
//! Only normal and build dependencies count: dev-dependencies never reach the
//! shipped crate (the simulator's tests may well use tokio). All features are
//! enabled and all target platforms included, so an optional or
//! platform-specific dependency cannot hide.

use cargo_metadata::{CargoOpt, DependencyKind, Metadata, MetadataCommand};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

/// The crates whose dependency trees must stay pure.
pub const ROOTS: [&str; 2] = ["meshproxy-core", "meshproxy-sim"];
/// Crates that must not appear in those trees.
pub const BANNED: [&str; 6] = ["tokio", "mio", "socket2", "futures-timer", "async-std", "smol"];
/// Crate name prefixes that must not appear either.
pub const BANNED_PREFIXES: [&str; 1] = ["libp2p"];

/// Why the check could not run.
#[derive(Debug, thiserror::Error)]
pub enum PurityError {
    /// `cargo metadata` failed or printed something unreadable.
    #[error("cargo metadata failed: {0}")]
    Metadata(#[from] cargo_metadata::Error),
    /// The metadata has no dependency graph (it was asked for without one).
    #[error("cargo metadata returned no dependency graph")]
    NoResolve,
    /// A root crate is not a package of this workspace.
    #[error("package `{0}` is not in the workspace")]
    MissingRoot(String),
}

/// Whether `name` is a crate the pure crates must not depend on.
pub fn is_banned(name: &str) -> bool {
    BANNED.contains(&name) || BANNED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The dependency graph restricted to what ships: package ids to names, and
/// the normal/build edges between them.
#[derive(Debug, Default)]
pub struct DepGraph {
    names: BTreeMap<String, String>,
    edges: BTreeMap<String, BTreeSet<String>>,
}

impl DepGraph {
    /// Adds a package.
    pub fn package(&mut self, id: &str, name: &str) {
        self.names.insert(id.to_owned(), name.to_owned());
    }

    /// Adds a shipped (normal or build) dependency edge.
    pub fn depends(&mut self, from: &str, to: &str) {
        self.edges.entry(from.to_owned()).or_default().insert(to.to_owned());
    }

    /// The name of a package id, or the id itself if unnamed.
    fn name<'a>(&'a self, id: &'a str) -> &'a str {
        self.names.get(id).map_or(id, String::as_str)
    }

    /// The id of the package called `name`, if there is exactly one candidate
    /// among `among` (the workspace members) or, failing that, the graph.
    fn id_of(&self, name: &str, among: &[String]) -> Option<String> {
        among
            .iter()
            .find(|id| self.name(id) == name)
            .or_else(|| self.names.iter().find(|(_, n)| *n == name).map(|(id, _)| id))
            .cloned()
    }

    /// Walks everything reachable from `root` and returns how many packages
    /// that is (root included) and, for each banned one, the shortest path to
    /// it as crate names (`root -> … -> banned`).
    pub fn offenders(&self, root: &str) -> (usize, Vec<Vec<String>>) {
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut seen: BTreeSet<&str> = BTreeSet::from([root]);
        let mut queue = VecDeque::from([root]);
        let mut found = Vec::new();
        while let Some(id) = queue.pop_front() {
            if id != root && is_banned(self.name(id)) {
                let mut path = vec![self.name(id).to_owned()];
                let mut at = id;
                while let Some(&up) = parent.get(at) {
                    path.push(self.name(up).to_owned());
                    at = up;
                }
                path.reverse();
                found.push(path);
            }
            for dep in self.edges.get(id).into_iter().flatten() {
                if seen.insert(dep) {
                    parent.insert(dep, id);
                    queue.push_back(dep);
                }
            }
        }
        (seen.len(), found)
    }

    /// The shipped graph from `cargo metadata` output.
    pub fn from_metadata(metadata: &Metadata) -> Result<DepGraph, PurityError> {
        let resolve = metadata.resolve.as_ref().ok_or(PurityError::NoResolve)?;
        let mut graph = DepGraph::default();
        for package in &metadata.packages {
            graph.package(&package.id.repr, &package.name);
        }
        for node in &resolve.nodes {
            for dep in &node.deps {
                // An empty kind list comes from a cargo too old to say; count
                // it, since a false alarm beats a missed runtime.
                let shipped = dep.dep_kinds.is_empty()
                    || dep.dep_kinds.iter().any(|k| k.kind != DependencyKind::Development);
                if shipped {
                    graph.depends(&node.id.repr, &dep.pkg.repr);
                }
            }
        }
        Ok(graph)
    }
}

/// Runs the check on the workspace at `root`, printing what it found;
/// `Ok(false)` when a banned crate is reachable.
pub fn run(workspace: &Path) -> Result<bool, PurityError> {
    let metadata = MetadataCommand::new()
        .current_dir(workspace)
        .manifest_path(workspace.join("Cargo.toml"))
        .features(CargoOpt::AllFeatures)
        .exec()?;
    let graph = DepGraph::from_metadata(&metadata)?;
    let members: Vec<String> =
        metadata.workspace_members.iter().map(|id| id.repr.clone()).collect();
    let mut pure = true;
    for name in ROOTS {
        let id =
            graph.id_of(name, &members).ok_or_else(|| PurityError::MissingRoot(name.to_owned()))?;
        let (reached, offenders) = graph.offenders(&id);
        if offenders.is_empty() {
            println!("purity: {name}: ok, {reached} crates in its normal+build dependency tree");
        } else {
            pure = false;
            println!("purity: {name}: FAILED, banned crates in its normal+build dependency tree:");
            for path in offenders {
                println!("  {}", path.join(" -> "));
            }
        }
    }
    let banned: Vec<String> = BANNED
        .iter()
        .map(|b| (*b).to_owned())
        .chain(BANNED_PREFIXES.iter().map(|p| format!("{p}*")))
        .collect();
    println!(
        "purity: {} (checked for {}; all features, all targets, dev-dependencies excluded)",
        if pure { "PASSED" } else { "FAILED" },
        banned.join(", ")
    );
    Ok(pure)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// core -> bytes; core -> rand_core; sim -> core; sim -> helper -> tokio -> mio;
    /// sim -> libp2p-core (build); a cycle between helper and util.
    fn graph() -> DepGraph {
        let mut g = DepGraph::default();
        for (id, name) in [
            ("c", "meshproxy-core"),
            ("s", "meshproxy-sim"),
            ("b", "bytes"),
            ("r", "rand_core"),
            ("h", "helper"),
            ("u", "util"),
            ("t", "tokio"),
            ("m", "mio"),
            ("l", "libp2p-core"),
        ] {
            g.package(id, name);
        }
        for (from, to) in [
            ("c", "b"),
            ("c", "r"),
            ("s", "c"),
            ("s", "h"),
            ("h", "u"),
            ("u", "h"),
            ("h", "t"),
            ("t", "m"),
            ("s", "l"),
        ] {
            g.depends(from, to);
        }
        g
    }

    #[test]
    fn a_clean_tree_has_no_offenders_and_counts_what_it_reached() {
        assert_eq!(graph().offenders("c"), (3, vec![]));
    }

    #[test]
    fn every_banned_crate_is_reported_with_its_shortest_path() {
        let (reached, offenders) = graph().offenders("s");
        assert_eq!(reached, 9);
        let paths: Vec<String> = offenders.iter().map(|p| p.join(" -> ")).collect();
        assert_eq!(
            paths,
            [
                "meshproxy-sim -> libp2p-core",
                "meshproxy-sim -> helper -> tokio",
                "meshproxy-sim -> helper -> tokio -> mio",
            ]
        );
    }

    #[test]
    fn the_ban_list_matches_names_and_prefixes_exactly() {
        for name in [
            "tokio",
            "mio",
            "socket2",
            "futures-timer",
            "async-std",
            "smol",
            "libp2p",
            "libp2p-swarm",
        ] {
            assert!(is_banned(name), "{name}");
        }
        // Only exact names (and the libp2p prefix) are banned: `smoltcp` is a
        // different crate from `smol`.
        for name in ["futures", "smoltcp", "mio-extras", "rand_core", "p2p", "my-libp2p"] {
            assert!(!is_banned(name), "{name}");
        }
    }

    #[test]
    fn the_real_workspace_is_pure() {
        assert_eq!(run(&crate::workspace_root()).ok(), Some(true));
    }
}
