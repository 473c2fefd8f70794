//! What a bench run found: figures with their targets, the human table, the
//! machine-readable result file and the plot.

use crate::table::Table;
use serde_json::{json, Value};
use std::path::Path;

/// Which way a target bounds its figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The figure must be at least the target.
    AtLeast,
    /// The figure must be at most the target.
    AtMost,
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Stable key in the result file (`throughput.tcp.1`, …).
    pub key: String,
    /// What it is, for the table.
    pub label: String,
    /// The median (or the single value).
    pub value: f64,
    /// Unit of `value`.
    pub unit: &'static str,
    /// The target, if the issue sets one.
    pub target: Option<(Bound, f64)>,
    /// Every run's value, in run order.
    pub samples: Vec<f64>,
}

impl Figure {
    /// A figure without a target.
    pub fn info(key: &str, label: &str, unit: &'static str, samples: Vec<f64>) -> Figure {
        Figure {
            key: key.to_owned(),
            label: label.to_owned(),
            value: median(&samples),
            unit,
            target: None,
            samples,
        }
    }

    /// The same figure, with a target.
    pub fn with_target(mut self, bound: Bound, target: f64) -> Figure {
        self.target = Some((bound, target));
        self
    }

    /// Whether the figure meets its target (`None` without one).
    pub fn pass(&self) -> Option<bool> {
        self.target.map(|(bound, t)| match bound {
            Bound::AtLeast => self.value >= t,
            Bound::AtMost => self.value <= t,
        })
    }
}

/// Something the run did not measure, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// Which figures.
    pub what: String,
    /// Why.
    pub reason: String,
}

/// The median of `xs` (the mean of the middle two for an even count); NaN when empty.
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    match (v.get(mid.wrapping_sub(1)), v.get(mid)) {
        (Some(a), Some(b)) if v.len() % 2 == 0 => (a + b) / 2.0,
        (_, Some(b)) => *b,
        _ => f64::NAN,
    }
}

/// The `q`-quantile (0..=1) of sorted `xs`, nearest rank; NaN when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1).min(sorted.len() - 1)).copied().unwrap_or(f64::NAN)
}

fn number(v: f64) -> String {
    if !v.is_finite() {
        "-".to_owned()
    } else if v.abs() >= 100.0 {
        crate::table::thousands(v.round() as u64)
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        // Ratios near a target: 0.699 must not print as a passing 0.70.
        format!("{v:.3}")
    }
}

/// The human table: figure, value, target, ratio to the target, verdict.
pub fn render(figures: &[Figure], skipped: &[Skipped]) -> String {
    let mut t = Table::new(["figure", "value", "unit", "target", "value/target", "verdict"]);
    for f in figures {
        let (target, ratio) = match f.target {
            Some((Bound::AtLeast, t)) => (format!(">= {}", number(t)), number(f.value / t)),
            Some((Bound::AtMost, t)) => (format!("<= {}", number(t)), number(f.value / t)),
            None => (String::new(), String::new()),
        };
        let verdict = match f.pass() {
            Some(true) => "pass",
            Some(false) => "MISS",
            None => "",
        };
        t.row(vec![
            f.label.clone(),
            number(f.value),
            f.unit.to_owned(),
            target,
            ratio,
            verdict.to_owned(),
        ]);
    }
    let mut out = t.render();
    for s in skipped {
        out.push_str(&format!("\nskipped: {}: {}", s.what, s.reason));
    }
    out
}

/// The result file's JSON.
pub fn to_json(
    mode: &str,
    runs: usize,
    threads: Option<u16>,
    figures: &[Figure],
    skipped: &[Skipped],
) -> Value {
    let figures: Vec<Value> = figures
        .iter()
        .map(|f| {
            let (bound, target) = match f.target {
                Some((Bound::AtLeast, t)) => (Some(">="), Some(t)),
                Some((Bound::AtMost, t)) => (Some("<="), Some(t)),
                None => (None, None),
            };
            json!({
                "key": f.key,
                "label": f.label,
                "value": finite(f.value),
                "unit": f.unit,
                "bound": bound,
                "target": target,
                "pass": f.pass(),
                "samples": f.samples.iter().map(|s| finite(*s)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let skipped: Vec<Value> =
        skipped.iter().map(|s| json!({ "what": s.what, "reason": s.reason })).collect();
    json!({
        "mode": mode,
        "runs": runs,
        // The proxies' worker threads (`--threads`); null: one per CPU.
        "threads": threads,
        "cores": std::thread::available_parallelism().map_or(1, usize::from),
        "load_average": std::fs::read_to_string("/proc/loadavg").ok().map(|s| s.trim().to_owned()),
        "figures": figures,
        "skipped": skipped,
    })
}

/// JSON has no NaN: unmeasured values are null.
fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}

/// Draws the throughput and latency bars to an SVG file.
pub fn plot(path: &Path, figures: &[Figure]) -> Result<(), String> {
    use plotters::prelude::*;

    let pick = |prefix: &str| -> Vec<(String, f64)> {
        figures
            .iter()
            .filter(|f| f.key.starts_with(prefix) && f.value.is_finite())
            .map(|f| (f.key.trim_start_matches(prefix).to_owned(), f.value))
            .collect()
    };
    let throughput = pick("throughput.");
    let latency = pick("latency.");

    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(600);
    for (area, title, bars, color) in [
        (&left, "throughput, MB/s (median)", &throughput, BLUE),
        (&right, "connect latency, ms (SOCKS5 greeting to first origin byte)", &latency, RED),
    ] {
        if bars.is_empty() {
            continue;
        }
        let top = bars.iter().map(|(_, v)| *v).fold(0.0f64, f64::max) * 1.15;
        let top = if top > 0.0 { top } else { 1.0 };
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(90)
            .y_label_area_size(60)
            .build_cartesian_2d((0..bars.len()).into_segmented(), 0f64..top)
            .map_err(|e| e.to_string())?;
        let labels: Vec<String> = bars.iter().map(|(k, _)| k.clone()).collect();
        let formatter = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(bars.len())
            .x_label_formatter(&formatter)
            .x_label_style(
                ("sans-serif", 11).into_font().transform(FontTransform::Rotate90).color(&BLACK),
            )
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                Histogram::vertical(&chart)
                    .style(color.mix(0.7).filled())
                    .margin(6)
                    .data(bars.iter().enumerate().map(|(i, (_, v))| (i, *v))),
            )
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&xs, 0.5), 50.0);
        assert_eq!(quantile(&xs, 0.99), 99.0);
        assert_eq!(quantile(&xs, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn targets_pass_and_miss_in_both_directions() {
        let f = Figure::info("k", "l", "x", vec![2.0]);
        assert_eq!(f.pass(), None);
        assert_eq!(f.clone().with_target(Bound::AtLeast, 1.0).pass(), Some(true));
        assert_eq!(f.clone().with_target(Bound::AtLeast, 3.0).pass(), Some(false));
        assert_eq!(f.clone().with_target(Bound::AtMost, 2.0).pass(), Some(true));
        assert_eq!(f.with_target(Bound::AtMost, 1.0).pass(), Some(false));
    }

    #[test]
    fn the_table_and_json_carry_targets_and_skips() {
        let figures = vec![
            Figure::info("throughput.tcp.1", "tcp", "MB/s", vec![1.0, 3.0, 2.0])
                .with_target(Bound::AtLeast, 4.0),
            Figure::info("latency.x", "lat", "ms", vec![f64::NAN]),
        ];
        let skipped = vec![Skipped { what: "shadowsocks".into(), reason: "quick mode".into() }];
        let table = render(&figures, &skipped);
        assert!(table.contains("MISS"), "{table}");
        assert!(table.contains("skipped: shadowsocks: quick mode"), "{table}");
        let json = to_json("quick", 1, Some(1), &figures, &skipped);
        assert_eq!(json["threads"], 1);
        assert_eq!(to_json("quick", 1, None, &figures, &skipped)["threads"], Value::Null);
        assert_eq!(json["figures"][0]["value"], 2.0);
        assert_eq!(json["figures"][0]["pass"], false);
        assert_eq!(json["figures"][1]["value"], Value::Null);
        assert_eq!(json["skipped"][0]["reason"], "quick mode");
    }
}
