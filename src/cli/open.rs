//! `handoff open`: a counterpart may send the gateway CMS sealed for it (or an operator must
//! read what was sealed), and the plaintext must never be taken for authentic when it is not.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use handoff::seal::{OpenOptions, OpeningKey};

#[derive(clap::Args)]
pub struct Args {
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1, unencrypted).
    #[arg(long)]
    key: PathBuf,
    /// The key's certificate: picks the recipient info meant for it by issuer and serial
    /// number (without it every recipient info of the key's kind is tried).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Also open EnvelopedData, whose content has no integrity protection.
    #[arg(long)]
    allow_unauthenticated: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (key, cert) = (&args.key, args.cert.as_deref());
    let opening = OpeningKey::from_files(key, cert).with_context(|| match cert {
        Some(c) => format!("{} with {}", key.display(), c.display()),
        None => key.display().to_string(),
    })?;
    let options = OpenOptions {
        allow_unauthenticated: args.allow_unauthenticated,
        ..Default::default()
    };
    let stdin = std::io::stdin();
    let file = std::fs::File::from(stdin.as_fd().try_clone_to_owned()?);
    let checked_first = file.metadata()?.is_file();
    let input = std::io::BufReader::with_capacity(1 << 20, file);
    let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let result = if checked_first {
        handoff::seal::open_verified(&opening, options, input, out)
    } else {
        handoff::seal::open(&opening, options, input, out)
    };
    match result {
        Ok(opened) => {
            eprintln!(
                "opened {} bytes{}",
                opened.len,
                if opened.authenticated {
                    ", authenticated"
                } else {
                    " (EnvelopedData: NOT authenticated)"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if checked_first => {
            eprintln!("handoff: cannot open: {e}; nothing was written");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!(
                "handoff: cannot open: {e}; DISCARD what was written: it is incomplete or not authentic"
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
