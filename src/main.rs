//! The `nfsroot` binary: parse, dispatch, print errors, exit code.

use clap::Parser;

fn main() {
    let cli = nfsroot::cli::Cli::parse();
    match nfsroot::commands::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
