//! One axis at a time: where each output sample comes from in each mode ([`Plan`]), and the
//! innermost (contiguous) axis resized lane by lane with it.

use super::ResizeMode;

/// Where each output sample of one axis comes from.
#[derive(Clone)]
pub(super) enum Plan {
    /// Window `[start, end)` averaged (torch adaptive average pooling).
    Area(Vec<(usize, usize)>),
    Nearest(Vec<usize>),
    /// `(i0, i1, weight of i1)`.
    Linear(Vec<(usize, usize, f32)>),
}

impl Plan {
    pub(super) fn new(n_in: usize, out: usize, mode: ResizeMode) -> Plan {
        match mode {
            ResizeMode::Area => Plan::Area(
                (0..out)
                    .map(|i| (i * n_in / out, ((i + 1) * n_in).div_ceil(out)))
                    .collect(),
            ),
            ResizeMode::Nearest => Plan::Nearest(nearest_indices(n_in, out)),
            ResizeMode::Linear => {
                let scale = n_in as f32 / out as f32;
                Plan::Linear(
                    (0..out)
                        .map(|i| {
                            let real = (scale * (i as f32 + 0.5) - 0.5).max(0.0);
                            let i0 = (real.floor() as usize).min(n_in - 1);
                            let i1 = if i0 < n_in - 1 { i0 + 1 } else { i0 };
                            let l1 = (real - i0 as f32).clamp(0.0, 1.0);
                            (i0, i1, l1)
                        })
                        .collect(),
                )
            }
        }
    }

    /// A contiguous lane: `src` has the axis' `n` samples, `dst` its `out`.
    fn lane(&self, src: &[f32], dst: &mut [f32]) {
        match self {
            Plan::Area(w) => {
                for (o, &(s, e)) in dst.iter_mut().zip(w) {
                    // Each window summed on its own (no running sum), so a NaN stays inside
                    // its windows, as in torch.
                    let sum: f64 = src[s..e].iter().map(|&v| f64::from(v)).sum();
                    *o = (sum / (e - s) as f64) as f32;
                }
            }
            Plan::Nearest(idx) => {
                for (o, &k) in dst.iter_mut().zip(idx) {
                    *o = src[k];
                }
            }
            Plan::Linear(taps) => {
                for (o, &(i0, i1, l1)) in dst.iter_mut().zip(taps) {
                    *o = (1.0 - l1) * src[i0] + l1 * src[i1];
                }
            }
        }
    }
}

/// torch's legacy `nearest` source indices: `min(floor(f32(i) * f32(in)/f32(out)), in - 1)`.
pub fn nearest_indices(n_in: usize, out: usize) -> Vec<usize> {
    let scale = n_in as f32 / out as f32;
    (0..out)
        .map(|i| (((i as f32) * scale).floor() as usize).min(n_in - 1))
        .collect()
}

/// The innermost (contiguous) axis of a dense buffer with memory-order sizes `dims`, resized
/// lane by lane to `out` samples.
pub(super) fn resize_lanes(src: &[f32], dims: &[usize], out: usize, mode: ResizeMode) -> Vec<f32> {
    let n = dims[dims.len() - 1];
    let lanes: usize = dims[..dims.len() - 1].iter().product();
    let mut dst = vec![0.0f32; lanes * out];
    if dst.is_empty() {
        return dst;
    }
    let plan = Plan::new(n, out, mode);
    for (s, d) in src.chunks_exact(n).zip(dst.chunks_exact_mut(out)) {
        plan.lane(s, d);
    }
    dst
}
