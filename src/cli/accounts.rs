//! `handoff accounts`: who can log in as the config stands, with expiry and status worked out,
//! so an operator answers "why can this clinic not connect?" without reading the TOML.

use std::process::ExitCode;

use handoff::accounts::{Directory, Refusal};

use super::ConfigArg;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = match args.config.load_or_exit() {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let dir = Directory::from_config(&loaded.config);
    let now = time::OffsetDateTime::now_utc();
    println!(
        "{:<28} {:<11} {:<11} {:<26} {:<9} AUTH",
        "ID", "KIND", "NUMBER", "EXPIRES", "STATUS"
    );
    for a in dir.iter() {
        let status = match a.check_active(now) {
            Ok(()) => "active",
            Err(Refusal::Expired) => "expired",
            Err(Refusal::Disabled) => "disabled",
        };
        let expires = a.expires.map_or("-".to_owned(), |t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| t.to_string())
        });
        println!(
            "{:<28} {:<11} {:<11} {:<26} {:<9} {}",
            a.id,
            a.role.to_string(),
            a.number.as_deref().unwrap_or("-"),
            expires,
            status,
            a.auth_methods().join(",")
        );
    }
    Ok(ExitCode::SUCCESS)
}
