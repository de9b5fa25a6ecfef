//! The `nfsroot` binary: parse, dispatch, print errors, exit code.
//!
//! A reader that goes away early (`nfsroot hosts list | head -1`) ends the
//! output quietly with exit 0, as it does for other Unix tools: Rust ignores
//! SIGPIPE, so `println!` panics on EPIPE, and the panic hook turns exactly
//! that panic (a failed print to stdout with EPIPE) into `exit(0)`. Not
//! resetting SIGPIPE to its default keeps EPIPE an error everywhere else,
//! e.g. when a helper process nfsroot writes to dies.

use clap::Parser;

fn main() {
    quiet_on_closed_stdout();
    let cli = nfsroot::cli::Cli::parse();
    match nfsroot::commands::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Exit 0 without a message when printing to stdout fails with EPIPE;
/// every other panic is reported by the default hook as before.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if is_stdout_epipe(msg) {
            std::process::exit(0);
        }
        default(info)
    }));
}

/// std's message for a failed `print!`: "failed printing to stdout: Broken
/// pipe (os error 32)".
fn is_stdout_epipe(msg: &str) -> bool {
    msg.starts_with("failed printing to stdout")
        && msg.ends_with(&format!("(os error {})", libc::EPIPE))
}
