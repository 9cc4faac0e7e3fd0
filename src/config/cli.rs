//! The command line: `medserve [serve | sample-data DIR]` and the flags of `serve`, each with
//! its `MEDSERVE_*` variable. Parsing only: what the values must satisfy is checked in
//! [`Config::from_args`](super::Config::from_args), so every problem is reported at once.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// medserve: preprocessed medical-imaging training data over HTTP.
#[derive(Debug, Parser)]
#[command(name = "medserve", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do; `serve` when none is given.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve datasets over HTTP (the default).
    Serve(Box<ServeArgs>),
    /// Write the deterministic synthetic sample data into DIR and exit.
    SampleData {
        /// Folder to write into (created if missing).
        dir: PathBuf,
        /// Also write a full-size 512x512x200 int16 CT subject with its mask
        /// (`large/train/ct_512/`, ~55 MB gzipped) for benchmarks and load tests.
        #[arg(long)]
        large: bool,
        /// Also write `mednist/<Class>/*.png`, N 64x64 images of the same generator in the real
        /// MedNIST's class proportions (AbdomenCT 10000, BreastMRI 8954, CXR 10000, ChestCT
        /// 10000, Hand 10000, HeadCT 10000; N=58954 is MedNIST's size), served as dataset
        /// `mednist`, split `all`, beside the usual sample; deterministic, written on every core.
        #[arg(long, value_name = "N")]
        mednist_items: Option<usize>,
    },
    /// Preprocess a dataset once: every item through the chain into WebDataset tar shards
    /// (`<id>.image.npy`, `<id>.cls` or `<id>.label.npy`, `<id>.json`) per split, plus
    /// `manifest.json`; resumable, and servable by `serve` as a `processed` dataset.
    Export(Box<ExportArgs>),
    /// Build a seek index of a gzip file (e.g. a `.nii.gz`) in indexed_gzip's GZIDX format,
    /// which indexed_gzip and rapidgzip import, and exit.
    Gzindex {
        /// The gzip file (one member).
        file: PathBuf,
        /// Where to write the index.
        out: PathBuf,
        /// Least inflated bytes between two checkpoints.
        #[arg(long, default_value_t = 4 << 20)]
        spacing: u32,
    },
}

/// Flags of `medserve export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Source data root: a folder, or s3://bucket/prefix.
    #[arg(long, env = "MEDSERVE_DATA")]
    pub data: String,
    /// Destination: a folder (created if missing) or s3://bucket/prefix, the export's root.
    #[arg(long)]
    pub to: String,
    /// The dataset to export; may be left out when the source holds exactly one.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Splits to export, comma-separated; default: all.
    #[arg(long, value_delimiter = ',')]
    pub splits: Vec<String>,
    /// Chain parameters, each NAME=VALUE exactly as the HTTP query spells them: 2D as the image
    /// route (size=64,64 mode=area scale=minmax channels palette flip rotate), 3D as the
    /// volume route (size=96,96,96 mode a_min a_max b_min b_max clip scale part labels binary
    /// flip). Random transforms stay on the fly.
    #[arg(value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Shard size to aim for, in MiB (items are not split across shards).
    #[arg(long, default_value_t = 256)]
    pub shard_mb: u64,
    /// Seed of the shuffled order items are written in.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print what would be written (and what kept) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Overwrite a complete export at the destination made with another chain or order.
    #[arg(long)]
    pub replace: bool,
    /// S3 endpoint URL for MinIO or another S3-protocol server (source and destination).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region; unset: from the AWS environment, else us-east-1.
    #[arg(long, env = "MEDSERVE_S3_REGION")]
    pub s3_region: Option<String>,
    /// Items computed at once; 0 = one per CPU core.
    #[arg(long, env = "MEDSERVE_CPU_WORKERS", default_value_t = 0)]
    pub cpu_workers: usize,
    /// Memory for decoded arrays while exporting, in MiB.
    #[arg(long, default_value_t = 512)]
    pub cache_mb: u64,
}

/// Flags of `medserve serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Data root: a folder, or s3://bucket/prefix. Unset: generate sample data and serve it.
    #[arg(long, env = "MEDSERVE_DATA")]
    pub data: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "MEDSERVE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// S3 endpoint URL for MinIO or another S3-protocol server (path-style addressing).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region; unset: from the AWS environment, else us-east-1.
    #[arg(long, env = "MEDSERVE_S3_REGION")]
    pub s3_region: Option<String>,
    /// Memory for decoded and transformed arrays, in MiB.
    #[arg(long, env = "MEDSERVE_CACHE_MB", default_value_t = 512)]
    pub cache_mb: u64,
    /// Folder for the disk tier behind the memory cache: decoded volumes are written there once
    /// and read back by memory map after they leave memory, instead of being inflated again.
    /// Unset: no disk tier. One folder per server process.
    #[arg(long, env = "MEDSERVE_DISK_CACHE_DIR")]
    pub disk_cache_dir: Option<PathBuf>,
    /// Size of the disk tier in GiB; the least recently used entries are deleted past it.
    #[arg(long, env = "MEDSERVE_DISK_CACHE_GB", default_value_t = 20)]
    pub disk_cache_gb: u64,
    /// Seconds a listing of the store is reused before it is listed again.
    #[arg(long, env = "MEDSERVE_LISTING_TTL_SECS", default_value_t = 300)]
    pub listing_ttl_secs: u64,
    /// Optional JSON file naming datasets: {"datasets":[{"name":..,"prefix":..}],"discover":true}.
    #[arg(long, env = "MEDSERVE_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Where `serve` without --data generates its sample data.
    #[arg(
        long,
        env = "MEDSERVE_SAMPLE_DIR",
        default_value = "medserve-sample-data"
    )]
    pub sample_dir: PathBuf,
    /// Origins allowed to read the API from a browser: `*` or a comma-separated list.
    #[arg(long, env = "MEDSERVE_CORS_ORIGINS", default_value = "*")]
    pub cors_origins: String,
    /// Largest object fetched from the store, in MiB.
    #[arg(long, env = "MEDSERVE_MAX_OBJECT_MB", default_value_t = 1024)]
    pub max_object_mb: u64,
    /// Largest 2D image decoded, in pixels (width x height).
    #[arg(long, env = "MEDSERVE_MAX_PIXELS", default_value_t = 100_000_000)]
    pub max_pixels: u64,
    /// Largest volume decoded, in voxels over all channels (checked from the header first).
    #[arg(long, env = "MEDSERVE_MAX_VOXELS", default_value_t = 536_870_912)]
    pub max_voxels: u64,
    /// Largest decompressed NIfTI file, in MiB (a gzip stream is never inflated past it).
    #[arg(long, env = "MEDSERVE_MAX_VOLUME_MB", default_value_t = 2048)]
    pub max_volume_mb: u64,
    /// Largest output side a 2D image's `size` may ask for.
    #[arg(long, env = "MEDSERVE_MAX_OUTPUT_SIDE", default_value_t = 4096)]
    pub max_output_side: usize,
    /// Largest output side a volume's `size` may ask for (256^3 float32 is 64 MiB a channel).
    #[arg(long, env = "MEDSERVE_MAX_VOLUME_SIDE", default_value_t = 256)]
    pub max_volume_side: usize,
    /// Largest array a volume response may carry, in MiB as sent (float32 images, uint8 or
    /// float32 masks); larger ones answer 422 asking for a smaller `size`.
    #[arg(long, env = "MEDSERVE_MAX_OUTPUT_MB", default_value_t = 1024)]
    pub max_output_mb: u64,
    /// Largest `limit` of an item listing page.
    #[arg(long, env = "MEDSERVE_MAX_PAGE", default_value_t = 1000)]
    pub max_page: usize,
    /// Seconds a request may take before it is answered with 503.
    #[arg(long, env = "MEDSERVE_REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    pub request_timeout_secs: u64,
    /// Seconds a connection has to send a request's complete headers, counted from when the
    /// server starts waiting for that request (connection opened, or previous response sent).
    #[arg(long, env = "MEDSERVE_HEADER_READ_TIMEOUT_SECS", default_value_t = 15)]
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may stay open with no request in flight (keep-alive between
    /// requests, or nothing sent yet) before it is closed; at most --header-read-timeout-secs.
    #[arg(long, env = "MEDSERVE_IDLE_TIMEOUT_SECS", default_value_t = 10)]
    pub idle_timeout_secs: u64,
    /// Connections open at once; further ones wait in the listen backlog until one closes.
    #[arg(long, env = "MEDSERVE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// API keys, comma-separated; when set (here or in --api-keys-file), every /v1 route and
    /// /metrics need `Authorization: Bearer <key>`.
    #[arg(long, env = "MEDSERVE_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// File of API keys, one per line (`#` starts a comment).
    #[arg(long, env = "MEDSERVE_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Largest request body accepted, in KiB (no route reads one); larger answer 413.
    #[arg(long, env = "MEDSERVE_MAX_BODY_KB", default_value_t = 64)]
    pub max_body_kb: u64,
    /// Decode/transform jobs that may wait for a CPU worker; more answer 503 with Retry-After.
    #[arg(long, env = "MEDSERVE_MAX_QUEUE", default_value_t = 1024)]
    pub max_queue: usize,
    /// After a batch of a plan is served, warm the plan's next batch in the background: at
    /// most this many at once, skipped while CPU jobs are queued; 0 turns it off.
    #[arg(long, env = "MEDSERVE_PREFETCH_BATCHES", default_value_t = 1)]
    pub prefetch_batches: usize,
    /// Decode/transform jobs run at once; 0 = one per CPU core.
    #[arg(long, env = "MEDSERVE_CPU_WORKERS", default_value_t = 0)]
    pub cpu_workers: usize,
    /// Log format: text or json.
    #[arg(long, env = "MEDSERVE_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

impl ServeArgs {
    /// The flags of `serve` with nothing given on the command line (environment still applies).
    pub fn parse_default() -> ServeArgs {
        match Cli::parse_from(["medserve", "serve"]).command {
            Some(Command::Serve(a)) => *a,
            _ => unreachable!("serve was given"),
        }
    }
}
