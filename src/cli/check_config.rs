//! `handoff check-config`: a config change is checked before the running daemon picks it up,
//! and the operator sees what it puts in force (accounts, routes, the store, SSH algorithms,
//! schema sets)
//! rather than what they meant to write.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use handoff::config;

#[derive(clap::Args)]
pub struct Args {
    /// The config file.
    path: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = &args.path;
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(e) => return Ok(super::config_failure(e)),
    };
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let c = &loaded.config;
    let count = |k| c.counterparts.iter().filter(|x| x.kind == k).count();
    println!(
        "{}: OK: {} clinics, {} insurers, {} maintainers, {} break-glass, {} noc",
        path.display(),
        count(config::CounterpartKind::Clinic),
        count(config::CounterpartKind::Insurer),
        c.maintainers.len(),
        c.break_glass.len(),
        c.noc.len()
    );
    println!("routes:");
    for cp in &c.counterparts {
        for r in &cp.routes {
            println!("  {} -> {}", cp.id, r);
        }
    }
    print_store(&c.gateway);
    print_ssh_algorithms(&c.gateway);
    schema_sets(path, &c.gateway.schema_dir)
}

/// Where jobs and receipts will be kept (the database is not reached: `handoff migrate --check`
/// does that).
fn print_store(g: &config::Gateway) {
    match handoff::store::Store::of(g) {
        Ok(handoff::store::Store::Local(layout)) => {
            println!("store: local, in {}", layout.store().display());
        }
        Ok(handoff::store::Store::Postgres(db)) => println!(
            "store: postgres, {} ({}), node {}",
            db.describe(),
            if g.store.tls_ca.is_some() {
                "TLS"
            } else {
                "on this machine, without TLS"
            },
            g.store.node_name()
        ),
        // Reported with the config's errors.
        Err(_) => {}
    }
}

/// The SSH algorithms `[gateway.ssh]` puts in force, by preference; host key algorithms only
/// where a key in `host_keys` signs with them.
fn print_ssh_algorithms(g: &config::Gateway) {
    use handoff::transport::sftp::algorithms::Effective;
    if g.sftp_listen.is_none() {
        return;
    }
    // The config has been checked: the lists resolve.
    let Ok(e) = Effective::of(&g.ssh) else {
        return;
    };
    let keys: Vec<_> = g
        .host_keys
        .iter()
        .filter_map(|p| handoff::keys::load_host_key(p).ok())
        .map(|k| k.algorithm())
        .collect();
    println!("ssh algorithms (gateway.ssh), by preference:");
    println!(
        "  kex: {}, ext-info-s, kex-strict-s-v00@openssh.com",
        e.kex.join(", ")
    );
    println!("  ciphers: {}", e.ciphers.join(", "));
    println!("  macs: {}", e.macs.join(", "));
    println!(
        "  host_key_algorithms: {}",
        e.host_keys_for(&keys).join(", ")
    );
}

/// The official schema sets of `schema_dir`: a config whose current set cannot be used fails.
fn schema_sets(path: &Path, dir: &Path) -> anyhow::Result<ExitCode> {
    match handoff::validate::schemas::Catalog::load(dir) {
        Ok(catalog) => {
            print!("{}", catalog.report());
            for w in catalog.report().warnings() {
                eprintln!("{}: warning: schema_dir: {w}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "{}: schema_dir: the official schemas cannot be used: {e}",
                path.display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
