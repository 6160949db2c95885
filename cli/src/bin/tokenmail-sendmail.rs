//! tokenmail-sendmail: a sendmail-compatible wrapper that applies the organisation policy
//! (`[policy]`) through tokenmail-agent before handing the message to the MTA; see
//! `tokenmail-sendmail --help` and docs/sendmail.md.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = tokenmail_cli::sendmail::main_with(&args, &mut std::io::stdin().lock());
    std::process::exit(code);
}
