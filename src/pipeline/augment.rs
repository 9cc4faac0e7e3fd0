//! Seeded random transforms (MONAI `RandFlip`, `RandRotate`) and the draws behind them, as
//! pure functions of the request: the same (seed, epoch, dataset, split, item, transform)
//! always draws the same numbers, whatever the request order, worker, replica or time. A random
//! transform is *resolved* into the deterministic one it drew (`Flip`, `Rotate`), so a random
//! request and its replay with `flip=`/`rotate=` share one cache entry and give the same bytes.
//!
//! # The draws (version 1)
//!
//! Draw `n` of transform `t` for one item is the first 8 bytes, little-endian, of
//! `SHA-256("medserve-draw-v1" 0 seed 0 epoch 0 dataset 0 split 0 item 0 t 0 n)` (numbers in
//! decimal, `0` a zero byte), as a `u64`; a unit draw is its top 53 bits times 2^-53, in
//! `[0, 1)`. A transform fires when its draw 0 is below its probability (MONAI:
//! `R.rand() < prob`); `RandRotate`'s angle is `-range + 2 * range * u` with `u` its draw 1
//! (MONAI: `R.uniform(-range, range)`), in float64.

use sha2::{Digest, Sha256};

use crate::cache::Canonical;
use crate::imaging::spatial::SpatialAxes;

/// Which item the draws are for: every part of its identity, so two items (or one item in
/// two splits or datasets) never share draws.
#[derive(Debug, Clone, Copy)]
pub struct DrawScope<'a> {
    pub seed: u64,
    pub epoch: u64,
    pub dataset: &'a str,
    pub split: &'a str,
    pub item: &'a str,
}

impl DrawScope<'_> {
    /// Draw `n` of transform `transform`, as a `u64`.
    pub fn bits(&self, transform: &str, n: u64) -> u64 {
        let mut h = Sha256::new();
        for part in [
            "medserve-draw-v1",
            &self.seed.to_string(),
            &self.epoch.to_string(),
            self.dataset,
            self.split,
            self.item,
            transform,
            &n.to_string(),
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        let d = h.finalize();
        u64::from_le_bytes(d[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
    }

    /// Draw `n` of transform `transform`, uniform in `[0, 1)`.
    pub fn unit(&self, transform: &str, n: u64) -> f64 {
        (self.bits(transform, n) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// `RandFlip(prob, spatial_axis=axes)`: flips `axes` together with probability `prob`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandFlip {
    pub prob: f64,
    pub axes: SpatialAxes,
}

/// `RandRotate(range_x=range, prob=prob)` (2D): with probability `prob`, rotates by an angle
/// uniform in `(-range, range)` **radians**.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandRotate {
    pub range: f64,
    pub prob: f64,
}

/// MONAI `RandRotate`'s default probability.
pub const DEFAULT_ROTATE_PROB: f64 = 0.1;

/// The random transforms of one request, with the seed and epoch they are drawn under.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Augment {
    pub seed: u64,
    pub epoch: u64,
    pub flip: Option<RandFlip>,
    pub rotate: Option<RandRotate>,
}

/// What the random transforms of one item drew. `None` in an outer option: not asked for;
/// `Some(None)`: asked for and not fired.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Drawn {
    pub flip: Option<Option<SpatialAxes>>,
    pub rotate: Option<Option<f64>>,
}

impl Augment {
    /// True when there is nothing random to draw.
    pub fn is_empty(&self) -> bool {
        self.flip.is_none() && self.rotate.is_none()
    }

    /// The draws for one item.
    pub fn draw(&self, dataset: &str, split: &str, item: &str) -> Drawn {
        let scope = DrawScope {
            seed: self.seed,
            epoch: self.epoch,
            dataset,
            split,
            item,
        };
        Drawn {
            flip: self
                .flip
                .map(|f| (scope.unit("rand_flip", 0) < f.prob).then_some(f.axes)),
            rotate: self.rotate.map(|r| {
                (scope.unit("rand_rotate", 0) < r.prob)
                    .then(|| -r.range + 2.0 * r.range * scope.unit("rand_rotate", 1))
            }),
        }
    }
}

impl Drawn {
    /// The applied transforms as the deterministic parameters that replay them,
    /// `flip=all;rotate=-0.81...` (`;`-separated, in the order they are applied; the angle
    /// in the shortest decimal that reads back as the same float64), or `none`.
    pub fn header(&self, rank: usize) -> String {
        let mut parts = Vec::new();
        if let Some(Some(axes)) = self.flip {
            if axes == SpatialAxes::all(rank) {
                parts.push("flip=all".to_string());
            } else {
                parts.push(format!("flip={}", axes.canonical()));
            }
        }
        if let Some(Some(angle)) = self.rotate {
            parts.push(format!("rotate={angle}"));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(";")
        }
    }

    /// The flip to apply (none when not drawn).
    pub fn flip_axes(&self) -> SpatialAxes {
        self.flip.flatten().unwrap_or(SpatialAxes::NONE)
    }

    /// The rotation to apply, if drawn.
    pub fn rotate_angle(&self) -> Option<f64> {
        self.rotate.flatten()
    }
}

/// The random part of a request's name (cache keys, ETags): what is drawn and under which
/// seed and epoch.
impl Canonical for Augment {
    fn write_canonical(&self, out: &mut String) {
        out.push_str(&format!("rand(seed={},epoch={}", self.seed, self.epoch));
        if let Some(f) = self.flip {
            out.push_str(&format!(",flip({:e},{})", f.prob, f.axes.canonical()));
        }
        if let Some(r) = self.rotate {
            out.push_str(&format!(",rotate({:e},{:e})", r.range, r.prob));
        }
        out.push(')');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(item: &str) -> DrawScope<'_> {
        DrawScope {
            seed: 7,
            epoch: 0,
            dataset: "d",
            split: "train",
            item,
        }
    }

    #[test]
    fn draws_are_stable_and_separate() {
        let a = scope("x").bits("rand_flip", 0);
        assert_eq!(a, scope("x").bits("rand_flip", 0));
        assert_ne!(a, scope("y").bits("rand_flip", 0));
        assert_ne!(a, scope("x").bits("rand_flip", 1));
        assert_ne!(a, scope("x").bits("rand_rotate", 0));
        let mut s = scope("x");
        s.epoch = 1;
        assert_ne!(a, s.bits("rand_flip", 0));
        // Fixed by the documented algorithm: a change to it must be deliberate (and be
        // reflected in the plan's algorithm version and the client).
        let expected = {
            let mut h = Sha256::new();
            h.update(b"medserve-draw-v1\x007\x000\x00d\x00train\x00x\x00rand_flip\x000\x00");
            u64::from_le_bytes(h.finalize()[..8].try_into().unwrap())
        };
        assert_eq!(a, expected);
    }

    #[test]
    fn unit_draws_are_uniform_enough() {
        let n = 20_000;
        let mean = (0..n)
            .map(|i| scope(&i.to_string()).unit("t", 0))
            .sum::<f64>()
            / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        let fired = (0..n)
            .filter(|i| scope(&i.to_string()).unit("t", 0) < 0.1)
            .count();
        assert!((1700..2300).contains(&fired), "{fired}");
    }

    #[test]
    fn probabilities_zero_and_one_are_exact() {
        let mut aug = Augment {
            seed: 1,
            flip: Some(RandFlip {
                prob: 1.0,
                axes: SpatialAxes::all(2),
            }),
            rotate: Some(RandRotate {
                range: 0.5,
                prob: 0.0,
            }),
            ..Default::default()
        };
        for i in 0..100 {
            let d = aug.draw("d", "s", &i.to_string());
            assert_eq!(d.flip, Some(Some(SpatialAxes::all(2))));
            assert_eq!(d.rotate, Some(None));
            assert_eq!(d.header(2), "flip=all");
        }
        aug.rotate = Some(RandRotate {
            range: 0.5,
            prob: 1.0,
        });
        for i in 0..100 {
            let a = aug.draw("d", "s", &i.to_string()).rotate_angle().unwrap();
            assert!(a.abs() < 0.5);
            let h = aug.draw("d", "s", &i.to_string()).header(2);
            let text = h.strip_prefix("flip=all;rotate=").unwrap();
            assert_eq!(
                text.parse::<f64>().unwrap(),
                a,
                "the header reads back exactly"
            );
        }
        assert_eq!(Drawn::default().header(2), "none");
    }
}
