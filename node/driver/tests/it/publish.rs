//! The README's "Publish a service" block, run as written: its commands are
//! parsed from the README's fenced `sh` block and run by `sh` as real
//! processes (hub, gateway, `python3 -m http.server`, agent), with the ports
//! swapped for free ones and the placeholders filled from what the earlier
//! commands printed; then its curl line must return the service's page.
// Helpers outside #[test] fns panic on purpose too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]
// Test harness code outside the core: a wall-clock deadline is what it needs.
#![allow(clippy::disallowed_methods)]

use crate::common::e2e::{free_port, Scratch};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The README's heading of the section.
const SECTION: &str = "## Publish a service";
/// The ports the README uses, each swapped for a free one.
const PORTS: [&str; 3] = ["4001", "8000", "8080"];

/// One command of the block: the shell text (continuations joined, the
/// comment cut off), the comment, and whether it ends in `&`.
#[derive(Debug)]
struct Step {
    shell: String,
    comment: String,
    background: bool,
}

/// The commands of the first `sh` block after [`SECTION`].
fn steps(readme: &str) -> Vec<Step> {
    let section = &readme[readme.find(SECTION).expect("the README has the section")..];
    let block = &section[section.find("```sh\n").expect("a sh block in the section") + 6..];
    let block = &block[..block.find("```").expect("the block ends")];
    let mut steps = Vec::new();
    let mut pending = String::new();
    for line in block.lines() {
        let (code, comment) = split_comment(line);
        let code = code.trim_end();
        if let Some(continued) = code.strip_suffix('\\') {
            pending.push_str(continued.trim());
            pending.push(' ');
            continue;
        }
        pending.push_str(code.trim());
        let whole = std::mem::take(&mut pending);
        let (shell, background) = match whole.strip_suffix('&') {
            Some(s) => (s.trim().to_owned(), true),
            None => (whole, false),
        };
        if !shell.is_empty() {
            steps.push(Step { shell, comment: comment.to_owned(), background });
        }
    }
    steps
}

/// A line's code and its `# comment` (a `#` after a blank, outside quotes).
fn split_comment(line: &str) -> (&str, &str) {
    let mut quoted = false;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '#' if !quoted && prev.is_whitespace() => return (&line[..i], line[i + 1..].trim()),
            _ => {}
        }
        prev = c;
    }
    (line, "")
}

/// The placeholders a comment names (`HUB_ID`, `GATEWAY_TOKEN`, …).
fn placeholders(comment: &str) -> Vec<&str> {
    comment
        .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
        .filter(|w| w.len() > 2 && w.contains('_'))
        .collect()
}

/// `text` with every placeholder filled.
fn fill(text: &str, values: &BTreeMap<String, String>) -> String {
    values.iter().fold(text.to_owned(), |t, (k, v)| t.replace(k.as_str(), v))
}

/// `text` with each whole number in `ports` swapped, in one pass (so a new
/// port that contains an old one, 48000 for 8000, is not swapped again).
fn swap_ports(text: &str, ports: &BTreeMap<&str, String>) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        out.push_str(ports.get(digits.as_str()).unwrap_or(&digits));
        digits.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// `sh -c` in `dir`, with the `meshproxy` under test first on the PATH.
fn sh(dir: &Path, shell: &str) -> Command {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_meshproxy"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(shell).current_dir(dir).env("PATH", path);
    cmd
}

/// Background commands, SIGKILLed and reaped when the test ends.
struct Running(Vec<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run(dir: &Path, shell: &str) -> Output {
    let out = sh(dir, shell).output().unwrap();
    assert!(out.status.success(), "`{shell}`: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The value after `field` in `meshproxy token new`'s output.
fn field(printed: &str, field: &str) -> String {
    printed.lines().find_map(|l| l.strip_prefix(field)).map(str::trim).unwrap().to_owned()
}

#[test]
fn the_readme_publish_a_service_commands_serve_the_service_through_the_gateway() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let steps = steps(&readme);
    assert!(steps.len() >= 7, "{steps:#?}");
    let dir = Scratch::new("publish");
    let ports: BTreeMap<&str, String> = PORTS.map(|p| (p, free_port().to_string())).into();
    let mut values = BTreeMap::new();
    let mut running = Running(Vec::new());
    let mut served = None;
    for step in &steps {
        // Ports first: tokens and peer ids filled later may contain the digits.
        let shell = fill(&swap_ports(&step.shell, &ports), &values);
        assert!(
            !shell.contains("_TOKEN") && !shell.contains("_VERIFIER") && !shell.contains("HUB_ID"),
            "a placeholder no earlier command filled: `{shell}`"
        );
        if step.background {
            let log = std::fs::File::create(dir.path(&format!("{}.log", running.0.len()))).unwrap();
            let child =
                sh(&dir.0, &format!("exec {shell}")).stdout(Stdio::null()).stderr(log).spawn();
            running.0.push(child.unwrap());
        } else if shell.starts_with("curl ") {
            // The gateway answers 503 until its hubs list the agent.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let out = sh(&dir.0, &shell).output().unwrap();
                let page = String::from_utf8_lossy(&out.stdout).into_owned();
                if out.status.success() && page.contains("Directory listing for /") {
                    served = Some(page);
                    break;
                }
                assert!(Instant::now() < deadline, "`{shell}` never served the page: {page}");
                std::thread::sleep(Duration::from_millis(200));
            }
        } else {
            let printed = String::from_utf8_lossy(&run(&dir.0, &shell).stdout).into_owned();
            for name in placeholders(&step.comment) {
                let value = if name.ends_with("_TOKEN") {
                    field(&printed, "token:")
                } else if name.ends_with("_VERIFIER") {
                    field(&printed, "verifier:")
                } else {
                    printed.trim().to_owned()
                };
                values.insert(name.to_owned(), value);
            }
        }
    }
    // python3's listing of the directory the commands ran in: the service's own page.
    let page = served.expect("the block ends with a curl line");
    assert!(page.contains("hub.key"), "{page}");
    assert!(["HUB_ID", "GATEWAY_TOKEN", "AGENT_VERIFIER"].iter().all(|k| values.contains_key(*k)));
}

#[test]
fn comments_are_cut_outside_quotes_and_continuations_join() {
    let readme = "## Publish a service\n\n```sh\nmeshproxy keygen   # prints HUB_ID\n\
                  a --x 'b # c' \\\n    --y d &\ncurl x\n```\n";
    let s = steps(readme);
    assert_eq!(s.len(), 3, "{s:#?}");
    assert_eq!(
        (s[0].shell.as_str(), placeholders(&s[0].comment)),
        ("meshproxy keygen", vec!["HUB_ID"])
    );
    assert_eq!((s[1].shell.as_str(), s[1].background), ("a --x 'b # c' --y d", true));
    assert!(!s[2].background);
}

#[test]
fn ports_are_swapped_whole_and_once() {
    let ports: BTreeMap<&str, String> =
        [("8000", "48000".to_owned()), ("4001", "8000".to_owned())].into();
    assert_eq!(
        swap_ports("--listen-http 127.0.0.1:8000 /tcp/4001/p2p/x 18000 8000", &ports),
        "--listen-http 127.0.0.1:48000 /tcp/8000/p2p/x 18000 48000"
    );
}
