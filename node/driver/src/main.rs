//! `meshproxy`: the node's command line.
//!
//! `run --config FILE` runs a node (any mix of hub, exit and client) over
//! libp2p until Ctrl-C or SIGTERM, then lets running sessions finish for up to
//! a grace period. `hub`, `exit`, `client` and `gateway` run one role from flags (each
//! flag is a config key) and/or a config file. `demo` runs a whole mesh in
//! one process. `keygen`, `id` and `check` manage identities and validate
//! configs. `status` asks a running node's control socket what it is doing
//! (`tui` shows it live);
//! `state show` reads a state file.
#![forbid(unsafe_code)]

use anyhow::{anyhow, bail};
use clap::Parser;
use meshproxy::ops::cli::{Cli, Command, StateCommand, TokenCommand};
use meshproxy::ops::config::{FileConfig, Settings};
use meshproxy::ops::control;
use meshproxy::ops::flags::{CommonFlags, RoleFlags};
use meshproxy::ops::identity::{Identity, IdentityError};
use meshproxy::ops::reload::{watch, Loader, ReloadHandle, Reloader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// glibc's malloc hands the pages of freed frame buffers back to the kernel
/// (per-thread arenas trim with `madvise`) and faults them in again on the
/// next frame; mimalloc keeps them. `cargo xtask bench`, 5 runs each: the exit
/// alone 2.05 -> 1.27 CPU-s/GB, client + exit 3.99 -> 3.43.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn token_new(id: &str, roles: &str) -> anyhow::Result<()> {
    if !meshproxy_core::wire::hub::valid_key_id(id) {
        bail!("--id `{id}`: 1 to 64 of A-Z a-z 0-9 _ . -");
    }
    let names: Vec<String> = roles.split('+').map(str::to_owned).collect();
    let roles = meshproxy::ops::keys::roles("--roles", &names)?;
    print!(
        "{}",
        meshproxy::ops::keys::token_instructions(id, &meshproxy::ops::keys::new_token(), roles)
    );
    Ok(())
}

/// How long running sessions may finish after a stop signal.
const GRACE: Duration = Duration::from_secs(10);

/// How the node re-reads its config on a reload, and the file to watch.
struct Reread {
    loader: Loader,
    watch: Option<PathBuf>,
}

/// Runs the node `file` describes until Ctrl-C or SIGTERM; reloads as
/// `reread` says on SIGHUP, `meshproxy reload` and a change of the file.
fn run(file: FileConfig, reread: Reread) -> anyhow::Result<()> {
    let path = file.identity_path();
    let (identity, fresh) = match Identity::load(&path) {
        Err(IdentityError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            (Identity::generate(), true)
        }
        loaded => (loaded?, false),
    };
    // The whole file is checked before a new identity file is written: a bad
    // config leaves nothing behind.
    let settings = Settings::from_file(&file, &identity, &meshproxy::ops::launch::parse_addr)?;
    if fresh {
        identity.create(&path)?;
        tracing::info!(path = %path.display(), peer = %identity.peer_id_string(), "created identity");
    }
    let runtime = meshproxy::ops::assemble::runtime(settings.threads)
        .map_err(|e| anyhow!("tokio runtime: {e}"))?;
    let control_path = settings.control.clone();
    runtime.block_on(async {
        let seed = rand::random::<u64>();
        let running =
            meshproxy::ops::launch::start_with_settings(settings, &identity, seed).await?;
        let (reloader, handle) = Reloader::new(
            reread.loader,
            identity.clone(),
            file.clone(),
            running.node.runner(),
        );
        let reloads = tokio::spawn(reloader.run());
        let hup = watch::on_sighup(handle.clone())?;
        let watching = match &reread.watch {
            Some(path) => match watch::on_change(path, handle.clone()) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "config file not watched: reload with SIGHUP or `meshproxy reload`");
                    None
                }
            },
            None => None,
        };
        let control = match control_path {
            Some(path) => match serve_control(&path, &running, handle) {
                Ok(server) => Some(server),
                Err(e) => {
                    running.node.shutdown().await;
                    return Err(e.into());
                }
            },
            None => None,
        };
        println!("peer id: {}", identity.peer_id_string());
        for addr in &running.p2p_addrs {
            println!("p2p: {addr}/p2p/{}", identity.peer_id_string());
        }
        for addr in &running.node.listen_addrs {
            println!("listener: {addr}");
        }
        for addr in &running.node.gateway_addrs {
            println!("gateway: http://{addr}/");
        }
        if let Some(addr) = running.node.metrics_addr {
            println!("metrics: http://{addr}/metrics");
        }
        if let Some(server) = &control {
            println!("control: {}", server.path().display());
        }
        meshproxy::ops::assemble::stop_signal().await;
        tracing::info!(grace = ?GRACE, "stopping: no new connections; running sessions may finish");
        drop(control); // removes the socket: `status` now says the node is not running
        drop(watching);
        hup.abort();
        reloads.abort();
        running.node.shutdown_gracefully(GRACE).await;
        Ok(())
    })
}

/// Opens the control socket of a node that has started.
fn serve_control(
    path: &Path,
    running: &meshproxy::ops::launch::NetNode,
    reload: ReloadHandle,
) -> Result<control::ControlServer, control::ControlError> {
    let info = control::NodeInfo {
        p2p_addrs: running.p2p_addrs.iter().map(ToString::to_string).collect(),
        listeners: running.node.listen_addrs.clone(),
        metrics: running.node.metrics_addr,
    };
    let limits = control::ControlLimits::default();
    let (runner, events) = (running.node.runner(), running.node.events());
    control::ControlServer::bind_with_reload(path, runner, events, info, limits, Some(reload))
}

/// `meshproxy tui`: the live view of the node at `--control`, or the one the config names.
fn tui(control: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<()> {
    let path = control_socket(control, config)?;
    meshproxy::ops::tui::run(&path)
}

/// The control socket at `--control`, or the one the config names, or the default.
fn control_socket(control: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match (control, config) {
        (Some(path), _) => path,
        (None, Some(config)) => FileConfig::load(&config)?.control_path().ok_or_else(|| {
            anyhow!("{} turns the control socket off (control = false)", config.display())
        })?,
        (None, None) => {
            let path = FileConfig::default().control_path().unwrap_or_default();
            if !path.exists() {
                bail!(
                    "no control socket at {} (the default): name the node's with --control PATH, \
                     or its config with -c FILE",
                    path.display()
                );
            }
            path
        }
    })
}

fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("tokio runtime: {e}"))
}

/// `meshproxy reload`: the node re-reads its config; prints the keys it changed.
fn reload(control: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<()> {
    let path = control_socket(control, config)?;
    let changed = current_thread()?.block_on(control::client::reload(&path))?;
    if changed.is_empty() {
        println!("reloaded: nothing changed");
    } else {
        println!("reloaded: {}", changed.join(", "));
    }
    Ok(())
}

/// `meshproxy revoke TARGET`: a hub ends a key's or a peer's admissions.
fn revoke(target: &str, control: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<()> {
    let path = control_socket(control, config)?;
    let ended = current_thread()?.block_on(control::client::revoke(&path, target))?;
    println!(
        "revoked {target}: {ended} admitted hub streams ended; refused until hub.keys changes"
    );
    Ok(())
}

/// `meshproxy status`: asks the control socket at `--control`, or the one
/// the config names.
fn status(control: Option<PathBuf>, config: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let path = control_socket(control, config)?;
    let snapshot = current_thread()?.block_on(control::client::status(&path))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
    } else {
        print!("{}", control::render::status(&snapshot));
    }
    Ok(())
}

/// `meshproxy state show`: the sticky pins of a state file.
fn state_show(file: &Path, json: bool) -> anyhow::Result<()> {
    let pins: Vec<control::snapshot::PinView> = meshproxy::ops::state::pins(file)?
        .into_iter()
        .map(|p| control::snapshot::PinView {
            listener: p.key.listener.0,
            session: p.key.session,
            exit: control::snapshot::peer_string(&p.peer),
            idle_secs: p.age.as_secs(),
        })
        .collect();
    if json {
        let out = serde_json::json!({ "file": file, "pins": pins });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", control::render::state(&file.display().to_string(), &pins));
    }
    Ok(())
}

/// Runs one role from its flags (and `--config`, if given); a reload reads
/// the file again under the same flags.
fn run_role(common: &CommonFlags, role: RoleFlags<'_>, loader: Loader) -> anyhow::Result<()> {
    let reread = Reread { loader, watch: common.config.clone() };
    run(meshproxy::ops::flags::build(common, role)?, reread)
}

/// The loader of a role command: its flags over its `--config` file.
fn role_loader<F: Clone + Send + Sync + 'static>(
    common: &CommonFlags,
    flags: &F,
    role: fn(&F) -> RoleFlags<'_>,
) -> Loader {
    let (common, flags) = (common.clone(), flags.clone());
    Arc::new(move || meshproxy::ops::flags::build(&common, role(&flags)))
}

fn demo() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| anyhow!("tokio runtime: {e}"))?;
    runtime.block_on(async {
        let demo = meshproxy::ops::demo::Demo::start().await?;
        demo.print_intro();
        meshproxy::ops::assemble::stop_signal().await;
        demo.shutdown().await;
        Ok(())
    })
}

/// Prints a command's error (its own message names its causes: the errors
/// below it already print theirs) and turns the result into the exit code.
fn exit_code(what: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshproxy {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &Path) -> anyhow::Result<()> {
    let file = FileConfig::load(path)?;
    let identity_path = file.identity_path();
    let identity = match Identity::load(&identity_path) {
        Ok(id) => {
            println!("identity: {} ({})", identity_path.display(), id.peer_id_string());
            id
        }
        Err(e) => {
            println!(
                "identity: {} (not loaded: {e}; created on first run)",
                identity_path.display()
            );
            Identity::from_secret([0; 32])
        }
    };
    let settings = Settings::from_file(&file, &identity, &meshproxy::ops::launch::parse_addr)?;
    let node = &settings.node;
    if let Some(hub) = &node.hub {
        for key in &hub.keys {
            let pin = key.peer.map_or(String::new(), |_| ", pinned to one peer".into());
            println!("hub key: {} (roles: {}{pin})", key.key_id, key.roles);
        }
    }
    if node.exit.as_ref().is_some_and(|e| e.open) {
        println!("  warning: exit.open = true: this exit serves peers without a ticket");
    }
    let roles: Vec<&str> = [
        node.hub.as_ref().map(|_| "hub"),
        node.exit.as_ref().map(|_| "exit"),
        node.client.as_ref().map(|_| "client"),
        node.gateway.as_ref().map(|_| "gateway"),
        node.agent.as_ref().map(|_| "agent"),
    ]
    .into_iter()
    .flatten()
    .collect();
    println!("roles: {}", roles.join(", "));
    if let Some(agent) = &node.agent {
        for (name, origin) in &agent.services {
            println!("agent service: {name} -> {origin}");
        }
        let allow: Vec<String> = agent.allow.iter().map(ToString::to_string).collect();
        println!(
            "agent allow: {}",
            if allow.is_empty() { "none".into() } else { allow.join(", ") }
        );
    }
    println!("hubs: {}", node.hubs.len());
    for s in &settings.listeners {
        let auth = if s.has_auth { "auth" } else { "no auth" };
        println!("listener: {} ({auth})", s.bind);
        if meshproxy::runtime::listener::exposed_without_auth(s.bind, s.has_auth) {
            println!("  warning: reachable from other hosts without authentication");
        }
    }
    if let (Some(g), Some(s)) = (&node.gateway, &settings.gateway) {
        for (l, bind) in g.listeners.iter().zip(&s.binds) {
            let routes = g.routes.table(&l.name).map_or(0, |t| t.routes().len());
            let default = g.routes.table(&l.name).is_some_and(|t| t.default_target().is_some());
            let default = if default { " and a default route" } else { "" };
            println!("gateway listener: {} on {bind} ({routes} routes{default})", l.name);
        }
    }
    if let Some(state) = &settings.state {
        println!("state: {}", state.display());
    }
    match &settings.control {
        Some(control) => println!("control: {}", control.display()),
        None => println!("control: off"),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| {
            // The demo talks to a person on stdout; node events would drown it.
            let default = if matches!(cli.command, Command::Demo) { "warn" } else { "info" };
            tracing_subscriber::EnvFilter::try_new(cli.log.as_deref().unwrap_or(default))
        })
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match cli.command {
        Command::Token { command: TokenCommand::New { id, roles } } => {
            exit_code("token new", token_new(&id, &roles))
        }
        Command::Keygen { out } => {
            let id = Identity::generate();
            match id.create(&out) {
                Ok(()) => {
                    println!("{}", id.peer_id_string());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("meshproxy keygen: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Id { identity } => match Identity::load(&identity) {
            Ok(id) => {
                println!("{}", id.peer_id_string());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("meshproxy id: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check { config } => match check(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("meshproxy check: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config, metrics, control } => {
            let path = config.clone();
            // The command line's keys win over the file's, at start and at every reload.
            let loader: Loader = Arc::new(move || {
                FileConfig::load(&path).map(|mut file| {
                    file.metrics = metrics.or(file.metrics);
                    if let Some(control) = &control {
                        file.control = Some(meshproxy::ops::flags::control_flag(control));
                    }
                    file
                })
            });
            let file = loader();
            let reread = Reread { loader, watch: Some(config) };
            exit_code("run", file.map_err(anyhow::Error::from).and_then(|f| run(f, reread)))
        }
        Command::Hub { common, hub } => {
            let loader = role_loader(&common, &hub, |f| RoleFlags::Hub(f));
            exit_code("hub", run_role(&common, RoleFlags::Hub(&hub), loader))
        }
        Command::Exit { common, exit } => {
            let loader = role_loader(&common, &exit, |f| RoleFlags::Exit(f));
            exit_code("exit", run_role(&common, RoleFlags::Exit(&exit), loader))
        }
        Command::Client { common, client } => {
            let loader = role_loader(&common, &client, |f| RoleFlags::Client(f));
            exit_code("client", run_role(&common, RoleFlags::Client(&client), loader))
        }
        Command::Gateway { common, gateway } => {
            let loader = role_loader(&common, &gateway, |f| RoleFlags::Gateway(f));
            exit_code("gateway", run_role(&common, RoleFlags::Gateway(&gateway), loader))
        }
        Command::Agent { common, agent } => {
            let loader = role_loader(&common, &agent, |f| RoleFlags::Agent(f));
            exit_code("agent", run_role(&common, RoleFlags::Agent(&agent), loader))
        }
        Command::Reload { control, config } => exit_code("reload", reload(control, config)),
        Command::Revoke { target, control, config } => {
            exit_code("revoke", revoke(&target, control, config))
        }
        Command::Demo => exit_code("demo", demo()),
        Command::Status { control, config, json } => {
            exit_code("status", status(control, config, json))
        }
        Command::Tui { control, config } => exit_code("tui", tui(control, config)),
        Command::State { command: StateCommand::Show { file, json } } => {
            exit_code("state show", state_show(&file, json))
        }
    }
}
