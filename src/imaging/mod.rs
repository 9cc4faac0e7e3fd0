//! Pure image processing: decode, transform, encode. No I/O, no async runtime, no HTTP types:
//! every function takes bytes or arrays and returns arrays or bytes, so it can be tested and
//! benchmarked on its own and run on any thread.
//!
//! 2D arrays are `(C, H, W)` row-major float32, as MONAI holds them after EnsureChannelFirst
//! except that MONAI's PNG reader gives `(C, W, H)`; see [`decode`].

pub mod decode;
pub mod encode;
pub mod fingerprint;
pub mod gzindex;
pub mod gzip;
pub mod histogram;
pub mod intensity;
pub mod montage;
pub mod nifti;
pub mod patch;
pub mod resize;
pub mod spatial;
pub mod stats;
pub mod volume;

pub use decode::{ChannelMode, DecodeError, DecodeOptions, Decoded, ImageInfo, PaletteMode};
pub use resize::ResizeMode;
