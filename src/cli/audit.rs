//! `handoff audit`: the audit log is evidence only if a change to it is noticed; this is how an
//! auditor or the operator checks its hash chain, on the gateway or on a copy.

use std::path::PathBuf;
use std::process::ExitCode;

use handoff::store::Store;

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
    if let Some(path) = file {
        return Ok(report(
            &path.display().to_string(),
            handoff::audit::verify(&path),
        ));
    }
    let loaded = config.load()?;
    let gateway = &loaded.config.gateway;
    let path = handoff::state::StateLayout::new(&gateway.state_dir)
        .audit()
        .join("audit.log");
    let mut code = report(&path.display().to_string(), handoff::audit::verify(&path));
    // With a database, every node's copy there too.
    if let Store::Postgres(db) = Store::of(gateway)? {
        for copy in handoff::audit::ship::verify_copies(&db)? {
            let what = format!("node {} in {}", copy.node, db.describe());
            if report(&what, copy.result) == ExitCode::FAILURE {
                code = ExitCode::FAILURE;
            }
        }
    }
    Ok(code)
}

/// Prints the outcome of one chain's check; exit 1 when it is broken.
fn report(what: &str, result: Result<u64, handoff::audit::AuditError>) -> ExitCode {
    match result {
        Ok(n) => {
            println!("OK: {n} audit lines, chain intact ({what})");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("BROKEN: {what}: {}", handoff::error::Chain(&e));
            ExitCode::FAILURE
        }
    }
}
