//! `handoff testdata`: the check can only be tried, demonstrated and benchmarked on archives in
//! the official format, and real ones hold personal data. These are invented, valid or broken
//! in exactly one known way.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use handoff::config::{ArchiveLimits, CounterpartKind};
use handoff::validate::archive::Limits;
use handoff::validate::format::{DocKind, Party, interaction_parties};
use handoff::validate::testdata::{self, Edition, Spec, Violation};

/// What `handoff testdata` writes.
#[derive(clap::Args)]
pub struct Args {
    /// The zip to write, or a directory to write it into under its official name (default:
    /// the official name in the current directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Persons (one document, and one claim, each) in the archive.
    #[arg(long, default_value_t = 10)]
    persons: usize,
    /// The sender's number: a 10-digit institution number (clinic) or 8-digit insurer number.
    #[arg(long, default_value = "1312345679")]
    sender: String,
    /// The receiver's number: an insurer's (8 digits), an agency's (8, with
    /// --interaction-type 1) or an institution's (10).
    #[arg(long, default_value = "06130017")]
    receiver: String,
    /// The persons' insurers, in turn (default: the receiver, or 06130017 for an agency).
    #[arg(long, value_delimiter = ',')]
    insurers: Vec<String>,
    /// 種別 of the index (default: 6 institution → insurer, 1 institution → agency, …).
    #[arg(long)]
    interaction_type: Option<u8>,
    /// Guidance results (hg08, gc08) instead of checkup results (hc08, cc08).
    #[arg(long)]
    guidance: bool,
    /// Creation date YYYYMMDD (default: yesterday, so it is never in the future).
    #[arg(long)]
    date: Option<String>,
    /// N of the names: the same day's send count, 0–9.
    #[arg(long, default_value_t = 0)]
    send_count: u8,
    /// Without CLAIMS/ and su08_V08.xml.
    #[arg(long)]
    no_claims: bool,
    /// Edition of the claims and the summary: current, intermediate or 2007.
    #[arg(long, default_value = "current")]
    edition: String,
    /// Copy the XSD/ folder from DIR/mhlw-v08 (the installed schema sets).
    #[arg(long, value_name = "DIR")]
    schema_dir: Option<PathBuf>,
    /// Seed of the invented content: the same seed writes the same archive.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Break one rule, by name (see --list).
    #[arg(long)]
    violate: Option<String>,
    /// List the violations --violate accepts, with the rule each breaks, and exit.
    #[arg(long)]
    list: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if a.list {
        for v in Violation::ALL {
            println!("{:<24} {}", v.slug(), v.rule());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let created = match &a.date {
        Some(d) => time::Date::parse(d, time::macros::format_description!("[year][month][day]"))
            .with_context(|| format!("--date {d}: expected YYYYMMDD"))?,
        None => time::OffsetDateTime::now_utc()
            .date()
            .previous_day()
            .context("date")?,
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let sender_kind = match a.sender.len() {
        10 if digits(&a.sender) => CounterpartKind::Clinic,
        8 if digits(&a.sender) => CounterpartKind::Insurer,
        _ => anyhow::bail!("--sender must be a 10-digit institution or 8-digit insurer number"),
    };
    let receiver_party = match (
        a.receiver.len(),
        a.interaction_type.and_then(interaction_parties),
    ) {
        _ if !digits(&a.receiver) => anyhow::bail!("--receiver must be digits"),
        (10, _) => Party::Institution,
        (8, Some((_, to))) if to != Party::Institution => to,
        (8, _) => Party::Insurer,
        _ => anyhow::bail!("--receiver must be an 8-digit or 10-digit number"),
    };
    let mut spec = Spec::example(a.persons, created);
    spec.sender = a.sender;
    spec.sender_kind = sender_kind;
    spec.receiver = a.receiver;
    spec.receiver_party = receiver_party;
    spec.interaction_type = a
        .interaction_type
        .unwrap_or_else(|| testdata::default_interaction_type(spec.sender_party(), receiver_party));
    spec.insurers = match (a.insurers.is_empty(), receiver_party) {
        (false, _) => a.insurers,
        (true, Party::Insurer) => vec![spec.receiver.clone()],
        (true, _) => vec!["06130017".into()],
    };
    if a.guidance {
        spec.kind = DocKind::Guidance;
    }
    anyhow::ensure!(a.send_count <= 9, "--send-count must be 0–9");
    spec.send_count = a.send_count;
    spec.claims = !a.no_claims;
    let edition = Edition::from_id(&a.edition).with_context(|| {
        format!(
            "--edition {}: expected current, intermediate or 2007",
            a.edition
        )
    })?;
    spec.editions.claims = edition;
    spec.editions.summary = edition;
    spec.xsd_from = a.schema_dir.map(|d| d.join("mhlw-v08"));
    spec.seed = a.seed;
    let violation = match &a.violate {
        None => None,
        Some(slug) => Some(
            Violation::from_slug(slug)
                .with_context(|| format!("--violate {slug}: unknown (see --list)"))?,
        ),
    };
    let name = match violation {
        Some(v) => v.file_name(&spec),
        None => spec.archive_name().file_name(),
    };
    // A folder (existing, or named with a trailing slash) gets the archive under its official name.
    let out_path = match a.out {
        Some(p) if p.is_dir() || p.as_os_str().to_string_lossy().ends_with('/') => {
            std::fs::create_dir_all(&p).with_context(|| p.display().to_string())?;
            p.join(&name)
        }
        Some(p) => p,
        None => PathBuf::from(&name),
    };
    let out = std::io::BufWriter::new(
        std::fs::File::create(&out_path).with_context(|| out_path.display().to_string())?,
    );
    match violation {
        None => {
            testdata::write_valid(&spec, out)
                .with_context(|| out_path.display().to_string())?
                .into_inner()
                .map_err(|e| e.into_error())?;
            eprintln!("a valid archive of {} persons", spec.persons);
        }
        Some(v) => {
            let limits = Limits::from(&ArchiveLimits::default());
            let (w, expected) = testdata::write_violation(&spec, v, &limits, out)
                .with_context(|| out_path.display().to_string())?;
            w.into_inner().map_err(|e| e.into_error())?;
            eprintln!("breaking {expected}");
        }
    }
    println!("{}", out_path.display());
    Ok(ExitCode::SUCCESS)
}
