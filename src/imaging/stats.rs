//! A decoded volume as the cache holds it: voxels in their stored type, plus statistics
//! (value range, display windows, label counts) computed the first time someone needs them.
//! Pure: the statistics run on the caller's thread (call them from a CPU job).

use std::sync::OnceLock;

use super::nifti::{Header, Volume};
use super::volume;

/// A value range `(low, high)`, when there is one (an all-NaN channel has none).
pub type ValueRange = Option<(f64, f64)>;

/// What is known of a volume without its voxels: its header and, once some request computed
/// them from the whole volume, its display windows. Enough to read one plane from a byte
/// range of the stored object and window it exactly as the decoded volume would be.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VolumeFacts {
    pub header: Header,
    /// Per channel `(auto, mri)`, as [`DecodedVolume::windows`] gives them.
    pub windows: Option<Vec<(ValueRange, ValueRange)>>,
}

impl VolumeFacts {
    /// Bytes held (for the cache's weight).
    pub fn byte_len(&self) -> usize {
        std::mem::size_of::<Self>() + self.windows.as_ref().map_or(0, |w| w.len() * 40)
    }
}

/// A decoded volume and its lazily computed statistics.
#[derive(Debug)]
pub struct DecodedVolume {
    pub volume: Volume,
    range: OnceLock<ValueRange>,
    /// Per channel: 1st..99th percentile of all voxels, 0.5th..99.5th of non-zero voxels.
    windows: OnceLock<Vec<(ValueRange, ValueRange)>>,
    counts: OnceLock<Result<Vec<(u8, u64)>, String>>,
}

impl DecodedVolume {
    /// Wraps a decoded volume; nothing is computed yet.
    pub fn new(volume: Volume) -> Self {
        DecodedVolume {
            volume,
            range: OnceLock::new(),
            windows: OnceLock::new(),
            counts: OnceLock::new(),
        }
    }

    /// Smallest and largest value after scaling (computed once).
    pub fn range(&self) -> ValueRange {
        *self
            .range
            .get_or_init(|| volume::intensity_range(&self.volume))
    }

    /// `(auto, mri)` display windows of a channel (computed once).
    pub fn windows(&self, channel: usize) -> (ValueRange, ValueRange) {
        let all = self.windows.get_or_init(|| {
            (0..self.volume.header.channels)
                .map(|c| {
                    (
                        volume::percentiles(&self.volume, c, 1.0, 99.0, false),
                        volume::percentiles(&self.volume, c, 0.5, 99.5, true),
                    )
                })
                .collect()
        });
        all.get(channel).copied().unwrap_or((None, None))
    }

    /// The header and the display windows if they were computed.
    pub fn facts(&self) -> VolumeFacts {
        VolumeFacts {
            header: self.volume.header.clone(),
            windows: self.windows.get().cloned(),
        }
    }

    /// Voxels per label value (computed once).
    pub fn label_counts(&self) -> Result<Vec<(u8, u64)>, String> {
        self.counts
            .get_or_init(|| {
                volume::label_u8(&self.volume)
                    .map(|l| volume::label_counts(&l.view()))
                    .map_err(|e| e.to_string())
            })
            .clone()
    }
}
