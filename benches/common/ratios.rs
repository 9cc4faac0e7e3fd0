//! The ratio table both benches print after criterion: each benchmark's median of this run
//! over its baseline's median of the same run.

use std::path::PathBuf;
use std::time::SystemTime;

/// Criterion's output folder (`CRITERION_HOME`, else `<target>/criterion`).
fn criterion_dir() -> PathBuf {
    std::env::var_os("CRITERION_HOME").map_or_else(
        || {
            std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| PathBuf::from("target"), PathBuf::from)
                .join("criterion")
        },
        PathBuf::from,
    )
}

/// The median (ns) criterion saved for `id` (`group/bench[/param]`), if measured after `since`.
fn median_ns(id: &str, since: SystemTime) -> Option<f64> {
    let path = criterion_dir().join(id).join("new").join("estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn human(ns: f64) -> String {
    match ns {
        n if n >= 1e6 => format!("{:.3} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.2} us", n / 1e3),
        n => format!("{n:.0} ns"),
    }
}

/// Prints `(benchmark, baseline)` pairs measured in this run as ratios (none in `--test` mode,
/// where criterion saves nothing).
pub fn print_ratios(pairs: &[(&str, &str)], since: SystemTime) {
    let rows: Vec<String> = pairs
        .iter()
        .filter_map(|&(id, base)| {
            let (t, b) = (median_ns(id, since)?, median_ns(base, since)?);
            Some(format!(
                "{id:<36} {:>11}  x{:<7.2} {base} ({})",
                human(t),
                t / b,
                human(b)
            ))
        })
        .collect();
    if !rows.is_empty() {
        println!(
            "\nMedians of this run as ratios to their in-run baselines (x = time / baseline):"
        );
        for r in rows {
            println!("{r}");
        }
    }
}
