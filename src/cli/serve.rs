//! `handoff serve`: the gateway itself, as systemd runs it. Everything else the binary does is
//! an admin tool around this. Here the process is made fit to run unattended: logging in the
//! format the operator's log collector reads, and panics logged without their message.

use std::process::ExitCode;

use anyhow::Context;
use handoff::config::{LogFormat, live::LiveConfig};

use super::ConfigArg;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Log format; overrides `gateway.log_format`.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let live = match LiveConfig::load(&args.config.path) {
        Ok(l) => l,
        Err(e) => return Ok(super::config_failure(e)),
    };
    let format = args
        .log_format
        .unwrap_or(live.snapshot().config.gateway.log_format);
    init_logging(format);
    // A panic's message may quote the file being processed (personal data): the log gets only
    // where it happened; the file itself is kept in quarantine for investigation.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(at, "panic (its message is not logged: it may quote a file)");
    }));
    for w in &live.snapshot().warnings {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(handoff::daemon::serve(
        live,
        tokio_util::sync::CancellationToken::new(),
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HANDOFF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
