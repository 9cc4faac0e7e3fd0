//! From a catalog item to a transformed array: fetch the object, decode it, apply the chain,
//! with every stage cached and every CPU-heavy step run off the async runtime under the CPU
//! semaphore. Handlers call this; it knows nothing about HTTP.

use std::sync::{Arc, OnceLock};

use ndarray::ArrayD;

use crate::cache::{Entry, Mask, Tensor};
use crate::catalog::Item;
use crate::error::AppError;
use crate::imaging::nifti::{self, Volume, VolumeError};
use crate::imaging::volume::{self, LabelSelect, RangeScale};
use crate::imaging::{self, DecodeError, DecodeOptions, ResizeMode};
use crate::state::{AppState, Metrics};
use crate::store::{ObjectMeta, ObjectReader, ReadFailure, StoreError};

/// How intensities are rescaled after resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// MONAI `ScaleIntensity()`: min-max to [0, 1].
    MinMax,
    /// Values as decoded (after resizing).
    None,
}

/// The 2D pipeline of the seed: `LoadImage -> EnsureChannelFirst -> Resize -> ScaleIntensity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain2d {
    pub decode: DecodeOptions,
    /// `(H, W)`.
    pub size: (usize, usize),
    pub mode: ResizeMode,
    pub scale: Scale,
}

impl Chain2d {
    /// Canonical text: the cache key's transform part, the ETag's input and the log label.
    pub fn canonical(&self) -> String {
        let scale = match self.scale {
            Scale::MinMax => "minmax",
            Scale::None => "none",
        };
        format!(
            "{}|resize({},{},{})|scale({scale})",
            self.decode.canonical(),
            self.size.0,
            self.size.1,
            self.mode.name(2)
        )
    }

    /// Applies resize and scale to a decoded `(C, H, W)` array. Pure.
    pub fn apply(&self, decoded: &ArrayD<f32>) -> ArrayD<f32> {
        let mut out = imaging::resize::resize(decoded, &[self.size.0, self.size.1], self.mode);
        if self.scale == Scale::MinMax {
            imaging::intensity::scale_minmax(&mut out);
        }
        out
    }
}

/// Runs CPU-heavy work on the blocking pool, at most `cpu` jobs at a time. Jobs that find
/// every worker busy wait in a queue of at most `limits.max_queue`; past that they are
/// refused with 503 + Retry-After at once, instead of piling up until the request timeout.
pub async fn cpu_job<T, F>(state: &AppState, f: F) -> Result<T, AppError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let _permit = cpu_permit(state).await?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::Internal(format!("worker failed: {e}")))
}

/// [`cpu_job`] for a decoder reading an object as it arrives: the worker slot goes with the
/// reader, which gives it back while it waits for the store and takes it again when bytes
/// arrive, so a slow store holds blocking threads but never every CPU worker.
pub async fn cpu_stream_job<T, F>(
    state: &AppState,
    mut reader: ObjectReader,
    f: F,
) -> Result<T, AppError>
where
    T: Send + 'static,
    F: FnOnce(ObjectReader) -> T + Send + 'static,
{
    let permit = cpu_permit(state).await?;
    reader.set_wait_guard(Box::new(CpuSlot {
        cpu: state.cpu.clone(),
        permit: Some(permit),
        handle: tokio::runtime::Handle::current(),
        metrics: state.metrics.clone(),
    }));
    tokio::task::spawn_blocking(move || f(reader))
        .await
        .map_err(|e| AppError::Internal(format!("worker failed: {e}")))
}

/// A CPU worker slot held by a blocking reader.
struct CpuSlot {
    cpu: Arc<tokio::sync::Semaphore>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    handle: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
}

impl crate::store::WaitGuard for CpuSlot {
    fn waiting(&mut self) {
        if self.permit.take().is_some() {
            Metrics::inc(&self.metrics.store_waits);
        }
    }

    fn resumed(&mut self) {
        // Closed only at shutdown; the decode then finishes without a slot.
        self.permit = self.handle.block_on(self.cpu.clone().acquire_owned()).ok();
    }
}

/// A CPU worker slot: at once when one is free, else after waiting in a queue of at most
/// `--max-queue` jobs (503 past it).
async fn cpu_permit(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, AppError> {
    use std::sync::atomic::Ordering;
    use tokio::sync::TryAcquireError;
    let closed = || AppError::Busy("shutting down".into());
    match state.cpu.clone().try_acquire_owned() {
        Ok(p) => Ok(p),
        Err(TryAcquireError::Closed) => Err(closed()),
        Err(TryAcquireError::NoPermits) => {
            struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
            impl Drop for Waiting<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::Relaxed);
                }
            }
            let before = state.queued.fetch_add(1, Ordering::Relaxed);
            let _waiting = Waiting(&state.queued);
            if before >= state.limits.max_queue {
                return Err(AppError::Busy(format!(
                    "every CPU worker is busy and {before} jobs are already waiting (--max-queue {})",
                    state.limits.max_queue
                )));
            }
            state
                .cpu
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| closed())
        }
    }
}

fn decode_error(key: &str, e: DecodeError) -> AppError {
    match e {
        DecodeError::TooLarge { .. } => AppError::TooLarge {
            key: key.into(),
            message: e.to_string(),
        },
        _ => AppError::Undecodable {
            key: key.into(),
            message: e.to_string(),
        },
    }
}

fn object_id(item: &Item) -> String {
    format!("{}@{}", item.image.key, item.image.version)
}

/// The item's image decoded with `opts`, from cache or from the store.
pub async fn decoded(
    state: &AppState,
    item: &Item,
    opts: DecodeOptions,
) -> Result<Arc<Tensor>, AppError> {
    let key = format!("{}|{}", object_id(item), opts.canonical());
    let object_key = item.image.key.clone();
    state
        .cache
        .get_or_compute(key, async {
            let t = std::time::Instant::now();
            let (_, bytes) = state
                .store
                .get(&object_key, state.limits.max_object_bytes)
                .await?;
            Metrics::time(&state.metrics.fetch_us, t);
            Metrics::inc(&state.metrics.storage_gets);
            state
                .metrics
                .storage_get_bytes
                .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let k = object_key.clone();
            let t = std::time::Instant::now();
            let d = cpu_job(state, move || imaging::decode::decode(&bytes, &opts)).await?;
            Metrics::time(&state.metrics.decode_us, t);
            Metrics::inc(&state.metrics.decodes);
            let d = d.map_err(|e| decode_error(&k, e))?;
            Ok(Tensor {
                info: Some(d.info),
                data: d.data.into_dyn(),
            })
        })
        .await
}

/// The item's image after the whole 2D chain, from cache or computed.
pub async fn transformed(
    state: &AppState,
    item: &Item,
    chain: Chain2d,
) -> Result<Arc<Tensor>, AppError> {
    let key = format!("{}|{}", object_id(item), chain.canonical());
    state
        .cache
        .get_or_compute(key, async {
            let src = decoded(state, item, chain.decode).await?;
            let info = src.info.clone();
            let t = std::time::Instant::now();
            let out = cpu_job(state, move || chain.apply(&src.data)).await?;
            Metrics::time(&state.metrics.transform_us, t);
            Metrics::inc(&state.metrics.transforms);
            Ok(Tensor { info, data: out })
        })
        .await
}

/// A value range `(low, high)`, when there is one (an all-NaN channel has none).
pub type Range = Option<(f64, f64)>;

/// A decoded volume as cached: voxels in their stored type, plus statistics computed the
/// first time someone needs them.
#[derive(Debug)]
pub struct DecodedVolume {
    pub volume: Volume,
    range: OnceLock<Range>,
    /// Per channel: 1st..99th percentile of all voxels, 0.5th..99.5th of non-zero voxels.
    windows: OnceLock<Vec<(Range, Range)>>,
    counts: OnceLock<Result<Vec<(u8, u64)>, String>>,
}

impl Entry for DecodedVolume {
    fn bytes(&self) -> usize {
        self.volume.voxels.byte_len()
    }
}

impl DecodedVolume {
    fn new(volume: Volume) -> Self {
        DecodedVolume {
            volume,
            range: OnceLock::new(),
            windows: OnceLock::new(),
            counts: OnceLock::new(),
        }
    }

    /// Smallest and largest value after scaling (computed once; call from a CPU job).
    pub fn range(&self) -> Range {
        *self
            .range
            .get_or_init(|| volume::intensity_range(&self.volume))
    }

    /// `(auto, mri)` display windows of a channel (computed once; call from a CPU job).
    pub fn windows(&self, channel: usize) -> (Range, Range) {
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

    /// Voxels per label value (computed once; call from a CPU job).
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

fn volume_error(key: &str, e: VolumeError) -> AppError {
    match e {
        VolumeError::TooLarge(message) => AppError::TooLarge {
            key: key.into(),
            message,
        },
        e => AppError::Undecodable {
            key: key.into(),
            message: e.to_string(),
        },
    }
}

fn meta_id(o: &ObjectMeta) -> String {
    format!("{}@{}", o.key, o.version)
}

/// A NIfTI object decoded, from cache or from the store. The object is streamed into the
/// decoder (inflating while it downloads), never held whole in its compressed form.
pub async fn volume(state: &AppState, obj: &ObjectMeta) -> Result<Arc<DecodedVolume>, AppError> {
    let key = format!("{}|nifti", meta_id(obj));
    let object_key = obj.key.clone();
    state
        .cache
        .get_or_compute(key, async {
            let t = std::time::Instant::now();
            let (_, reader) = state
                .store
                .open(&object_key, state.limits.max_object_bytes)
                .await?;
            Metrics::time(&state.metrics.fetch_us, t);
            Metrics::inc(&state.metrics.storage_gets);
            let failure = Arc::new(std::sync::Mutex::new(None));
            let reader: ObjectReader = Box::new(Watched {
                inner: reader,
                failure: failure.clone(),
                metrics: state.metrics.clone(),
            });
            let limits = state.limits.volume();
            let t = std::time::Instant::now();
            let d =
                cpu_stream_job(state, reader, move |r| nifti::decode_reader(r, &limits)).await?;
            Metrics::time(&state.metrics.decode_us, t);
            Metrics::inc(&state.metrics.decodes);
            let v = d.map_err(|e| {
                // A store that failed mid-stream is an outage (or an oversized object), not
                // a corrupt file.
                match failure.lock().ok().and_then(|mut f| f.take()) {
                    Some(store_error) => AppError::from(store_error),
                    None => volume_error(&object_key, e),
                }
            })?;
            Ok(DecodedVolume::new(v))
        })
        .await
}

/// An object reader that counts the bytes it delivers and remembers a store failure.
struct Watched {
    inner: ObjectReader,
    failure: Arc<std::sync::Mutex<Option<StoreError>>>,
    metrics: Arc<Metrics>,
}

impl crate::store::ObjectRead for Watched {
    fn set_wait_guard(&mut self, guard: Box<dyn crate::store::WaitGuard>) {
        self.inner.set_wait_guard(guard);
    }
}

impl std::io::Read for Watched {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.metrics
                    .storage_get_bytes
                    .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => {
                if let (Some(f), Ok(mut slot)) = (ReadFailure::find(&e), self.failure.lock()) {
                    *slot = Some(f);
                }
                Err(e)
            }
        }
    }
}

/// The item's image volume and, when asked for and present, its mask, decoded; a mask on a
/// different grid than its image is a 422 naming both.
pub async fn volume_pair(
    state: &AppState,
    item: &Item,
    with_label: bool,
) -> Result<(Arc<DecodedVolume>, Option<Arc<DecodedVolume>>), AppError> {
    match (&item.label, with_label) {
        (Some(l), true) => {
            let (img, lab) = tokio::try_join!(volume(state, &item.image), volume(state, l))?;
            check_grid(&item.image.key, &img, &l.key, &lab)?;
            Ok((img, Some(lab)))
        }
        _ => Ok((volume(state, &item.image).await?, None)),
    }
}

fn check_grid(
    image_key: &str,
    img: &DecodedVolume,
    label_key: &str,
    lab: &DecodedVolume,
) -> Result<(), AppError> {
    let (a, b) = (&img.volume.header, &lab.volume.header);
    if a.spatial != b.spatial || b.channels != 1 {
        let dims = |h: &nifti::Header| {
            let [x, y, z] = h.spatial;
            format!("{x}x{y}x{z}x{}", h.channels)
        };
        return Err(AppError::Undecodable {
            key: label_key.into(),
            message: format!(
                "the mask's grid {} does not match the image '{image_key}' grid {} (a mask needs the image's X, Y, Z and one channel)",
                dims(b),
                dims(a)
            ),
        });
    }
    Ok(())
}

/// The image part of the 3D chain: `EnsureChannelFirst -> Resize -> ScaleIntensityRange`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chain3d {
    /// `None` keeps the native grid.
    pub size: Option<[usize; 3]>,
    pub mode: ResizeMode,
    pub scale: Option<RangeScale>,
}

impl Chain3d {
    /// Canonical text: cache key, ETag input, log label.
    pub fn canonical(&self) -> String {
        let size = self
            .size
            .map_or("native".to_string(), |[x, y, z]| format!("{x},{y},{z}"));
        let scale = self.scale.map_or("none".to_string(), |s| s.canonical());
        format!("resize3d({size},{})|scale({scale})", self.mode.name(3))
    }

    /// Applies the chain to a decoded volume. Pure.
    pub fn apply(&self, v: &Volume) -> ArrayD<f32> {
        let mut out = volume::image_f32(v, self.size, self.mode);
        if let Some(s) = self.scale {
            s.apply(&mut out);
        }
        out
    }
}

/// The image volume after the 3D chain, from cache or computed.
pub async fn volume_image(
    state: &AppState,
    item: &Item,
    chain: Chain3d,
) -> Result<Arc<Tensor>, AppError> {
    let key = format!("{}|{}", meta_id(&item.image), chain.canonical());
    state
        .cache
        .get_or_compute(key, async {
            let src = volume(state, &item.image).await?;
            let t = std::time::Instant::now();
            let out = cpu_job(state, move || chain.apply(&src.volume)).await?;
            Metrics::time(&state.metrics.transform_us, t);
            Metrics::inc(&state.metrics.transforms);
            Ok(Tensor {
                info: None,
                data: out,
            })
        })
        .await
}

/// The item's mask resized by nearest neighbour to `size` and selected, from cache or computed.
pub async fn volume_label(
    state: &AppState,
    item: &Item,
    size: Option<[usize; 3]>,
    select: &LabelSelect,
) -> Result<Arc<Mask>, AppError> {
    let Some(l) = &item.label else {
        return Err(missing_label(item));
    };
    let canonical = format!(
        "mask(resize3d({},nearest),{})",
        size.map_or("native".to_string(), |[x, y, z]| format!("{x},{y},{z}")),
        select.canonical()
    );
    let key = format!("{}|{canonical}", meta_id(l));
    let select = select.clone();
    let label_key = l.key.clone();
    state
        .cache
        .get_or_compute(key, async {
            let (_, lab) = volume_pair(state, item, true).await?;
            let lab = lab.ok_or_else(|| missing_label(item))?;
            let t = std::time::Instant::now();
            let out = cpu_job(state, move || {
                volume::label_u8(&lab.volume)
                    .map(|m| volume::label_resized(m.view().into_dyn(), size, &select))
            })
            .await?;
            Metrics::time(&state.metrics.transform_us, t);
            Metrics::inc(&state.metrics.transforms);
            out.map(Mask).map_err(|e| AppError::Undecodable {
                key: label_key,
                message: e.to_string(),
            })
        })
        .await
}

/// 404 for a mask the item does not have.
pub fn missing_label(item: &Item) -> AppError {
    AppError::NotFound {
        what: "label",
        name: item.id.clone(),
        available: vec![],
        hint: Some(format!(
            "item '{}' has no mask; use part=image (only training items of a segmentation set have labels)",
            item.id
        )),
    }
}
