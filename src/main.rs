//! The `handoff` command: the daemon and the admin tools around it. The commands are in `cli`;
//! this parses the command line, prepares the process and turns the outcome into an exit code.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if !cli.command.is_daemon() {
        end_quietly_on_closed_output();
    }
    match cli.command.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("handoff: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// An admin command whose reader goes away (`handoff receipts export … | head`) ends as Unix
/// tools do, by SIGPIPE, instead of panicking in `println!` (Rust starts with SIGPIPE ignored).
/// The daemon keeps it ignored: a peer that closes a socket is an error to handle there.
fn end_quietly_on_closed_output() {
    handoff::sys::die_on_broken_pipe();
}
