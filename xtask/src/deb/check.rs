//! `cargo xtask deb --check`: installs the package on this machine, checks
//! what it installed, and purges it again, whatever the checks found.
//!
//! It needs root (dpkg). It refuses to run where `meshproxy` is already
//! installed, so it never replaces or purges an installation it did not make.

use super::{describe, DebError};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The roles whose example config and unit the package ships.
pub(super) const ROLES: [&str; 5] = ["hub", "exit", "client", "gateway", "agent"];
/// The placeholder the example configs carry for the hub's peer id.
const HUB_PLACEHOLDER: &str = "HUB_PEER_ID";
/// How long the installed binary may take to start a hub as the package user.
const START_DEADLINE: Duration = Duration::from_secs(15);
/// `systemd-analyze security` exposure (×10) a unit may have at most: the
/// units score 1.4 ("OK"); a change that weakens them past 2.0 fails the step.
const EXPOSURE_THRESHOLD: &str = "20";

/// Installs `deb`, runs every check, purges; `Ok(false)` if a check failed.
pub fn install_check_purge(deb: &Path) -> Result<bool, DebError> {
    let uid =
        String::from_utf8_lossy(&output(Command::new("id").arg("-u"))?.stdout).trim().to_owned();
    if uid != "0" {
        return Err(DebError::NotRoot(uid));
    }
    if Command::new("dpkg")
        .args(["-s", "meshproxy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        println!("deb: FAILED: meshproxy is already installed here; this check installs and purges its own copy only (dpkg --purge meshproxy first)");
        return Ok(false);
    }
    let mut checks = Checks::default();
    let install = output(Command::new("dpkg").arg("-i").arg(deb))?;
    checks.expect("dpkg -i installs the package", install.status.success(), &install);
    // Purged whatever the checks found or failed to start.
    let ran = if install.status.success() { check_installed(&mut checks) } else { Ok(()) };
    let purge = output(Command::new("dpkg").args(["--purge", "meshproxy"]))?;
    checks.expect("dpkg --purge removes it", purge.status.success(), &purge);
    for (path, what) in [
        ("/usr/bin/meshproxy", "the binary"),
        ("/etc/meshproxy", "the configs"),
        ("/var/lib/meshproxy", "the state directory"),
    ] {
        checks.expect(&format!("purge removed {what} ({path})"), !Path::new(path).exists(), "");
    }
    let user = output(Command::new("getent").args(["passwd", "meshproxy"]))?;
    checks.expect("purge removed the meshproxy user", !user.status.success(), "");
    ran?;
    Ok(checks.report())
}

/// The checks of the installed package.
fn check_installed(checks: &mut Checks) -> Result<(), DebError> {
    let version = output(Command::new("/usr/bin/meshproxy").arg("--version"))?;
    let text = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let want = format!("meshproxy {}", env!("CARGO_PKG_VERSION"));
    checks.expect(&format!("meshproxy --version prints `{want}`"), text == want, &version);

    let user = output(Command::new("getent").args(["passwd", "meshproxy"]))?;
    let entry = String::from_utf8_lossy(&user.stdout).trim().to_owned();
    let fields: Vec<&str> = entry.split(':').collect();
    let system = fields.get(2).and_then(|u| u.parse::<u32>().ok()).is_some_and(|u| u < 1000);
    let home = fields.get(5) == Some(&"/var/lib/meshproxy");
    checks.expect("a system user meshproxy, home /var/lib/meshproxy", system && home, &entry);
    let group = output(Command::new("getent").args(["group", "meshproxy"]))?;
    let gid = String::from_utf8_lossy(&group.stdout)
        .split(':')
        .nth(2)
        .and_then(|g| g.trim().parse::<u32>().ok());

    check_configs(checks, gid)?;
    check_start_as_user(checks)?;
    check_docs(checks)?;
    check_units(checks)?;
    Ok(())
}

/// Each shipped config: mode 0640, group meshproxy, and `meshproxy check`
/// passes — as shipped for the hub; for the others once the hub's peer id
/// replaces the placeholder, as the operator does (as shipped they must fail
/// naming it).
fn check_configs(checks: &mut Checks, gid: Option<u32>) -> Result<(), DebError> {
    let scratch = scratch_dir()?;
    let hub_key = scratch.join("hub.key");
    let keygen =
        output(Command::new("/usr/bin/meshproxy").arg("keygen").arg("--out").arg(&hub_key))?;
    let hub_peer = String::from_utf8_lossy(&keygen.stdout).trim().to_owned();
    checks.expect("meshproxy keygen makes a hub key", keygen.status.success(), &keygen);
    for role in ROLES {
        let path = PathBuf::from(format!("/etc/meshproxy/{role}.toml"));
        let Ok(meta) = std::fs::metadata(&path) else {
            checks.expect(&format!("{} is installed", path.display()), false, "");
            continue;
        };
        let mode = meta.mode() & 0o7777;
        checks.expect(
            &format!("{}: mode 0640, owner root, group meshproxy", path.display()),
            mode == 0o640 && meta.uid() == 0 && Some(meta.gid()) == gid,
            &format!("mode {mode:o}, uid {}, gid {}", meta.uid(), meta.gid()),
        );
        let text = std::fs::read_to_string(&path)
            .map_err(|source| DebError::Io { path: path.clone(), source })?;
        let shipped = check_config(&path, &scratch)?;
        if text.contains(HUB_PLACEHOLDER) {
            let err = String::from_utf8_lossy(&shipped.stderr).into_owned();
            checks.expect(
                &format!(
                    "meshproxy check {} refuses the {HUB_PLACEHOLDER} placeholder",
                    path.display()
                ),
                !shipped.status.success()
                    && err.contains(&format!("hubs[0].peer: `{HUB_PLACEHOLDER}`")),
                &shipped,
            );
            let filled = scratch.join(format!("{role}.toml"));
            std::fs::write(&filled, text.replace(HUB_PLACEHOLDER, &hub_peer))
                .map_err(|source| DebError::Io { path: filled.clone(), source })?;
            let out = check_config(&filled, &scratch)?;
            checks.expect(
                &format!("meshproxy check {} with the hub's peer id filled in", path.display()),
                out.status.success(),
                &out,
            );
        } else {
            checks.expect(
                &format!("meshproxy check {}", path.display()),
                shipped.status.success(),
                &shipped,
            );
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// `meshproxy check --config FILE` in the scratch directory (the configs'
/// relative paths then point there).
fn check_config(path: &Path, scratch: &Path) -> Result<Output, DebError> {
    output(
        Command::new("/usr/bin/meshproxy")
            .arg("check")
            .arg("--config")
            .arg(path)
            .current_dir(scratch),
    )
}

/// What a unit does, without systemd: as the meshproxy user, in the state
/// directory systemd would make, start a hub from the shipped config (on a
/// free port) and wait for its peer id. Shows the user can read the 0640
/// config and write its identity key there.
fn check_start_as_user(checks: &mut Checks) -> Result<(), DebError> {
    let state = Path::new("/var/lib/meshproxy");
    let made = output(
        Command::new("install")
            .args(["-d", "-o", "meshproxy", "-g", "meshproxy", "-m", "0750"])
            .arg(state),
    )?;
    checks.expect("the state directory can be made for meshproxy", made.status.success(), &made);
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=meshproxy", "--regid=meshproxy", "--init-groups", "--"])
        .args(["/usr/bin/meshproxy", "hub", "--config", "/etc/meshproxy/hub.toml"])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--control", "off"])
        .current_dir(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let line = describe(&command);
    let mut child =
        command.spawn().map_err(|source| DebError::Spawn { command: line.clone(), source })?;
    // Read stdout on a thread: the main one keeps the deadline.
    let stdout = child.stdout.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        if let Some(out) = stdout {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        }
    });
    let started = Instant::now();
    let mut peer = None;
    while peer.is_none() {
        let left = START_DEADLINE.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => peer = line.strip_prefix("peer id: ").map(str::to_owned),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let key = state.join("hub.key");
    let owned = std::fs::metadata(&key).is_ok_and(|m| m.mode() & 0o777 == 0o600);
    checks.expect(
        &format!("`{line}` starts within {START_DEADLINE:?} and writes {} (0600)", key.display()),
        peer.is_some() && owned,
        &format!("peer id: {peer:?}"),
    );
    Ok(())
}

/// Man pages (gzipped roff) and the completions of bash, zsh and fish.
fn check_docs(checks: &mut Checks) -> Result<(), DebError> {
    for page in ["meshproxy", "meshproxy-run", "meshproxy-check", "meshproxy-exit"] {
        let path = format!("/usr/share/man/man1/{page}.1.gz");
        let text = output(Command::new("gzip").args(["-dc", &path]))?;
        let roff = String::from_utf8_lossy(&text.stdout);
        checks.expect(&format!("man page {path}"), roff.contains(".TH "), &text);
    }
    for (path, marker) in [
        ("/usr/share/bash-completion/completions/meshproxy", "complete -F _meshproxy"),
        ("/usr/share/zsh/vendor-completions/_meshproxy", "#compdef meshproxy"),
        ("/usr/share/fish/vendor_completions.d/meshproxy.fish", "complete -c meshproxy"),
    ] {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        checks.expect(&format!("completion {path}"), text.contains(marker), "");
    }
    Ok(())
}

/// The units are installed; where systemd-analyze is present they verify and
/// keep their exposure score.
fn check_units(checks: &mut Checks) -> Result<(), DebError> {
    let mut units = Vec::new();
    for role in ROLES {
        let name = format!("meshproxy-{role}.service");
        let found = ["/usr/lib/systemd/system", "/lib/systemd/system"]
            .iter()
            .map(|dir| Path::new(dir).join(&name))
            .find(|p| p.is_file());
        checks.expect(&format!("unit {name} is installed"), found.is_some(), "");
        units.extend(found);
    }
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    if !analyze.is_ok_and(|o| o.status.success()) {
        println!("deb: systemd-analyze is not installed: the units' verify and security checks were not run");
        return Ok(());
    }
    let verify = output(Command::new("systemd-analyze").args(["verify", "--man=no"]).args(&units))?;
    let complaints = String::from_utf8_lossy(&verify.stderr).trim().to_owned();
    checks.expect(
        "systemd-analyze verify: the units are clean",
        verify.status.success() && complaints.is_empty(),
        &verify,
    );
    for unit in &units {
        let security = output(
            Command::new("systemd-analyze")
                .args(["security", "--offline=true", "--no-pager"])
                .arg(format!("--threshold={EXPOSURE_THRESHOLD}"))
                .arg(unit),
        )?;
        let score = String::from_utf8_lossy(&security.stdout)
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .map(|l| l.trim().to_owned())
            .unwrap_or_default();
        checks.expect(
            &format!(
                "systemd-analyze security: {score} (the threshold: {EXPOSURE_THRESHOLD} tenths)"
            ),
            security.status.success(),
            &security,
        );
    }
    Ok(())
}

/// A fresh empty directory for `meshproxy check` and a throwaway hub key.
fn scratch_dir() -> Result<PathBuf, DebError> {
    let dir = std::env::temp_dir().join(format!("meshproxy-deb-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|source| DebError::Io { path: dir.clone(), source })?;
    Ok(dir)
}

/// Runs a command to completion, capturing its output.
fn output(command: &mut Command) -> Result<Output, DebError> {
    let line = describe(command);
    command.output().map_err(|source| DebError::Spawn { command: line, source })
}

/// What a check failed with: a command's output or a note.
trait Detail {
    fn detail(&self) -> String;
}

impl Detail for Output {
    fn detail(&self) -> String {
        format!(
            "{}; stdout: {}; stderr: {}",
            self.status,
            String::from_utf8_lossy(&self.stdout).trim(),
            String::from_utf8_lossy(&self.stderr).trim()
        )
    }
}

impl Detail for str {
    fn detail(&self) -> String {
        self.to_owned()
    }
}

impl Detail for String {
    fn detail(&self) -> String {
        self.clone()
    }
}

/// The checks made so far, printed one line each as they are made.
#[derive(Debug, Default)]
struct Checks {
    failed: usize,
    passed: usize,
}

impl Checks {
    fn expect(&mut self, what: &str, ok: bool, detail: &(impl Detail + ?Sized)) {
        if ok {
            self.passed += 1;
            println!("deb: ok    {what}");
        } else {
            self.failed += 1;
            println!("deb: FAIL  {what}: {}", detail.detail());
        }
    }

    /// Prints the totals; whether every check passed.
    fn report(&self) -> bool {
        println!("deb: {} checks passed, {} failed", self.passed, self.failed);
        self.failed == 0
    }
}
