//! The `medserve` binary: parse flags, set up logging, hand over to the library.

use clap::Parser;
use medserve::config::{Cli, Command, Config, LogFormat, ServeArgs};
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

/// `medserve gzindex`: inflates the file once, recording checkpoints, and writes the index.
fn write_gzindex(
    file: &std::path::Path,
    out: &std::path::Path,
    spacing: u32,
) -> Result<usize, String> {
    use medserve::imaging::{gzindex, gzip};
    let gz = std::fs::read(file).map_err(|e| e.to_string())?;
    // The trailer's size is mod 2^32; a file that inflates to more is refused by the index.
    let size = gzip::trailer_size(&gz).ok_or("not a gzip file")?;
    let mut data = vec![0u8; size as usize];
    let ix = gzindex::inflate_indexed(&gz, &mut data, spacing).map_err(|e| e.to_string())?;
    std::fs::write(out, ix.to_bytes()).map_err(|e| e.to_string())?;
    Ok(ix.points.len())
}

/// `medserve export`: runs the export and prints what it did.
fn export(a: &medserve::config::ExportArgs) -> std::process::ExitCode {
    // Its own progress lines say what happens; logs only for problems (RUST_LOG for more).
    init_tracing(LogFormat::Text, "warn");
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("medserve: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(medserve::export::run_cli(a)) {
        Ok(s) if a.dry_run => {
            let _ = s;
            std::process::ExitCode::SUCCESS
        }
        Ok(s) => {
            println!(
                "exported {} items to {}: {} shards written ({:.1} MB), {} kept, in {:.1} s",
                s.items,
                a.to,
                s.shards_written,
                s.bytes_written as f64 / 1e6,
                s.shards_kept,
                s.seconds
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("medserve export: {e:#}");
            std::process::ExitCode::FAILURE
        }
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
        Some(Command::Gzindex { file, out, spacing }) => {
            return match write_gzindex(&file, &out, spacing) {
                Ok(points) => {
                    println!("wrote {} ({points} points)", out.display());
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("medserve: indexing {}: {e}", file.display());
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Some(Command::Export(a)) => return export(&a),
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
    init_tracing(config.log_format, "info,tower_http=info,aws=warn");
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
