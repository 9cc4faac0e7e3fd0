//! 2D decoding (PNG, JPEG) into `(C, H, W)` float32 with the channels MONAI's `LoadImage`
//! gives: grayscale 1, gray+alpha 2, RGB 3, RGBA 4, and palette images as their palette
//! *indices* in 1 channel.
//!
//! MONAI's PILReader returns `(W, H)` (the transpose of `np.asarray(PIL.Image.open(f))`); we
//! return row-major `(C, H, W)`, which differs from MONAI only by swapping the last two axes.
//! Values follow Pillow, which MONAI reads through: 16-bit grayscale keeps its raw values,
//! 16-bit colour is reduced to its high byte, 2- and 4-bit grayscale are scaled to 0..255,
//! 1-bit grayscale is 0/1.

use std::io::Cursor;

use ndarray::Array3;

/// How to treat colour channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelMode {
    /// The channels as stored (MONAI's behaviour).
    #[default]
    Native,
    /// One luminance channel: ITU-R BT.601 luma of RGB (as Pillow's `convert("L")`, without
    /// rounding to integers); alpha is dropped; palettes are expanded first.
    Luminance,
}

/// How to treat palette (indexed) PNGs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaletteMode {
    /// The palette indices in one channel (MONAI's behaviour).
    #[default]
    Indices,
    /// The palette's colours: RGB, or RGBA when the file has transparency.
    Expand,
}

/// Decoding options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    pub channels: ChannelMode,
    pub palette: PaletteMode,
    /// Refuse images with more pixels than this, before decoding them.
    pub max_pixels: u64,
}

impl DecodeOptions {
    /// MONAI's behaviour (channels as stored, palette indices) under a pixel limit.
    pub fn monai(max_pixels: u64) -> Self {
        DecodeOptions {
            channels: ChannelMode::Native,
            palette: PaletteMode::Indices,
            max_pixels,
        }
    }

    /// Canonical text for cache keys.
    pub fn canonical(&self) -> String {
        let c = match self.channels {
            ChannelMode::Native => "native",
            ChannelMode::Luminance => "1",
        };
        let p = match self.palette {
            PaletteMode::Indices => "index",
            PaletteMode::Expand => "expand",
        };
        format!("decode(channels={c},palette={p})")
    }
}

/// What the file's header says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageInfo {
    /// `png` or `jpeg`.
    pub format: &'static str,
    pub width: u32,
    pub height: u32,
    /// Channels as stored (palette = 1).
    pub channels: u8,
    /// Bits per sample as stored.
    pub bit_depth: u8,
    /// `gray`, `gray-alpha`, `rgb`, `rgba` or `palette`.
    pub color_type: &'static str,
}

/// A decoded image.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub info: ImageInfo,
    /// `(C, H, W)` after the requested channel handling.
    pub data: Array3<f32>,
}

/// Why bytes could not become an image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a format we read.
    #[error("not a PNG or JPEG file")]
    UnknownFormat,
    /// The file is damaged or truncated.
    #[error("corrupt {format}: {message}")]
    Corrupt {
        format: &'static str,
        message: String,
    },
    /// The header claims more pixels than allowed.
    #[error("{width}x{height} pixels exceed the limit of {limit} pixels")]
    TooLarge { width: u64, height: u64, limit: u64 },
}

/// Sniffs the format from magic bytes (names lie; bytes don't).
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("jpeg")
    } else {
        None
    }
}

fn check_size(width: u64, height: u64, limit: u64) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(DecodeError::Corrupt {
            format: "image",
            message: format!("{width}x{height} has no pixels"),
        });
    }
    if width.saturating_mul(height) > limit {
        return Err(DecodeError::TooLarge {
            width,
            height,
            limit,
        });
    }
    Ok(())
}

/// Decodes a PNG or JPEG.
pub fn decode(bytes: &[u8], opts: &DecodeOptions) -> Result<Decoded, DecodeError> {
    match sniff(bytes) {
        Some("png") => decode_png(bytes, opts),
        Some("jpeg") => decode_jpeg(bytes, opts),
        _ => Err(DecodeError::UnknownFormat),
    }
}

fn png_err(e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Corrupt {
        format: "PNG",
        message: e.to_string(),
    }
}

/// Width and height from the IHDR chunk, which the PNG format requires to come first. Read
/// by hand so the pixel limit is checked before the decoder allocates or reads further.
fn png_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
    Some((w, h))
}

/// PNG through the `png` crate, pixel limit first: the header's size is checked before the
/// decoder reads any further, then again from the decoder's own reading of it.
fn decode_png(bytes: &[u8], opts: &DecodeOptions) -> Result<Decoded, DecodeError> {
    if let Some((w, h)) = png_dimensions(bytes) {
        check_size(u64::from(w), u64::from(h), opts.max_pixels)?;
    }
    let mut reader = png_reader(bytes, opts.max_pixels)?;
    let png = PngFormat::of(reader.info());
    check_size(u64::from(png.width), u64::from(png.height), opts.max_pixels)?;
    let info = png.image_info();
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| png_err("image too large for this platform"))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(png_err)?;
    let (w, h) = (png.width as usize, png.height as usize);
    let values = png.samples(&buf, frame.line_size);
    let data = Array3::from_shape_vec((png.channels(), h, w), values)
        .map_err(|e| png_err(format!("unexpected buffer shape: {e}")))?;
    let data = png.colours(data, opts)?;
    Ok(Decoded {
        info,
        data: apply_channel_mode(data, opts.channels),
    })
}

/// A PNG reader past the header that hands out raw samples: palette indices stay indices,
/// 16-bit stays 16-bit, low bit depths stay packed.
fn png_reader(bytes: &[u8], max_pixels: u64) -> Result<png::Reader<Cursor<&[u8]>>, DecodeError> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::IDENTITY);
    // The caller bounds the pixels by `max_pixels`; this caps what ancillary chunks (text, ICC)
    // may take on top of the largest allowed frame (4 channels x 16 bits).
    decoder.set_limits(png::Limits {
        bytes: usize::try_from(max_pixels.saturating_mul(8).saturating_add(64 << 20))
            .unwrap_or(usize::MAX),
    });
    decoder.read_info().map_err(png_err)
}

/// What decoding needs from a PNG's header, copied out so the reader can be borrowed again
/// for the frame.
struct PngFormat {
    width: u32,
    height: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    palette: Option<Vec<u8>>,
    trns: Option<Vec<u8>>,
}

impl PngFormat {
    fn of(info: &png::Info) -> PngFormat {
        PngFormat {
            width: info.width,
            height: info.height,
            color: info.color_type,
            depth: info.bit_depth,
            palette: info.palette.as_ref().map(|p| p.to_vec()),
            trns: info.trns.as_ref().map(|t| t.to_vec()),
        }
    }

    /// Channels as stored (a palette index is one) and the colour type's name.
    fn channels_and_name(&self) -> (usize, &'static str) {
        match self.color {
            png::ColorType::Grayscale => (1, "gray"),
            png::ColorType::GrayscaleAlpha => (2, "gray-alpha"),
            png::ColorType::Rgb => (3, "rgb"),
            png::ColorType::Rgba => (4, "rgba"),
            png::ColorType::Indexed => (1, "palette"),
        }
    }

    fn channels(&self) -> usize {
        self.channels_and_name().0
    }

    fn image_info(&self) -> ImageInfo {
        let (channels, color_type) = self.channels_and_name();
        ImageInfo {
            format: "png",
            width: self.width,
            height: self.height,
            channels: channels as u8,
            bit_depth: self.depth as u8,
            color_type,
        }
    }

    /// Every sample of the frame `buf` (rows of `line` bytes) as f32 in `(C, H, W)`, with
    /// Pillow's values. The match on the bit depth happens once, and each variant's loop is
    /// monomorphised.
    fn samples(&self, buf: &[u8], line: usize) -> Vec<f32> {
        use png::{BitDepth, ColorType};

        let channels = self.channels();
        let (w, h) = (self.width as usize, self.height as usize);
        let gray16 = self.color == ColorType::Grayscale;
        let low_scale = match (self.color, self.depth) {
            // Pillow's "L;2"/"L;4" unpackers scale gray to the full 8-bit range; palette indices
            // and 1-bit gray stay as they are.
            (ColorType::Indexed, _) | (_, BitDepth::One) => 1.0,
            (_, BitDepth::Two) => 85.0,
            _ => 17.0,
        };
        match self.depth {
            BitDepth::Eight => unpack(buf, line, channels, h, w, |row, s| f32::from(row[s])),
            BitDepth::Sixteen => unpack(buf, line, channels, h, w, |row, s| {
                let raw = u16::from_be_bytes([row[2 * s], row[2 * s + 1]]);
                // Pillow keeps 16-bit gray raw ("I;16") but reads 16-bit colour, gray+alpha
                // included, as 8-bit by taking the high byte.
                if gray16 {
                    f32::from(raw)
                } else {
                    f32::from(raw >> 8)
                }
            }),
            low => {
                let b = low as usize;
                let per_byte = 8 / b;
                let mask = (1u8 << b) - 1;
                unpack(buf, line, channels, h, w, |row, s| {
                    let shift = 8 - b * (s % per_byte + 1);
                    f32::from((row[s / per_byte] >> shift) & mask) * low_scale
                })
            }
        }
    }

    /// Palette indices become the palette's colours when asked for, or when luminance needs
    /// colours to weigh; everything else passes through.
    fn colours(self, data: Array3<f32>, opts: &DecodeOptions) -> Result<Array3<f32>, DecodeError> {
        if self.color == png::ColorType::Indexed
            && (opts.palette == PaletteMode::Expand || opts.channels == ChannelMode::Luminance)
        {
            let pal = self
                .palette
                .ok_or_else(|| png_err("indexed PNG without a palette"))?;
            expand_palette(&data, &pal, self.trns.as_deref())
        } else {
            Ok(data)
        }
    }
}

/// Interleaved rows (`line` bytes each) -> planar `(C, H, W)` values; `sample(row, s)` reads
/// sample `s` (= x * C + c) of a row.
fn unpack(
    buf: &[u8],
    line: usize,
    channels: usize,
    h: usize,
    w: usize,
    sample: impl Fn(&[u8], usize) -> f32,
) -> Vec<f32> {
    let mut out = vec![0f32; channels * h * w];
    for y in 0..h {
        let row = &buf[y * line..(y + 1) * line];
        for c in 0..channels {
            let dst = &mut out[c * h * w + y * w..c * h * w + (y + 1) * w];
            for (x, d) in dst.iter_mut().enumerate() {
                *d = sample(row, x * channels + c);
            }
        }
    }
    out
}

/// Palette indices `(1, H, W)` -> colours `(3|4, H, W)`; indices past the palette are errors
/// (Pillow would show black; a corrupt file is better reported).
fn expand_palette(
    idx: &Array3<f32>,
    pal: &[u8],
    trns: Option<&[u8]>,
) -> Result<Array3<f32>, DecodeError> {
    let n = pal.len() / 3;
    let c = if trns.is_some() { 4 } else { 3 };
    let (_, h, w) = idx.dim();
    let mut out = Array3::<f32>::zeros((c, h, w));
    for y in 0..h {
        for x in 0..w {
            let i = idx[[0, y, x]] as usize;
            if i >= n {
                return Err(png_err(format!(
                    "palette index {i} past a palette of {n} entries"
                )));
            }
            for k in 0..3 {
                out[[k, y, x]] = f32::from(pal[3 * i + k]);
            }
            if let Some(t) = trns {
                out[[3, y, x]] = f32::from(t.get(i).copied().unwrap_or(255));
            }
        }
    }
    Ok(out)
}

/// The requested channel handling, after any palette expansion.
fn apply_channel_mode(data: Array3<f32>, mode: ChannelMode) -> Array3<f32> {
    match mode {
        ChannelMode::Native => data,
        ChannelMode::Luminance => luminance(data),
    }
}

/// `(C, H, W)` -> `(1, H, W)`: gray stays, alpha goes, colour becomes BT.601 luma.
fn luminance(data: Array3<f32>) -> Array3<f32> {
    let (c, h, w) = data.dim();
    match c {
        1 => data,
        2 => data.slice(ndarray::s![0..1, .., ..]).to_owned(),
        _ => {
            let mut out = Array3::<f32>::zeros((1, h, w));
            for y in 0..h {
                for x in 0..w {
                    let (r, g, b) = (
                        f64::from(data[[0, y, x]]),
                        f64::from(data[[1, y, x]]),
                        f64::from(data[[2, y, x]]),
                    );
                    out[[0, y, x]] = (0.299 * r + 0.587 * g + 0.114 * b) as f32;
                }
            }
            out
        }
    }
}

fn jpeg_err(e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Corrupt {
        format: "JPEG",
        message: e.to_string(),
    }
}

/// JPEG through zune-jpeg in strict mode: a truncated or corrupt scan is an error, as in
/// Pillow (MONAI's reader), instead of the grey fill the `image` crate's lenient mode returns
/// with success.
fn decode_jpeg(bytes: &[u8], opts: &DecodeOptions) -> Result<Decoded, DecodeError> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions as ZuneOptions;

    // The pixel limit is ours (checked from the header below), not zune's default 16384.
    let options = ZuneOptions::default()
        .set_strict_mode(true)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(jpeg_err)?;
    let (width, height) = decoder
        .dimensions()
        .ok_or_else(|| jpeg_err("no frame header"))?;
    check_size(width as u64, height as u64, opts.max_pixels)?;
    let (out, channels, color_name) = match decoder.input_colorspace() {
        Some(ColorSpace::Luma) => (ColorSpace::Luma, 1usize, "gray"),
        Some(ColorSpace::YCbCr | ColorSpace::RGB) => (ColorSpace::RGB, 3, "rgb"),
        other => {
            return Err(jpeg_err(format!(
                "unsupported JPEG colour space {other:?} (served: grayscale, YCbCr/RGB)"
            )));
        }
    };
    decoder.set_options(decoder.options().jpeg_set_out_colorspace(out));
    let len = decoder
        .output_buffer_size()
        .ok_or_else(|| jpeg_err("no frame header"))?;
    if len != width * height * channels {
        return Err(jpeg_err(format!(
            "decoder would write {len} bytes for {width}x{height}x{channels}"
        )));
    }
    let mut buf = vec![0u8; len];
    decoder.decode_into(&mut buf).map_err(jpeg_err)?;
    let (width, height) = (width as u32, height as u32);
    let (w, h) = (width as usize, height as usize);
    let data = Array3::from_shape_fn((channels, h, w), |(c, y, x)| {
        f32::from(buf[(y * w + x) * channels + c])
    });
    let info = ImageInfo {
        format: "jpeg",
        width,
        height,
        channels: channels as u8,
        bit_depth: 8,
        color_type: color_name,
    };
    Ok(Decoded {
        info,
        data: apply_channel_mode(data, opts.channels),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: DecodeOptions = DecodeOptions {
        channels: ChannelMode::Native,
        palette: PaletteMode::Indices,
        max_pixels: 1 << 24,
    };

    fn png_bytes(
        w: u32,
        h: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        data: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        if color == png::ColorType::Indexed {
            enc.set_palette(vec![0, 0, 0, 255, 0, 0, 0, 255, 0]);
        }
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(data).unwrap();
        wr.finish().unwrap();
        out
    }

    #[test]
    fn palette_gives_indices_unless_expanded() {
        let bytes = png_bytes(2, 1, png::ColorType::Indexed, png::BitDepth::Eight, &[1, 2]);
        let d = decode(&bytes, &OPTS).unwrap();
        assert_eq!(d.data.shape(), [1, 1, 2]);
        assert_eq!(d.data.as_slice().unwrap(), [1.0, 2.0]);
        let e = decode(
            &bytes,
            &DecodeOptions {
                palette: PaletteMode::Expand,
                ..OPTS
            },
        )
        .unwrap();
        assert_eq!(e.data.shape(), [3, 1, 2]);
        assert_eq!(e.data[[0, 0, 0]], 255.0);
        assert_eq!(e.data[[1, 0, 1]], 255.0);
    }

    #[test]
    fn sixteen_bit_gray_stays_raw_and_rows_are_rows() {
        // 2 wide, 1 high: values 1000 and 60000.
        let bytes = png_bytes(
            2,
            1,
            png::ColorType::Grayscale,
            png::BitDepth::Sixteen,
            &[0x03, 0xE8, 0xEA, 0x60],
        );
        let d = decode(&bytes, &OPTS).unwrap();
        assert_eq!(d.info.bit_depth, 16);
        assert_eq!(d.data.as_slice().unwrap(), [1000.0, 60000.0]);
    }

    #[test]
    fn low_bit_depths_unpack() {
        let bytes = png_bytes(
            4,
            1,
            png::ColorType::Grayscale,
            png::BitDepth::Two,
            &[0b00_01_10_11],
        );
        let d = decode(&bytes, &OPTS).unwrap();
        assert_eq!(d.data.as_slice().unwrap(), [0.0, 85.0, 170.0, 255.0]);
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        assert_eq!(decode(b"", &OPTS).unwrap_err(), DecodeError::UnknownFormat);
        assert_eq!(
            decode(b"hello", &OPTS).unwrap_err(),
            DecodeError::UnknownFormat
        );
        let good = png_bytes(
            2,
            1,
            png::ColorType::Grayscale,
            png::BitDepth::Eight,
            &[1, 2],
        );
        for cut in [8, 20, 33, 41] {
            assert!(decode(&good[..cut], &OPTS).is_err(), "truncated at {cut}");
        }
        assert!(decode(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0], &OPTS).is_err());
    }

    #[test]
    fn oversized_header_is_refused_before_decoding() {
        // A valid IHDR claiming 100000 x 100000, and no image data at all.
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
        bytes.extend_from_slice(&13u32.to_be_bytes());
        bytes.extend_from_slice(&ihdr);
        let mut crc = flate2::Crc::new();
        crc.update(&ihdr);
        bytes.extend_from_slice(&crc.sum().to_be_bytes());
        match decode(&bytes, &OPTS) {
            Err(DecodeError::TooLarge { width, .. }) => assert_eq!(width, 100_000),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
}
