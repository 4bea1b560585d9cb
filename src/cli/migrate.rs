//! `handoff migrate`: prepares the database of `[gateway.store]` for this version of the
//! gateway. Nodes refuse to start on a schema they do not know, so an upgrade runs this once,
//! from any node, before the new version starts; it is safe to run again, and from several
//! nodes at once. `--import-local` moves a node that ran on the local store onto the database.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use handoff::receipts::ledger::Ledger;
use handoff::state::StateLayout;
use handoff::store::postgres::SCHEMA_VERSION;
use handoff::store::{Database, Store};

use super::ConfigArg;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Only report the schema version the database is at, and exit 1 unless it is this
    /// gateway's.
    #[arg(long, conflicts_with = "import_local")]
    check: bool,
    /// After migrating, copy this node's local store (the jobs, events and receipt ledger
    /// under the state directory) into the database, which must hold none yet; the gateway must
    /// be stopped. The receipt chain goes on where it stopped.
    #[arg(long)]
    import_local: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = args.config.load()?;
    let layout = StateLayout::new(&loaded.config.gateway.state_dir);
    let db = match Store::of(&loaded.config.gateway)? {
        Store::Local(_) if args.import_local => {
            bail!(
                "gateway.store is local: set backend = \"postgres\" to import the local store into a database"
            );
        }
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
    // A running gateway would go on writing the local store while it is copied.
    let _lock = if args.import_local {
        Some(layout.lock()?)
    } else {
        None
    };
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
    if args.import_local {
        import_local(&layout, &db)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn import_local(layout: &StateLayout, db: &Arc<Database>) -> anyhow::Result<()> {
    let imported = handoff::store::import::local_into(layout, db)?;
    let (seq, hash) = Ledger::postgres(db.clone()).head()?;
    println!(
        "{}: imported {} jobs, {} events and {} receipts from {}; the receipt chain goes on from receipt {seq} ({hash})",
        db.describe(),
        imported.jobs,
        imported.events,
        imported.receipts,
        layout.store().display()
    );
    let files = handoff::store::SharedFiles::new(db.clone(), layout.root());
    let copied = handoff::store::import::files_into(layout, &files)?;
    println!(
        "{}: copied {copied} files (box files, spool and quarantine) from {}",
        db.describe(),
        layout.root().display()
    );
    println!(
        "the local store's files are left as they were: keep them as a record, the gateway no longer reads them"
    );
    Ok(())
}
