//! `handoff seal`: what the gateway puts in an outbox can be made by hand, in exactly the same
//! form, so a counterpart's decryption can be tried before a real file reaches it.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use handoff::seal::{Recipient, seal_for};

#[derive(clap::Args)]
pub struct Args {
    /// Recipient certificate (PEM or DER, RSA or EC P-256); repeat for several recipients.
    #[arg(long = "to", required = true)]
    to: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let recipients = args
        .to
        .iter()
        .map(|p| Recipient::from_file(p).with_context(|| format!("{}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let stdin = std::io::stdin();
    let file = std::fs::File::from(stdin.as_fd().try_clone_to_owned()?);
    let meta = file.metadata()?;
    anyhow::ensure!(
        meta.is_file(),
        "standard input must be a file (use < file): the length is needed before sealing"
    );
    let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let sealed = seal_for(
        &recipients,
        meta.len(),
        std::io::BufReader::with_capacity(1 << 20, file),
        out,
    )?;
    eprintln!(
        "sealed {} bytes for {} recipient(s); sha256 {}",
        sealed.len,
        recipients.len(),
        sealed.sha256
    );
    Ok(ExitCode::SUCCESS)
}
