//! The `facerelay` command line: a thin shell over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "facerelay",
    version,
    about = "Live face-swap video relay over WebRTC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay server (web page, signalling, media).
    Serve {
        /// TOML file laid over the built-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Swap the face of one photo onto the faces of one image (offline).
    Swap(facerelay::swap::cli::SwapArgs),
    /// Check or download the model files (models/README.md).
    Models(facerelay::swap::cli::ModelsArgs),
    /// Benchmarks that print figures (a table and JSON).
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Median time per face-swap stage at 640x480 and 1280x720 with one face.
    Swap(facerelay::swap::cli::SwapBenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Swap(args) => facerelay::swap::cli::swap(&args),
        Command::Models(args) => facerelay::swap::cli::models(&args),
        Command::Bench {
            bench: Bench::Swap(args),
        } => facerelay::swap::cli::bench_swap(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("facerelay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let _config = facerelay::config::Config::load(config.as_deref())?;
    anyhow::bail!("serve is not built yet")
}
