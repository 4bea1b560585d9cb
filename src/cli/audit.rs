//! `handoff audit`: the audit log is evidence only if a change to it is noticed; this is how an
//! auditor or the operator checks its hash chain, on the gateway or on a copy.

use std::path::PathBuf;
use std::process::ExitCode;

use super::ConfigArg;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(clap::Subcommand)]
enum AuditCommand {
    /// Verify the audit log's hash chain.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// An audit log file to check instead of the configured one.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let AuditCommand::Verify { config, file } = args.command;
    let path = match file {
        Some(f) => f,
        None => handoff::state::StateLayout::new(&config.load()?.config.gateway.state_dir)
            .audit()
            .join("audit.log"),
    };
    match handoff::audit::verify(&path) {
        Ok(n) => {
            println!("OK: {n} audit lines, chain intact ({})", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("BROKEN: {}", handoff::error::Chain(&e));
            Ok(ExitCode::FAILURE)
        }
    }
}
