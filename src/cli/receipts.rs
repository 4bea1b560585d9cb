//! `handoff receipts`: when a counterpart asks where a file is, or disputes that it was sent,
//! the answer is in the signed receipts. This reads them from the ledger (read-only, beside a
//! running daemon) and checks that nobody has changed them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use handoff::receipts::ledger::Ledger;
use handoff::receipts::{Receipt, verify_chain};

use super::ConfigArg;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: ReceiptsCommand,
}

#[derive(clap::Subcommand)]
enum ReceiptsCommand {
    /// Print the latest receipts as JSON lines, oldest first.
    Tail {
        #[command(flatten)]
        config: ConfigArg,
        /// How many receipts.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Keep printing new receipts as they are issued.
        #[arg(long, short)]
        follow: bool,
    },
    /// Print one receipt (id `{file-id}.{hop}`), pretty.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
    },
    /// Every hop of one file, in order, with times and the time between hops.
    Trace {
        #[command(flatten)]
        config: ConfigArg,
        file_id: String,
    },
    /// Verify every signature and the whole chain; reports the first break and exits 1.
    /// With --from, verifies a JSON-lines file of receipts (e.g. from `export`) instead of the
    /// ledger; with --public-key, uses that SPKI PEM key instead of the configured one.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        from: Option<PathBuf>,
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Print receipts issued at or after a time (RFC 3339) as JSON lines.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        since: String,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        ReceiptsCommand::Tail {
            config,
            lines,
            follow,
        } => {
            let ledger = ledger_of(&config)?;
            let mut last = 0;
            for r in ledger.last(lines)? {
                println!("{}", r.to_canonical_json());
                last = r.seq;
            }
            if !follow {
                return Ok(ExitCode::SUCCESS);
            }
            loop {
                std::thread::sleep(std::time::Duration::from_millis(500));
                for r in ledger.after(last)? {
                    println!("{}", r.to_canonical_json());
                    last = r.seq;
                }
            }
        }
        ReceiptsCommand::Show { config, id } => {
            let ledger = ledger_of(&config)?;
            let r = ledger
                .by_id(&id)?
                .ok_or_else(|| anyhow::anyhow!("no receipt {id}"))?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        ReceiptsCommand::Trace { config, file_id } => {
            let ledger = ledger_of(&config)?;
            let hops = ledger.trace(&file_id)?;
            anyhow::ensure!(!hops.is_empty(), "no receipts for file {file_id}");
            print_trace(&ledger, &hops, "")?;
        }
        ReceiptsCommand::Verify {
            config,
            from,
            public_key,
        } => {
            let key = match &public_key {
                Some(p) => {
                    use ed25519_dalek::pkcs8::DecodePublicKey;
                    let pem = std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    ed25519_dalek::VerifyingKey::from_public_key_pem(&pem)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
                }
                None => {
                    handoff::keys::load_receipt_key(&config.load()?.config.gateway.receipt_key)?
                        .verifying_key()
                }
            };
            let receipts: Vec<Receipt> = match &from {
                Some(file) => std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .enumerate()
                    .map(|(i, l)| {
                        serde_json::from_str(l)
                            .with_context(|| format!("{}:{}: not a receipt", file.display(), i + 1))
                    })
                    .collect::<anyhow::Result<_>>()?,
                None => ledger_of(&config)?.all()?,
            };
            match verify_chain(&receipts, &key) {
                Ok(n) => println!("OK: {n} receipts, signatures and chain verified"),
                Err(e) => {
                    eprintln!("BROKEN: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        ReceiptsCommand::Export { config, since } => {
            let since =
                time::OffsetDateTime::parse(&since, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        anyhow::anyhow!("--since must be RFC 3339, e.g. 2026-11-25T00:00:00Z")
                    })?;
            let ledger = ledger_of(&config)?;
            for r in ledger.since(since)? {
                println!("{}", r.to_canonical_json());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The receipt ledger of the configured state directory, opened read-only.
fn ledger_of(config: &ConfigArg) -> anyhow::Result<Ledger> {
    let loaded = config.load()?;
    let store = handoff::store::Store::of(&loaded.config.gateway)?;
    store
        .ledger_read_only()?
        .context("no receipt ledger yet: the gateway has issued no receipt")
}

/// Prints every hop of a file with times and time between hops; a split parent's children
/// follow its `split` hop, indented, each with its own hops down to its retrieval.
fn print_trace(ledger: &Ledger, hops: &[Receipt], indent: &str) -> anyhow::Result<()> {
    let Some(first) = hops.first() else {
        return Ok(());
    };
    println!(
        "{indent}file {}  {:?}  {} bytes  sha256 {}",
        first.file_id, first.original_name, first.size, first.sha256
    );
    let parent = first
        .parent
        .as_deref()
        .map(|p| format!("  (sorted out of {p})"))
        .unwrap_or_default();
    println!(
        "{indent}from {} to {}{parent}",
        first.sender,
        hops.iter()
            .rev()
            .find_map(|r| r.recipient.as_ref().map(ToString::to_string))
            .unwrap_or_else(|| "-".into())
    );
    let parse = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    };
    let start = parse(&first.time);
    let mut prev = start;
    for r in hops {
        let at = parse(&r.time);
        let since_prev = match (prev, at) {
            (Some(p), Some(a)) => format!("+{:.3}s", (a - p).as_seconds_f64()),
            _ => "-".into(),
        };
        let total = match (start, at) {
            (Some(s), Some(a)) => format!("{:.3}s", (a - s).as_seconds_f64()),
            _ => "-".into(),
        };
        let extra = match (&r.summary, &r.sealed_sha256) {
            (Some(s), _) => format!("  {s}"),
            (None, Some(h)) => format!("  sealed sha256 {h}"),
            _ if !r.children.is_empty() => format!("  into {} archives", r.children.len()),
            _ => String::new(),
        };
        println!(
            "{indent}  #{:<6} {:<10} {}  {:>10}  (total {}){}",
            r.seq,
            r.hop.as_str(),
            r.time,
            since_prev,
            total,
            extra
        );
        prev = at;
        for c in &r.children {
            println!(
                "{indent}    └ {} insurer {} ({}), {} persons, sha256 {}",
                c.file_id, c.insurer, c.recipient, c.persons, c.sha256
            );
            let child = ledger.trace(&c.file_id)?;
            print_trace(ledger, &child, &format!("{indent}      "))?;
        }
    }
    Ok(())
}
