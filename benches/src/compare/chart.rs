//! One SVG bar chart per scenario (plotters, SVG backend only).

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

/// Draws `bars` (label, value; `None` for a failed mode) to `path`.
pub fn bar_chart(
    path: &Path,
    title: &str,
    unit: &str,
    bars: &[(String, Option<f64>)],
) -> Result<(), BenchError> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).ctx("chart background")?;
    let top = bars
        .iter()
        .filter_map(|(_, v)| *v)
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
        SegmentValue::CenterOf(i) => bars.get(*i).map(|b| b.0.clone()).unwrap_or_default(),
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
        .draw_series(bars.iter().enumerate().filter_map(|(i, (name, value))| {
            let colour = if name.starts_with("liquid") {
                LIQUID
            } else {
                OTHER
            };
            value.map(|v| {
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
        .draw_series(bars.iter().enumerate().map(|(i, (_, value))| {
            let text = value.map_or("error".to_owned(), |v| format_value(v, unit));
            Text::new(
                text,
                (SegmentValue::CenterOf(i), value.unwrap_or(0.0)),
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
    fn draws_bars_and_failed_modes() {
        let dir = std::env::temp_dir().join(format!("liquid-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("c.svg");
        let bars = vec![
            ("liquid".to_owned(), Some(10.0)),
            ("other".to_owned(), None),
        ];
        bar_chart(&path, "title", "msg/s", &bars).expect("chart");
        let svg = std::fs::read_to_string(&path).expect("svg");
        assert!(svg.contains("<svg") && svg.contains("liquid") && svg.contains("error"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
