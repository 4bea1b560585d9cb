//! `handoff keygen`: a new gateway needs its secrets before its first start, made with the
//! right algorithms and permissions and never over a key that is already in use.

use std::path::PathBuf;
use std::process::ExitCode;

use handoff::keys;

#[derive(clap::Args)]
pub struct Args {
    /// Directory to write ssh_host_{ed25519,ecdsa,rsa}_key, receipt.key and master.key into.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    let mut written = Vec::new();
    for kind in keys::HostKeyType::ALL {
        let host = dir.join(kind.file_name());
        keys::generate_host_key(&host, kind)?;
        written.push(host);
    }
    let receipt = dir.join("receipt.key");
    let master = dir.join("master.key");
    keys::generate_receipt_key(&receipt)?;
    keys::generate_master_key(&master)?;
    written.extend([receipt, master]);
    for p in &written {
        println!("wrote {} (0600)", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
