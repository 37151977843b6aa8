//! SVG charts for reports and benchmarks (`engage evaluate`'s plots, the
//! broker benchmarks' figures), drawn with `plotters`' SVG backend: line
//! charts stacked in one picture, and panels of horizontal bars.

use plotters::coord::Shift;
use plotters::prelude::*;

/// Why a chart could not be drawn (a range plotters cannot lay out). Not
/// retryable with the same data.
#[derive(Debug, thiserror::Error)]
#[error("drawing a chart: {0}")]
pub struct ChartError(String);

fn chart_error(e: impl std::fmt::Display) -> ChartError {
    ChartError(e.to_string())
}

/// One line of a line chart.
#[derive(Clone, Debug)]
pub struct Series<'a> {
    /// The legend's name for it.
    pub name: &'a str,
    /// Its colour, `#rrggbb`.
    pub colour: &'a str,
    /// Its (x, y) points; non-finite ones are left out.
    pub points: Vec<(f64, f64)>,
}

/// One line chart: its lines and axes.
#[derive(Clone, Debug)]
pub struct LineChart<'a> {
    /// The caption.
    pub title: &'a str,
    /// The x axis' description.
    pub x_label: &'a str,
    /// The lines.
    pub series: Vec<Series<'a>>,
    /// Labels for the integer x values 0, 1, … (a categorical axis); `None`
    /// for a numeric one.
    pub x_categories: Option<Vec<String>>,
    /// The top of the y axis; default 1.1 × the largest y.
    pub y_max: Option<f64>,
}

/// One panel of horizontal bars: a figure per system, say.
#[derive(Clone, Debug)]
pub struct Bars<'a> {
    /// The caption.
    pub title: &'a str,
    /// The bars, top to bottom: name, value, colour (`#rrggbb`).
    pub bars: Vec<(&'a str, f64, &'a str)>,
}

/// Width of every picture, pixels.
const WIDTH: u32 = 800;
/// Height of one line chart, pixels.
const LINE_CHART_HEIGHT: u32 = 320;

/// `charts` stacked top to bottom in one SVG picture.
pub fn line_charts(charts: &[LineChart<'_>]) -> Result<String, ChartError> {
    let mut svg = String::new();
    {
        let height = LINE_CHART_HEIGHT * charts.len().max(1) as u32;
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        for (chart, area) in charts.iter().zip(root.split_evenly((charts.len().max(1), 1))) {
            line_chart(chart, &area)?;
        }
        root.present().map_err(chart_error)?;
    }
    Ok(svg)
}

fn line_chart(chart: &LineChart<'_>, area: &DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), ChartError> {
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let points = || chart.series.iter().flat_map(|s| s.points.iter()).filter(finite);
    let x_max = match &chart.x_categories {
        Some(c) => c.len().saturating_sub(1).max(1) as f64,
        None => points().map(|p| p.0).fold(0.0, f64::max).max(1e-9),
    };
    let x_min = points().map(|p| p.0).fold(0.0, f64::min);
    let y_max = chart.y_max.unwrap_or_else(|| points().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.1);
    let mut c = ChartBuilder::on(area)
        .caption(chart.title, ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_min..x_max, 0.0..y_max)
        .map_err(chart_error)?;
    let categories = chart.x_categories.clone();
    let label = move |x: &f64| match &categories {
        Some(c) => c.get(x.round() as usize).cloned().unwrap_or_default(),
        None => format!("{x}"),
    };
    let mut mesh = c.configure_mesh();
    mesh.x_desc(chart.x_label).x_label_formatter(&label).light_line_style(WHITE.mix(0.0));
    if let Some(c) = &chart.x_categories {
        mesh.x_labels(c.len());
    }
    mesh.draw().map_err(chart_error)?;
    for s in &chart.series {
        let colour = parse_colour(s.colour);
        let points: Vec<(f64, f64)> = s.points.iter().filter(finite).copied().collect();
        c.draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(chart_error)?
            .label(s.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(chart_error)
}

/// Panels of horizontal bars stacked top to bottom in one SVG picture, each
/// bar labelled with its name and value.
pub fn bar_charts(panels: &[Bars<'_>]) -> Result<String, ChartError> {
    const BAR: u32 = 24;
    let panel_height = |p: &Bars<'_>| 40 + BAR * p.bars.len().max(1) as u32;
    let height: u32 = panels.iter().map(panel_height).sum::<u32>().max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        let mut rest = root;
        for panel in panels {
            let (area, below) = rest.split_vertically(panel_height(panel));
            rest = below;
            area.draw(&Text::new(panel.title, (10, 8), ("sans-serif", 15))).map_err(chart_error)?;
            let max = panel.bars.iter().map(|b| b.1).filter(|v| v.is_finite()).fold(1e-9, f64::max);
            for (i, (name, value, colour)) in panel.bars.iter().enumerate() {
                let y = 32 + BAR as i32 * i as i32;
                let width = if value.is_finite() { (420.0 * value / max) as i32 } else { 0 };
                let style = ("sans-serif", 12).into_font().into_text_style(&area);
                let right = style.pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Right,
                    plotters::style::text_anchor::VPos::Top,
                ));
                area.draw(&Text::new(name.to_string(), (250, y + 4), right)).map_err(chart_error)?;
                area.draw(&Rectangle::new(
                    [(260, y), (260 + width, y + BAR as i32 - 6)],
                    parse_colour(colour).filled(),
                ))
                .map_err(chart_error)?;
                let text = if value.abs() < 100.0 { format!("{value:.1}") } else { format!("{value:.0}") };
                area.draw(&Text::new(text, (266 + width, y + 4), ("sans-serif", 12))).map_err(chart_error)?;
            }
        }
        rest.present().map_err(chart_error)?;
    }
    Ok(svg)
}

/// A `#rrggbb` colour; grey when it is not one.
fn parse_colour(hex: &str) -> RGBColor {
    let channel = |i: usize| hex.get(i..i + 2).and_then(|c| u8::from_str_radix(c, 16).ok());
    match (hex.strip_prefix('#').map(|_| ()), channel(1), channel(3), channel(5)) {
        (Some(()), Some(r), Some(g), Some(b)) => RGBColor(r, g, b),
        _ => RGBColor(0x99, 0x99, 0x99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the SVG has a text element reading `text`.
    fn has_text(svg: &str, text: &str) -> bool {
        svg.contains(&format!(">\n{text}\n</text>"))
    }

    #[test]
    fn line_charts_draw_every_series_with_escaped_text() {
        let chart = LineChart {
            title: "a < b",
            x_label: "x",
            series: vec![
                Series { name: "up", colour: "#1f77b4", points: vec![(0.0, 0.0), (1.0, 2.0)] },
                Series { name: "flat", colour: "#d62728", points: vec![(0.0, 1.0), (f64::NAN, 1.0), (1.0, 1.0)] },
            ],
            x_categories: None,
            y_max: None,
        };
        let svg = line_charts(&[chart.clone(), chart]).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        assert!(has_text(&svg, "a &lt; b") && has_text(&svg, "up") && has_text(&svg, "flat"), "{svg}");
        // Each line and its legend mark, in its colour, in each chart.
        assert_eq!(svg.matches(r##"stroke="#1F77B4""##).count(), 4, "{svg}");
        assert_eq!(svg.matches(r##"stroke="#D62728""##).count(), 4, "{svg}");
    }

    #[test]
    fn categorical_axes_show_their_labels() {
        let chart = LineChart {
            title: "deciles",
            x_label: "decile",
            series: vec![Series { name: "rate", colour: "#2ca02c", points: vec![(0.0, 0.1), (1.0, 0.5), (2.0, 0.9)] }],
            x_categories: Some(vec!["low".into(), "mid".into(), "7+".into()]),
            y_max: Some(1.0),
        };
        let svg = line_charts(&[chart]).unwrap();
        assert!(has_text(&svg, "low") && has_text(&svg, "mid") && has_text(&svg, "7+"), "{svg}");
    }

    #[test]
    fn bars_are_proportional_to_their_values() {
        let svg =
            bar_charts(&[Bars { title: "events/s", bars: vec![("a", 100.0, "#1f77b4"), ("b", 50.0, "#999999")] }])
                .unwrap();
        assert!(has_text(&svg, "events/s") && has_text(&svg, "a") && has_text(&svg, "50.0"), "{svg}");
        assert!(svg.contains(r#"width="420""#) && svg.contains(r#"width="210""#), "{svg}");
    }
}
