//! Writes the Debian package's generated files into `OUT_DIR` (the first
//! argument), for `cargo xtask deb`:
//!
//! - `man/meshproxy.1` and one page per subcommand (`man/meshproxy-run.1`, …),
//!   by clap_mangen;
//! - `completions/meshproxy.bash`, `completions/_meshproxy` (zsh) and
//!   `completions/meshproxy.fish`, by clap_complete.
//!
//! Both are made from [`meshproxy::ops::cli::Cli`], the binary's own command
//! line, so they say what `--help` says. This is an example rather than a
//! hidden subcommand so that the binary carries neither generator.
#![forbid(unsafe_code)]

use clap::CommandFactory as _;
use clap_complete::Shell;
use meshproxy::ops::cli::Cli;
use std::path::PathBuf;
use std::process::ExitCode;

fn generate(out: &std::path::Path) -> std::io::Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    // Pages of subcommands that were removed must not linger in the package.
    for dir in [&man, &completions] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
    }
    clap_mangen::generate_to(Cli::command(), &man)?;
    let mut command = Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command, "meshproxy", &completions)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: dist_assets OUT_DIR");
        return ExitCode::FAILURE;
    };
    match generate(&out) {
        Ok(()) => {
            println!("dist_assets: man pages and completions in {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dist_assets: {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}
