//! Shell completions and manual pages, generated from the clap definitions of a command
//! (`tokenmail completions SHELL`, `tokenmail man DIR`, `tokenmail-agent --man DIR`), so
//! they never drift from `--help`. docs/everyday.md says how to install them.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The shells `tokenmail completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// bash (bash-completion, or `source` it)
    Bash,
    /// zsh (a `_tokenmail` file on $fpath)
    Zsh,
    /// fish (~/.config/fish/completions/tokenmail.fish)
    Fish,
}

/// Writes the completion script of `cmd` (named `bin`) for `shell` to `out`.
pub fn completions(
    shell: Shell,
    mut cmd: clap::Command,
    bin: &str,
    out: &mut dyn Write,
) -> Result<()> {
    use clap_complete::{generate, shells};
    match shell {
        Shell::Bash => generate(shells::Bash, &mut cmd, bin, out),
        Shell::Zsh => generate(shells::Zsh, &mut cmd, bin, out),
        Shell::Fish => generate(shells::Fish, &mut cmd, bin, out),
    }
    out.flush().context("cannot write the completion script")
}

/// Writes the manual page of `cmd` and one per (visible) subcommand, recursively, into
/// `dir` (created if needed): `tokenmail.1`, `tokenmail-verify.1`, `tokenmail-piv-status.1`…
/// Returns the files written, the main page first.
pub fn man_pages(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = cmd.disable_help_subcommand(true);
    // build() fills in the display names (tokenmail-verify) the file names come from.
    cmd.build();
    let mut out = Vec::new();
    write_pages(cmd, dir, &mut out)?;
    Ok(out)
}

fn write_pages(cmd: clap::Command, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let man = clap_mangen::Man::new(cmd.clone()).manual("tokenmail");
    let path = dir.join(man.get_filename());
    let mut buf = Vec::new();
    man.render(&mut buf)
        .with_context(|| format!("cannot render {}", path.display()))?;
    std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
    out.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> clap::Command {
        clap::Command::new("demo")
            .version("1.0")
            .about("a demo")
            .subcommand(
                clap::Command::new("verify")
                    .about("verify things")
                    .arg(clap::Arg::new("revocation").long("revocation")),
            )
            .subcommand(
                clap::Command::new("piv").subcommand(clap::Command::new("status").about("s")),
            )
    }

    #[test]
    fn one_page_per_command_named_like_man_expects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("man1");
        let files = man_pages(demo(), &target).expect("pages");
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["demo.1", "demo-verify.1", "demo-piv.1", "demo-piv-status.1"]
        );
        let verify = std::fs::read_to_string(target.join("demo-verify.1")).expect("read");
        assert!(verify.starts_with(".ie"), "roff: {verify}");
        assert!(verify.contains("revocation"), "{verify}");
    }

    #[test]
    fn completion_scripts_name_the_binary() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut buf = Vec::new();
            completions(shell, demo(), "demo", &mut buf).expect("script");
            let text = String::from_utf8(buf).expect("utf-8");
            assert!(text.contains("demo"), "{shell:?}");
            assert!(text.contains("verify"), "{shell:?}");
        }
    }
}
