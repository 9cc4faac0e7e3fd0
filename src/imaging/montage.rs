//! A contact sheet: tiles in rows, each row labelled at its start with text drawn from the
//! public-domain 8x8 bitmap font of the `font8x8` crate (no system fonts: the same bytes on
//! every machine). Pure: arrays in, PNG bytes out.

use ndarray::{ArrayD, ArrayView3, Ix3};

use super::encode::{EncodeError, png_bytes};
use super::resize::{self, ResizeMode};

/// Pixels per glyph side.
pub const GLYPH: usize = 8;
/// Most characters of a row label; longer names are cut, ending in `~`.
pub const LABEL_CHARS: usize = 20;

/// An RGB picture being composed.
#[derive(Debug, Clone)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    rgb: Vec<u8>,
}

/// A tile that could not be made (e.g. an undecodable item) is drawn in this colour.
pub const MISSING: [u8; 3] = [48, 16, 16];

impl Canvas {
    /// A black canvas.
    pub fn new(width: usize, height: usize) -> Self {
        Canvas {
            width,
            height,
            rgb: vec![0; width * height * 3],
        }
    }

    /// Fills a rectangle (clipped to the canvas).
    pub fn fill(&mut self, x0: usize, y0: usize, w: usize, h: usize, c: [u8; 3]) {
        for y in y0..(y0 + h).min(self.height) {
            for x in x0..(x0 + w).min(self.width) {
                let i = (y * self.width + x) * 3;
                self.rgb[i..i + 3].copy_from_slice(&c);
            }
        }
    }

    /// Copies an RGB tile `(3, H, W)` with its top-left corner at `(x0, y0)` (clipped).
    pub fn blit(&mut self, x0: usize, y0: usize, tile: ArrayView3<u8>) {
        let (_, h, w) = tile.dim();
        for y in 0..h.min(self.height.saturating_sub(y0)) {
            for x in 0..w.min(self.width.saturating_sub(x0)) {
                let i = ((y0 + y) * self.width + x0 + x) * 3;
                for c in 0..3 {
                    self.rgb[i + c] = tile[[c, y, x]];
                }
            }
        }
    }

    /// Draws `text` (ASCII; anything else as `?`) with its top-left corner at `(x0, y0)`.
    pub fn text(&mut self, x0: usize, y0: usize, text: &str, colour: [u8; 3]) {
        for (k, ch) in text.chars().enumerate() {
            let code = if ch.is_ascii() {
                ch as usize
            } else {
                b'?' as usize
            };
            let glyph = font8x8::legacy::BASIC_LEGACY[code];
            for (gy, row) in glyph.iter().enumerate() {
                for gx in 0..GLYPH {
                    // Bit 0 is the glyph's leftmost column.
                    if row & (1 << gx) != 0 {
                        self.fill(x0 + k * GLYPH + gx, y0 + gy, 1, 1, colour);
                    }
                }
            }
        }
    }

    /// The picture as an 8-bit RGB PNG.
    pub fn png(&self) -> Result<Vec<u8>, EncodeError> {
        png_bytes(self.width, self.height, png::ColorType::Rgb, &self.rgb)
    }
}

/// A row label as drawn: at most [`LABEL_CHARS`] characters.
pub fn label_text(name: &str) -> String {
    if name.chars().count() <= LABEL_CHARS {
        name.to_string()
    } else {
        let mut s: String = name.chars().take(LABEL_CHARS - 1).collect();
        s.push('~');
        s
    }
}

/// Width of the label column for these row names: the longest label plus a margin.
pub fn label_width<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    let chars = names
        .map(|n| label_text(n).chars().count())
        .max()
        .unwrap_or(0);
    chars * GLYPH + GLYPH
}

/// A `(C, H, W)` picture with values in `0..=max` (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA: alpha
/// ignored) fitted into a black `side` x `side` RGB tile: scaled (bilinear) so its longer side
/// is `side`, aspect kept, centred.
pub fn fit_tile(a: &ArrayD<f32>, max: f32, side: usize) -> ndarray::Array3<u8> {
    let mut tile = ndarray::Array3::<u8>::zeros((3, side, side));
    let Ok(a) = a.view().into_dimensionality::<Ix3>() else {
        return tile;
    };
    let (c, h, w) = a.dim();
    if c == 0 || h == 0 || w == 0 {
        return tile;
    }
    let s = side as f64 / h.max(w) as f64;
    let (th, tw) = (
        ((h as f64 * s).round() as usize).clamp(1, side),
        ((w as f64 * s).round() as usize).clamp(1, side),
    );
    let scaled = if (th, tw) == (h, w) {
        a.to_owned().into_dyn()
    } else {
        resize::resize(&a.to_owned().into_dyn(), &[th, tw], ResizeMode::Linear)
    };
    let (oy, ox) = ((side - th) / 2, (side - tw) / 2);
    let to_u8 = |v: f32| {
        let t = (v / max).clamp(0.0, 1.0);
        if t.is_nan() {
            0
        } else {
            (t * 255.0).round() as u8
        }
    };
    for y in 0..th {
        for x in 0..tw {
            for k in 0..3 {
                let src = if c >= 3 { k } else { 0 };
                tile[[k, oy + y, ox + x]] = to_u8(scaled[[src, y, x]]);
            }
        }
    }
    tile
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_tiles_land_where_asked() {
        let mut c = Canvas::new(40, 10);
        c.text(0, 0, "A", [255, 255, 255]);
        // "A" is drawn within its 8 columns.
        assert!(c.rgb.contains(&255));
        for y in 0..10 {
            let row = &c.rgb[y * 40 * 3..(y + 1) * 40 * 3];
            assert!(row[8 * 3..].iter().all(|&v| v == 0));
        }
        let gray = ndarray::Array3::<f32>::from_elem((1, 4, 8), 1.0).into_dyn();
        let t = fit_tile(&gray, 1.0, 16);
        // 8 wide -> 16 wide, 4 high -> 8 high, centred vertically (rows 4..12).
        assert_eq!(t[[0, 3, 0]], 0);
        assert_eq!(t[[0, 4, 0]], 255);
        assert_eq!(t[[2, 11, 15]], 255);
        assert_eq!(t[[0, 12, 0]], 0);
        assert_eq!(label_text(&"x".repeat(30)).len(), LABEL_CHARS);
    }
}
