//! The outer axes of a resize in one streaming pass: each memory-order axis is a [`Level`],
//! every input row is converted once and added into the output rows whose windows hold it, so
//! the input is read once, in order, and no full-size intermediate is allocated. Large inputs
//! are cut into ranges of outputs computed on separate threads with the same numbers.

use super::plan::Plan;

/// One memory-order axis of a fused resize.
#[derive(Clone)]
pub(super) struct Level {
    n_in: usize,
    n_out: usize,
    /// Elements per input / output step along this axis.
    inner_in: usize,
    inner_out: usize,
    /// `None`: copied (converted) as is.
    plan: Option<Plan>,
    /// Area only: for each input index, the outputs whose windows hold it.
    feeds: Vec<Vec<usize>>,
}

impl Level {
    pub(super) fn new(
        n_in: usize,
        n_out: usize,
        inner_in: usize,
        inner_out: usize,
        plan: Option<Plan>,
    ) -> Level {
        let mut feeds = Vec::new();
        if let Some(Plan::Area(w)) = &plan {
            feeds = vec![Vec::new(); n_in];
            for (i, &(s, e)) in w.iter().enumerate() {
                for f in &mut feeds[s..e] {
                    f.push(i);
                }
            }
        }
        Level {
            n_in,
            n_out,
            inner_in,
            inner_out,
            plan,
            feeds,
        }
    }

    /// This level restricted to outputs `i0..i1`, and the input range `k0..k1` they read.
    fn slice(&self, i0: usize, i1: usize) -> (Level, usize, usize) {
        let (plan, k0, k1) = match &self.plan {
            None => (None, i0, i1),
            Some(Plan::Area(w)) => {
                let (k0, k1) = (w[i0].0, w[i1 - 1].1);
                let w = w[i0..i1].iter().map(|&(s, e)| (s - k0, e - k0)).collect();
                (Some(Plan::Area(w)), k0, k1)
            }
            Some(Plan::Nearest(idx)) => {
                let (k0, k1) = (idx[i0], idx[i1 - 1] + 1);
                let idx = idx[i0..i1].iter().map(|&k| k - k0).collect();
                (Some(Plan::Nearest(idx)), k0, k1)
            }
            Some(Plan::Linear(t)) => {
                let (k0, k1) = (t[i0].0, t[i1 - 1].1 + 1);
                let t = t[i0..i1]
                    .iter()
                    .map(|&(a, b, l)| (a - k0, b - k0, l))
                    .collect();
                (Some(Plan::Linear(t)), k0, k1)
            }
        };
        let sub = Level::new(k1 - k0, i1 - i0, self.inner_in, self.inner_out, plan);
        (sub, k0, k1)
    }
}

/// Inputs below this many elements are resized on the calling thread.
pub(super) const PARALLEL_MIN: usize = 1 << 24;

/// [`fused`] over the whole buffer, split across threads for large inputs: the outermost
/// level with several outputs is cut into ranges of outputs, each computed from the inputs its
/// windows reach. The numbers are the same as on one thread (every output is computed the
/// same way); only a cold, big volume gains, and it is the request a user waits for.
pub(super) fn fused_parallel<T, F>(
    levels: &[Level],
    src: &[T],
    mid: &mut [f32],
    conv: &F,
    min_len: usize,
) where
    T: Copy + Sync,
    F: Fn(T) -> f32 + Sync,
{
    let scratch_for = |levels: &[Level]| -> Vec<(Vec<f32>, Vec<f32>)> {
        levels
            .iter()
            .map(|l| (vec![0.0; l.inner_out], vec![0.0; l.inner_out]))
            .collect()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    // The split level: the first with more than one output; every level above has one.
    let split = levels.iter().position(|l| l.n_out > 1);
    let (p, ok) = match split {
        Some(p) => (p, levels[..p].iter().all(|l| l.n_in == 1)),
        None => (0, false),
    };
    if threads < 2 || src.len() < min_len || !ok || levels.len() - p < 2 {
        fused(levels, src, mid, conv, &mut scratch_for(levels));
        return;
    }
    let lv = &levels[p];
    let per = lv.n_out.div_ceil(threads);
    std::thread::scope(|scope| {
        let mut rest_out = mid;
        for i0 in (0..lv.n_out).step_by(per) {
            let i1 = (i0 + per).min(lv.n_out);
            let (chunk, tail) = rest_out.split_at_mut((i1 - i0) * lv.inner_out);
            rest_out = tail;
            let (sub, k0, k1) = lv.slice(i0, i1);
            let mut sub_levels = vec![sub];
            sub_levels.extend(levels[p + 1..].iter().cloned());
            let part = &src[k0 * lv.inner_in..k1 * lv.inner_in];
            let mut scratch = scratch_for(&sub_levels);
            scope.spawn(move || fused(&sub_levels, part, chunk, conv, &mut scratch));
        }
    });
}

/// Two rows the size of one output step, per level, reused across calls: linear's left and
/// right taps; area's resized input row on its way into the sums.
type Scratch = [(Vec<f32>, Vec<f32>)];

/// Resizes the block `src` (this level's `n_in` steps) into `out` (its `n_out` steps),
/// recursing into deeper levels; the deepest level converts a row.
fn fused<T, F>(levels: &[Level], src: &[T], out: &mut [f32], conv: &F, scratch: &mut Scratch)
where
    T: Copy,
    F: Fn(T) -> f32,
{
    let (lv, rest) = levels.split_first().expect("at least one level");
    if rest.is_empty() {
        for (o, &v) in out.iter_mut().zip(src) {
            *o = conv(v);
        }
        return;
    }
    let below = Below {
        levels: rest,
        src,
        inner_in: lv.inner_in,
        conv,
    };
    match &lv.plan {
        None => copy(lv, &below, out, scratch),
        Some(Plan::Area(w)) => area(lv, w, &below, out, scratch),
        Some(Plan::Nearest(idx)) => nearest(lv, idx, &below, out, scratch),
        Some(Plan::Linear(taps)) => linear(lv, taps, &below, out, scratch),
    }
}

/// What a level's step needs from the call it is in: its input block and the levels below.
struct Below<'a, T, F> {
    levels: &'a [Level],
    src: &'a [T],
    /// Elements per input step of the calling level.
    inner_in: usize,
    conv: &'a F,
}

impl<T, F> Below<'_, T, F>
where
    T: Copy,
    F: Fn(T) -> f32,
{
    /// Input step `k` of the calling level.
    fn input(&self, k: usize) -> &[T] {
        &self.src[k * self.inner_in..(k + 1) * self.inner_in]
    }

    /// Input step `k` resized by the levels below into `out`.
    fn resize(&self, k: usize, out: &mut [f32], scratch: &mut Scratch) {
        fused(self.levels, self.input(k), out, self.conv, scratch);
    }
}

/// A level without a plan: each step resized on its own.
fn copy<T, F>(lv: &Level, below: &Below<T, F>, out: &mut [f32], scratch: &mut Scratch)
where
    T: Copy,
    F: Fn(T) -> f32,
{
    let (_, deeper) = scratch.split_first_mut().expect("one scratch per level");
    for (k, o) in out
        .chunks_exact_mut(lv.inner_out)
        .enumerate()
        .take(lv.n_out)
    {
        below.resize(k, o, deeper);
    }
}

/// Area: every input step added into the outputs whose windows hold it, then each sum divided
/// by its window's length.
fn area<T, F>(
    lv: &Level,
    w: &[(usize, usize)],
    below: &Below<T, F>,
    out: &mut [f32],
    scratch: &mut Scratch,
) where
    T: Copy,
    F: Fn(T) -> f32,
{
    let ((a, _), deeper) = scratch.split_first_mut().expect("one scratch per level");
    let io = lv.inner_out;
    out.fill(0.0);
    let leaf_below = below.levels.len() == 1;
    for k in 0..lv.n_in {
        if lv.feeds[k].is_empty() {
            continue;
        }
        if leaf_below {
            // Convert straight into the sums: no round trip through a scratch row.
            for &i in &lv.feeds[k] {
                for (o, &v) in out[i * io..(i + 1) * io].iter_mut().zip(below.input(k)) {
                    *o += (below.conv)(v);
                }
            }
            continue;
        }
        below.resize(k, a, deeper);
        for &i in &lv.feeds[k] {
            for (o, &v) in out[i * io..(i + 1) * io].iter_mut().zip(a.iter()) {
                *o += v;
            }
        }
    }
    for (i, &(s, e)) in w.iter().enumerate() {
        // A multiply vectorises far better than a divide; the reciprocal costs at most
        // one float32 rounding step.
        let inv = 1.0 / (e - s) as f32;
        out[i * io..(i + 1) * io].iter_mut().for_each(|v| *v *= inv);
    }
}

/// Nearest: each output step is its source step, copied from the previous output when the
/// source repeats (upsampling).
fn nearest<T, F>(
    lv: &Level,
    idx: &[usize],
    below: &Below<T, F>,
    out: &mut [f32],
    scratch: &mut Scratch,
) where
    T: Copy,
    F: Fn(T) -> f32,
{
    let (_, deeper) = scratch.split_first_mut().expect("one scratch per level");
    let io = lv.inner_out;
    for i in 0..lv.n_out {
        let (done, todo) = out.split_at_mut(i * io);
        if i > 0 && idx[i] == idx[i - 1] {
            todo[..io].copy_from_slice(&done[(i - 1) * io..]);
        } else {
            below.resize(idx[i], &mut todo[..io], deeper);
        }
    }
}

/// Linear: each output step blends its two source steps, each resized once while the taps
/// move forward.
fn linear<T, F>(
    lv: &Level,
    taps: &[(usize, usize, f32)],
    below: &Below<T, F>,
    out: &mut [f32],
    scratch: &mut Scratch,
) where
    T: Copy,
    F: Fn(T) -> f32,
{
    let ((a, b), deeper) = scratch.split_first_mut().expect("one scratch per level");
    let io = lv.inner_out;
    let mut have = (usize::MAX, usize::MAX);
    for (i, &(i0, i1, l1)) in taps.iter().enumerate() {
        if have.0 != i0 {
            if have.1 == i0 {
                // Moving forward: the old right tap is the new left one.
                std::mem::swap(a, b);
                have = (i0, have.0);
            } else {
                below.resize(i0, a, deeper);
                have.0 = i0;
            }
        }
        if have.1 != i1 {
            below.resize(i1, b, deeper);
            have.1 = i1;
        }
        for ((o, &x), &y) in out[i * io..(i + 1) * io]
            .iter_mut()
            .zip(a.iter())
            .zip(b.iter())
        {
            *o = (1.0 - l1) * x + l1 * y;
        }
    }
}
