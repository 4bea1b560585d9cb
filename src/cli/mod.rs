//! The command line: the commands `handoff` has, each in its own file with its arguments and its
//! body, so that `main` only parses, dispatches and turns the outcome into an exit code. What
//! several commands share (the config file argument, how a config error is reported) is here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use handoff::config::{self, ConfigError};

mod accounts;
mod audit;
mod bans;
mod check_config;
mod desk;
mod export;
mod hash_password;
mod ingest;
mod keygen;
mod migrate;
mod open;
mod receipts;
mod schemas;
mod seal;
mod serve;
mod testdata;
mod validate;

#[derive(Parser)]
#[command(
    name = "handoff",
    version,
    about = "Secure file-transfer gateway between clinics and insurers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway daemon: SFTP and HTTPS drop boxes, the spool pipeline, receipts and
    /// metrics. Reloads the config when the file changes or on SIGHUP; stops on SIGTERM.
    Serve(serve::Args),
    /// Validate a config file. Prints every error as FILE:LINE:COLUMN: MESSAGE and exits 1, or
    /// prints a summary of accounts and routes (and any warnings) and exits 0.
    CheckConfig(check_config::Args),
    /// Generate the gateway's secrets, each written with mode 0600 and never over an existing
    /// file: the SSH host keys (OpenSSH Ed25519, ECDSA P-256 and RSA 3072, each plus .pub), the
    /// receipt signing key (Ed25519 PKCS#8 PEM, plus .pub to hand to counterparts) and the
    /// master key (32 bytes, hex).
    Keygen(keygen::Args),
    /// List the accounts of a config: id, kind, number, expiry, status and auth methods.
    Accounts(accounts::Args),
    /// Read a password on standard input and print its argon2id hash for `password_hash`.
    HashPassword,
    /// List the bans in force (sources, and accounts banned from one source) as the running
    /// daemon last wrote them to the state directory; `unban` lifts one on the running daemon.
    Bans(bans::Args),
    /// Read the signed receipts the gateway issued (from the receipt ledger in the state
    /// directory), follow a file through its hops, and verify signatures and the chain.
    Receipts(receipts::Args),
    /// Seal standard input for one or more recipient certificates as CMS AuthEnvelopedData
    /// (AES-256-GCM; RSA-OAEP or ECDH P-256 for the key), DER, on standard output — what the gateway puts in
    /// outboxes; open it with `openssl cms -decrypt -inform DER -recip CERT -inkey KEY`.
    /// Standard input must be a file (`< file`): its length is needed up front.
    Seal(seal::Args),
    /// Open a CMS message addressed to the gateway (DER or BER on standard input) with its private
    /// key and write the plaintext on standard output: AuthEnvelopedData (AES-GCM), or
    /// EnvelopedData (AES-CBC) with --allow-unauthenticated; RSA (PKCS#1 v1.5 or OAEP) or EC P-256
    /// (ECDH) keys. When standard input is a file (`< file`) the whole message, tag included, is
    /// checked before anything is written; from a pipe the plaintext streams out and a failed
    /// check at the end exits 1 — discard the output then.
    Open(open::Args),
    /// Check the hash chain of the audit log (STATE/audit/audit.log, or --file); reports the
    /// first changed, removed or reordered line and exits 1.
    Audit(audit::Args),
    /// Run the schema check on a checkup archive as if ACCOUNT had uploaded it, with the
    /// schema set and limits of the config. Prints each finding as
    /// `SEVERITY RULE FILE:LINE:COLUMN: MESSAGE` and exits 1, or prints the routing facts and
    /// exits 0.
    Validate(validate::Args),
    /// Write a synthetic archive in the official format (invented content, no personal data): a
    /// valid one, or with --violate one that breaks exactly one rule of the check.
    Testdata(testdata::Args),
    /// The official MHLW schema sets: install one into a schema directory, verify a directory
    /// against the pinned hashes, or list the pins.
    Schemas(schemas::Args),
    /// Take files read from offline media (CD-R, courier) into a counterpart's pipeline as if it
    /// had uploaded them: receipts say channel "offline" and name the operator. Files CMS
    /// encrypted for the gateway are opened with gateway.inbound_key. Waits for the running
    /// gateway to accept each file and prints its outcome; exits 1 if one was refused or not
    /// accepted in time.
    Ingest(ingest::Args),
    /// Write a recipient's delivered outbox files (sealed for it) to a folder for a medium, with
    /// every receipt of each file and a manifest signed with the receipt key; the running
    /// gateway records the hand-over as each file's `retrieved` receipt (channel "offline", the
    /// operator). Files exported are not offered again unless --again.
    Export(export::Args),
    /// Prepare the PostgreSQL database of `[gateway.store]` for this version: apply the schema
    /// migrations it has not had (safe to run again, and from several nodes at once). With
    /// --check, only report its schema version. Nothing to do for the local store.
    Migrate(migrate::Args),
}

impl Command {
    /// Whether this is the daemon, which handles a closed peer itself, rather than an admin
    /// command whose output may be cut short by its reader.
    pub fn is_daemon(&self) -> bool {
        matches!(self, Command::Serve(_))
    }

    /// Runs the command: `Ok` with its exit code when it ran to a verdict of its own (a failed
    /// check, an invalid config), `Err` when it could not.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::Serve(args) => serve::run(args),
            Command::CheckConfig(args) => check_config::run(args),
            Command::Keygen(args) => keygen::run(args),
            Command::Accounts(args) => accounts::run(args),
            Command::HashPassword => hash_password::run(),
            Command::Bans(args) => bans::run(args),
            Command::Receipts(args) => receipts::run(args),
            Command::Seal(args) => seal::run(args),
            Command::Open(args) => open::run(args),
            Command::Audit(args) => audit::run(args),
            Command::Validate(args) => validate::run(args),
            Command::Testdata(args) => testdata::run(args),
            Command::Schemas(args) => schemas::run(args),
            Command::Ingest(args) => ingest::run(args),
            Command::Export(args) => export::run(args),
            Command::Migrate(args) => migrate::run(args),
        }
    }
}

// `--config`, for the commands that read the installed gateway's config, with its one default.
// Global, so that a command with subcommands takes it before or after the subcommand
// (`handoff bans unban SOURCE --config PATH`). (No doc comment on the struct: clap would make
// it the about of every command it is flattened into.)
#[derive(clap::Args)]
pub struct ConfigArg {
    /// The config file.
    #[arg(
        id = "config",
        long = "config",
        short = 'c',
        value_name = "CONFIG",
        global = true,
        default_value = "/etc/handoff/handoff.toml"
    )]
    pub path: PathBuf,
}

impl ConfigArg {
    /// Loads the config, or yields the exit code of a command that cannot work without it:
    /// every error printed the way compilers do, one per line, and exit code 1.
    pub fn load_or_exit(&self) -> Result<config::Loaded, ExitCode> {
        config::load(&self.path).map_err(config_failure)
    }

    /// Loads the config for a command that reads something the config points to; its errors
    /// end the command as any other error does.
    pub fn load(&self) -> anyhow::Result<config::Loaded> {
        Ok(config::load(&self.path)?)
    }
}

/// Prints config errors the way compilers do, one per line, and yields exit code 1.
pub fn config_failure(e: ConfigError) -> ExitCode {
    eprintln!("{}", handoff::error::Chain(&e));
    ExitCode::FAILURE
}
