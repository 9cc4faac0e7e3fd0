//! indexed_gzip's `GZIDX` v1 file format (module doc of `gzindex` has the layout): written
//! byte-identical to indexed_gzip's own export, read with every length and offset checked.

use super::{FIXED, GzIndex, IndexError, MAGIC, POINT, Point, WINDOW};

impl GzIndex {
    /// The index as indexed_gzip's `GZIDX` v1 file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let windows = self.points.iter().filter(|p| p.window.is_some()).count();
        let mut b = Vec::with_capacity(FIXED + self.points.len() * POINT + windows * WINDOW);
        b.extend_from_slice(MAGIC);
        b.push(1);
        b.push(0);
        b.extend_from_slice(&self.compressed_size.to_le_bytes());
        b.extend_from_slice(&self.uncompressed_size.to_le_bytes());
        b.extend_from_slice(&self.spacing.to_le_bytes());
        b.extend_from_slice(&(WINDOW as u32).to_le_bytes());
        b.extend_from_slice(&(self.points.len() as u32).to_le_bytes());
        for p in &self.points {
            b.extend_from_slice(&p.cmp.to_le_bytes());
            b.extend_from_slice(&p.unc.to_le_bytes());
            b.push(p.bits);
            b.push(u8::from(p.window.is_some()));
        }
        for w in self.points.iter().filter_map(|p| p.window.as_deref()) {
            b.extend_from_slice(w);
        }
        b
    }

    /// Reads a `GZIDX` v1 file, checking every length and offset before use.
    pub fn from_bytes(b: &[u8]) -> Result<GzIndex, IndexError> {
        let bad = |m: &str| IndexError::BadIndex(m.to_string());
        if b.len() < FIXED || &b[..5] != MAGIC {
            return Err(bad("not a GZIDX file"));
        }
        if b[5] != 1 || b[6] != 0 {
            return Err(bad("unsupported GZIDX version or flags"));
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let (compressed_size, uncompressed_size) = (u64_at(7), u64_at(15));
        let (spacing, window, n) = (u32_at(23), u32_at(27), u32_at(31) as usize);
        if window as usize != WINDOW {
            return Err(bad("window size is not 32768"));
        }
        let table_end = n
            .checked_mul(POINT)
            .and_then(|t| t.checked_add(FIXED))
            .filter(|&e| e <= b.len())
            .ok_or_else(|| bad("truncated point table"))?;
        let mut points = Vec::with_capacity(n);
        let mut wpos = table_end;
        for i in 0..n {
            let o = FIXED + i * POINT;
            let (cmp, unc, bits, has) = (u64_at(o), u64_at(o + 8), b[o + 16], b[o + 17]);
            if bits > 7 || has > 1 || cmp > compressed_size || unc > uncompressed_size {
                return Err(bad("a point is out of range"));
            }
            if points
                .last()
                .is_some_and(|q: &Point| q.unc > unc || q.cmp > cmp)
            {
                return Err(bad("points are out of order"));
            }
            if bits > 0 && cmp == 0 {
                return Err(bad("a point's bits are before the stream"));
            }
            let window = if has == 1 {
                let w = b
                    .get(wpos..wpos + WINDOW)
                    .ok_or_else(|| bad("truncated windows"))?;
                wpos += WINDOW;
                Some(w.to_vec().into_boxed_slice())
            } else {
                None
            };
            points.push(Point {
                cmp,
                unc,
                bits,
                window,
            });
        }
        if wpos != b.len() {
            return Err(bad("bytes after the last window"));
        }
        if points.first().is_none_or(|p| p.unc != 0) {
            return Err(bad("the first point is not at the start"));
        }
        Ok(GzIndex {
            compressed_size,
            uncompressed_size,
            spacing,
            points,
        })
    }
}
