//! Value statistics of one image or volume (the item histogram route) and the mergeable
//! counting histograms the dataset statistics are built from. Pure: arrays in, numbers out.
//!
//! Percentiles follow NumPy's default (`np.percentile(..., method="linear")`): the value at
//! rank `p/100 * (n-1)` of the sorted values, interpolated between its two neighbours. Bins
//! are `np.histogram`'s layout: `n` equal bins from min to max, the last one closed, and a
//! range of one value widened to `(v - 0.5, v + 0.5)`; a value within rounding of an inner
//! edge may land in the neighbouring bin where NumPy (which corrects against its `linspace`
//! edges) would not.

use std::collections::HashMap;

use serde::Serialize;

/// The percentiles the item histogram reports, with their JSON names.
pub const ITEM_PERCENTILES: [(&str, f64); 9] = [
    ("p0_5", 0.5),
    ("p1", 1.0),
    ("p5", 5.0),
    ("p25", 25.0),
    ("p50", 50.0),
    ("p75", 75.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("p99_5", 99.5),
];

/// `np.histogram`'s bins: equal widths between `edges[0]` and `edges[n]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bins {
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
}

/// Statistics of the finite values of one array.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueSummary {
    /// `None` (JSON null) when no value is finite.
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    /// Population standard deviation (NumPy's `ddof=0`).
    pub std: Option<f64>,
    /// Name (`p0_5`, ..., `p99_5`) -> value; null when no value is finite.
    pub percentiles: std::collections::BTreeMap<&'static str, Option<f64>>,
    pub bins: Bins,
    /// Values left out: NaN and infinities.
    pub nan: u64,
}

/// Summarises `values` (any order) in `bins` equal bins (at least 1). Sorts a copy of the
/// finite values: the percentiles are exact.
pub fn summarize(values: impl Iterator<Item = f64>, bins: usize) -> ValueSummary {
    let bins = bins.max(1);
    let mut nan = 0u64;
    let mut finite: Vec<f64> = Vec::new();
    for v in values {
        if v.is_finite() {
            finite.push(v);
        } else {
            nan += 1;
        }
    }
    let n = finite.len();
    let percentiles = |sorted: Option<&[f64]>| {
        ITEM_PERCENTILES
            .iter()
            .map(|&(name, p)| (name, sorted.map(|s| linear_percentile(s, p))))
            .collect()
    };
    if n == 0 {
        return ValueSummary {
            min: None,
            max: None,
            mean: None,
            std: None,
            percentiles: percentiles(None),
            bins: Bins {
                edges: edges(0.0, 1.0, bins),
                counts: vec![0; bins],
            },
            nan,
        };
    }
    // Two passes in f64: the mean first, then the squared deviations (no cancellation).
    let mean = finite.iter().sum::<f64>() / n as f64;
    let var = finite.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
    finite.sort_unstable_by(f64::total_cmp);
    let (min, max) = (finite[0], finite[n - 1]);
    let (lo, hi) = if min == max {
        (min - 0.5, max + 0.5)
    } else {
        (min, max)
    };
    let mut counts = vec![0u64; bins];
    for &v in &finite {
        counts[bin_of(v, lo, hi, bins)] += 1;
    }
    ValueSummary {
        min: Some(min),
        max: Some(max),
        mean: Some(mean),
        std: Some(var.sqrt()),
        percentiles: percentiles(Some(&finite)),
        bins: Bins {
            edges: edges(lo, hi, bins),
            counts,
        },
        nan,
    }
}

/// `n + 1` equal-width edges from `lo` to `hi`.
fn edges(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..=n)
        .map(|i| {
            if i == n {
                hi
            } else {
                lo + (hi - lo) * i as f64 / n as f64
            }
        })
        .collect()
}

/// The bin of `v` in `n` equal bins over `[lo, hi]` (the last bin closed; outside clamps).
pub fn bin_of(v: f64, lo: f64, hi: f64, n: usize) -> usize {
    let t = ((v - lo) / (hi - lo) * n as f64).floor();
    if t.is_nan() || t < 0.0 {
        0
    } else {
        (t as usize).min(n - 1)
    }
}

/// NumPy's linear percentile of sorted, non-empty `s`.
pub fn linear_percentile(s: &[f64], p: f64) -> f64 {
    let r = p / 100.0 * (s.len() - 1) as f64;
    let (i, frac) = (r.floor() as usize, r - r.floor());
    let a = s[i];
    match s.get(i + 1) {
        Some(&b) if frac > 0.0 => a + (b - a) * frac,
        _ => a,
    }
}

/// A counting histogram of values, keyed by the value itself: mergeable across volumes, and
/// its percentiles equal NumPy's over every value counted. Integer-typed voxels (8 and 16 bits
/// after scaling: at most 65,536 distinct values a volume) are counted exactly; wider integer
/// and float voxels go through [`ValueCounts::add_rounded`], which keeps 11 significant bits
/// (a relative error of at most 2^-12 ≈ 0.024%), so memory stays bounded by the number of
/// distinct rounded values (~2,048 per power of two used).
#[derive(Debug, Clone, Default)]
pub struct ValueCounts {
    counts: HashMap<u64, u64>,
    total: u64,
    /// True once a rounded value went in.
    pub approximate: bool,
}

/// Keeps the 11 most significant bits of `v`'s mantissa (round to nearest).
fn round_mantissa(v: f64) -> f64 {
    const DROP: u32 = 52 - 11;
    let bits = v.to_bits();
    let half = 1u64 << (DROP - 1);
    let rounded = (bits + half) & !((1u64 << DROP) - 1);
    let r = f64::from_bits(rounded);
    if r.is_finite() { r } else { v }
}

impl ValueCounts {
    /// Counts `v` exactly `n` times (non-finite values are the caller's to skip).
    pub fn add(&mut self, v: f64, n: u64) {
        // -0.0 and 0.0 are one value.
        let v = if v == 0.0 { 0.0 } else { v };
        *self.counts.entry(v.to_bits()).or_insert(0) += n;
        self.total += n;
    }

    /// Counts `v` rounded to 11 significant bits.
    pub fn add_rounded(&mut self, v: f64) {
        self.approximate = true;
        self.add(round_mantissa(v), 1);
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &ValueCounts) {
        for (&k, &n) in &other.counts {
            *self.counts.entry(k).or_insert(0) += n;
        }
        self.total += other.total;
        self.approximate |= other.approximate;
    }

    /// Values counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The linear percentiles `ps` (in percent) of every value counted; `None` when empty.
    pub fn percentiles(&self, ps: &[f64]) -> Option<Vec<f64>> {
        if self.total == 0 {
            return None;
        }
        let mut sorted: Vec<(f64, u64)> = self
            .counts
            .iter()
            .map(|(&k, &n)| (f64::from_bits(k), n))
            .collect();
        sorted.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        // The value at 0-based rank `r` of the expanded sorted list.
        let at = |r: u64| {
            let mut seen = 0u64;
            for &(v, n) in &sorted {
                seen += n;
                if r < seen {
                    return v;
                }
            }
            sorted[sorted.len() - 1].0
        };
        Some(
            ps.iter()
                .map(|&p| {
                    let r = p / 100.0 * (self.total - 1) as f64;
                    let (i, frac) = (r.floor() as u64, r - r.floor());
                    let a = at(i);
                    if frac > 0.0 {
                        a + (at(i + 1) - a) * frac
                    } else {
                        a
                    }
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_percentiles_and_bins() {
        let s = summarize([4.0, 1.0, 3.0, 2.0, f64::NAN].into_iter(), 3);
        assert_eq!(s.nan, 1);
        assert_eq!((s.min, s.max, s.mean), (Some(1.0), Some(4.0), Some(2.5)));
        // np.percentile([1,2,3,4], 25) == 1.75
        assert_eq!(s.percentiles["p25"], Some(1.75));
        assert_eq!(s.percentiles["p50"], Some(2.5));
        // np.histogram([1,2,3,4], 3) -> [1, 1, 2], edges [1, 2, 3, 4]
        assert_eq!(s.bins.counts, vec![1, 1, 2]);
        assert_eq!(s.bins.edges, vec![1.0, 2.0, 3.0, 4.0]);
        let one = summarize([5.0, 5.0].into_iter(), 2);
        assert_eq!(one.bins.edges, vec![4.5, 5.0, 5.5]);
        assert_eq!(one.bins.counts, vec![0, 2]);
        let none = summarize([f64::NAN].into_iter(), 4);
        assert_eq!(none.min, None);
        assert_eq!(none.bins.counts, vec![0; 4]);
    }

    #[test]
    fn counting_percentiles_equal_sorting() {
        let values: Vec<f64> = (0..1000).map(|i| ((i * 37) % 101) as f64 - 50.0).collect();
        let mut c = ValueCounts::default();
        let (a, b) = values.split_at(400);
        let mut c2 = ValueCounts::default();
        a.iter().for_each(|&v| c.add(v, 1));
        b.iter().for_each(|&v| c2.add(v, 1));
        c.merge(&c2);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let ps = [0.5, 50.0, 99.5, 33.3];
        let got = c.percentiles(&ps).unwrap();
        for (g, p) in got.iter().zip(ps) {
            assert!((g - linear_percentile(&sorted, p)).abs() < 1e-9, "{p}");
        }
        assert!(!c.approximate);
    }

    #[test]
    fn rounding_keeps_eleven_bits() {
        for v in [1.0, 2.71, -1234.5678, 1e-7, 65504.0] {
            let r = round_mantissa(v);
            assert!(((r - v) / v).abs() <= 1.0 / 4096.0, "{v} -> {r}");
        }
        assert_eq!(round_mantissa(1000.0), 1000.0);
    }
}
