//! Encoders for responses: 8-bit PNG for eyes; raw little-endian float32, NumPy `.npy`/`.npz`
//! and NIfTI-1 (`.nii`, `.nii.gz`) for programs. Every route turns its arrays into bytes
//! through [`encode`]: a [`Format`] and a [`Payload`] in, an [`Encoded`] body (with its
//! content type, dtype and shape) out.

use ndarray::{Array2, ArrayD, IxDyn};
use ndarray_npy::{WritableElement, WriteNpyExt};

use super::nifti::{self, OutType};
use super::volume::to_file_order;

/// Every format a response can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// 8-bit PNG for eyes.
    Png,
    /// Raw little-endian float32, C order, shape in `X-Shape`.
    F32,
    /// NumPy `.npy` v1.
    Npy,
    /// NumPy `.npz`: `image.npy` and/or `label.npy`.
    Npz,
    /// NIfTI-1, uncompressed.
    Nii,
    /// NIfTI-1, gzipped (a gzip file, not a gzip-encoded body).
    NiiGz,
}

impl Format {
    /// The `format` parameter's value (and the file extension).
    pub fn name(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::F32 => "f32",
            Format::Npy => "npy",
            Format::Npz => "npz",
            Format::Nii => "nii",
            Format::NiiGz => "nii.gz",
        }
    }

    /// Media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Png => "image/png",
            Format::F32 | Format::Nii => "application/octet-stream",
            Format::Npy => "application/x-npy",
            Format::Npz => "application/x-npz",
            // A gzip file, not a gzip-encoded body: clients keep the bytes as they are, and
            // the compression layer leaves this type alone.
            Format::NiiGz => "application/gzip",
        }
    }

    /// `(name, format)` pairs for a `format` parameter accepting `formats`.
    pub fn choices(formats: &[Format]) -> Vec<(&'static str, Format)> {
        formats.iter().map(|&f| (f.name(), f)).collect()
    }
}

/// The arrays of one response: a float image (`(C, H, W)`, `(H, W)` or `(C, X, Y, Z)`), a
/// mask, or both (only `.npz` holds both; the other formats take the image when given).
#[derive(Debug, Clone, Copy, Default)]
pub struct Payload<'a> {
    pub image: Option<&'a ArrayD<f32>>,
    pub label: Option<&'a ArrayD<u8>>,
    /// PNG of a float image: the values mapped onto 0..255 as `(lo, hi)`.
    pub png_window: (f32, f32),
    /// NIfTI: the voxel-to-world affine of the `(C, X, Y, Z)` arrays.
    pub affine: Option<[[f64; 4]; 4]>,
}

/// An encoded body and what a response says about it.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub body: bytes::Bytes,
    pub format: Format,
    /// NumPy name of the element type sent (`X-Dtype`); empty for containers.
    pub dtype: &'static str,
    /// The array's shape (`X-Shape`); empty for containers.
    pub shape: Vec<usize>,
}

/// Encodes `p` as `format`.
pub fn encode(p: Payload<'_>, format: Format) -> Result<Encoded, EncodeError> {
    let shape = p
        .image
        .map(|a| a.shape().to_vec())
        .or_else(|| p.label.map(|l| l.shape().to_vec()))
        .unwrap_or_default();
    let nothing = || EncodeError("nothing to write".into());
    let (body, dtype, shape) = match (format, p.image, p.label) {
        (Format::Npz, None, None) => return Err(nothing()),
        (Format::Npz, i, l) => (npz(i, l)?, "", vec![]),
        (Format::Png, Some(i), _) => (png_of(i, p.png_window)?, "uint8", shape),
        (Format::Png, None, Some(l)) => (png_labels_of(l)?, "uint8", shape),
        (Format::F32, Some(i), _) => (f32_le(i), "float32", shape),
        (Format::F32, None, Some(l)) => (f32_le(&l.mapv(f32::from)), "float32", shape),
        (Format::Npy, Some(i), _) => (npy(i)?, "float32", shape),
        (Format::Npy, None, Some(l)) => (npy_of(l)?, "uint8", shape),
        (Format::Nii | Format::NiiGz, i, l) => {
            let affine = p
                .affine
                .ok_or_else(|| EncodeError("NIfTI needs an affine".into()))?;
            let (data, ty, dtype) = match (i, l) {
                (Some(i), _) => (to_file_order(i), OutType::F32, "float32"),
                (None, Some(l)) => (to_file_order(l), OutType::U8, "uint8"),
                (None, None) => return Err(nothing()),
            };
            let nii = nifti::encode_nifti1(&nifti_dims(&shape), &affine, ty, &data, 2);
            let body = if format == Format::NiiGz {
                gzip(&nii)?
            } else {
                nii
            };
            (body, dtype, shape)
        }
        (_, None, None) => return Err(nothing()),
    };
    Ok(Encoded {
        body: body.into(),
        format,
        dtype,
        shape,
    })
}

/// A float image as PNG: `(C, H, W)` as it is, `(H, W)` as one gray channel.
fn png_of(a: &ArrayD<f32>, (lo, hi): (f32, f32)) -> Result<Vec<u8>, EncodeError> {
    if a.ndim() == 2 {
        let (h, w) = (a.shape()[0], a.shape()[1]);
        let gray = a
            .view()
            .into_shape_with_order(IxDyn(&[1, h, w]))
            .map_err(|e| EncodeError(e.to_string()))?;
        return png8(&gray.to_owned(), lo, hi);
    }
    png8(a, lo, hi)
}

fn png_labels_of(l: &ArrayD<u8>) -> Result<Vec<u8>, EncodeError> {
    let m = l
        .view()
        .into_dimensionality::<ndarray::Ix2>()
        .map_err(|_| EncodeError(format!("a mask PNG needs (H, W), got {:?}", l.shape())))?;
    png_labels(&m.to_owned())
}

/// NIfTI dims of a C-order `(C, X, Y, Z)` array: 3D for one channel, else channels 4th.
pub fn nifti_dims(shape: &[usize]) -> Vec<usize> {
    let mut dims = shape[1..].to_vec();
    if shape[0] > 1 {
        dims.push(shape[0]);
    }
    dims
}

/// Fast gzip: the body is made per request, and level 1 costs a fraction of level 6 for
/// float volumes whose low bits barely compress anyway.
fn gzip(data: &[u8]) -> Result<Vec<u8>, EncodeError> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 2),
        flate2::Compression::fast(),
    );
    gz.write_all(data).map_err(|e| EncodeError(e.to_string()))?;
    gz.finish().map_err(|e| EncodeError(e.to_string()))
}

/// Why an array could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("encoding failed: {0}")]
pub struct EncodeError(pub String);

/// `(C, H, W)` float32 -> 8-bit PNG, mapping `lo..hi` linearly onto `0..255` (clamped; NaN
/// is 0). C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA.
pub fn png8(a: &ArrayD<f32>, lo: f32, hi: f32) -> Result<Vec<u8>, EncodeError> {
    let shape = a.shape();
    if shape.len() != 3 {
        return Err(EncodeError(format!("PNG needs (C, H, W), got {shape:?}")));
    }
    let (c, h, w) = (shape[0], shape[1], shape[2]);
    let color = match c {
        1 => png::ColorType::Grayscale,
        2 => png::ColorType::GrayscaleAlpha,
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        _ => return Err(EncodeError(format!("PNG cannot hold {c} channels"))),
    };
    let span = window_span(lo, hi);
    let to_u8 = |v: f32| {
        let t = ((v - lo) / span).clamp(0.0, 1.0);
        if t.is_nan() {
            0
        } else {
            (t * 255.0).round() as u8
        }
    };
    let std = a.as_standard_layout();
    let planes = std.as_slice().expect("standard layout is contiguous");
    // Planar (C, H, W) -> interleaved rows.
    let mut pixels = vec![0u8; c * h * w];
    for ci in 0..c {
        let plane = &planes[ci * h * w..(ci + 1) * h * w];
        for (i, &v) in plane.iter().enumerate() {
            pixels[i * c + ci] = to_u8(v);
        }
    }
    png_bytes(w, h, color, &pixels)
}

/// `hi - lo`, or 1 when they are equal: the PNG is then MONAI's
/// `ScaleIntensityRange(lo, hi, 0, 1, clip=True)` in every case (equal ends shift by `lo`
/// instead of dividing by zero; `hi < lo` inverts).
fn window_span(lo: f32, hi: f32) -> f32 {
    if hi != lo { hi - lo } else { 1.0 }
}

/// Raw little-endian float32 in C order.
pub fn f32_le(a: &ArrayD<f32>) -> Vec<u8> {
    let std = a.as_standard_layout();
    let values = std.as_slice().expect("standard layout is contiguous");
    if cfg!(target_endian = "little") {
        // One bulk copy: the in-memory bytes already are the wire format.
        bytemuck::cast_slice::<f32, u8>(values).to_vec()
    } else {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}

/// NumPy `.npy` (version 1.0, `<f4`, C order).
pub fn npy(a: &ArrayD<f32>) -> Result<Vec<u8>, EncodeError> {
    npy_of(a)
}

/// NumPy `.npy` of any element type (`|u1` for masks).
pub fn npy_of<T: WritableElement + Clone>(a: &ArrayD<T>) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(a.len() * std::mem::size_of::<T>() + 128);
    let std = a.as_standard_layout();
    std.write_npy(&mut out)
        .map_err(|e| EncodeError(e.to_string()))?;
    Ok(out)
}

/// NumPy `.npz` (an uncompressed zip of `.npy` files, what `np.savez` writes) holding
/// `image.npy` and/or `label.npy`. HTTP compression applies on top when the client accepts it.
pub fn npz(
    image: Option<&ArrayD<f32>>,
    label: Option<&ArrayD<u8>>,
) -> Result<Vec<u8>, EncodeError> {
    let mut w = NpzBuilder::new();
    if let Some(a) = image {
        w.array("image", a)?;
    }
    if let Some(l) = label {
        w.array("label", l)?;
    }
    w.finish()
}

/// An `.npz` of named arrays of any element type, fixed-width unicode (`<U`) included (which
/// ndarray-npy's writer lacks): what `np.savez` writes, entries stored uncompressed.
pub struct NpzBuilder {
    zip: zip::ZipWriter<std::io::Cursor<Vec<u8>>>,
}

impl Default for NpzBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl NpzBuilder {
    /// An empty archive.
    pub fn new() -> Self {
        NpzBuilder {
            zip: zip::ZipWriter::new(std::io::Cursor::new(Vec::new())),
        }
    }

    fn entry(&mut self, name: &str, bytes: &[u8]) -> Result<(), EncodeError> {
        use std::io::Write;
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(bytes.len() >= u32::MAX as usize);
        self.zip
            .start_file(format!("{name}.npy"), options)
            .map_err(|e| EncodeError(e.to_string()))?;
        self.zip
            .write_all(bytes)
            .map_err(|e| EncodeError(e.to_string()))
    }

    /// Adds `name.npy` holding `a` (C order).
    pub fn array<T: WritableElement + Clone, D: ndarray::Dimension>(
        &mut self,
        name: &str,
        a: &ndarray::Array<T, D>,
    ) -> Result<(), EncodeError> {
        let mut out = Vec::with_capacity(a.len() * std::mem::size_of::<T>() + 128);
        a.as_standard_layout()
            .write_npy(&mut out)
            .map_err(|e| EncodeError(e.to_string()))?;
        self.entry(name, &out)
    }

    /// Adds `name.npy`: a 1-D array of strings as NumPy's `<U{n}` (UTF-32 code points, each
    /// string padded with zeros to the longest; at least one character wide).
    pub fn strings(&mut self, name: &str, values: &[&str]) -> Result<(), EncodeError> {
        let width = values
            .iter()
            .map(|v| v.chars().count())
            .max()
            .unwrap_or(0)
            .max(1);
        let dict = format!(
            "{{'descr': '<U{width}', 'fortran_order': False, 'shape': ({},), }}",
            values.len()
        );
        // Magic, version 1.0, header length, then the header padded with spaces so that the
        // data starts on a 64-byte boundary, ending in a newline.
        let unpadded = 10 + dict.len() + 1;
        let header_len = dict.len() + 1 + (64 - unpadded % 64) % 64;
        let mut out = Vec::with_capacity(10 + header_len + values.len() * width * 4);
        out.extend_from_slice(b"\x93NUMPY\x01\x00");
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
        out.extend_from_slice(dict.as_bytes());
        out.resize(10 + header_len - 1, b' ');
        out.push(b'\n');
        for v in values {
            let mut n = 0;
            for c in v.chars() {
                out.extend_from_slice(&(c as u32).to_le_bytes());
                n += 1;
            }
            out.resize(out.len() + (width - n) * 4, 0);
        }
        self.entry(name, &out)
    }

    /// The archive's bytes.
    pub fn finish(self) -> Result<Vec<u8>, EncodeError> {
        self.zip
            .finish()
            .map(|c| c.into_inner())
            .map_err(|e| EncodeError(e.to_string()))
    }

    /// The archive as a response body.
    pub fn encoded(self) -> Result<Encoded, EncodeError> {
        Ok(Encoded {
            body: self.finish()?.into(),
            format: Format::Npz,
            dtype: "",
            shape: vec![],
        })
    }
}

/// From this many pixels on, a PNG is deflated for size rather than speed.
const LARGE_PNG_PIXELS: usize = 128 * 128;

pub(crate) fn png_bytes(
    w: usize,
    h: usize,
    color: png::ColorType,
    pixels: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        // Large images (slices, montages): zlib level 3 with adaptive filters. On the sample
        // CT's 512x512 slices: 76 KB gray / 113 KB overlay in 2.3 / 3.1 ms, against fdeflate's
        // (`Fast`) 85 KB / 248 KB in 0.4 / 1.4 ms; bodies are cached and sent many times, so
        // bytes win (level 6 gained under 1% more for twice the time). Small images (MedNIST's
        // 64x64): fdeflate, where zlib's setup alone doubled the encode (35 -> 65 us) for a
        // body a few hundred bytes smaller. Changing this changes body bytes: bump
        // `cache::BODY_REVISION`.
        if w * h >= LARGE_PNG_PIXELS {
            enc.set_deflate_compression(png::DeflateCompression::Level(3));
        } else {
            enc.set_compression(png::Compression::Fast);
        }
        let mut wr = enc.write_header().map_err(|e| EncodeError(e.to_string()))?;
        wr.write_image_data(pixels)
            .map_err(|e| EncodeError(e.to_string()))?;
        wr.finish().map_err(|e| EncodeError(e.to_string()))?;
    }
    Ok(out)
}

/// A mask slice as 8-bit grayscale PNG holding the label values themselves.
pub fn png_labels(mask: &Array2<u8>) -> Result<Vec<u8>, EncodeError> {
    let (h, w) = mask.dim();
    let std = mask.as_standard_layout();
    png_bytes(
        w,
        h,
        png::ColorType::Grayscale,
        std.as_slice().expect("standard layout"),
    )
}

/// Colour of a label value in overlays: a fixed, distinguishable palette (label 1 red,
/// 2 green, 3 blue, 4 yellow, ...), repeating after 8.
pub fn label_colour(v: u8) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 8] = [
        [230, 25, 75],
        [60, 180, 75],
        [0, 130, 200],
        [255, 225, 25],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
    ];
    PALETTE[(usize::from(v).max(1) - 1) % PALETTE.len()]
}

/// An image slice windowed to `lo..hi` in gray with the mask drawn over it: every voxel with a
/// non-zero label is blended with its label's colour at `opacity`. RGB PNG.
pub fn png_overlay(
    image: &Array2<f32>,
    lo: f32,
    hi: f32,
    mask: &Array2<u8>,
    opacity: f32,
) -> Result<Vec<u8>, EncodeError> {
    let (h, w) = image.dim();
    if mask.dim() != (h, w) {
        return Err(EncodeError(format!(
            "mask {:?} and image {:?} differ",
            mask.dim(),
            (h, w)
        )));
    }
    let span = window_span(lo, hi);
    let mut px = Vec::with_capacity(h * w * 3);
    for (&v, &m) in image.iter().zip(mask.iter()) {
        let t = ((v - lo) / span).clamp(0.0, 1.0);
        let g = if t.is_nan() { 0.0 } else { t * 255.0 };
        if m == 0 {
            let g = g.round() as u8;
            px.extend_from_slice(&[g, g, g]);
        } else {
            for c in label_colour(m) {
                px.push(((1.0 - opacity) * g + opacity * f32::from(c)).round() as u8);
            }
        }
    }
    png_bytes(w, h, png::ColorType::Rgb, &px)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    #[test]
    fn npy_header_and_f32_bytes() {
        let a = ArrayD::from_shape_vec(IxDyn(&[1, 1, 2]), vec![1.0f32, -2.5]).unwrap();
        let n = npy(&a).unwrap();
        assert!(n.starts_with(b"\x93NUMPY\x01\x00"));
        let header =
            String::from_utf8_lossy(&n[10..(10 + u16::from_le_bytes([n[8], n[9]]) as usize)])
                .to_string();
        assert!(
            header.contains("'descr': '<f4'") && header.contains("(1, 1, 2)"),
            "{header}"
        );
        assert_eq!(f32_le(&a), [0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0]);
        let p = png8(&a, -2.5, 1.0).unwrap();
        assert!(p.starts_with(b"\x89PNG"));
    }

    #[test]
    fn one_encoder_for_every_format() {
        let img = ArrayD::from_shape_vec(IxDyn(&[1, 2, 3, 1]), vec![0.0f32; 6]).unwrap();
        let lab = ArrayD::from_shape_vec(IxDyn(&[1, 2, 3, 1]), vec![1u8; 6]).unwrap();
        let both = Payload {
            image: Some(&img),
            label: Some(&lab),
            affine: Some([
                [1.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ]),
            ..Default::default()
        };
        let label_only = Payload {
            image: None,
            ..both
        };
        for (p, f, dtype) in [
            (both, Format::Npy, "float32"),
            (label_only, Format::Npy, "uint8"),
            (label_only, Format::F32, "float32"),
            (both, Format::Nii, "float32"),
            (label_only, Format::NiiGz, "uint8"),
            (both, Format::Npz, ""),
        ] {
            let e = encode(p, f).unwrap();
            assert_eq!(e.dtype, dtype, "{f:?}");
            assert!(!e.body.is_empty());
        }
        assert!(encode(Payload::default(), Format::Npy).is_err());
        assert!(encode(both, Format::Nii).unwrap().body.len() > 352);
        assert_eq!(nifti_dims(&[1, 2, 3, 4]), [2, 3, 4]);
        assert_eq!(nifti_dims(&[4, 2, 3, 4]), [2, 3, 4, 4]);
    }
}
