//! In-memory cache of decoded and transformed data (moka), weighted by bytes, and the typed
//! keys that name its entries and the HTTP ETags derived from them.
//!
//! A [`CacheKey`] is `(stage, objects at their versions, canonical transform)`, built from
//! [`Canonical`] values, never from `Debug` output, so renaming a Rust item never changes a
//! key or an ETag and a changed object never serves an old entry. A [`Key<T>`] adds the type
//! of the entry: [`ArrayCache::get_or_compute`] hands back an `Arc<T>` for a `Key<T>`, so
//! asking for the wrong kind of entry is a compile error. `get_or_compute` is single-flight:
//! concurrent requests for a missing key run the computation once and all receive its result
//! (moka's `try_get_with`). One cache holds every kind of entry, so one byte budget covers
//! them all. This module knows nothing of HTTP.

pub mod disk;

use std::marker::PhantomData;
use std::sync::{Arc, Weak};

use ndarray::ArrayD;

use crate::catalog::Snapshot;
use crate::imaging::ImageInfo;
use crate::imaging::encode::Encoded;
use crate::imaging::gzindex::GzIndex;
use crate::imaging::patch::FgBgIndices;
use crate::imaging::stats::{DecodedVolume, VolumeFacts};
use crate::store::ObjectMeta;

/// A value's stable text for keys and ETags: equal for equal meaning, written by hand so that
/// it only changes when the meaning does.
pub trait Canonical {
    /// Appends the canonical text to `out`.
    fn write_canonical(&self, out: &mut String);

    /// The canonical text.
    fn canonical(&self) -> String {
        let mut s = String::new();
        self.write_canonical(&mut s);
        s
    }
}

impl<T: Canonical> Canonical for Option<T> {
    fn write_canonical(&self, out: &mut String) {
        match self {
            Some(v) => v.write_canonical(out),
            None => out.push('-'),
        }
    }
}

impl Canonical for &str {
    fn write_canonical(&self, out: &mut String) {
        out.push_str(self);
    }
}

/// Part of every ETag: changed whenever an encoder writes other bytes for the same result (the
/// PNG deflate settings), so that an ETag a client holds never confirms bytes it does not
/// have. 2: PNGs of 128x128 pixels or more at zlib level 3 (was fdeflate).
pub const BODY_REVISION: &str = "body-revision-2";

/// The stages whose results are cached (or, for responses, whose ETags are derived).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// A 2D image decoded.
    Decoded,
    /// A 2D image through its chain.
    Image,
    /// A NIfTI object decoded (voxels in their stored type).
    Volume,
    /// A volume through the 3D chain.
    VolumeImage,
    /// A mask resized and selected.
    Mask,
    /// The foreground/background voxel lists patches are sampled from.
    Indices,
    /// A rendered slice, encoded.
    Slice,
    /// A gzip object's seek index.
    GzIndex,
    /// A volume's header and display windows, without its voxels.
    Facts,
    /// A document computed from the catalog's snapshot alone (a listing page).
    Document,
    /// A whole response body (ETag only; not cached).
    Response,
    /// An array read from an exported shard (`medserve export`), or its encoded body.
    Member,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Decoded => "decoded",
            Stage::Image => "image",
            Stage::Volume => "volume",
            Stage::VolumeImage => "volume-image",
            Stage::Mask => "mask",
            Stage::Indices => "fg-bg-indices",
            Stage::Slice => "slice",
            Stage::GzIndex => "gzip-index",
            Stage::Facts => "volume-facts",
            Stage::Document => "document",
            Stage::Response => "response",
            Stage::Member => "member",
        }
    }
}

/// What names one result: the stage, every object it is computed from at the version the
/// store listed, and the canonical text of the transform.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    stage: Stage,
    /// `(key, version)` of each source object, image first.
    objects: Vec<(String, String)>,
    transform: String,
}

impl CacheKey {
    /// The key of `transform` at `stage` over `objects`.
    pub fn new<'a>(
        stage: Stage,
        objects: impl IntoIterator<Item = &'a ObjectMeta>,
        transform: &impl Canonical,
    ) -> Self {
        CacheKey {
            stage,
            objects: objects
                .into_iter()
                .map(|o| {
                    // A pinned S3 version (`?version_id=`) names itself as well as its ETag.
                    let version = match &o.version_id {
                        Some(id) => format!("{}#{id}", o.version),
                        None => o.version.clone(),
                    };
                    (o.key.clone(), version)
                })
                .collect(),
            transform: transform.canonical(),
        }
    }

    /// A strong HTTP ETag for this result sent as `format`, plus our version so a new release
    /// never reuses an old tag.
    pub fn etag(&self, format: &str) -> String {
        // FNV-1a of `stable_text() + U+001F + format + U+001F + BODY_REVISION`, fed part by part: every warm request
        // computes its ETag, and building the text first was an allocation and a copy each.
        let mut h = Fnv(FNV_OFFSET);
        h.write(env!("CARGO_PKG_VERSION").as_bytes());
        let mut part = |p: &str| {
            h.write(b"\x1f");
            h.write(p.as_bytes());
        };
        part(self.stage.name());
        for (k, v) in &self.objects {
            part(k);
            part(v);
        }
        part(&self.transform);
        part(format);
        part(BODY_REVISION);
        format!("\"{:016x}\"", h.0)
    }

    /// The key of this result encoded as `format`: a cached response body. Its response's
    /// ETag stays this key's [`etag`](Self::etag)`(format)`.
    pub fn encoded(&self, format: &str) -> Key<Encoded> {
        let mut key = self.clone();
        key.transform.push_str("|encode(");
        key.transform.push_str(format);
        key.transform.push(')');
        Key {
            key,
            _entry: PhantomData,
        }
    }

    /// The key as one text: medserve's version, the stage, each object's key and version, the
    /// transform, separated by U+001F. What the ETag hashes, and what names disk entries.
    pub fn stable_text(&self) -> String {
        let mut text = String::from(env!("CARGO_PKG_VERSION"));
        let mut part = |p: &str| {
            text.push('\u{1f}');
            text.push_str(p);
        };
        part(self.stage.name());
        for (k, v) in &self.objects {
            part(k);
            part(v);
        }
        part(&self.transform);
        text
    }

    /// The label of this key in logs.
    pub fn transform(&self) -> &str {
        &self.transform
    }
}

/// [`fnv1a`](crate::catalog::ids::fnv1a), fed in parts.
struct Fnv(u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A [`CacheKey`] for entries of type `T`.
#[derive(Debug)]
pub struct Key<T> {
    key: CacheKey,
    _entry: PhantomData<fn() -> T>,
}

impl<T: Cached> Key<T> {
    /// The typed key of `transform` at `stage` over `objects`.
    pub fn new<'a>(
        stage: Stage,
        objects: impl IntoIterator<Item = &'a ObjectMeta>,
        transform: &impl Canonical,
    ) -> Self {
        Key {
            key: CacheKey::new(stage, objects, transform),
            _entry: PhantomData,
        }
    }

    /// The untyped key (for the ETag).
    pub fn untyped(&self) -> &CacheKey {
        &self.key
    }
}

impl Key<Document> {
    /// The key of `document` computed from `snapshot` alone.
    ///
    /// A snapshot has no version of its own (a re-listing builds a new one, equal or not), so
    /// the key names it by its address. That is sound because every [`Document`] holds its
    /// snapshot weakly: while an entry under this key lives, the snapshot's allocation cannot
    /// be freed, so no other snapshot can be at that address. An entry may outlive its snapshot
    /// (until the LRU drops it) but no later snapshot can ever look it up.
    pub fn of_snapshot(snapshot: &Arc<Snapshot>, document: &impl Canonical) -> Self {
        struct Of<'a, C>(usize, &'a C);
        impl<C: Canonical> Canonical for Of<'_, C> {
            fn write_canonical(&self, out: &mut String) {
                use std::fmt::Write;
                let _ = write!(out, "snapshot@{:x}|", self.0);
                self.1.write_canonical(out);
            }
        }
        let at = Arc::as_ptr(snapshot) as usize;
        Key::new(Stage::Document, [], &Of(at, document))
    }
}

/// A body computed from one catalog snapshot alone (a JSON listing page) and its ETag.
#[derive(Debug)]
pub struct Document {
    pub body: bytes::Bytes,
    pub etag: String,
    /// Held weakly: keeps the snapshot's address from being reused while this entry lives
    /// (see [`Key::of_snapshot`]) without keeping a replaced catalog in memory.
    snapshot: Weak<Snapshot>,
}

impl Document {
    /// `body` (with its ETag) as computed from `snapshot`.
    pub fn new(snapshot: &Arc<Snapshot>, body: bytes::Bytes, etag: String) -> Self {
        Document {
            body,
            etag,
            snapshot: Arc::downgrade(snapshot),
        }
    }

    /// Whether this document was computed from `snapshot`.
    pub fn is_of(&self, snapshot: &Arc<Snapshot>) -> bool {
        std::ptr::eq(self.snapshot.as_ptr(), Arc::as_ptr(snapshot))
    }
}

/// A cached float array and, for decoded images, what the file's header said.
#[derive(Debug)]
pub struct Tensor {
    pub info: Option<ImageInfo>,
    pub data: ArrayD<f32>,
}

/// A cached mask.
#[derive(Debug)]
pub struct Mask(pub ArrayD<u8>);

/// Every kind of entry the cache holds.
#[derive(Debug, Clone)]
pub enum Entry {
    Tensor(Arc<Tensor>),
    Mask(Arc<Mask>),
    Volume(Arc<DecodedVolume>),
    Encoded(Arc<Encoded>),
    Indices(Arc<Indices>),
    GzIndex(Arc<GzIndex>),
    Document(Arc<Document>),
    VolumeFacts(Arc<VolumeFacts>),
}

impl Entry {
    /// Approximate memory held, in bytes.
    fn bytes(&self) -> usize {
        match self {
            Entry::Tensor(t) => t.data.len() * std::mem::size_of::<f32>(),
            Entry::Mask(m) => m.0.len(),
            Entry::Volume(v) => v.volume.voxels.byte_len(),
            Entry::Encoded(e) => e.body.len(),
            Entry::Indices(i) => i.byte_len(),
            Entry::GzIndex(i) => i.byte_len(),
            Entry::Document(d) => d.body.len() + d.etag.len(),
            Entry::VolumeFacts(f) => f.byte_len(),
        }
    }
}

/// A type the cache can hold: one variant of [`Entry`].
pub trait Cached: Sized + Send + Sync + 'static {
    /// The variant's tag, part of the moka key, so entries of two types never share a key.
    const KIND: u8;
    fn wrap(v: Arc<Self>) -> Entry;
    fn unwrap(e: Entry) -> Option<Arc<Self>>;
}

macro_rules! cached {
    ($($t:ident = $kind:literal),*) => {$(
        impl Cached for $t {
            const KIND: u8 = $kind;
            fn wrap(v: Arc<Self>) -> Entry {
                Entry::$t(v)
            }
            fn unwrap(e: Entry) -> Option<Arc<Self>> {
                match e {
                    Entry::$t(v) => Some(v),
                    _ => None,
                }
            }
        }
    )*};
}

// The variant names the type: `Volume` is the decoded volume, `Indices` a label's
// foreground/background lists.
type Volume = DecodedVolume;
type Indices = FgBgIndices;
cached!(
    Tensor = 0,
    Mask = 1,
    Volume = 2,
    Encoded = 3,
    Indices = 4,
    GzIndex = 5,
    Document = 6,
    VolumeFacts = 7
);

/// moka weighs in u32, so entries are weighed in KiB (bytes would overflow at 4 GiB).
fn weight_kib(e: &Entry) -> u32 {
    u32::try_from((e.bytes() + 512).div_ceil(1024)).unwrap_or(u32::MAX)
}

/// The cache.
#[derive(Clone)]
pub struct ArrayCache {
    inner: moka::future::Cache<(u8, CacheKey), Entry>,
}

impl std::fmt::Debug for ArrayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrayCache")
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

/// An entry under a key of its type was of another type: impossible, since the type's tag is
/// part of the key; reported rather than panicking.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("cache entry of an unexpected type")]
pub struct KindMismatch;

impl ArrayCache {
    /// A cache holding at most `capacity_bytes`.
    pub fn new(capacity_bytes: u64) -> Self {
        let inner = moka::future::Cache::builder()
            .max_capacity((capacity_bytes / 1024).max(1))
            .weigher(|_k: &(u8, CacheKey), v: &Entry| weight_kib(v))
            .build();
        ArrayCache { inner }
    }

    /// The cached value for `key`, computing it (once, however many ask at the same time) when
    /// missing. Errors are not cached.
    pub async fn get_or_compute<T, E, F>(&self, key: Key<T>, compute: F) -> Result<Arc<T>, E>
    where
        T: Cached,
        E: Clone + From<KindMismatch> + Send + Sync + 'static,
        F: std::future::Future<Output = Result<T, E>>,
    {
        let entry = self
            .inner
            .try_get_with((T::KIND, key.key), async move {
                compute.await.map(|v| T::wrap(Arc::new(v)))
            })
            .await
            .map_err(|e: Arc<E>| (*e).clone())?;
        T::unwrap(entry).ok_or_else(|| E::from(KindMismatch))
    }

    /// The entry under `key`, if held (nothing is computed).
    pub async fn get<T: Cached>(&self, key: &Key<T>) -> Option<Arc<T>> {
        T::unwrap(self.inner.get(&(T::KIND, key.key.clone())).await?)
    }

    /// Holds `value` under `key`.
    pub async fn insert<T: Cached>(&self, key: Key<T>, value: Arc<T>) {
        self.inner.insert((T::KIND, key.key), T::wrap(value)).await;
    }

    /// [`get_or_compute`](Self::get_or_compute) for hot paths: `make` builds the computation
    /// only on a miss, and it runs boxed. A future holds everything it may await inline, so
    /// a computation that awaits other cached stages (a body over an array over a decoded
    /// image) made every caller's future, hits included, about 100 KB, moved by `memcpy`
    /// on each request; this one stays small whatever `make` awaits.
    pub async fn get_or_compute_with<T, E, F, M>(&self, key: Key<T>, make: M) -> Result<Arc<T>, E>
    where
        T: Cached,
        E: Clone + From<KindMismatch> + Send + Sync + 'static,
        F: std::future::Future<Output = Result<T, E>>,
        M: FnOnce() -> F,
    {
        let entry = self
            .inner
            .try_get_with((T::KIND, key.key), async move {
                Box::pin(make()).await.map(|v| T::wrap(Arc::new(v)))
            })
            .await
            .map_err(|e: Arc<E>| (*e).clone())?;
        T::unwrap(entry).ok_or_else(|| E::from(KindMismatch))
    }

    /// Drops every entry (what a restart would do to memory; the disk tier keeps its own).
    pub async fn clear(&self) {
        self.inner.invalidate_all();
        self.inner.run_pending_tasks().await;
    }

    /// Number of entries (after pending maintenance).
    pub async fn entry_count(&self) -> u64 {
        self.inner.run_pending_tasks().await;
        self.inner.entry_count()
    }

    /// KiB held (after pending maintenance).
    pub async fn weighted_kib(&self) -> u64 {
        self.inner.run_pending_tasks().await;
        self.inner.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ids::fnv1a;

    struct T(&'static str);
    impl Canonical for T {
        fn write_canonical(&self, out: &mut String) {
            out.push_str(self.0);
        }
    }

    fn obj(key: &str, version: &str) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size: 1,
            version: version.into(),
            version_id: None,
        }
    }

    #[test]
    fn etags_follow_every_part_of_the_key() {
        let a = obj("a.png", "1");
        let base = CacheKey::new(Stage::Image, [&a], &T("x")).etag("png");
        assert_eq!(base, CacheKey::new(Stage::Image, [&a], &T("x")).etag("png"));
        for other in [
            CacheKey::new(Stage::Image, [&a], &T("y")).etag("png"),
            CacheKey::new(Stage::Image, [&a], &T("x")).etag("npy"),
            CacheKey::new(Stage::Slice, [&a], &T("x")).etag("png"),
            CacheKey::new(Stage::Image, [&obj("a.png", "2")], &T("x")).etag("png"),
            CacheKey::new(Stage::Image, [&a, &a], &T("x")).etag("png"),
        ] {
            assert_ne!(base, other);
        }
        assert!(base.starts_with('"') && base.ends_with('"'));
    }

    #[tokio::test]
    async fn entries_of_two_types_never_share_a_key() {
        let cache = ArrayCache::new(1 << 20);
        let a = obj("a", "1");
        let t: Arc<Tensor> = cache
            .get_or_compute::<_, KindMismatch, _>(Key::new(Stage::Image, [&a], &T("x")), async {
                Ok(Tensor {
                    info: None,
                    data: ArrayD::zeros(vec![2]),
                })
            })
            .await
            .unwrap();
        assert_eq!(t.data.len(), 2);
        let m: Arc<Mask> = cache
            .get_or_compute::<_, KindMismatch, _>(Key::new(Stage::Image, [&a], &T("x")), async {
                Ok(Mask(ArrayD::zeros(vec![3])))
            })
            .await
            .unwrap();
        assert_eq!(m.0.len(), 3);
    }

    #[tokio::test]
    async fn a_hit_never_builds_the_computation() {
        let cache = ArrayCache::new(1 << 20);
        let a = obj("a", "1");
        let key = || Key::<Mask>::new(Stage::Mask, [&a], &T("x"));
        let first = cache
            .get_or_compute_with::<_, KindMismatch, _, _>(key(), || async {
                Ok(Mask(ArrayD::zeros(vec![3])))
            })
            .await
            .unwrap();
        let again = cache
            .get_or_compute_with::<_, KindMismatch, _, _>(key(), || -> std::future::Ready<_> {
                panic!("computed again")
            })
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again));
    }

    #[test]
    fn documents_are_named_by_their_snapshot() {
        let (a, b) = (Arc::new(Snapshot::default()), Arc::new(Snapshot::default()));
        let key = |s: &Arc<Snapshot>| Key::of_snapshot(s, &T("items|x")).key;
        assert_eq!(key(&a), key(&a));
        assert_ne!(key(&a), key(&b));
        let doc = Document::new(&a, bytes::Bytes::from_static(b"{}"), "\"e\"".into());
        assert!(doc.is_of(&a) && !doc.is_of(&b));
    }

    #[test]
    fn etags_hash_the_stable_text_and_the_format() {
        let (a, b) = (obj("a.png", "1"), obj("m.nii.gz", "7"));
        let key = CacheKey::new(Stage::Image, [&a, &b], &T("resize(64,64)"));
        let text = format!("{}\u{1f}npy\u{1f}{BODY_REVISION}", key.stable_text());
        assert_eq!(
            key.etag("npy"),
            format!("\"{:016x}\"", fnv1a(text.as_bytes()))
        );
        // A body's key names another entry; its response keeps the array key's ETag.
        assert_ne!(key.encoded("png").key, key.encoded("npy").key);
        assert_ne!(key.encoded("png").key, key);
    }
}
