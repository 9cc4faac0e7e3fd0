//! Encoders for responses: 8-bit PNG for eyes, raw little-endian float32 and NumPy `.npy`
//! for programs.

use ndarray::{Array2, ArrayD};
use ndarray_npy::{WritableElement, WriteNpyExt};

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
    let err = |e: ndarray_npy::WriteNpzError| EncodeError(e.to_string());
    let mut w = ndarray_npy::NpzWriter::new(std::io::Cursor::new(Vec::new()));
    if let Some(a) = image {
        w.add_array("image", &a.as_standard_layout()).map_err(err)?;
    }
    if let Some(l) = label {
        w.add_array("label", &l.as_standard_layout()).map_err(err)?;
    }
    Ok(w.finish().map_err(err)?.into_inner())
}

fn png_bytes(
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
        enc.set_compression(png::Compression::Fast);
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
}
