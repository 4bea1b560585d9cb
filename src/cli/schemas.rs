//! `handoff schemas`: the official schema files are MHLW's and are not shipped with the
//! gateway; the operator installs them from MHLW's download, and the gateway must be able to
//! show that what is installed is exactly what the check was built against.

use std::path::PathBuf;
use std::process::ExitCode;

use handoff::validate::schemas::{self, Catalog, SETS};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: SchemasCommand,
}

#[derive(clap::Subcommand)]
enum SchemasCommand {
    /// Install the official sets found in MHLW's download or an archive (a folder or a zip; the
    /// set may be nested, e.g. in an archive's XSD/ folder) into DIR/<set folder>/. Every pinned
    /// file must be there with its pinned sha256 (CRLF line ends are converted); otherwise
    /// nothing is installed.
    Install {
        /// The folder or zip holding the set.
        #[arg(long)]
        from: PathBuf,
        /// The schema directory (`schema_dir` of the config).
        #[arg(long)]
        to: PathBuf,
    },
    /// Hash and compile the sets of a schema directory; prints what check-config prints and
    /// exits 1 when the current set is missing or does not compile, or a file differs from its
    /// pin.
    Verify {
        /// The schema directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print the pinned sets: edition, namespace and `sha256  folder/file` of every file.
    List,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        SchemasCommand::Install { from, to } => match schemas::install(&from, &to) {
            Ok(installed) => {
                for i in installed {
                    let mut line = format!(
                        "installed {} ({} edition, {} files, all as pinned) from {}",
                        i.set.folder,
                        i.set.edition.name_en(),
                        i.files,
                        from.display()
                    );
                    if !i.source.is_empty() {
                        line.push_str(&format!(":{}", i.source));
                    }
                    line.push_str(&format!(" into {}", i.dir.display()));
                    if i.replaced {
                        line.push_str(", replaced the previous installation");
                    }
                    if !i.converted.is_empty() {
                        line.push_str(&format!(
                            "; CRLF line ends converted in {}",
                            i.converted.join(", ")
                        ));
                    }
                    println!("{line}");
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("handoff: schemas install: {e}");
                Ok(ExitCode::FAILURE)
            }
        },
        SchemasCommand::Verify { dir } => match Catalog::load(&dir) {
            Ok(catalog) => {
                print!("{}", catalog.report());
                if catalog.report().warnings().is_empty() {
                    Ok(ExitCode::SUCCESS)
                } else {
                    Ok(ExitCode::FAILURE)
                }
            }
            Err(e) => {
                print!("{}", schemas::Report::of(&dir));
                eprintln!("handoff: schemas verify: {e}");
                Ok(ExitCode::FAILURE)
            }
        },
        SchemasCommand::List => {
            for set in SETS {
                println!(
                    "# {}: {} edition ({}), namespace {}{}",
                    set.folder,
                    set.edition.name_en(),
                    set.edition.name_ja(),
                    set.namespace,
                    if set.required { ", required" } else { "" }
                );
                for pin in set.files {
                    println!("{}  {}/{}", pin.sha256, set.folder, pin.path);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
