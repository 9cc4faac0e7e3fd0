//! The bounds that keep large or hostile inputs and idle connections from exhausting memory,
//! CPU or descriptors. Their defaults are the defaults of the flags in `cli.rs`, for tests and
//! embedders that build a state without parsing flags.

use std::time::Duration;

/// Limits that protect the server from large or hostile inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest object fetched from the store.
    pub max_object_bytes: u64,
    /// Largest 2D image decoded, in pixels.
    pub max_pixels: u64,
    /// Largest volume decoded, in voxels over all channels.
    pub max_voxels: u64,
    /// Largest decompressed NIfTI file.
    pub max_volume_bytes: u64,
    /// Largest output side a 2D image's `size` may ask for.
    pub max_output_side: usize,
    /// Largest output side a volume's `size` may ask for.
    pub max_volume_side: usize,
    /// Largest array (as sent) in one volume response.
    pub max_output_bytes: u64,
    /// Largest `limit` of an item listing page.
    pub max_page: usize,
    /// CPU jobs allowed to wait for a worker before new ones are refused with 503.
    pub max_queue: usize,
    /// Next batches warmed in the background at once after a batch is served (0: none).
    pub prefetch_batches: usize,
}

impl Limits {
    /// The volume decoder's limits.
    pub fn volume(&self) -> crate::imaging::nifti::VolumeLimits {
        crate::imaging::nifti::VolumeLimits {
            max_voxels: self.max_voxels,
            max_bytes: self.max_volume_bytes,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_object_bytes: 1024 << 20,
            max_pixels: 100_000_000,
            max_voxels: 536_870_912,
            max_volume_bytes: 2048 << 20,
            max_output_side: 4096,
            max_volume_side: 256,
            max_output_bytes: 1024 << 20,
            max_page: 1000,
            max_queue: 1024,
            prefetch_batches: 1,
        }
    }
}

/// How long connections may wait and how many may be open: what keeps a client from holding
/// descriptors and memory with connections that send nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Time to send complete request headers (HTTP/1), counted from when the server starts
    /// waiting for the request; also bounds an HTTP/1 connection's wait between requests.
    pub header_read_timeout: Duration,
    /// Time a connection may have no request in flight before it is closed (gracefully: a
    /// request whose headers are arriving is still answered).
    pub idle_timeout: Duration,
    /// Connections open at once; past it the server stops accepting until one closes.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_read_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(10),
            max_connections: 4096,
        }
    }
}
