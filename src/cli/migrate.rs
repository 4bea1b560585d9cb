//! `handoff migrate`: prepares the database of `[gateway.store]` for this version of the
//! gateway. Nodes refuse to start on a schema they do not know, so an upgrade runs this once,
//! from any node, before the new version starts; it is safe to run again, and from several
//! nodes at once.

use std::process::ExitCode;

use handoff::store::Store;
use handoff::store::postgres::SCHEMA_VERSION;

use super::ConfigArg;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Only report the schema version the database is at, and exit 1 unless it is this
    /// gateway's.
    #[arg(long)]
    check: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = args.config.load()?;
    let db = match Store::of(&loaded.config.gateway)? {
        Store::Local(layout) => {
            println!(
                "gateway.store is local: the job store and receipt ledger under {} are brought up to date by the gateway itself",
                layout.root().display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        Store::Postgres(db) => db,
    };
    if args.check {
        let found = db.schema_version()?;
        println!(
            "{}: schema version {found}, this gateway's is {SCHEMA_VERSION}",
            db.describe()
        );
        return Ok(if found == SCHEMA_VERSION {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let applied = db.migrate()?;
    if applied.is_empty() {
        println!(
            "{}: already at schema version {SCHEMA_VERSION}",
            db.describe()
        );
    } else {
        let list: Vec<String> = applied.iter().map(i32::to_string).collect();
        println!(
            "{}: applied {}; now at schema version {SCHEMA_VERSION}",
            db.describe(),
            list.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
