//! Settings: command-line flags, each with a `MEDSERVE_*` environment variable, turned into a
//! validated [`Config`]. Every problem is reported at once, not the first only.
//!
//! `cli.rs` declares the flags, `limits.rs` the bounds they set; this file checks the flags and
//! builds the [`Config`].

mod cli;
mod limits;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use cli::{Cli, Command, ExportArgs, ServeArgs};
pub use limits::{ConnLimits, Limits};

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataRoot {
    /// A local folder.
    Local(PathBuf),
    /// A bucket and key prefix.
    S3 {
        /// The bucket's name.
        bucket: String,
        /// Key prefix every object is listed under; empty for the whole bucket.
        prefix: String,
    },
    /// Generated sample data in this folder.
    Sample(PathBuf),
}

impl DataRoot {
    /// Parses `--data`: `s3://bucket[/prefix]` or a folder path.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid = (3..=63).contains(&bucket.len())
                && bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !valid {
                return Err(format!(
                    "--data: '{bucket}' is not a valid S3 bucket name (3-63 lowercase letters, digits, '-', '.')"
                ));
            }
            if prefix.split('/').any(|s| s == "..") {
                return Err("--data: the S3 prefix may not contain '..'".into());
            }
            return Ok(DataRoot::S3 {
                bucket: bucket.into(),
                prefix: prefix.into(),
            });
        }
        if s.contains("://") {
            return Err(format!(
                "--data: '{s}' is neither a folder nor s3://bucket/prefix"
            ));
        }
        Ok(DataRoot::Local(PathBuf::from(s)))
    }
}

/// Which browser origins may read responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Every origin (`*`).
    Any,
    /// Only these origins, each without a trailing `/`.
    List(Vec<String>),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// Shortest API key accepted: shorter ones are guessable.
pub const MIN_KEY_LEN: usize = 16;

/// The keys from `--api-keys` and `--api-keys-file`, each checked; problems go to `errs`
/// without echoing the keys.
fn api_keys(a: &ServeArgs, errs: &mut Vec<String>) -> Vec<String> {
    let mut keys: Vec<(String, String)> = Vec::new();
    if let Some(list) = &a.api_keys {
        for (i, k) in list.split(',').map(str::trim).enumerate() {
            keys.push((format!("--api-keys entry {}", i + 1), k.to_string()));
        }
    }
    if let Some(path) = &a.api_keys_file {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let before = keys.len();
                for (n, line) in text.lines().enumerate() {
                    let k = line.split('#').next().unwrap_or_default().trim();
                    if !k.is_empty() {
                        keys.push((format!("{} line {}", path.display(), n + 1), k.to_string()));
                    }
                }
                if keys.len() == before {
                    errs.push(format!("--api-keys-file: {} holds no keys", path.display()));
                }
            }
            Err(e) => errs.push(format!("--api-keys-file: {}: {e}", path.display())),
        }
    }
    for (place, k) in &keys {
        if k.len() < MIN_KEY_LEN || !k.bytes().all(|b| b.is_ascii_graphic()) {
            errs.push(format!(
                "{place}: an API key must be at least {MIN_KEY_LEN} visible ASCII characters without spaces"
            ));
        }
    }
    keys.into_iter().map(|(_, k)| k).collect()
}

/// Validated settings of `serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--data`: where the datasets are.
    pub data: DataRoot,
    /// `--listen`.
    pub listen: SocketAddr,
    /// `--s3-endpoint`: an S3-protocol server other than AWS.
    pub s3_endpoint: Option<String>,
    /// `--s3-region`; unset: from the AWS environment.
    pub s3_region: Option<String>,
    /// `--cache-mb` in bytes.
    pub cache_bytes: u64,
    /// `--disk-cache-dir` and `--disk-cache-gb` in bytes, when there is a disk tier.
    pub disk_cache: Option<(PathBuf, u64)>,
    /// `--listing-ttl-secs`: how long a listing of the store is reused.
    pub listing_ttl: Duration,
    /// `--catalog`: the JSON file naming datasets, if any.
    pub catalog: Option<PathBuf>,
    /// `--cors-origins`.
    pub cors: CorsOrigins,
    /// Accepted API keys; empty = no key needed.
    pub api_keys: Vec<String>,
    /// `--max-body-kb` in bytes.
    pub max_body_bytes: u64,
    /// Bounds on inputs, outputs, pages and the CPU queue.
    pub limits: Limits,
    /// Timeouts and the cap of client connections.
    pub connections: ConnLimits,
    /// `--request-timeout-secs`: past it a request is answered with 503.
    pub request_timeout: Duration,
    /// Decode/transform jobs run at once (`--cpu-workers`, 0 resolved to the core count).
    pub cpu_workers: usize,
    /// `--log-format`.
    pub log_format: LogFormat,
}

impl Config {
    /// Checks every flag and reports all problems together.
    pub fn from_args(a: &ServeArgs) -> Result<Config, Vec<String>> {
        let mut errs = Vec::new();
        let data = data_root(a, &mut errs);
        let listen = listen_addr(a, &mut errs);
        check_s3_endpoint(a, &mut errs);
        check_inputs(a, &mut errs);
        check_outputs(a, &mut errs);
        let connections = connection_limits(a, &mut errs);
        let log_format = log_format(a, &mut errs);
        let cors = cors_origins(a, &mut errs);
        let api_keys = api_keys(a, &mut errs);
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Config {
            data,
            listen,
            s3_endpoint: a.s3_endpoint.clone(),
            s3_region: a.s3_region.clone(),
            cache_bytes: a.cache_mb << 20,
            disk_cache: a
                .disk_cache_dir
                .clone()
                .map(|dir| (dir, a.disk_cache_gb << 30)),
            listing_ttl: Duration::from_secs(a.listing_ttl_secs),
            catalog: a.catalog.clone(),
            cors,
            api_keys,
            max_body_bytes: a.max_body_kb << 10,
            limits: limits(a),
            connections,
            request_timeout: Duration::from_secs(a.request_timeout_secs),
            cpu_workers: cpu_workers(a),
            log_format,
        })
    }
}

/// `--data`, or the sample folder when it is not given (or is wrong: the error is in `errs`).
fn data_root(a: &ServeArgs, errs: &mut Vec<String>) -> DataRoot {
    match &a.data {
        None => Ok(DataRoot::Sample(a.sample_dir.clone())),
        Some(d) => DataRoot::parse(d),
    }
    .unwrap_or_else(|e| {
        errs.push(e);
        DataRoot::Sample(a.sample_dir.clone())
    })
}

fn listen_addr(a: &ServeArgs, errs: &mut Vec<String>) -> SocketAddr {
    a.listen.parse::<SocketAddr>().unwrap_or_else(|_| {
        errs.push(format!(
            "--listen: '{}' is not HOST:PORT with an IP host (e.g. 127.0.0.1:8080)",
            a.listen
        ));
        SocketAddr::from(([127, 0, 0, 1], 8080))
    })
}

fn check_s3_endpoint(a: &ServeArgs, errs: &mut Vec<String>) {
    if let Some(ep) = &a.s3_endpoint
        && !(ep.starts_with("http://") || ep.starts_with("https://"))
    {
        errs.push(format!(
            "--s3-endpoint: '{ep}' must start with http:// or https://"
        ));
    }
}

/// Pushes `msg` unless `ok`.
fn check(errs: &mut Vec<String>, ok: bool, msg: impl FnOnce() -> String) {
    if !ok {
        errs.push(msg());
    }
}

/// The bounds of the cache, listing and input-size flags (checked in the order of `--help`).
fn check_inputs(a: &ServeArgs, errs: &mut Vec<String>) {
    check(errs, (1..=1 << 20).contains(&a.disk_cache_gb), || {
        format!("--disk-cache-gb: {} must be 1..=1048576", a.disk_cache_gb)
    });
    check(errs, (1..=1 << 20).contains(&a.cache_mb), || {
        format!("--cache-mb: {} must be 1..=1048576", a.cache_mb)
    });
    check(errs, a.listing_ttl_secs <= 86_400, || {
        format!(
            "--listing-ttl-secs: {} must be at most 86400",
            a.listing_ttl_secs
        )
    });
    check(errs, (1..=1 << 20).contains(&a.max_object_mb), || {
        format!("--max-object-mb: {} must be 1..=1048576", a.max_object_mb)
    });
    check(errs, (1..=1 << 40).contains(&a.max_pixels), || {
        format!("--max-pixels: {} must be 1..=2^40", a.max_pixels)
    });
    check(errs, (1..=1 << 40).contains(&a.max_voxels), || {
        format!("--max-voxels: {} must be 1..=2^40", a.max_voxels)
    });
    check(errs, (1..=1 << 24).contains(&a.max_volume_mb), || {
        format!("--max-volume-mb: {} must be 1..=16777216", a.max_volume_mb)
    });
}

/// The bounds of the output-size, body, queue, page and request-time flags.
fn check_outputs(a: &ServeArgs, errs: &mut Vec<String>) {
    check(errs, (1..=65_536).contains(&a.max_output_side), || {
        format!("--max-output-side: {} must be 1..=65536", a.max_output_side)
    });
    check(errs, (1..=65_536).contains(&a.max_volume_side), || {
        format!("--max-volume-side: {} must be 1..=65536", a.max_volume_side)
    });
    check(errs, (1..=1 << 24).contains(&a.max_output_mb), || {
        format!("--max-output-mb: {} must be 1..=16777216", a.max_output_mb)
    });
    check(errs, a.max_body_kb <= 1 << 20, || {
        format!("--max-body-kb: {} must be 0..=1048576", a.max_body_kb)
    });
    check(errs, a.prefetch_batches <= 64, || {
        format!("--prefetch-batches: {} must be 0..=64", a.prefetch_batches)
    });
    check(errs, a.max_queue <= 1_000_000, || {
        format!("--max-queue: {} must be 0..=1000000", a.max_queue)
    });
    check(errs, (1..=1_000_000).contains(&a.max_page), || {
        format!("--max-page: {} must be 1..=1000000", a.max_page)
    });
    check(errs, (1..=3600).contains(&a.request_timeout_secs), || {
        format!(
            "--request-timeout-secs: {} must be 1..=3600",
            a.request_timeout_secs
        )
    });
}

/// `--header-read-timeout-secs`, `--idle-timeout-secs` and `--max-connections`.
fn connection_limits(a: &ServeArgs, errs: &mut Vec<String>) -> ConnLimits {
    check(
        errs,
        (1..=3600).contains(&a.header_read_timeout_secs),
        || {
            format!(
                "--header-read-timeout-secs: {} must be 1..=3600",
                a.header_read_timeout_secs
            )
        },
    );
    check(errs, (1..=3600).contains(&a.idle_timeout_secs), || {
        format!(
            "--idle-timeout-secs: {} must be 1..=3600",
            a.idle_timeout_secs
        )
    });
    // hyper runs its header timer on an HTTP/1 connection from the moment it waits for the
    // next request, so an idle timeout past the header-read timeout would never be reached.
    check(
        errs,
        a.idle_timeout_secs <= a.header_read_timeout_secs,
        || {
            format!(
                "--idle-timeout-secs: {} must not exceed --header-read-timeout-secs ({}): an idle \
             HTTP/1 connection is also closed when the header-read timeout passes; raise both",
                a.idle_timeout_secs, a.header_read_timeout_secs
            )
        },
    );
    check(errs, (1..=1_000_000).contains(&a.max_connections), || {
        format!(
            "--max-connections: {} must be 1..=1000000",
            a.max_connections
        )
    });
    ConnLimits {
        header_read_timeout: Duration::from_secs(a.header_read_timeout_secs),
        idle_timeout: Duration::from_secs(a.idle_timeout_secs),
        max_connections: a.max_connections,
    }
}

fn log_format(a: &ServeArgs, errs: &mut Vec<String>) -> LogFormat {
    match a.log_format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            errs.push(format!("--log-format: '{other}' must be text or json"));
            LogFormat::Text
        }
    }
}

fn cors_origins(a: &ServeArgs, errs: &mut Vec<String>) -> CorsOrigins {
    if a.cors_origins.trim() == "*" {
        return CorsOrigins::Any;
    }
    let list: Vec<String> = a
        .cors_origins
        .split(',')
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for o in &list {
        if !(o.starts_with("http://") || o.starts_with("https://"))
            || axum::http::HeaderValue::from_str(o).is_err()
        {
            errs.push(format!(
                "--cors-origins: '{o}' must be an origin like https://viewer.example.org"
            ));
        }
    }
    CorsOrigins::List(list)
}

fn limits(a: &ServeArgs) -> Limits {
    Limits {
        max_object_bytes: a.max_object_mb << 20,
        max_pixels: a.max_pixels,
        max_voxels: a.max_voxels,
        max_volume_bytes: a.max_volume_mb << 20,
        max_output_side: a.max_output_side,
        max_volume_side: a.max_volume_side,
        max_output_bytes: a.max_output_mb << 20,
        max_page: a.max_page,
        max_queue: a.max_queue,
        prefetch_batches: a.prefetch_batches,
    }
}

/// `--cpu-workers`, 0 meaning one per core.
fn cpu_workers(a: &ServeArgs) -> usize {
    if a.cpu_workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        a.cpu_workers
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn args(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["medserve", "serve"];
        argv.extend_from_slice(extra);
        match Cli::parse_from(argv).command {
            Some(Command::Serve(a)) => *a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn data_roots() {
        assert_eq!(
            DataRoot::parse("s3://my-bucket/a/b").unwrap(),
            DataRoot::S3 {
                bucket: "my-bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert!(DataRoot::parse("s3://A").is_err());
        assert!(DataRoot::parse("http://x").is_err());
        assert_eq!(
            DataRoot::parse("./d").unwrap(),
            DataRoot::Local("./d".into())
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errs = Config::from_args(&args(&[
            "--listen",
            "nope",
            "--cache-mb",
            "0",
            "--log-format",
            "xml",
            "--cors-origins",
            "ftp://x",
        ]))
        .unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_args(&args(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!(matches!(c.data, DataRoot::Sample(_)));
        assert_eq!(c.cors, CorsOrigins::Any);
        assert_eq!(
            c.limits.max_output_bytes,
            Limits::default().max_output_bytes
        );
        let c = Config::from_args(&args(&["--max-output-mb", "3"])).unwrap();
        assert_eq!(c.limits.max_output_bytes, 3 << 20);
        let errs = Config::from_args(&args(&["--max-output-mb", "0"])).unwrap_err();
        assert!(errs[0].contains("--max-output-mb"), "{errs:?}");
    }

    #[test]
    fn connection_limits() {
        let c = Config::from_args(&args(&[])).unwrap();
        assert_eq!(c.connections, ConnLimits::default());
        let c = Config::from_args(&args(&[
            "--header-read-timeout-secs",
            "30",
            "--idle-timeout-secs",
            "30",
            "--max-connections",
            "10",
        ]))
        .unwrap();
        assert_eq!(c.connections.header_read_timeout, Duration::from_secs(30));
        assert_eq!(c.connections.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.connections.max_connections, 10);
        let errs = Config::from_args(&args(&[
            "--header-read-timeout-secs",
            "0",
            "--max-connections",
            "0",
        ]))
        .unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        let errs = Config::from_args(&args(&["--idle-timeout-secs", "75"])).unwrap_err();
        assert!(
            errs.len() == 1 && errs[0].contains("--header-read-timeout-secs (15)"),
            "{errs:?}"
        );
    }

    #[test]
    fn api_keys_from_flag_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.txt");
        std::fs::write(&file, "# team keys\nfile-key-0123456789ab  # alice\n\n").unwrap();
        let f = file.to_str().unwrap();
        let c = Config::from_args(&args(&[
            "--api-keys",
            "flag-key-0123456789ab, other-key-0123456789",
            "--api-keys-file",
            f,
        ]))
        .unwrap();
        assert_eq!(
            c.api_keys,
            [
                "flag-key-0123456789ab",
                "other-key-0123456789",
                "file-key-0123456789ab"
            ]
        );
        let errs =
            Config::from_args(&args(&["--api-keys", "short,has space in it ok"])).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs.iter()
                .all(|e| !e.contains("short,") && !e.contains("has space in it")),
            "{errs:?}"
        );
        std::fs::write(&file, "# nothing\n").unwrap();
        let errs = Config::from_args(&args(&["--api-keys-file", f])).unwrap_err();
        assert!(errs[0].contains("holds no keys"), "{errs:?}");
        assert!(Config::from_args(&args(&[])).unwrap().api_keys.is_empty());
    }
}
