//! `handoff ingest`: a file that came on a medium (CD-R, secure courier) takes the way an upload
//! takes — into the counterpart's inbox, sealed at rest from the first byte, with the operator
//! who carried it as the actor and `offline` as the channel — so it gets the same check, scan,
//! sorting, sealing and receipts. The running gateway accepts it; this command shows how each
//! file fares (docs/offline.md).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use handoff::accounts::CounterpartId;
use handoff::boxes::{BoxError, DropBox, FileName, Folder};
use handoff::config::Media;
use handoff::config::live::Snapshot;
use handoff::events::Hop;
use handoff::ids::Sha256;
use handoff::receipts::Receipt;
use handoff::store::Store;
use sha2::Digest;

use super::ConfigArg;
use super::desk::Desk;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// The counterpart the files come from (its id, e.g. clinic-1312345679).
    #[arg(long = "as", value_name = "COUNTERPART")]
    counterpart: String,
    /// Who ingests them: an [[operator]] of the config. Receipts and the audit log name them.
    #[arg(long, value_name = "OPERATOR")]
    operator: String,
    /// Ingest a file even though the same content from this counterpart was accepted before
    /// (and not rejected): a medium is not ingested twice by mistake.
    #[arg(long)]
    again: bool,
    /// Seconds to wait for the gateway to accept each file and reach its outcome (0: do not
    /// wait).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    wait: u64,
    /// The files read from the medium, each ingested under its own file name.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// How often the receipt ledger is read while waiting.
const POLL: Duration = Duration::from_millis(200);

/// A file checked and ready to go into the inbox.
struct Medium {
    path: PathBuf,
    name: FileName,
    size: u64,
    sha256: Sha256,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = match args.config.load_or_exit() {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let desk = Desk::new(loaded, &args.counterpart, "--as", &args.operator)?;
    let Desk {
        snapshot,
        counterpart,
        operator,
        layout,
        store,
    } = &desk;
    if !layout.inbox(counterpart).is_dir() {
        bail!(
            "the state directory has no box for {counterpart} yet: start the gateway (handoff serve) once with this config"
        );
    }
    let dropbox = desk.open_box()?;

    // Every file is checked before any is written: a refused medium leaves nothing behind.
    let mut media = Vec::new();
    for path in &args.files {
        let medium = check(path, snapshot, counterpart)
            .and_then(|m| match dropbox.stat(Folder::Inbox, &m.name) {
                Ok(_) => bail!("a file named {} is waiting in the inbox already", m.name),
                Err(BoxError::NotFound) => Ok(m),
                Err(e) => Err(e.into()),
            })
            .with_context(|| format!("{}: refused, nothing was ingested", path.display()))?;
        if media.iter().any(|m: &Medium| m.name == medium.name) {
            bail!(
                "{}: refused, nothing was ingested: a file named {} is given twice",
                path.display(),
                medium.name
            );
        }
        media.push(medium);
    }
    if let Some(store) = store.jobs_read_only()? {
        for m in &media {
            let before = store.same_content(counterpart, &m.sha256)?;
            if let Some(job) = before.first().filter(|_| !args.again) {
                bail!(
                    "{}: refused, nothing was ingested: the same content from {counterpart} was \
                     accepted before as {} ({}, now {}); give --again to send it again",
                    m.path.display(),
                    job.file_id,
                    job.original_name,
                    job.state.as_str()
                );
            }
        }
    }

    let head = desk
        .store
        .ledger_read_only()
        .ok()
        .flatten()
        .and_then(|l| l.head().ok())
        .map_or(0, |(seq, _)| seq);
    for m in &media {
        write(&dropbox, m).with_context(|| format!("{}: not ingested", m.path.display()))?;
        println!(
            "{}: in the inbox of {counterpart} ({} bytes, sha256 {}), ingested by {operator}",
            m.name, m.size, m.sha256
        );
    }
    if args.wait == 0 {
        println!("the gateway accepts the files when it next looks at the inbox");
        return Ok(ExitCode::SUCCESS);
    }
    Ok(follow(store, counterpart, &media, head, args.wait))
}

/// Checks one file of a medium against the counterpart's rules without writing anything.
fn check(path: &Path, snapshot: &Snapshot, counterpart: &CounterpartId) -> anyhow::Result<Medium> {
    let config = &snapshot.config;
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        bail!("not a regular file");
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("the file name is not UTF-8")?;
    let name =
        FileName::new(name).with_context(|| format!("{name:?} cannot be a box file name"))?;
    let limit = config.max_upload_size(counterpart).bytes();
    if meta.len() == 0 {
        bail!("the file is empty");
    }
    if meta.len() > limit {
        bail!(
            "{} bytes, over the counterpart's limit of {limit}",
            meta.len()
        );
    }
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut hash = sha2::Sha256::new();
    let mut prefix = Vec::new();
    let mut buf = vec![0; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if prefix.len() < handoff::seal::open::SNIFF_LEN {
            let want = handoff::seal::open::SNIFF_LEN - prefix.len();
            prefix.extend_from_slice(&buf[..n.min(want)]);
        }
        hash.update(&buf[..n]);
        size += n as u64;
    }
    let media = config.counterpart(counterpart).map(|c| c.media);
    let is_cms = handoff::seal::looks_like_cms(&prefix);
    if (is_cms || media == Some(Media::Cms)) && config.gateway.inbound_key.is_none() {
        bail!(
            "gateway.inbound_key is not configured, so files encrypted for the gateway cannot be opened{}",
            if is_cms {
                ""
            } else {
                " (and media for this counterpart must be encrypted: media = \"cms\")"
            }
        );
    }
    Ok(Medium {
        path: path.to_owned(),
        name,
        size,
        sha256: Sha256::from_hasher(hash),
    })
}

/// Streams a file of the medium into the inbox; committed only when whole and unchanged.
fn write(dropbox: &DropBox, m: &Medium) -> anyhow::Result<()> {
    let mut upload = dropbox.begin_upload(m.name.clone())?;
    let mut reader = BufReader::with_capacity(1 << 20, File::open(&m.path)?);
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        upload.append(&buf[..n])?;
    }
    if upload.size() != m.size {
        bail!("the file changed while it was read (its size is not the same)");
    }
    let hash_now = upload.commit()?.sha256;
    if hash_now != m.sha256.to_hex() {
        bail!(
            "the file changed while it was read: it is in the inbox as read the second time (sha256 {hash_now})"
        );
    }
    Ok(())
}

/// Waits for each file's `accepted` receipt and then its outcome, printing them; exit 0 when
/// every file was accepted.
fn follow(
    store: &Store,
    counterpart: &CounterpartId,
    media: &[Medium],
    head: u64,
    wait: u64,
) -> ExitCode {
    let deadline = Instant::now() + Duration::from_secs(wait);
    let mut accepted: Vec<Option<String>> = vec![None; media.len()];
    let mut ended = vec![false; media.len()];
    let mut ledger = None;
    loop {
        if ledger.is_none() {
            ledger = store.ledger_read_only().ok().flatten();
        }
        if let Some(ledger) = &ledger {
            if let Ok(new) = ledger.after(head) {
                for r in new.iter().filter(|r| r.hop == Hop::Accepted) {
                    for (i, m) in media.iter().enumerate() {
                        if accepted[i].is_none()
                            && r.sender == *counterpart
                            && r.original_name == m.name.as_str()
                            && r.sha256 == m.sha256
                        {
                            println!("{}: accepted as {}", m.name, r.file_id);
                            accepted[i] = Some(r.file_id.clone());
                        }
                    }
                }
            }
            for (i, m) in media.iter().enumerate() {
                let Some(file_id) = &accepted[i] else {
                    continue;
                };
                if ended[i] {
                    continue;
                }
                if let Ok(trace) = ledger.trace(file_id)
                    && let Some(end) = trace.iter().find(|r| is_outcome(r))
                {
                    println!("{}: {}", m.name, outcome(end));
                    ended[i] = true;
                }
            }
        }
        if ended.iter().all(|e| *e) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL);
    }
    let mut all_accepted = true;
    for (i, m) in media.iter().enumerate() {
        match (&accepted[i], ended[i]) {
            (None, _) => {
                all_accepted = false;
                eprintln!(
                    "{}: not accepted within {wait} s (is the gateway running?); it waits in the inbox and is accepted when the gateway runs",
                    m.name
                );
            }
            (Some(id), false) => println!("{}: {id} is still in the pipeline", m.name),
            (Some(_), true) => {}
        }
    }
    if all_accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn is_outcome(r: &Receipt) -> bool {
    matches!(r.hop, Hop::Delivered | Hop::Rejected | Hop::Split)
}

fn outcome(r: &Receipt) -> String {
    match r.hop {
        Hop::Delivered => format!(
            "delivered to {}",
            r.recipient.as_ref().map_or("?", |c| c.as_str())
        ),
        Hop::Split => format!("sorted into {} archives", r.children.len()),
        _ => match r.reasons.first() {
            Some(first) => format!(
                "rejected: {first}{}",
                match r.reasons.len() {
                    1 => String::new(),
                    n => format!(" (and {} more; see receipt {})", n - 1, r.id),
                }
            ),
            None => format!("rejected (see receipt {})", r.id),
        },
    }
}
