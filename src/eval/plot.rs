//! PNG charts of per-pattern scores (grouped bars) and of one model family against another
//! (scatter with a fit line), drawn straight onto an `RgbImage` with 8x8 bitmap text so that
//! reports need no plotting library, fonts or system dependencies.

use std::io::Cursor;

use font8x8::UnicodeFonts;
use image::{ImageFormat, Rgb, RgbImage};

/// One named row of percentages (0..=100) to plot; NaN marks a missing value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// One value per category, in percent.
    pub values: Vec<f64>,
}

const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([25, 25, 25]);
const SOFT_INK: Rgb<u8> = Rgb([80, 80, 80]);
const GRID: Rgb<u8> = Rgb([222, 222, 222]);

/// Tableau 10: distinct on screen and in print, and none is close to the ink or grid greys.
const PALETTE: [Rgb<u8>; 10] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
    Rgb([148, 103, 189]),
    Rgb([140, 86, 75]),
    Rgb([227, 119, 194]),
    Rgb([188, 189, 34]),
    Rgb([23, 190, 207]),
    Rgb([127, 127, 127]),
];

const GLYPH: i64 = 8;
const LINE: i64 = 10;
const TICKS: [f64; 6] = [0.0, 20.0, 40.0, 60.0, 80.0, 100.0];

/// The colour of the `i`th series; the palette repeats past ten series.
pub(crate) fn series_colour(i: usize) -> Rgb<u8> {
    PALETTE[i % PALETTE.len()]
}

/// Geometry of a grouped bar chart, shared by the drawing code and the tests.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BarLayout {
    pub width: u32,
    pub height: u32,
    pub left: i64,
    pub top: i64,
    pub plot_w: i64,
    pub plot_h: i64,
    pub group_w: i64,
    pub bar_w: i64,
    pub n_series: usize,
    pub label_chars: usize,
    pub legend_x: i64,
    pub legend_chars: usize,
}

const BAR_W: i64 = 14;
const GROUP_PAD: i64 = 10;
const MIN_WIDTH: i64 = 640;
const LABEL_LINES: usize = 3;
const LABEL_MAX_CHARS: usize = 12;
const LEGEND_MAX_CHARS: usize = 32;

impl BarLayout {
    /// Sizes the chart to fit every category label and legend entry.
    pub(crate) fn new(categories: &[String], series: &[Series]) -> Self {
        let left = 48;
        let top = 56;
        let plot_h = 300;
        let n_cat = categories.len() as i64;
        let n_series = series.len();
        // Groups are made wide enough for the longest word of a label, so that wrapped labels
        // break between words rather than inside them, up to a cap that keeps charts compact.
        let longest_word = categories
            .iter()
            .flat_map(|c| c.split_whitespace())
            .map(|w| w.chars().count())
            .max()
            .unwrap_or(0)
            .min(LABEL_MAX_CHARS);
        let mut group_w =
            (n_series as i64 * BAR_W + 2 * GROUP_PAD).max(longest_word as i64 * GLYPH + 8);
        let legend_chars = series
            .iter()
            .map(|s| s.name.chars().count())
            .max()
            .unwrap_or(0)
            .min(LEGEND_MAX_CHARS);
        let legend_w = if n_series == 0 {
            0
        } else {
            24 + 18 + legend_chars as i64 * GLYPH
        };
        let fixed = left + legend_w + 16;
        if n_cat > 0 && fixed + n_cat * group_w < MIN_WIDTH {
            group_w = (MIN_WIDTH - fixed) / n_cat;
        }
        let plot_w = (n_cat * group_w).max(MIN_WIDTH - fixed);
        let width = (fixed + plot_w).max(MIN_WIDTH);
        let below = 8 + LABEL_LINES as i64 * LINE + 10;
        let legend_h = n_series as i64 * 16;
        let height = (top + plot_h + below).max(top + legend_h + 16);
        BarLayout {
            width: width as u32,
            height: height as u32,
            left,
            top,
            plot_w,
            plot_h,
            group_w,
            bar_w: BAR_W,
            n_series,
            label_chars: ((group_w - 4) / GLYPH).max(1) as usize,
            legend_x: left + plot_w + 24,
            legend_chars,
        }
    }

    /// Pixel row of a percentage; 100 is the top gridline, 0 the x axis.
    pub(crate) fn value_to_y(&self, v: f64) -> i64 {
        let v = v.clamp(0.0, 100.0);
        self.top + ((100.0 - v) / 100.0 * self.plot_h as f64).round() as i64
    }

    /// Pixel columns `x0..x1` of the bar of series `s` in category `c`.
    pub(crate) fn bar_span(&self, c: usize, s: usize) -> (i64, i64) {
        let group_x = self.left + c as i64 * self.group_w;
        let bars_w = self.n_series as i64 * self.bar_w;
        let x0 = group_x + (self.group_w - bars_w) / 2 + s as i64 * self.bar_w;
        // One pixel of air between neighbouring bars keeps same-looking colours apart.
        (x0, x0 + self.bar_w - 1)
    }
}

/// Draws a grouped bar chart: one group per category, one coloured bar per series.
pub fn bars(title: &str, categories: &[String], series: &[Series]) -> RgbImage {
    let l = BarLayout::new(categories, series);
    let mut img = RgbImage::from_pixel(l.width, l.height, BACKGROUND);
    draw_title(&mut img, title);

    let right = l.left + l.plot_w;
    for t in TICKS {
        let y = l.value_to_y(t);
        fill_rect(&mut img, l.left, y, right, y + 1, GRID);
        let label = format!("{t:.0}");
        draw_text(
            &mut img,
            l.left - 6 - text_width(&label, 1),
            y - 4,
            &label,
            INK,
            1,
        );
    }

    let base = l.value_to_y(0.0);
    for (s, ser) in series.iter().enumerate() {
        for c in 0..categories.len() {
            let Some(&v) = ser.values.get(c) else {
                continue;
            };
            if v.is_nan() {
                continue;
            }
            let (x0, x1) = l.bar_span(c, s);
            fill_rect(&mut img, x0, l.value_to_y(v), x1, base, series_colour(s));
        }
    }

    fill_rect(&mut img, l.left - 1, l.top, l.left, base + 1, INK);
    fill_rect(&mut img, l.left - 1, base, right, base + 1, INK);

    for (c, cat) in categories.iter().enumerate() {
        let centre = l.left + c as i64 * l.group_w + l.group_w / 2;
        for (i, line) in wrap(cat, l.label_chars, LABEL_LINES).iter().enumerate() {
            let x = centre - text_width(line, 1) / 2;
            draw_text(&mut img, x, base + 8 + i as i64 * LINE, line, INK, 1);
        }
    }

    for (s, ser) in series.iter().enumerate() {
        let y = l.top + s as i64 * 16;
        fill_rect(
            &mut img,
            l.legend_x,
            y,
            l.legend_x + 12,
            y + 12,
            series_colour(s),
        );
        let name = truncate(&ser.name, l.legend_chars);
        draw_text(&mut img, l.legend_x + 18, y + 2, &name, INK, 1);
    }
    img
}

/// Scatter image size; the plot area is a fixed square so both axes share one scale.
pub(crate) const SCATTER_W: u32 = 640;
pub(crate) const SCATTER_H: u32 = 580;
const SC_LEFT: i64 = 84;
const SC_TOP: i64 = 68;
const SC_SIZE: i64 = 440;
const POINT_LABEL_CHARS: usize = 12;

/// Pixel position of a data point (both axes 0..=100, clamped).
pub(crate) fn scatter_to_px(x: f64, y: f64) -> (i64, i64) {
    let s = SC_SIZE as f64;
    let px = SC_LEFT + (x.clamp(0.0, 100.0) / 100.0 * s).round() as i64;
    let py = SC_TOP + ((100.0 - y.clamp(0.0, 100.0)) / 100.0 * s).round() as i64;
    (px, py)
}

/// Draws labelled points on 0-100 axes with a least-squares line and the correlation `r`.
pub fn scatter(
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(String, f64, f64)],
    r: Option<f64>,
) -> RgbImage {
    let mut img = RgbImage::from_pixel(SCATTER_W, SCATTER_H, BACKGROUND);
    draw_title(&mut img, title);

    let (x_end, y_end) = (SC_LEFT + SC_SIZE, SC_TOP + SC_SIZE);
    for t in TICKS {
        let (x, y) = scatter_to_px(t, t);
        fill_rect(&mut img, SC_LEFT, y, x_end + 1, y + 1, GRID);
        fill_rect(&mut img, x, SC_TOP, x + 1, y_end + 1, GRID);
        let label = format!("{t:.0}");
        draw_text(
            &mut img,
            SC_LEFT - 6 - text_width(&label, 1),
            y - 4,
            &label,
            INK,
            1,
        );
        draw_text(
            &mut img,
            x - text_width(&label, 1) / 2,
            y_end + 6,
            &label,
            INK,
            1,
        );
    }
    fill_rect(&mut img, SC_LEFT - 1, SC_TOP, SC_LEFT, y_end + 1, INK);
    fill_rect(&mut img, SC_LEFT - 1, y_end, x_end + 1, y_end + 1, INK);

    let x_label = truncate(x_label, (SC_SIZE / GLYPH) as usize);
    let x_mid = SC_LEFT + SC_SIZE / 2;
    draw_text(
        &mut img,
        x_mid - text_width(&x_label, 1) / 2,
        y_end + 24,
        &x_label,
        INK,
        1,
    );
    let y_label = truncate(y_label, (SC_SIZE / GLYPH) as usize);
    let y_mid = SC_TOP + SC_SIZE / 2;
    draw_text_up(
        &mut img,
        SC_LEFT - 48,
        y_mid + text_width(&y_label, 1) / 2,
        &y_label,
        INK,
    );

    let r_text = match r {
        Some(r) if r.is_finite() => format!("r = {r:.3}"),
        _ => "r = n/a".to_string(),
    };
    draw_text(
        &mut img,
        x_end - text_width(&r_text, 1),
        SC_TOP - 24,
        &r_text,
        INK,
        1,
    );

    let finite: Vec<&(String, f64, f64)> = points
        .iter()
        .filter(|(_, x, y)| x.is_finite() && y.is_finite())
        .collect();
    if let Some((a, b)) = least_squares(finite.iter().map(|p| (p.1, p.2))) {
        if let Some(((x0, y0), (x1, y1))) = clip_line(a, b) {
            let (p0, p1) = (scatter_to_px(x0, y0), scatter_to_px(x1, y1));
            draw_line(&mut img, p0, p1, series_colour(3));
        }
    }

    for (_, x, y) in &finite {
        let (px, py) = scatter_to_px(*x, *y);
        fill_disc(&mut img, px, py, 4, series_colour(0));
    }
    // Labels go last so that dots never hide them, each at the first nearby spot that does
    // not collide with a dot or an earlier label.
    let mut taken: Vec<(i64, i64, i64, i64)> = finite
        .iter()
        .map(|(_, x, y)| {
            let (px, py) = scatter_to_px(*x, *y);
            (px - 4, py - 4, 9, 9)
        })
        .collect();
    for (name, x, y) in &finite {
        let (px, py) = scatter_to_px(*x, *y);
        let label = truncate(name, POINT_LABEL_CHARS);
        let w = text_width(&label, 1);
        let candidates = [
            (px + 7, py - 4),
            (px - 7 - w, py - 4),
            (px + 6, py - 14),
            (px + 6, py + 6),
            (px - 6 - w, py - 14),
            (px - 6 - w, py + 6),
        ];
        let fits = |&(x, _): &(i64, i64)| x >= SC_LEFT && x + w <= i64::from(SCATTER_W);
        let free = |&(x, y): &(i64, i64)| {
            !taken
                .iter()
                .any(|&(tx, ty, tw, th)| x < tx + tw && tx < x + w && y < ty + th && ty < y + GLYPH)
        };
        let (lx, ly) = candidates
            .iter()
            .copied()
            .find(|c| fits(c) && free(c))
            .or_else(|| candidates.iter().copied().find(fits))
            .unwrap_or(candidates[0]);
        draw_text(&mut img, lx, ly, &label, SOFT_INK, 1);
        taken.push((lx, ly, w, GLYPH));
    }
    img
}

/// Encodes an image as PNG.
pub fn png_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .expect("PNG encoding into memory cannot fail for an RGB8 image");
    out.into_inner()
}

/// Intercept and slope of the least-squares line, if at least two distinct x values exist.
fn least_squares(points: impl Iterator<Item = (f64, f64)>) -> Option<(f64, f64)> {
    let pts: Vec<(f64, f64)> = points.collect();
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    // Exact comparison, because the mean of equal values need not reproduce them exactly.
    let distinct = pts.iter().any(|p| p.0 != pts[0].0);
    if !distinct || sxx <= 0.0 {
        return None;
    }
    let b = sxy / sxx;
    Some((my - b * mx, b))
}

/// The part of `y = a + b x` inside the 0..=100 square, as its two end points.
fn clip_line(a: f64, b: f64) -> Option<((f64, f64), (f64, f64))> {
    let (lo, hi) = if b == 0.0 {
        if !(0.0..=100.0).contains(&a) {
            return None;
        }
        (0.0, 100.0)
    } else {
        let (at0, at100) = ((0.0 - a) / b, (100.0 - a) / b);
        (at0.min(at100).max(0.0), at0.max(at100).min(100.0))
    };
    if lo.is_nan() || hi.is_nan() || lo > hi {
        return None;
    }
    Some(((lo, a + b * lo), (hi, a + b * hi)))
}

/// Draws `text` with its top-left corner at (x, y), 8x8 glyphs magnified by `scale`;
/// characters outside ASCII are drawn as '?'.
pub(crate) fn draw_text(
    img: &mut RgbImage,
    x: i64,
    y: i64,
    text: &str,
    colour: Rgb<u8>,
    scale: i64,
) {
    for (i, ch) in text.chars().enumerate() {
        let rows = glyph(ch);
        let gx = x + i as i64 * GLYPH * scale;
        for (row, bits) in rows.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let px = gx + col * scale;
                    let py = y + row as i64 * scale;
                    fill_rect(img, px, py, px + scale, py + scale, colour);
                }
            }
        }
    }
}

/// Draws `text` turned a quarter-turn anticlockwise, reading upwards from (x, y_bottom).
fn draw_text_up(img: &mut RgbImage, x: i64, y_bottom: i64, text: &str, colour: Rgb<u8>) {
    for (i, ch) in text.chars().enumerate() {
        let rows = glyph(ch);
        for (row, bits) in rows.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let px = x + row as i64;
                    let py = y_bottom - (i as i64 * GLYPH + col);
                    put(img, px, py, colour);
                }
            }
        }
    }
}

/// Width in pixels of `text` drawn at `scale`.
pub(crate) fn text_width(text: &str, scale: i64) -> i64 {
    text.chars().count() as i64 * GLYPH * scale
}

fn glyph(ch: char) -> [u8; 8] {
    let ch = if ch.is_ascii() { ch } else { '?' };
    font8x8::BASIC_FONTS
        .get(ch)
        .or_else(|| font8x8::BASIC_FONTS.get('?'))
        .unwrap_or([0; 8])
}

/// Centres the title at double size, falling back to single size and then truncation.
fn draw_title(img: &mut RgbImage, title: &str) {
    let avail = i64::from(img.width()) - 16;
    let (text, scale) = if text_width(title, 2) <= avail {
        (title.to_string(), 2)
    } else {
        (truncate(title, (avail / GLYPH) as usize), 1)
    };
    let x = (i64::from(img.width()) - text_width(&text, scale)) / 2;
    draw_text(img, x, 14, &text, INK, scale);
}

/// Shortens `s` to at most `max` characters, marking a cut with a trailing '.'.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    // "Structural ." reads worse than "Structural.".
    out.truncate(out.trim_end().len());
    if max > 0 {
        out.push('.');
    }
    out
}

/// Greedy word wrap into at most `max_lines` lines of `width` characters, truncating words
/// that are too long and marking dropped text on the last line.
fn wrap(s: &str, width: usize, max_lines: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut dropped = false;
    for word in s.split_whitespace() {
        let word = truncate(word, width);
        let len = current.chars().count();
        if len > 0 && len + 1 + word.chars().count() <= width {
            current.push(' ');
            current.push_str(&word);
            continue;
        }
        if len > 0 {
            lines.push(std::mem::take(&mut current));
        }
        if lines.len() == max_lines {
            dropped = true;
            break;
        }
        current = word;
    }
    if !current.is_empty() {
        lines.push(current);
    }
    if dropped {
        if let Some(last) = lines.last_mut() {
            let keep = last.chars().count().min(width.saturating_sub(1));
            *last = last.chars().take(keep).collect::<String>() + ".";
        }
    }
    lines
}

fn put(img: &mut RgbImage, x: i64, y: i64, colour: Rgb<u8>) {
    if x >= 0 && y >= 0 && x < i64::from(img.width()) && y < i64::from(img.height()) {
        img.put_pixel(x as u32, y as u32, colour);
    }
}

/// Fills columns `x0..x1` and rows `y0..y1`, clipped to the image.
fn fill_rect(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, colour: Rgb<u8>) {
    let x0 = x0.max(0);
    let y0 = y0.max(0);
    let x1 = x1.min(i64::from(img.width()));
    let y1 = y1.min(i64::from(img.height()));
    for y in y0..y1 {
        for x in x0..x1 {
            img.put_pixel(x as u32, y as u32, colour);
        }
    }
}

fn fill_disc(img: &mut RgbImage, cx: i64, cy: i64, radius: i64, colour: Rgb<u8>) {
    for dy in -radius..=radius {
        for dx in -radius..=radius {
            if dx * dx + dy * dy <= radius * radius + radius / 2 {
                put(img, cx + dx, cy + dy, colour);
            }
        }
    }
}

/// Bresenham, two pixels thick so the line stays visible next to the gridlines.
fn draw_line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), colour: Rgb<u8>) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        fill_rect(img, x, y, x + 2, y + 2, colour);
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn patterns() -> Vec<String> {
        names(&crate::eval::patterns::PATTERNS)
    }

    fn sample_series() -> Vec<Series> {
        vec![
            Series {
                name: "OpenAI ViT-L-14 224".into(),
                values: vec![13.3, 13.3, 20.0, 20.0, 13.3, 53.3, 20.0, 6.7, 13.3],
            },
            Series {
                name: "OpenAI ViT-L-14 336".into(),
                values: vec![0.0, 20.0, 40.0, 20.0, 6.7, 20.0, 33.3, 6.7, 33.3],
            },
            Series {
                name: "EVA01 ViT-g-14".into(),
                values: vec![6.7, 26.7, 40.0, 6.7, 13.3, 66.7, 13.3, 13.3, f64::NAN],
            },
        ]
    }

    fn sample_points() -> Vec<(String, f64, f64)> {
        [
            ("Orientation", 6.7, 20.0),
            ("Presence", 20.0, 26.7),
            ("State", 33.3, 73.3),
            ("Quantity", 15.6, 26.7),
            ("Spatial", 11.1, 26.7),
            ("Color", 46.7, 66.7),
            ("Structural Character", 22.2, 46.7),
            ("Text", 8.9, 13.3),
            ("Camera Perspective", 22.2, 53.3),
            ("Everything", 100.0, 0.0),
        ]
        .iter()
        .map(|(n, x, y)| (n.to_string(), *x, *y))
        .collect()
    }

    fn count(img: &RgbImage, colour: Rgb<u8>) -> usize {
        img.pixels().filter(|p| **p == colour).count()
    }

    fn at(img: &RgbImage, x: i64, y: i64) -> Rgb<u8> {
        *img.get_pixel(x as u32, y as u32)
    }

    #[test]
    fn bars_have_layout_dimensions() {
        let cats = patterns();
        let series = sample_series();
        let layout = BarLayout::new(&cats, &series);
        let img = bars("MMVP-VLM", &cats, &series);
        assert_eq!(img.dimensions(), (layout.width, layout.height));
        assert!(layout.width >= 640);
        let wider = BarLayout::new(&[cats.clone(), cats].concat(), &series);
        assert!(wider.width > layout.width);
    }

    #[test]
    fn full_bar_reaches_top_gridline_and_empty_bar_draws_nothing() {
        let cats = names(&["full", "empty"]);
        let series = vec![Series {
            name: "s".into(),
            values: vec![100.0, 0.0],
        }];
        let l = BarLayout::new(&cats, &series);
        let img = bars("t", &cats, &series);
        let colour = series_colour(0);
        let (x0, x1) = l.bar_span(0, 0);
        let mid = (x0 + x1) / 2;
        assert_eq!(l.value_to_y(100.0), l.top);
        assert_eq!(at(&img, mid, l.value_to_y(100.0)), colour);
        assert_ne!(at(&img, mid, l.value_to_y(100.0) - 1), colour);
        assert_eq!(at(&img, mid, l.value_to_y(0.0) - 1), colour);
        let (e0, e1) = l.bar_span(1, 0);
        for x in e0..e1 {
            for y in l.top..=l.value_to_y(0.0) {
                assert_ne!(at(&img, x, y), colour, "pixel ({x}, {y})");
            }
        }
    }

    #[test]
    fn value_to_y_is_monotone_and_clamped() {
        let l = BarLayout::new(&names(&["a"]), &[]);
        assert_eq!(l.value_to_y(0.0), l.top + l.plot_h);
        assert_eq!(l.value_to_y(50.0), l.top + l.plot_h / 2);
        assert_eq!(l.value_to_y(150.0), l.value_to_y(100.0));
        assert_eq!(l.value_to_y(-5.0), l.value_to_y(0.0));
    }

    #[test]
    fn every_series_colour_appears() {
        let img = bars("t", &patterns(), &sample_series());
        for s in 0..3 {
            assert!(count(&img, series_colour(s)) > 0, "series {s}");
        }
    }

    #[test]
    fn nan_and_missing_values_draw_nothing() {
        let cats = names(&["a", "b", "c"]);
        let series = vec![Series {
            name: "s".into(),
            values: vec![f64::NAN, f64::NAN],
        }];
        let img = bars("t", &cats, &series);
        // Only the legend swatch carries the colour.
        assert_eq!(count(&img, series_colour(0)), 12 * 12);
        let pts = vec![("nan".to_string(), f64::NAN, 50.0)];
        let img = scatter("t", "x", "y", &pts, Some(f64::NAN));
        assert_eq!(count(&img, series_colour(0)), 0);
    }

    #[test]
    fn empty_inputs_do_not_panic() {
        let img = bars("", &[], &[]);
        assert!(img.width() >= 640);
        let img = bars("t", &names(&["a"]), &[]);
        assert!(img.width() >= 640);
        let img = bars("t", &[], &sample_series());
        assert!(img.width() >= 640);
        let img = scatter("", "", "", &[], None);
        assert_eq!(img.dimensions(), (SCATTER_W, SCATTER_H));
    }

    #[test]
    fn scatter_draws_points_line_and_dimensions() {
        let pts = sample_points();
        let img = scatter("CLIP vs DFN", "CLIP", "DFN", &pts, Some(0.873));
        assert_eq!(img.dimensions(), (SCATTER_W, SCATTER_H));
        let (px, py) = scatter_to_px(46.7, 66.7);
        assert_eq!(at(&img, px, py), series_colour(0));
        assert!(count(&img, series_colour(3)) > 0, "fit line");
        let one = scatter("t", "x", "y", &pts[..1], None);
        assert_eq!(
            count(&one, series_colour(3)),
            0,
            "no line through one point"
        );
        let same_x: Vec<_> = pts.iter().map(|(n, _, y)| (n.clone(), 10.0, *y)).collect();
        let vertical = scatter("t", "x", "y", &same_x, None);
        assert_eq!(
            count(&vertical, series_colour(3)),
            0,
            "no line without distinct x"
        );
    }

    #[test]
    fn scatter_to_px_corners() {
        assert_eq!(scatter_to_px(0.0, 0.0), (SC_LEFT, SC_TOP + SC_SIZE));
        assert_eq!(scatter_to_px(100.0, 100.0), (SC_LEFT + SC_SIZE, SC_TOP));
        assert_eq!(scatter_to_px(200.0, -1.0), scatter_to_px(100.0, 0.0));
    }

    #[test]
    fn text_puts_ink_where_the_glyph_has_bits() {
        for scale in [1, 2] {
            let mut img = RgbImage::from_pixel(40, 40, BACKGROUND);
            draw_text(&mut img, 3, 5, "H", INK, scale);
            let rows = font8x8::BASIC_FONTS.get('H').unwrap();
            for (row, bits) in rows.iter().enumerate() {
                for col in 0..8 {
                    let want = if bits & (1 << col) != 0 {
                        INK
                    } else {
                        BACKGROUND
                    };
                    let x = 3 + col * scale;
                    let y = 5 + row as i64 * scale;
                    assert_eq!(at(&img, x, y), want, "scale {scale} ({col}, {row})");
                    assert_eq!(at(&img, x + scale - 1, y + scale - 1), want);
                }
            }
            assert!(count(&img, INK) > 0);
        }
    }

    #[test]
    fn non_ascii_is_drawn_as_question_mark() {
        let mut a = RgbImage::from_pixel(20, 10, BACKGROUND);
        let mut b = a.clone();
        draw_text(&mut a, 1, 1, "é", INK, 1);
        draw_text(&mut b, 1, 1, "?", INK, 1);
        assert_eq!(a, b);
        assert!(count(&a, INK) > 0);
    }

    #[test]
    fn text_off_the_edge_is_clipped() {
        let mut img = RgbImage::from_pixel(10, 10, BACKGROUND);
        draw_text(&mut img, -5, -5, "WWW", INK, 2);
        draw_text_up(&mut img, 8, 3, "WWW", INK);
    }

    #[test]
    fn png_round_trips() {
        let img = bars("t", &patterns(), &sample_series());
        let bytes = png_bytes(&img);
        assert!(bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]));
        let back = image::load_from_memory_with_format(&bytes, ImageFormat::Png)
            .unwrap()
            .to_rgb8();
        assert_eq!(back.dimensions(), img.dimensions());
        assert_eq!(back, img);
    }

    #[test]
    fn wrap_and_truncate() {
        assert_eq!(
            wrap("Structural Character", 11, 3),
            vec!["Structural", "Character"]
        );
        assert_eq!(wrap("a b c", 11, 3), vec!["a b c"]);
        assert_eq!(wrap("Orientation", 6, 3), vec!["Orien."]);
        assert_eq!(wrap("one two three four", 5, 2), vec!["one", "two."]);
        assert_eq!(wrap("", 5, 2), Vec::<String>::new());
        assert_eq!(truncate("abcdef", 4), "abc.");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate("abc", 0), "");
    }

    #[test]
    fn least_squares_and_clipping() {
        let (a, b) = least_squares([(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)].into_iter()).unwrap();
        assert!((a - 1.0).abs() < 1e-12 && (b - 2.0).abs() < 1e-12);
        assert_eq!(least_squares([(1.0, 1.0), (1.0, 3.0)].into_iter()), None);
        assert_eq!(least_squares(std::iter::empty()), None);
        assert_eq!(clip_line(50.0, 0.0), Some(((0.0, 50.0), (100.0, 50.0))));
        assert_eq!(clip_line(150.0, 0.0), None);
        assert_eq!(clip_line(0.0, 2.0), Some(((0.0, 0.0), (50.0, 100.0))));
        assert_eq!(clip_line(-500.0, 1.0), None);
    }
}
