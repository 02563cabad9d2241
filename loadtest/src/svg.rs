//! A self-contained SVG chart of a run over time: sends per second, the 99th percentile
//! lateness of each second's follow-ups and, when sampled, the engine's resident memory. One
//! panel per series, each scaled to its own maximum, read in any browser.

use std::fmt::Write as _;

use crate::delivery::TimelinePoint;

const WIDTH: f64 = 800.0;
const PANEL_HEIGHT: f64 = 160.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const GAP: f64 = 40.0;

/// One panel: its label, unit and a value per second (`None` where nothing was measured).
struct Series {
    label: &'static str,
    unit: &'static str,
    values: Vec<Option<f64>>,
}

/// Draws the chart of `timeline`, titled `title`.
pub fn render(title: &str, timeline: &[TimelinePoint]) -> String {
    let mut panels = vec![
        Series {
            label: "sends per second",
            unit: "/s",
            values: timeline.iter().map(|point| Some(point.sends as f64)).collect(),
        },
        Series {
            label: "lateness p99",
            unit: " ms",
            values: timeline
                .iter()
                .map(|point| point.lateness_p99_ms.map(|ms| ms as f64))
                .collect(),
        },
    ];
    if timeline.iter().any(|point| point.rss_bytes.is_some()) {
        panels.push(Series {
            label: "engine resident memory",
            unit: " MiB",
            values: timeline
                .iter()
                .map(|point| point.rss_bytes.map(|bytes| bytes as f64 / 1_048_576.0))
                .collect(),
        });
    }

    let height = TOP + panels.len() as f64 * (PANEL_HEIGHT + GAP);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"22\" font-size=\"15\">{}</text>\n",
        escape(title)
    );
    for (index, series) in panels.iter().enumerate() {
        let top = TOP + index as f64 * (PANEL_HEIGHT + GAP);
        draw_panel(&mut svg, series, top, timeline.len());
    }
    svg.push_str("</svg>\n");
    svg
}

fn draw_panel(svg: &mut String, series: &Series, top: f64, seconds: usize) {
    let plot_width = WIDTH - LEFT - RIGHT;
    let bottom = top + PANEL_HEIGHT;
    let max = series.values.iter().flatten().copied().fold(0.0_f64, f64::max);
    let scale = if max > 0.0 { PANEL_HEIGHT / max } else { 0.0 };
    let step = plot_width / seconds.max(1) as f64;

    let _ = write!(
        svg,
        "<text x=\"{LEFT}\" y=\"{}\">{}</text>\n\
         <line x1=\"{LEFT}\" y1=\"{bottom}\" x2=\"{}\" y2=\"{bottom}\" stroke=\"#888\"/>\n\
         <line x1=\"{LEFT}\" y1=\"{top}\" x2=\"{LEFT}\" y2=\"{bottom}\" stroke=\"#888\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}{}</text>\n\
         <text x=\"{}\" y=\"{bottom}\" text-anchor=\"end\">0</text>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} s</text>\n",
        top - 6.0,
        series.label,
        WIDTH - RIGHT,
        LEFT - 6.0,
        top + 10.0,
        format_value(max),
        series.unit,
        LEFT - 6.0,
        WIDTH - RIGHT,
        bottom + 14.0,
        seconds,
    );

    // A gap in the measurements breaks the line rather than drawing it through zero.
    let mut segment = String::new();
    let mut segments = Vec::new();
    for (second, value) in series.values.iter().enumerate() {
        match value {
            Some(value) => {
                let x = LEFT + (second as f64 + 0.5) * step;
                let y = bottom - value * scale;
                let _ = write!(segment, "{x:.1},{y:.1} ");
            }
            None if !segment.is_empty() => segments.push(std::mem::take(&mut segment)),
            None => {}
        }
    }
    if !segment.is_empty() {
        segments.push(segment);
    }
    for points in segments {
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.trim_end()
        );
    }
}

/// A scale label: whole numbers and values of 100 or more without decimals.
fn format_value(value: f64) -> String {
    if value >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// Escapes text for an SVG text node.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(second: u64, sends: u64, lateness: Option<u64>) -> TimelinePoint {
        TimelinePoint { second, sends, lateness_p99_ms: lateness, rss_bytes: None }
    }

    #[test]
    fn two_panels_without_memory_samples() {
        let timeline = [point(0, 10, Some(5)), point(1, 30, None), point(2, 20, Some(50))];
        let svg = render("smoke <run>", &timeline);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains("smoke &lt;run&gt;"));
        assert!(svg.contains(">30/s</text>"), "{svg}");
        assert!(svg.contains(">50 ms</text>"), "{svg}");
        assert!(!svg.contains("resident memory"));
        // Sends: one line of three points; lateness: broken by the missing second.
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn memory_panel_when_sampled() {
        let mut sampled = point(0, 1, Some(1));
        sampled.rss_bytes = Some(64 * 1_048_576);
        let svg = render("run", &[sampled]);
        assert!(svg.contains("engine resident memory"));
        assert!(svg.contains(">64 MiB</text>"), "{svg}");
    }
}
