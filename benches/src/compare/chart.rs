//! One SVG bar chart per scenario (plotters, SVG backend only): a bar per mode at
//! the median of its runs, a whisker over their range.

use std::path::Path;

use plotters::{
    coord::ranged1d::SegmentValue,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::{BenchError, Context, report::format_value};

const SIZE: (u32, u32) = (1100, 520);
const LIQUID: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const OTHER: RGBColor = RGBColor(0x99, 0x99, 0x99);
const FAILED: RGBColor = RGBColor(0xd6, 0x27, 0x28);

/// One bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Under the bar.
    pub label: String,
    /// Height (the median of the runs that count); `None` when none counts.
    pub value: Option<f64>,
    /// The whisker: smallest and largest run.
    pub range: Option<(f64, f64)>,
    /// Whether the mode lost or duplicated messages in some run.
    pub failed: bool,
}

/// Draws `bars` to `path`.
pub fn bar_chart(path: &Path, title: &str, unit: &str, bars: &[Bar]) -> Result<(), BenchError> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).ctx("chart background")?;
    let top = bars
        .iter()
        .flat_map(|b| [b.value, b.range.map(|r| r.1)])
        .flatten()
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.15;
    let n = bars.len();
    if n == 0 {
        return Err(BenchError::new("no bars to draw"));
    }
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(90)
        // A discrete range includes its end: `0..n - 1` holds the n bars (a lone
        // bar gets an empty slot beside it, as a one-value range has no width).
        .build_cartesian_2d((0..(n - 1).max(1)).into_segmented(), 0.0..top)
        .ctx("chart axes")?;
    let label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => bars.get(*i).map(|b| b.label.clone()).unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&label)
        .y_desc(unit)
        .y_label_formatter(&|v| format_value(*v, unit))
        .draw()
        .ctx("chart mesh")?;
    chart
        .draw_series(bars.iter().enumerate().filter_map(|(i, bar)| {
            let colour = if bar.failed {
                FAILED
            } else if bar.label.starts_with("liquid") {
                LIQUID
            } else {
                OTHER
            };
            bar.value.map(|v| {
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), v),
                    ],
                    colour.filled(),
                );
                bar.set_margin(0, 0, 12, 12);
                bar
            })
        }))
        .ctx("chart bars")?;
    chart
        .draw_series(bars.iter().enumerate().filter_map(|(i, bar)| {
            bar.range.map(|(lo, hi)| {
                ErrorBar::new_vertical(
                    SegmentValue::CenterOf(i),
                    lo,
                    bar.value.unwrap_or(lo),
                    hi,
                    BLACK.stroke_width(1),
                    10,
                )
            })
        }))
        .ctx("chart whiskers")?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, bar)| {
            let mut text = bar
                .value
                .map_or("error".to_owned(), |v| format_value(v, unit));
            if bar.failed {
                text.push_str(" FAILED");
            }
            let y = bar.range.map_or(0.0, |r| r.1).max(bar.value.unwrap_or(0.0));
            Text::new(
                text,
                (SegmentValue::CenterOf(i), y),
                ("sans-serif", 14)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        }))
        .ctx("chart labels")?;
    root.present().ctx("write chart")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_bars_whiskers_and_failed_modes() {
        let dir = std::env::temp_dir().join(format!("liquid-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("c.svg");
        let bar = |label: &str, value, range, failed| Bar {
            label: label.into(),
            value,
            range,
            failed,
        };
        let bars = vec![
            bar("liquid", Some(10.0), Some((8.0, 12.0)), false),
            bar("other", None, None, false),
            bar("lossy", Some(5.0), None, true),
        ];
        bar_chart(&path, "title", "msg/s", &bars).expect("chart");
        let svg = std::fs::read_to_string(&path).expect("svg");
        assert!(svg.contains("<svg") && svg.contains("liquid") && svg.contains("error"));
        assert!(svg.contains("FAILED"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
