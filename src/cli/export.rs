//! `handoff export`: a recipient that takes its files on a medium (CD-R, secure courier) gets
//! its outbox files, already sealed for it, in a folder with a signed manifest and every
//! receipt of each file; the hand-over to the operator is the file's `retrieved` receipt, which
//! only the running gateway may issue, so this command asks it and waits (docs/offline.md).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use handoff::boxes::{DropBox, FileName, Folder, outbox_name};
use handoff::events::Hop;
use handoff::ids::Sha256;
use handoff::offline::manifest::{self, Entry, Manifest};
use handoff::offline::{ExportRequest, Queued};
use handoff::pipeline::jobs::Job;
use handoff::spool;
use handoff::state::StateLayout;

use super::ConfigArg;
use super::desk::Desk;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// The recipient whose outbox files are exported (its id, e.g. insurer-06130017).
    #[arg(long = "for", value_name = "COUNTERPART")]
    counterpart: String,
    /// The folder to write the medium's content to; created if absent, refused if it holds a
    /// manifest already.
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Who takes the medium over: an [[operator]] of the config. The hand-over receipts and
    /// the audit log name them.
    #[arg(long, value_name = "OPERATOR")]
    operator: String,
    /// Also export files retrieved before (online, or on an earlier medium) that are still in
    /// the outbox.
    #[arg(long)]
    again: bool,
    /// Seconds to wait for the running gateway to record the hand-over before giving up (the
    /// copies are then removed and nothing is handed over).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    wait: u64,
}

/// How often the request and the ledger are looked at while waiting.
const POLL: Duration = Duration::from_millis(100);
/// How long the receipts of a recorded hand-over may take to be issued.
const RECEIPT_WAIT: Duration = Duration::from_secs(30);

/// One file copied to the folder.
struct Copied {
    job: Job,
    name: String,
    size: u64,
    sha256: Sha256,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = match args.config.load_or_exit() {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let desk = Desk::new(loaded, &args.counterpart, "--for", &args.operator)?;
    let Desk {
        snapshot,
        counterpart,
        operator,
        layout,
        store: state,
    } = &desk;
    let gateway = &snapshot.config.gateway;
    let receipt_key = handoff::keys::load_receipt_key(&gateway.receipt_key)
        .with_context(|| format!("receipt key {}", gateway.receipt_key.display()))?;
    if args.to.join(manifest::FILE_NAME).exists() {
        bail!(
            "{} holds an export already: choose an empty folder",
            args.to.display()
        );
    }

    let Some(store) = state.jobs_read_only()? else {
        println!("nothing to export for {counterpart}: the gateway has delivered nothing yet");
        return Ok(ExitCode::SUCCESS);
    };
    let pending = pending_files(layout);
    let dropbox = desk.open_box()?;
    let outbox: Vec<FileName> = dropbox
        .list(Folder::Outbox)?
        .into_iter()
        .map(|e| e.name)
        .collect();
    let jobs: Vec<Job> = store
        .delivered_to(counterpart, args.again)?
        .into_iter()
        .filter(|j| !pending.contains(&j.file_id))
        .filter(|j| {
            let name = outbox_name(&j.file_id, &j.original_name);
            outbox.iter().any(|n| n.as_str() == name)
        })
        .collect();
    if jobs.is_empty() {
        println!(
            "nothing to export for {counterpart}{}",
            if args.again {
                ""
            } else {
                " (files retrieved or exported before: --again)"
            }
        );
        return Ok(ExitCode::SUCCESS);
    }

    fs::create_dir_all(&args.to).with_context(|| format!("creating {}", args.to.display()))?;
    let mut copied = Vec::new();
    for job in jobs {
        match copy(&dropbox, &args.to, job) {
            Ok(c) => copied.push(c),
            Err(e) => {
                remove_copies(&args.to, &copied);
                return Err(e.context("nothing was exported"));
            }
        }
    }

    let queued = handoff::offline::request_export(
        &layout.export_requests(),
        &ExportRequest {
            operator: operator.clone(),
            counterpart: counterpart.clone(),
            files: copied.iter().map(|c| c.job.file_id.clone()).collect(),
            to: fs::canonicalize(&args.to).unwrap_or_else(|_| args.to.clone()),
            system_user: handoff::offline::system_user(),
        },
    )
    .context("asking the gateway to record the hand-over")?;
    if !handed_over(&queued, Duration::from_secs(args.wait))? {
        remove_copies(&args.to, &copied);
        eprintln!(
            "the gateway did not take the hand-over within {} s (is handoff serve running?); the copies were removed and nothing was exported",
            args.wait
        );
        return Ok(ExitCode::FAILURE);
    }

    // Every receipt of each file, the hand-over's `retrieved` among them.
    let deadline = Instant::now() + RECEIPT_WAIT;
    let ledger = state
        .ledger_read_only()?
        .context("no receipt ledger: the gateway has issued no receipt")?;
    let receipts_dir = args.to.join(manifest::RECEIPTS_DIR);
    fs::create_dir_all(&receipts_dir)?;
    let mut entries = Vec::new();
    let mut missing = Vec::new();
    for c in &copied {
        let trace = loop {
            let trace = ledger.trace(&c.job.file_id)?;
            if trace.iter().any(|r| r.hop == Hop::Retrieved) || Instant::now() >= deadline {
                break trace;
            }
            std::thread::sleep(POLL);
        };
        if !trace.iter().any(|r| r.hop == Hop::Retrieved) {
            missing.push(c);
            continue;
        }
        for r in &trace {
            let body = format!("{}\n", r.to_canonical_json());
            spool::write_durable(&receipts_dir, &format!("{}.json", r.id), body.as_bytes())?;
        }
        entries.push(Entry {
            file_id: c.job.file_id.clone(),
            name: c.name.clone(),
            original_name: c.job.original_name.clone(),
            sender: c.job.sender.clone(),
            size: c.size,
            sha256: c.sha256,
            receipts: trace.iter().map(|r| r.id.clone()).collect(),
        });
    }
    for c in &missing {
        let _ = fs::remove_file(args.to.join(&c.name));
        eprintln!(
            "{}: the gateway did not record its hand-over (it may have been purged meanwhile); left out",
            c.name
        );
    }
    if entries.is_empty() {
        bail!("no file was handed over");
    }
    let mut m = Manifest {
        kind: manifest::KIND.to_owned(),
        id: uuid::Uuid::now_v7().to_string(),
        time: handoff::audit::clock::rfc3339(time::OffsetDateTime::now_utc()),
        counterpart: counterpart.clone(),
        operator: operator.clone(),
        files: entries,
        signature: String::new(),
    };
    m.sign(&receipt_key);
    let body = format!("{}\n", m.to_canonical_json());
    spool::write_durable(&args.to, manifest::FILE_NAME, body.as_bytes())?;
    for e in &m.files {
        println!(
            "{}: {} bytes, sha256 {}, {} receipts",
            e.name,
            e.size,
            e.sha256,
            e.receipts.len()
        );
    }
    println!(
        "exported {} for {counterpart} to {}, handed over to {operator}; manifest {}",
        match m.files.len() {
            1 => "1 file".to_owned(),
            n => format!("{n} files"),
        },
        args.to.display(),
        m.id
    );
    Ok(if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Files named by export requests the gateway has not applied yet: not offered twice.
fn pending_files(layout: &StateLayout) -> Vec<String> {
    let Ok(entries) = fs::read_dir(layout.export_requests()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| fs::read(e.path()).ok())
        .filter_map(|t| serde_json::from_slice::<ExportRequest>(&t).ok())
        .flat_map(|r| r.files)
        .collect()
}

/// Copies one outbox file to the folder under its outbox name, checking it against what was
/// delivered; durable before it is listed.
fn copy(dropbox: &DropBox, dir: &Path, job: Job) -> anyhow::Result<Copied> {
    let name = outbox_name(&job.file_id, &job.original_name);
    let (file, _) = dropbox.open_read(Folder::Outbox, &FileName::new(&name)?)?;
    let target = dir.join(&name);
    if target.exists() {
        bail!("copying {name}: {} exists already", target.display());
    }
    let written = spool::write_durable(dir, &name, file)
        .with_context(|| format!("copying {name} to {}", dir.display()))?;
    if Some(written.sha256) != job.sealed_sha256 {
        let _ = fs::remove_file(&target);
        bail!("copying {name}: in the outbox it is not what was delivered (its SHA-256 differs)");
    }
    Ok(Copied {
        job,
        name,
        size: written.size,
        sha256: written.sha256,
    })
}

fn remove_copies(dir: &Path, copied: &[Copied]) {
    for c in copied {
        let _ = fs::remove_file(dir.join(&c.name));
    }
}

/// Waits for the gateway to apply the request; `false` when it did not take it within `wait`
/// (the request is then withdrawn). Once taken, it is waited for to the end.
fn handed_over(queued: &Queued, wait: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + wait;
    while !queued.applied() {
        if Instant::now() >= deadline {
            if queued.withdraw()? {
                return Ok(false);
            }
            if Instant::now() >= deadline + RECEIPT_WAIT {
                bail!(
                    "the gateway took the hand-over but has not finished recording it; it does when it runs again (see its log). The copies stay, without a manifest: run the export again with --again into an empty folder"
                );
            }
        }
        std::thread::sleep(POLL);
    }
    Ok(true)
}
