//! The `facerelay` command line: a thin shell over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use facerelay::app::{self, Swap};
use facerelay::config::{Config, LogFormat};
use facerelay::signal;

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
        /// TOML file laid over the built-in defaults (config/default.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Serve HTTPS with a self-signed certificate made now for this machine's names and
        /// addresses (to use the page from a phone on the same network); the browser warns
        /// once. Takes precedence over server.tls_cert.
        #[arg(long)]
        dev_tls: bool,
    },
    /// Swap the face of one photo onto the faces of one image (offline).
    Swap(facerelay::cli::swap::SwapArgs),
    /// Check or download the model files (models/README.md).
    Models(facerelay::cli::swap::ModelsArgs),
    /// Did facerelay swap this image or video? Looks for its watermark and bitstream mark
    /// (docs/marking.md). Exit status 0: swapped by facerelay; 1: no mark found; 2: error.
    Verify(facerelay::verify::VerifyArgs),
    /// Print a join token (and its link) for a room or the roulette, signed with
    /// `server.token_secret`.
    Token(facerelay::cli::token::TokenArgs),
    /// Benchmarks that print figures (a table and JSON).
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Server-added latency of the relay (decode, stage, encode) on loopback.
    Relay(facerelay::cli::bench::RelayBenchArgs),
    /// Median time per face-swap stage at 640x480 and 1280x720 with one face.
    Swap(facerelay::cli::swap::SwapBenchArgs),
    /// N synthetic publishers through decode, live face swap and encode, in-process.
    Live(facerelay::cli::bench::live::LiveBenchArgs),
    /// The mesh tier's CPU cost per face and frame (tracking and swap) on one core.
    Mesh(facerelay::cli::bench::mesh::MeshBenchArgs),
    /// Participants joining and leaving for many cycles: memory, descriptors, threads.
    Churn(facerelay::cli::bench::ChurnBenchArgs),
    /// Publishers and signalling-only participants come and go for a set time (20 minutes by
    /// default); memory, descriptors, threads and live objects are sampled.
    Soak(facerelay::cli::bench::SoakBenchArgs),
    /// Detection and false-positive rates of the watermark after one more H.264 encode.
    Watermark(facerelay::cli::bench::watermark::WatermarkBenchArgs),
    /// What a disguised voice costs: time per packet, added latency, many voices at once.
    Voice(facerelay::cli::bench::voice::VoiceBenchArgs),
}

/// jemalloc with background threads: memory freed after a peak of connections goes back to the
/// system (docs/PERFORMANCE.md, "Peaks").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` logs as its configuration says (an unreadable configuration is reported by
    // `serve` itself); the other commands as text.
    let format = match &cli.command {
        Command::Serve { config, .. } => {
            Config::load(config.as_deref()).map_or_else(|_| LogFormat::Text, |c| c.log.format)
        }
        _ => LogFormat::Text,
    };
    init_tracing(format);
    let result = match cli.command {
        Command::Serve { config, dev_tls } => serve(config, dev_tls),
        Command::Swap(args) => facerelay::cli::swap::swap(&args),
        Command::Models(args) => facerelay::cli::swap::models(&args),
        Command::Token(args) => facerelay::cli::token::run(&args),
        Command::Bench {
            bench: Bench::Relay(args),
        } => runtime().and_then(|rt| rt.block_on(facerelay::cli::bench::relay(args))),
        Command::Bench {
            bench: Bench::Swap(args),
        } => facerelay::cli::swap::bench_swap(&args),
        Command::Bench {
            bench: Bench::Live(args),
        } => facerelay::cli::bench::live::run(&args),
        Command::Bench {
            bench: Bench::Mesh(args),
        } => facerelay::cli::bench::mesh::run(&args),
        Command::Bench {
            bench: Bench::Churn(args),
        } => runtime().and_then(|rt| rt.block_on(facerelay::cli::bench::churn(args))),
        Command::Bench {
            bench: Bench::Soak(args),
        } => runtime().and_then(|rt| rt.block_on(facerelay::cli::bench::soak(args))),
        Command::Bench {
            bench: Bench::Watermark(args),
        } => facerelay::cli::bench::watermark::run(&args),
        Command::Bench {
            bench: Bench::Voice(args),
        } => facerelay::cli::bench::voice::run(&args),
        Command::Verify(args) => {
            return match facerelay::verify::run(&args) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("facerelay: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("facerelay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The log filter unless `RUST_LOG` says otherwise: the WebRTC stack's warnings that need no
/// action (no candidate pairs yet, a default DTLS server name, SRTP packets that fail to
/// decrypt before the keys are set) are quieted; its errors stay.
const DEFAULT_LOG_FILTER: &str =
    "info,webrtc=warn,rtc=warn,rtc_ice=error,rtc_dtls=error,rtc::peer_connection::handler=error";

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => log.json().init(),
        LogFormat::Text => {
            // Colour codes only on a terminal: a log file or a collector gets plain text.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none();
            log.with_ansi(ansi).init()
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn serve(config_path: Option<PathBuf>, dev_tls: bool) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref())?;
    if !config.server.web_root.is_dir() {
        tracing::warn!(
            path = %config.server.web_root.display(),
            "server.web_root is not a folder; the web page will not be served"
        );
    }
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let addr = listener.local_addr()?;
        let tls = app::tls(&config, dev_tls)?;
        let swap = Swap::from_config(&config)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (app, drain) = app::build_node(config, swap, format!("{scheme}://{addr}/")).await?;
        match &tls {
            None => println!("facerelay listening on http://{addr}/"),
            Some(tls) => {
                println!("facerelay listening on https://{addr}/");
                if !tls.names.is_empty() {
                    let port = addr.port();
                    let urls: Vec<String> = tls
                        .names
                        .iter()
                        .map(|n| match n.parse::<std::net::Ipv6Addr>() {
                            Ok(_) => format!("https://[{n}]:{port}/"),
                            Err(_) => format!("https://{n}:{port}/"),
                        })
                        .collect();
                    println!(
                        "self-signed certificate (the browser warns once) for: {}",
                        urls.join(" ")
                    );
                    if let Some(spki) = &tls.spki_sha256 {
                        println!("its public key's SHA-256 (base64): {spki}");
                    }
                }
            }
        }
        let tls = tls.map(|t| t.config);
        // The drain lasts its grace period; a second signal exits at once (`shutdown_signal`).
        let finish = std::future::pending();
        signal::serve(listener, app, tls, drain, shutdown_signal(), finish).await?;
        println!("facerelay stopped");
        Ok(())
    })
}

/// Resolves on the first SIGINT/SIGTERM; a second one exits at once.
async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("shutdown signal received (send it again to exit at once)");
    tokio::spawn(async {
        wait_for_signal().await;
        tracing::warn!("second shutdown signal: exiting at once");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
