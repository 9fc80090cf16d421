//! Files besides the table: JSON, `.hgrm` percentile distributions and an
//! SVG percentile plot.

use std::{fmt::Write as _, path::Path};

use plotters::prelude::*;

use crate::{measure::Hist, report::Report};

/// Writes the report as JSON.
pub fn write_json(r: &Report, path: &Path) -> Result<(), String> {
    let text = serde_json::to_string_pretty(r).map_err(|e| format!("json: {e}"))?;
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

/// The classic HdrHistogram percentile distribution text (values in ms),
/// as `HistogramLogProcessor` and the online plotters read it.
pub fn hgrm(h: &Hist) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let ms = |us: u64| us as f64 / 1000.0;
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let value = ms(h.highest_equivalent(v.value_iterated_to()));
        if q < 1.0 {
            let _ = writeln!(
                s,
                "{value:>12.3} {q:>2.12} {:>10} {:>14.2}",
                v.count_since_last_iteration(),
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(
                s,
                "{value:>12.3} {q:>2.12} {:>10}",
                v.count_since_last_iteration()
            );
        }
    }
    let _ = writeln!(
        s,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        s,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        ms(h.max()),
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
    s
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// Writes one `.hgrm` per window and metric into `dir`; returns the paths.
pub fn write_hgrm(r: &Report, dir: &Path) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for (window, metric, h) in &r.hists {
        let p = dir.join(format!("{}-{}-{}.hgrm", r.scenario, slug(window), metric));
        std::fs::write(&p, hgrm(h)).map_err(|e| format!("{}: {e}", p.display()))?;
        out.push(p.display().to_string());
    }
    Ok(out)
}

/// Draws every kept histogram as a percentile curve: x is 1/(1-p) on a log
/// scale (50 %, 90 %, 99 %, 99.9 %, ...), y the latency in ms.
pub fn write_plot(r: &Report, path: &Path) -> Result<(), String> {
    let err = |e: String| format!("plot {}: {e}", path.display());
    let series: Vec<(String, Vec<(f64, f64)>)> = r
        .hists
        .iter()
        .map(|(w, m, h)| {
            let pts = h
                .iter_quantiles(5)
                .filter(|v| v.quantile_iterated_to() < 1.0)
                .map(|v| {
                    let x = (1.0 / (1.0 - v.quantile_iterated_to())).log10();
                    (
                        x,
                        h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0,
                    )
                })
                .collect();
            (format!("{w}: {m}"), pts)
        })
        .collect();
    let x_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(2.0f64, f64::max)
        .ceil();
    let y_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0.001f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("imgate-loadgen {}: latency by percentile", r.scenario),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            let digits = x.round().max(2.0) as usize - 2;
            format!("{p:.digits$}%")
        })
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, (label, pts)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::new_hist;

    #[test]
    fn hgrm_has_the_classic_shape() {
        let mut h = new_hist();
        for us in 1..=10_000u64 {
            h.record(us).expect("in range");
        }
        let t = hgrm(&h);
        assert!(
            t.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"),
            "{t}"
        );
        assert!(
            t.contains("#[Max     =       10.007, Total count    =        10000]"),
            "{t}"
        );
        let last = t
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.is_empty())
            .expect("lines");
        assert!(last.contains("1.000000000000"), "{last}");
        assert_eq!(slug("chat 20000/s"), "chat-20000-s");
    }
}
