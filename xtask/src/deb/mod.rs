//! `cargo xtask deb`: the Debian package of `meshproxy`, built with cargo-deb.
//!
//! The package's metadata (assets, maintainer scripts, systemd units) is
//! `[package.metadata.deb]` in `node/driver/Cargo.toml`; the units and scripts
//! are in `node/driver/debian/`. This task makes what cargo-deb cannot: the
//! man pages and shell completions, generated from the binary's own clap
//! definition by `node/driver/examples/dist_assets.rs` into
//! `<target>/release/dist-assets/`, where the metadata picks them up. The
//! release build is the one `cargo xtask bench` makes (same profile and
//! features), so in CI this step compiles only the small example.
//!
//! `--check` then installs the package with `dpkg -i`, checks what it
//! installed (`check.rs`) and purges it: CI's `deb` step.

mod check;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The arguments of `cargo xtask deb`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DebArgs {
    /// After building: install the package (dpkg -i; needs root), check the binary, the
    /// shipped configs (`meshproxy check`), man pages, completions, units and user, then
    /// purge it (dpkg --purge).
    #[arg(long)]
    pub check: bool,
}

/// Why the package could not be built or checked.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    /// A command could not be started.
    #[error("deb: could not start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("deb: `{command}` failed ({status}){hint}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What to do about it, if known.
        hint: &'static str,
    },
    /// cargo-deb is not installed.
    #[error("deb: cargo-deb is not installed: cargo install cargo-deb --locked --version {CARGO_DEB_VERSION}")]
    NoCargoDeb,
    /// A file of the build could not be read or written.
    #[error("deb: {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// cargo-deb's output named no package file.
    #[error("deb: cargo deb printed no .deb path: {0}")]
    NoPackage(String),
    /// The install check needs root and does not have it.
    #[error(
        "deb: --check installs the package with dpkg and must run as root (it runs as uid {0})"
    )]
    NotRoot(String),
}

/// The cargo-deb `.ci/run` installs.
pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// Builds the package (and with `--check`, installs, checks and purges it).
pub fn run(workspace: &Path, args: &DebArgs) -> Result<bool, DebError> {
    let deb = build(workspace)?;
    println!("deb: {}", deb.display());
    if args.check {
        return check::install_check_purge(&deb);
    }
    Ok(true)
}

/// Builds the release binary and the asset generator, generates the man pages
/// and completions, and packages them; returns the `.deb`'s path.
pub fn build(workspace: &Path) -> Result<PathBuf, DebError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    if !Command::new(&cargo).args(["deb", "--version"]).output().is_ok_and(|o| o.status.success()) {
        return Err(DebError::NoCargoDeb);
    }
    let build =
        ["build", "--release", "-p", "meshproxy", "--bin", "meshproxy", "--example", "dist_assets"];
    run_ok(Command::new(&cargo).args(build).current_dir(workspace), "")?;
    let release = crate::bench::procs::target_dir(workspace).join("release");
    let assets = release.join("dist-assets");
    run_ok(Command::new(release.join("examples").join("dist_assets")).arg(&assets), "")?;
    gzip_man_pages(&assets.join("man"))?;
    // --no-build: the binary was just built with the same profile and features.
    let mut deb = Command::new(&cargo);
    deb.args(["deb", "-p", "meshproxy", "--no-build", "--strip"]).current_dir(workspace);
    let command = describe(&deb);
    let out =
        deb.output().map_err(|source| DebError::Spawn { command: command.clone(), source })?;
    if !out.status.success() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        return Err(DebError::Failed { command, status: out.status, hint: "" });
    }
    // cargo-deb prints the package's path as its last line of stdout.
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .ok_or_else(|| DebError::NoPackage(stdout.into_owned()))
}

/// Debian installs man pages gzipped; `-n` leaves out the name and time, so
/// the same page makes the same bytes.
fn gzip_man_pages(dir: &Path) -> Result<(), DebError> {
    let io = |source| DebError::Io { path: dir.to_owned(), source };
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    pages.retain(|p| p.extension().is_some_and(|e| e == "1"));
    if pages.is_empty() {
        return Err(DebError::Io {
            path: dir.to_owned(),
            source: std::io::Error::other("no man pages were generated"),
        });
    }
    run_ok(Command::new("gzip").args(["-9", "-n", "-f"]).args(&pages), "")
}

/// A command line for messages.
fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

/// Runs `command` (its output goes to ours) and fails unless it succeeds.
fn run_ok(command: &mut Command, hint: &'static str) -> Result<(), DebError> {
    let line = describe(command);
    println!("deb: {line}");
    let status =
        command.status().map_err(|source| DebError::Spawn { command: line.clone(), source })?;
    if status.success() {
        Ok(())
    } else {
        Err(DebError::Failed { command: line, status, hint })
    }
}

#[cfg(test)]
mod tests {
    use super::check::ROLES;

    fn unit(role: &str) -> String {
        let path =
            crate::workspace_root().join(format!("node/driver/debian/meshproxy-{role}.service"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// One hardening for every role: the units may differ in their role's
    /// name and their description, nothing else.
    #[test]
    fn the_units_differ_only_in_their_role() {
        let normal = |role: &str| -> Vec<String> {
            unit(role)
                .lines()
                .filter(|l| !l.starts_with("Description=") && !l.starts_with("# meshproxy "))
                .map(|l| l.replace(role, "ROLE"))
                .collect()
        };
        let hub = normal("hub");
        for role in ROLES {
            assert_eq!(
                normal(role),
                hub,
                "meshproxy-{role}.service strays from meshproxy-hub.service"
            );
        }
    }

    /// What issue #19 asks of every unit.
    #[test]
    fn every_unit_is_hardened_and_reloads_with_sighup() {
        for role in ROLES {
            let text = unit(role);
            for line in [
                "User=meshproxy",
                "StateDirectory=meshproxy",
                "ProtectSystem=strict",
                "ProtectHome=yes",
                "PrivateTmp=yes",
                "NoNewPrivileges=yes",
                "CapabilityBoundingSet=",
                "AmbientCapabilities=",
                "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
                "SystemCallFilter=@system-service",
                "ExecReload=/bin/kill -HUP $MAINPID",
                "Restart=on-failure",
                &format!("ExecStart=/usr/bin/meshproxy run --config /etc/meshproxy/{role}.toml"),
            ] {
                assert!(text.lines().any(|l| l == line), "meshproxy-{role}.service lacks `{line}`");
            }
        }
    }

    /// The package metadata ships every role's example config and unit.
    #[test]
    fn the_metadata_ships_every_role() {
        let path = crate::workspace_root().join("node/driver/Cargo.toml");
        let manifest = std::fs::read_to_string(&path).expect("node/driver/Cargo.toml");
        for role in ROLES {
            let config =
                format!(r#"["../../examples/{role}.toml", "etc/meshproxy/{role}.toml", "640"]"#);
            assert!(manifest.contains(&config), "no asset {config}");
            let unit = format!(r#"unit-name = "meshproxy-{role}""#);
            assert!(manifest.contains(&unit), "no systemd unit {unit}");
        }
    }
}
