//! `handoff validate`: an operator answering a counterpart whose archive was rejected, or trying
//! a change of rule severities, sees what the gateway would say about an archive without its
//! being uploaded.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use handoff::config::{self, Lang};
use handoff::events::Finding;
use handoff::validate::{self, Checked, Expect, archive::Limits};

#[derive(clap::Args)]
pub struct Args {
    /// The config file.
    // Not the shared `ConfigArg`: here the config has no default and must be named.
    #[arg(long)]
    config: PathBuf,
    /// The uploading counterpart's id, e.g. clinic-1312345679.
    #[arg(long = "as")]
    account: String,
    /// The archive (zip) to check; its file name is checked as the upload's name.
    archive: PathBuf,
    /// Language of the findings: ja or en (default: the account's `language`).
    #[arg(long)]
    lang: Option<Lang>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = config::load(&args.config)?;
    let config = &loaded.config;
    let account = &args.account;
    let sender = config.counterpart(account).with_context(|| {
        format!(
            "{account} is not a counterpart of {}",
            args.config.display()
        )
    })?;
    let archive = &args.archive;
    let file = std::fs::File::open(archive).with_context(|| archive.display().to_string())?;
    let file_name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let expect = Expect {
        sender,
        config,
        today: validate::today(config.gateway.utc_offset()),
        file_name,
    };
    let checked = validate::check_archive(
        std::io::BufReader::new(file),
        Limits::from(&config.gateway.archive),
        &config.gateway.schema_dir,
        &expect,
        args.lang.unwrap_or(sender.language),
    )?;
    let print = |findings: &[Finding]| {
        for f in findings {
            println!("{}", f.listing());
        }
    };
    match checked {
        Checked::Valid { header, warnings } => {
            let show = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            print(&warnings);
            println!(
                "valid: interaction type {}, sender {}, receiver {}, service event {}, {} files",
                show(header.interaction_type.map(|c| c.to_string())),
                show(header.sender.as_ref().map(ToString::to_string)),
                show(header.receiver.as_ref().map(|(_, n)| n.to_string())),
                show(header.service_event.map(|c| c.to_string())),
                header.record_count.unwrap_or(0)
            );
            Ok(ExitCode::SUCCESS)
        }
        Checked::Invalid(findings) => {
            print(&findings);
            eprintln!("{} finding(s)", findings.len());
            Ok(ExitCode::FAILURE)
        }
    }
}
