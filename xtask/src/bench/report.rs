//! What a bench run found: figures with their targets, the human table, the
//! machine-readable result file and the plot.

use crate::table::Table;
use serde::Serialize;
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

/// Something the run did not measure, and why; in the result file as
/// `{"reason": …, "what": …}` (fields in key order, see [`ResultFile`]).
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// Why.
    pub reason: String,
    /// Which figures.
    pub what: String,
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

/// `target/bench/result.json`.
///
/// Fields here and in [`FigureRecord`] and [`Skipped`] are declared in
/// alphabetical order: serde writes them in declaration order, and the file
/// has always had its keys sorted (it was built with `json!`, whose maps are
/// sorted), so the bytes stay as they were.
#[derive(Debug, Serialize)]
pub struct ResultFile<'a> {
    /// CPUs this machine offers.
    pub cores: usize,
    /// Every figure measured.
    pub figures: Vec<FigureRecord<'a>>,
    /// `/proc/loadavg` when the file was written; null where there is none.
    pub load_average: Option<String>,
    /// `quick` or `full`.
    pub mode: &'a str,
    /// Runs per figure.
    pub runs: usize,
    /// What was not measured, and why.
    pub skipped: &'a [Skipped],
    /// The proxies' worker threads (`--threads`); null: one per CPU.
    pub threads: Option<u16>,
}

/// One [`Figure`] in the result file. JSON has no NaN: unmeasured values
/// (and samples) are null.
#[derive(Debug, Serialize)]
pub struct FigureRecord<'a> {
    /// `">="`, `"<="`, or null without a target.
    pub bound: Option<&'static str>,
    /// [`Figure::key`].
    pub key: &'a str,
    /// [`Figure::label`].
    pub label: &'a str,
    /// [`Figure::pass`].
    pub pass: Option<bool>,
    /// Every run's value, in run order.
    pub samples: Vec<Option<f64>>,
    /// The target, or null.
    pub target: Option<f64>,
    /// [`Figure::unit`].
    pub unit: &'static str,
    /// The median, or null.
    pub value: Option<f64>,
}

impl<'a> FigureRecord<'a> {
    fn of(f: &'a Figure) -> FigureRecord<'a> {
        let (bound, target) = match f.target {
            Some((Bound::AtLeast, t)) => (Some(">="), Some(t)),
            Some((Bound::AtMost, t)) => (Some("<="), Some(t)),
            None => (None, None),
        };
        FigureRecord {
            bound,
            key: &f.key,
            label: &f.label,
            pass: f.pass(),
            samples: f.samples.iter().map(|s| finite(*s)).collect(),
            target,
            unit: f.unit,
            value: finite(f.value),
        }
    }
}

/// The result file of a run (this machine's cores and load average filled in).
pub fn result_file<'a>(
    mode: &'a str,
    runs: usize,
    threads: Option<u16>,
    figures: &'a [Figure],
    skipped: &'a [Skipped],
) -> ResultFile<'a> {
    ResultFile {
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        figures: figures.iter().map(FigureRecord::of).collect(),
        load_average: std::fs::read_to_string("/proc/loadavg").ok().map(|s| s.trim().to_owned()),
        mode,
        runs,
        skipped,
        threads,
    }
}

/// JSON has no NaN: unmeasured values are null.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
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
    use serde_json::Value;

    fn to_value(file: &ResultFile<'_>) -> Value {
        let text = serde_json::to_string_pretty(file).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// The object's keys (sorted: `Value` keeps no order).
    fn keys(v: &Value) -> Vec<&str> {
        let map = v.as_object().unwrap_or_else(|| panic!("not an object: {v}"));
        map.keys().map(String::as_str).collect()
    }

    /// Asserts `keys` are first written in this order in `text`.
    fn written_in_order(text: &str, keys: &[&str]) {
        let at: Vec<usize> = keys
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("{k} in {text}")))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{keys:?} in {text}");
    }

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
        let json = to_value(&result_file("quick", 1, Some(1), &figures, &skipped));
        assert_eq!(json["threads"], 1);
        assert_eq!(
            to_value(&result_file("quick", 1, None, &figures, &skipped))["threads"],
            Value::Null
        );
        assert_eq!(json["figures"][0]["value"], 2.0);
        assert_eq!(json["figures"][0]["pass"], false);
        assert_eq!(json["figures"][1]["value"], Value::Null);
        assert_eq!(json["skipped"][0]["reason"], "quick mode");
    }

    /// The result file's schema, which docs/performance.md and whatever
    /// reads `target/bench/result.json` rely on: every key, every type.
    #[test]
    fn the_result_file_keeps_its_keys_and_shape() {
        let figures = vec![
            Figure::info("throughput.tcp.1", "tcp", "MB/s", vec![1.0, f64::NAN, 3.0])
                .with_target(Bound::AtMost, 4.0),
            Figure::info("latency.x", "lat", "ms", vec![]),
        ];
        let skipped = vec![Skipped { what: "w".into(), reason: "r".into() }];
        let file = result_file("full", 3, Some(2), &figures, &skipped);
        let text = serde_json::to_string(&file).unwrap_or_else(|e| panic!("{e}"));
        let json = to_value(&file);
        let top = ["cores", "figures", "load_average", "mode", "runs", "skipped", "threads"];
        assert_eq!(keys(&json), top);
        // Written sorted, as the file always was.
        written_in_order(&text, &top);
        assert!(json["cores"].as_u64().is_some_and(|c| c >= 1));
        assert!(json["load_average"].is_string() || json["load_average"].is_null());
        assert_eq!(
            (&json["mode"], &json["runs"], &json["threads"]),
            (&"full".into(), &3.into(), &2.into())
        );

        let f = &json["figures"][0];
        let figure = ["bound", "key", "label", "pass", "samples", "target", "unit", "value"];
        assert_eq!(keys(f), figure);
        written_in_order(&text, &figure);
        assert_eq!(f["bound"], "<=");
        assert_eq!(f["key"], "throughput.tcp.1");
        assert_eq!(f["label"], "tcp");
        assert_eq!(f["pass"], true);
        assert_eq!(f["samples"], serde_json::json!([1.0, null, 3.0]));
        assert_eq!(f["target"], 4.0);
        assert_eq!(f["unit"], "MB/s");
        assert_eq!(f["value"], 2.0);
        let untargeted = &json["figures"][1];
        for key in ["bound", "pass", "target", "value"] {
            assert_eq!(untargeted[key], Value::Null, "{key}");
        }
        assert_eq!(untargeted["samples"], serde_json::json!([]));

        assert_eq!(json["skipped"], serde_json::json!([{ "reason": "r", "what": "w" }]));
        assert!(text.contains(r#"{"reason":"r","what":"w"}"#), "{text}");
    }
}
