//! tokenmail-gpgsm: the subset of gpgsm's command line that git uses for
//! `gpg.format = x509` (sign with `-bsau KEY`, verify with `--verify SIG -`); see docs/git.md.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(tokenmail_cli::gpgsm::main_with_args(args));
}
