//! Charts drawn with `plotters`: SVG for the report (text stays text, in the browser's fonts)
//! and PNG where files are wanted (text rasterised from the embedded DejaVu Sans, so a PNG
//! looks the same on every machine). Every chart is a value that draws itself on any plotters
//! backend; `svg` and `png` pick the backend.

use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;

use crate::error::{Error, Result};

/// DejaVu Sans (Bitstream Vera licence, `DejaVuSans-LICENSE` beside it), the font of PNG charts.
const FONT: &[u8] = include_bytes!("DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Tableau 10: distinct on screen and in print.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(127, 127, 127),
];
const INK: RGBColor = RGBColor(25, 25, 25);
const GRID: RGBColor = RGBColor(242, 242, 242);

/// The colour of the `i`-th series.
pub fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A chart that can draw itself on any plotters backend, and says its size.
pub trait Chart {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    /// Draws onto `area`, which has `size()`.
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// What drawing on a backend returns.
pub type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font (tested), so this cannot fail at run time.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

fn plot_error(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("drawing a chart: {e}"))
}

/// The chart as an SVG document.
pub fn svg(chart: &impl Chart) -> Result<String> {
    register_font();
    let mut out = String::new();
    {
        let area = SVGBackend::with_string(&mut out, chart.size()).into_drawing_area();
        area.fill(&WHITE).map_err(plot_error)?;
        chart.draw(&area).map_err(plot_error)?;
        area.present().map_err(plot_error)?;
    }
    Ok(out)
}

/// The chart as a PNG image.
pub fn png(chart: &impl Chart) -> Result<Vec<u8>> {
    register_font();
    let (w, h) = chart.size();
    let mut rgb = vec![255u8; w as usize * h as usize * 3];
    {
        let area = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        chart.draw(&area).map_err(plot_error)?;
        area.present().map_err(plot_error)?;
    }
    let img = image::RgbImage::from_raw(w, h, rgb)
        .ok_or_else(|| Error::Internal("chart buffer has the wrong size".into()))?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(plot_error)?;
    Ok(out.into_inner())
}

fn font(size: f64) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&INK)
}

/// One named row of values to plot, with an optional interval per value; NaN is missing.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// One value per category.
    pub values: Vec<f64>,
    /// One interval (low, high) per category, where known.
    pub intervals: Vec<Option<(f64, f64)>>,
}

/// Grouped bars: one group per category, one bar per series, with whiskers for intervals.
#[derive(Clone, Debug)]
pub struct Bars {
    /// Title above the chart.
    pub title: String,
    /// The value axis's label.
    pub y_label: String,
    /// The groups, left to right.
    pub categories: Vec<String>,
    /// The bars of each group.
    pub series: Vec<Series>,
    /// The top of the value axis (100 for percentages).
    pub y_max: f64,
    /// A note under the chart (the interval method).
    pub note: Option<String>,
}

impl Chart for Bars {
    fn size(&self) -> (u32, u32) {
        let groups = self.categories.len().max(1) as u32;
        let per_group = (self.series.len().max(1) as u32 * 14 + 24).max(70);
        ((groups * per_group + 140).clamp(480, 2400), 460)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let n = self.categories.len().max(1);
        let legend_h = 22 * self.series.len().div_ceil(3).max(1) as u32;
        let (main, legend) = area.split_vertically(area.dim_in_pixel().1 - legend_h - 8);
        let mut chart = ChartBuilder::on(&main)
            .caption(&self.title, font(18.0))
            .margin(10)
            .x_label_area_size(48)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..n as f64, 0.0..self.y_max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_formatter(&|v: &f64| format!("{v:.0}"))
            .y_desc(&self.y_label)
            .label_style(font(12.0))
            .axis_desc_style(font(13.0))
            .light_line_style(GRID)
            .draw()?;
        let k = self.series.len().max(1) as f64;
        let width = 0.8 / k;
        for (s, series) in self.series.iter().enumerate() {
            let c = colour(s);
            for (i, v) in series.values.iter().enumerate() {
                let x0 = i as f64 + 0.1 + s as f64 * width;
                let x1 = x0 + width * 0.92;
                if v.is_finite() {
                    let v = v.clamp(0.0, self.y_max);
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(x0, 0.0), (x1, v)],
                        c.filled(),
                    )))?;
                }
                if let Some(Some((lo, hi))) = series.intervals.get(i) {
                    let xm = (x0 + x1) / 2.0;
                    let (lo, hi) = (lo.clamp(0.0, self.y_max), hi.clamp(0.0, self.y_max));
                    let style = INK.stroke_width(1);
                    let cap = width * 0.25;
                    chart.draw_series([
                        PathElement::new(vec![(xm, lo), (xm, hi)], style),
                        PathElement::new(vec![(xm - cap, lo), (xm + cap, lo)], style),
                        PathElement::new(vec![(xm - cap, hi), (xm + cap, hi)], style),
                    ])?;
                }
            }
        }
        // Category names under their groups, in two lines when long.
        for (i, name) in self.categories.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            let lines = two_lines(name);
            for (j, line) in lines.iter().enumerate() {
                main.draw(&Text::new(
                    line.clone(),
                    (px, py + 8 + 15 * j as i32),
                    font(12.0).pos(plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Top,
                    )),
                ))?;
            }
        }
        // The legend: three entries per line.
        let (lw, _) = legend.dim_in_pixel();
        let col = (lw as i32 - 40) / 3;
        for (s, series) in self.series.iter().enumerate() {
            let x = 20 + col * (s as i32 % 3);
            let y = 4 + 22 * (s as i32 / 3);
            legend.draw(&Rectangle::new(
                [(x, y + 2), (x + 14, y + 14)],
                colour(s).filled(),
            ))?;
            legend.draw(&Text::new(
                truncate(&series.name, 48),
                (x + 20, y + 1),
                font(12.0),
            ))?;
        }
        if let Some(note) = &self.note {
            let (w, h) = main.dim_in_pixel();
            main.draw(&Text::new(
                truncate(note, 140),
                (w as i32 - 10, h as i32 - 4),
                font(10.0).pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Right,
                    plotters::style::text_anchor::VPos::Bottom,
                )),
            ))?;
        }
        Ok(())
    }
}

/// Labelled points on 0-100 axes with a least-squares line and a note (r and its interval).
#[derive(Clone, Debug)]
pub struct Scatter {
    /// Title above the chart.
    pub title: String,
    /// The x axis's label.
    pub x_label: String,
    /// The y axis's label.
    pub y_label: String,
    /// (label, x, y) in percent.
    pub points: Vec<(String, f64, f64)>,
    /// Shown in the top left corner, e.g. `r = 0.81 [0.31, 0.96]`.
    pub note: Option<String>,
}

impl Chart for Scatter {
    fn size(&self) -> (u32, u32) {
        (560, 520)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let mut chart = ChartBuilder::on(area)
            .caption(truncate(&self.title, 70), font(16.0))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(52)
            .build_cartesian_2d(0.0..100.0, 0.0..100.0)?;
        chart
            .configure_mesh()
            .x_desc(truncate(&self.x_label, 70))
            .y_desc(truncate(&self.y_label, 60))
            .label_style(font(12.0))
            .axis_desc_style(font(13.0))
            .light_line_style(GRID)
            .draw()?;
        if let Some((a, b)) = least_squares(self.points.iter().map(|p| (p.1, p.2))) {
            let line: Vec<(f64, f64)> = (0..=100)
                .map(|x| (x as f64, a + b * x as f64))
                .filter(|(_, y)| (0.0..=100.0).contains(y))
                .collect();
            chart.draw_series(std::iter::once(PathElement::new(
                line,
                colour(3).stroke_width(2),
            )))?;
        }
        chart.draw_series(self.points.iter().map(|(label, x, y)| {
            EmptyElement::at((x.clamp(0.0, 100.0), y.clamp(0.0, 100.0)))
                + Circle::new((0, 0), 5, colour(0).filled())
                + Text::new(truncate(label, 24), (7, -14), font(11.0))
        }))?;
        if let Some(note) = &self.note {
            let (px, py) = chart.backend_coord(&(2.0, 98.0));
            area.draw(&Text::new(note.clone(), (px, py), font(13.0)))?;
        }
        Ok(())
    }
}

/// A two-dimensional histogram drawn as coloured cells (log colour scale), the density plot
/// of millions of points, with optional threshold lines.
#[derive(Clone, Debug)]
pub struct Density {
    /// Title above the chart.
    pub title: String,
    /// The x axis's label.
    pub x_label: String,
    /// The y axis's label.
    pub y_label: String,
    /// The x range the cells cover.
    pub x_range: (f64, f64),
    /// The y range the cells cover.
    pub y_range: (f64, f64),
    /// Counts, `counts[i][j]` for x cell `i` and y cell `j`.
    pub counts: Vec<Vec<u64>>,
    /// A vertical line (the CLIP threshold).
    pub x_line: Option<f64>,
    /// A horizontal line (the DINOv2 threshold).
    pub y_line: Option<f64>,
}

impl Chart for Density {
    fn size(&self) -> (u32, u32) {
        (620, 520)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let (main, bar) = area.split_horizontally(560);
        let (x0, x1) = self.x_range;
        let (y0, y1) = self.y_range;
        let mut chart = ChartBuilder::on(&main)
            .caption(&self.title, font(16.0))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(52)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style(font(12.0))
            .axis_desc_style(font(13.0))
            .light_line_style(GRID)
            .draw()?;
        let nx = self.counts.len().max(1);
        let ny = self.counts.first().map_or(1, |c| c.len().max(1));
        let max = self.counts.iter().flatten().copied().max().unwrap_or(0);
        let scale = ((max as f64) + 1.0).ln().max(1e-9);
        let (dx, dy) = ((x1 - x0) / nx as f64, (y1 - y0) / ny as f64);
        chart.draw_series(self.counts.iter().enumerate().flat_map(|(i, col)| {
            col.iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(move |(j, c)| {
                    let h = ((*c as f64) + 1.0).ln() / scale;
                    let cx = x0 + i as f64 * dx;
                    let cy = y0 + j as f64 * dy;
                    Rectangle::new(
                        [(cx, cy), (cx + dx, cy + dy)],
                        ViridisRGB::get_color(h).filled(),
                    )
                })
        }))?;
        let dash = INK.stroke_width(1);
        if let Some(x) = self.x_line {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x, y0), (x, y1)],
                dash,
            )))?;
        }
        if let Some(y) = self.y_line {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x0, y), (x1, y)],
                dash,
            )))?;
        }
        // The colour bar: counts on a log scale.
        let (_, bh) = bar.dim_in_pixel();
        let (top, bottom) = (50i32, bh as i32 - 60);
        for k in 0..=100 {
            let y = bottom - (bottom - top) * k / 100;
            bar.draw(&Rectangle::new(
                [(8, y - 3), (22, y + 3)],
                ViridisRGB::get_color(k as f64 / 100.0).filled(),
            ))?;
        }
        bar.draw(&Text::new(format!("{max}"), (4, top - 18), font(11.0)))?;
        bar.draw(&Text::new("1", (10, bottom + 6), font(11.0)))?;
        bar.draw(&Text::new("log", (4, bottom + 22), font(11.0)))?;
        Ok(())
    }
}

/// A histogram: one bar per bin (given by its edges), optionally on a log count axis.
#[derive(Clone, Debug)]
pub struct Histogram {
    /// Title above the chart.
    pub title: String,
    /// The x axis's label.
    pub x_label: String,
    /// The count axis's label.
    pub y_label: String,
    /// Bin labels, left to right (one per count).
    pub bins: Vec<String>,
    /// Counts per bin.
    pub counts: Vec<u64>,
    /// Log count axis (for long-tailed sizes).
    pub log: bool,
    /// Bar colour index.
    pub colour: usize,
}

impl Chart for Histogram {
    fn size(&self) -> (u32, u32) {
        (560, 360)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let n = self.counts.len().max(1);
        let max = self.counts.iter().copied().max().unwrap_or(0).max(1) as f64;
        let mut builder = ChartBuilder::on(area);
        builder
            .caption(&self.title, font(16.0))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(60);
        let every = n.div_ceil(10).max(1);
        let centres: Vec<f64> = (0..n).map(|i| i as f64 + 0.5).collect();
        let c = colour(self.colour);
        let integer = |v: &f64| format!("{v:.0}");
        // Bin labels are drawn under their bars, every `every`-th one.
        let labelled: Vec<usize> = (0..n.min(self.bins.len()))
            .filter(|i| i.is_multiple_of(every))
            .collect();
        let positions: Vec<(i32, i32)> = if self.log {
            let mut chart =
                builder.build_cartesian_2d(0.0..n as f64, (0.8..max * 1.5).log_scale())?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(0)
                .y_label_formatter(&integer)
                .x_desc(&self.x_label)
                .y_desc(format!("{} (log)", self.y_label))
                .label_style(font(11.0))
                .axis_desc_style(font(13.0))
                .light_line_style(GRID)
                .draw()?;
            chart.draw_series(
                centres
                    .iter()
                    .zip(&self.counts)
                    .filter(|(_, c)| **c > 0)
                    .map(|(x, v)| {
                        Rectangle::new([(x - 0.45, 0.8), (x + 0.45, *v as f64)], c.filled())
                    }),
            )?;
            labelled
                .iter()
                .map(|i| chart.backend_coord(&(centres[*i], 0.8)))
                .collect()
        } else {
            let mut chart = builder.build_cartesian_2d(0.0..n as f64, 0.0..max * 1.05)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(0)
                .y_label_formatter(&integer)
                .x_desc(&self.x_label)
                .y_desc(&self.y_label)
                .label_style(font(11.0))
                .axis_desc_style(font(13.0))
                .light_line_style(GRID)
                .draw()?;
            chart.draw_series(centres.iter().zip(&self.counts).map(|(x, v)| {
                Rectangle::new([(x - 0.45, 0.0), (x + 0.45, *v as f64)], c.filled())
            }))?;
            labelled
                .iter()
                .map(|i| chart.backend_coord(&(centres[*i], 0.0)))
                .collect()
        };
        let centred = font(11.0).pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Top,
        ));
        for (i, (px, py)) in labelled.iter().zip(positions) {
            area.draw(&Text::new(
                self.bins[*i].clone(),
                (px, py + 6),
                centred.clone(),
            ))?;
        }
        Ok(())
    }
}

/// The note a scatter of per-pattern scores carries: `r = 0.81 [0.31, 0.96] (n = 9)`, or
/// without the interval when there is none.
pub fn r_note(r: f64, interval: Option<(f64, f64)>, n: u64) -> String {
    match interval {
        Some((lo, hi)) => format!("r = {r:.2} [{lo:.2}, {hi:.2}] (n = {n})"),
        None => format!("r = {r:.2} (n = {n})"),
    }
}

/// Intercept and slope of the least-squares line, if at least two distinct x values exist.
pub fn least_squares(points: impl Iterator<Item = (f64, f64)>) -> Option<(f64, f64)> {
    let pts: Vec<(f64, f64)> = points
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let b = sxy / sxx;
    Some((my - b * mx, b))
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A category name in at most two lines, split at the space nearest the middle.
fn two_lines(s: &str) -> Vec<String> {
    if s.chars().count() <= 12 {
        return vec![s.to_string()];
    }
    let mid = s.len() / 2;
    match s
        .match_indices(' ')
        .map(|(i, _)| i)
        .min_by_key(|i| i.abs_diff(mid))
    {
        Some(i) => vec![truncate(&s[..i], 16), truncate(&s[i + 1..], 16)],
        None => vec![truncate(s, 16)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars() -> Bars {
        Bars {
            title: "Per-pattern pair accuracy".into(),
            y_label: "pair accuracy (%)".into(),
            categories: vec!["Color".into(), "Camera Perspective".into()],
            series: vec![
                Series {
                    name: "clip".into(),
                    values: vec![100.0, 25.0],
                    intervals: vec![Some((80.0, 100.0)), None],
                },
                Series {
                    name: "llava".into(),
                    values: vec![f64::NAN, 50.0],
                    intervals: vec![None, Some((20.0, 80.0))],
                },
            ],
            y_max: 100.0,
            note: Some("95% bootstrap".into()),
        }
    }

    fn count(png_bytes: &[u8], c: RGBColor) -> usize {
        let img = image::load_from_memory(png_bytes).unwrap().to_rgb8();
        img.pixels().filter(|p| p.0 == [c.0, c.1, c.2]).count()
    }

    #[test]
    fn the_font_is_a_font() {
        assert!(plotters::style::register_font("test", FontStyle::Normal, FONT).is_ok());
    }

    #[test]
    fn svg_bars_carry_text_axes_legend_and_whiskers() {
        let svg = svg(&bars()).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..60]);
        for text in [
            "Per-pattern pair accuracy",
            "pair accuracy (%)",
            "clip",
            "llava",
            "Color",
            "Camera",
            "Perspective",
            "95% bootstrap",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        // Three bars (one value is missing) in the two series colours.
        let fill = |c: RGBColor| format!("fill=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2);
        assert_eq!(
            svg.matches(&fill(colour(0))).count(),
            2 + 1,
            "two bars and a legend swatch"
        );
        assert_eq!(svg.matches(&fill(colour(1))).count(), 1 + 1);
    }

    #[test]
    fn png_bars_draw_both_series_and_text_pixels() {
        let png_bytes = png(&bars()).unwrap();
        let img = image::load_from_memory(&png_bytes).unwrap();
        assert_eq!((img.width(), img.height()), bars().size());
        assert!(count(&png_bytes, colour(0)) > 1000);
        assert!(count(&png_bytes, colour(1)) > 300);
        // Text is antialiased ink: many distinct grey levels exist, not only pure colours.
        let greys: std::collections::BTreeSet<u8> = img
            .to_rgb8()
            .pixels()
            .filter(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2] && p.0[0] < 250)
            .map(|p| p.0[0])
            .collect();
        assert!(greys.len() > 20, "{} grey levels", greys.len());
    }

    #[test]
    fn scatter_density_and_histograms_render() {
        let s = Scatter {
            title: "clip vs llava".into(),
            x_label: "clip".into(),
            y_label: "llava".into(),
            points: vec![("Color".into(), 90.0, 80.0), ("Text".into(), 10.0, 30.0)],
            note: Some("r = 1.00".into()),
        };
        let text = svg(&s).unwrap();
        assert!(text.contains("r = 1.00") && text.contains("Color"));
        let d = Density {
            title: "candidates".into(),
            x_label: "CLIP".into(),
            y_label: "DINOv2".into(),
            x_range: (0.9, 1.0),
            y_range: (-1.0, 1.0),
            counts: vec![vec![0, 5], vec![1000, 0]],
            x_line: Some(0.95),
            y_line: Some(0.6),
        };
        let bytes = png(&d).unwrap();
        // The fullest cell has the top colour of the map, the emptiest cell is not drawn.
        let top = ViridisRGB::get_color(1.0);
        assert!(count(&bytes, top) > 1000);
        let h = Histogram {
            title: "sizes".into(),
            x_label: "size".into(),
            y_label: "components".into(),
            bins: vec!["2".into(), "3".into(), "4".into()],
            counts: vec![100, 0, 1],
            log: true,
            colour: 2,
        };
        assert!(count(&png(&h).unwrap(), colour(2)) > 100);
        let text = svg(&Histogram { log: false, ..h }).unwrap();
        let flat = text.replace(['\n', ' '], "");
        assert!(
            text.contains("components") && flat.contains(">3</text>"),
            "bin labels are drawn"
        );
    }

    #[test]
    fn least_squares_and_labels() {
        let (a, b) = least_squares([(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)].into_iter()).unwrap();
        assert!((a - 1.0).abs() < 1e-12 && (b - 2.0).abs() < 1e-12);
        assert!(least_squares([(1.0, 1.0), (1.0, 2.0)].into_iter()).is_none());
        assert_eq!(
            two_lines("Structural Character"),
            ["Structural", "Character"]
        );
        assert_eq!(two_lines("Color"), ["Color"]);
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(
            r_note(0.814, Some((0.3, 0.96)), 9),
            "r = 0.81 [0.30, 0.96] (n = 9)"
        );
        assert_eq!(r_note(-0.5, None, 3), "r = -0.50 (n = 3)");
    }
}
