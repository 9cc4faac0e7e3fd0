//! The `medserve` binary: parse flags, set up logging, hand over to the library.

use clap::Parser;
use medserve::config::{Cli, Command, Config, LogFormat, ServeArgs};
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info,aws=warn"));
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::SampleData {
            dir,
            large,
            mednist_items,
        }) => {
            let written = medserve::sample::write_sample_data(&dir).and_then(|n| {
                let large = if large {
                    medserve::sample::write_large_ct(&dir)?
                } else {
                    0
                };
                let mednist = match mednist_items {
                    Some(k) => medserve::sample::write_mednist_sized(&dir, k)?,
                    None => 0,
                };
                Ok(n + large + mednist)
            });
            return match written {
                Ok(n) => {
                    println!("wrote {n} sample files to {}", dir.display());
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("medserve: writing sample data to {}: {e}", dir.display());
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Some(Command::Serve(a)) => *a,
        None => ServeArgs::parse_default(),
    };
    let config = match Config::from_args(&args) {
        Ok(c) => c,
        Err(errs) => {
            for e in errs {
                eprintln!("medserve: {e}");
            }
            return std::process::ExitCode::from(2);
        }
    };
    init_tracing(config.log_format);
    tracing::info!(?config, "effective configuration");
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("medserve: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(medserve::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("medserve: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
