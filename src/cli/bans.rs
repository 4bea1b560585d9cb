//! `handoff bans`: the daemon bans sources that fail to log in, and a clinic behind a shared
//! address can be caught by it; the operator needs to see those bans and lift one while the
//! daemon runs.

use std::process::ExitCode;

use handoff::state::StateLayout;
use handoff::transport::bans::{self, BanEntry, UnbanRequest};
use handoff::transport::limits::Source;

use super::ConfigArg;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    command: Option<BansCommand>,
}

#[derive(clap::Subcommand)]
enum BansCommand {
    /// Lift the bans of a source: an IPv4 address, or an IPv6 address or /64 prefix (every ban
    /// of that source, or with --account only that account's). Waits for the daemon to apply it;
    /// exits 1 if no such ban is listed or the daemon has not applied it within 5 seconds (the
    /// request then stays queued and is applied when the daemon runs).
    Unban {
        /// The source, e.g. 192.0.2.7 or 2001:db8:1:2::/64.
        source: String,
        /// Lift only the ban of this account from the source.
        #[arg(long)]
        account: Option<String>,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = match args.config.load_or_exit() {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let layout = StateLayout::new(&loaded.config.gateway.state_dir);
    match args.command {
        None => list(&layout),
        Some(BansCommand::Unban { source, account }) => unban(&layout, &source, account),
    }
}

/// The bans in force, as the daemon last wrote them; none when it has not written any yet.
fn in_force(layout: &StateLayout) -> anyhow::Result<Vec<BanEntry>> {
    let now = std::time::SystemTime::now();
    match bans::read_list(&layout.ban_list()) {
        Ok(l) => Ok(l.into_iter().filter(|b| b.until() > now).collect()),
        Err(bans::BanFileError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(Vec::new())
        }
        Err(e) => Err(e.into()),
    }
}

fn list(layout: &StateLayout) -> anyhow::Result<ExitCode> {
    let list = in_force(layout)?;
    if list.is_empty() {
        println!("no bans in force");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<28} {:<28} {:<21} {:<21} SCORE",
        "SOURCE", "ACCOUNT", "SINCE", "UNTIL"
    );
    for b in list {
        println!(
            "{:<28} {:<28} {:<21} {:<21} {}",
            b.source,
            b.account.as_deref().unwrap_or("-"),
            unix_time(b.since),
            unix_time(b.until),
            b.score
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn unban(layout: &StateLayout, source: &str, account: Option<String>) -> anyhow::Result<ExitCode> {
    let source: Source = source.parse()?;
    let hit = |b: &BanEntry| {
        b.key().source() == source
            && account
                .as_ref()
                .is_none_or(|a| b.account.as_ref() == Some(a))
    };
    if !in_force(layout)?.iter().any(hit) {
        eprintln!("no ban of {source} is in force");
        return Ok(ExitCode::FAILURE);
    }
    let request = UnbanRequest {
        source: source.to_string(),
        account: account.clone(),
    };
    let pending = bans::request_unban(&layout.unban_requests(), &request)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pending.exists() {
        if std::time::Instant::now() >= deadline {
            eprintln!(
                "the daemon has not applied the request (is it running?); it stays queued in {} and is applied when the daemon runs",
                layout.unban_requests().display()
            );
            return Ok(ExitCode::FAILURE);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if in_force(layout)?.iter().any(hit) {
        eprintln!("the daemon applied the request, but a ban of {source} is still listed");
        return Ok(ExitCode::FAILURE);
    }
    println!("lifted the bans of {source}");
    Ok(ExitCode::SUCCESS)
}

/// Unix seconds as RFC 3339 UTC to the second, for the ban list's columns.
fn unix_time(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}
