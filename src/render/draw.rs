//! Drawing primitives shared by the figure families: anchored text, title blocks, nice ticks,
//! colorbars and legends laid out outside the data.

use anyhow::Result;
use image::{Rgb, RgbImage};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;

use super::colormap::{Colormap, Norm};
use super::output::{blit, DrawResultExt};
use super::style::{format_tick, text_width, Style, TEXT};

/// A text style in any colour.
pub fn colored(style: &TextStyle<'static>, color: RGBColor) -> TextStyle<'static> {
    TextStyle {
        font: style.font.clone(),
        color: color.to_backend_color(),
        pos: style.pos,
    }
}

/// Draws `text` with its anchor (`h`, `v`) at `(x, y)` of `area`.
pub fn text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    s: &str,
    (x, y): (i32, i32),
    style: &TextStyle<'static>,
    h: HPos,
    v: VPos,
) -> Result<()> {
    if s.is_empty() {
        return Ok(());
    }
    let st = style.pos(Pos::new(h, v));
    area.draw(&Text::new(s.to_string(), (x, y), st)).draw_ctx()
}

/// Draws `text` rotated a quarter turn counter-clockwise (reading bottom to top), centred at
/// `(x, y)`.
pub fn vertical_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    s: &str,
    (x, y): (i32, i32),
    style: &TextStyle<'static>,
) -> Result<()> {
    let st = style
        .transform(FontTransform::Rotate270)
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(s.to_string(), (x, y), st)).draw_ctx()
}

/// Shortens `s` with an ellipsis until it fits in `max_px` device pixels.
pub fn fit_text(s: &str, style: &TextStyle, max_px: i32) -> String {
    if text_width(s, style) <= max_px {
        return s.to_string();
    }
    let chars: Vec<char> = s.chars().collect();
    let mut n = chars.len();
    while n > 1 {
        n -= 1;
        let mut cand: String = chars[..n].iter().collect();
        cand = cand.trim_end().to_string();
        cand.push('…');
        if text_width(&cand, style) <= max_px {
            return cand;
        }
    }
    "…".to_string()
}

/// Splits `s` into lines that fit `max_px` (greedy on spaces; long words are ellipsized).
pub fn wrap_text(s: &str, style: &TextStyle, max_px: i32, max_lines: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in s.split_whitespace() {
        let cand = if cur.is_empty() {
            word.to_string()
        } else {
            format!("{cur} {word}")
        };
        if text_width(&cand, style) <= max_px || cur.is_empty() {
            cur = cand;
        } else {
            lines.push(std::mem::take(&mut cur));
            cur = word.to_string();
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    if lines.len() > max_lines {
        let rest = lines[max_lines - 1..].join(" ");
        lines.truncate(max_lines - 1);
        lines.push(rest);
    }
    lines
        .into_iter()
        .map(|l| fit_text(&l, style, max_px))
        .collect()
}

/// Height in layout pixels of a title block with `subtitle_lines` lines under the title.
pub fn title_block_height(subtitle_lines: usize) -> f64 {
    38.0 + 20.0 * subtitle_lines as f64
}

/// Layout height of the title block of a figure: none when it has neither title nor subtitles
/// (publication mode).
pub fn title_height(title: &str, subtitles: &[String]) -> f64 {
    if title.is_empty() && subtitles.is_empty() {
        0.0
    } else {
        title_block_height(subtitles.len())
    }
}

/// Layout width a title block needs so that nothing is cut (at scale 1).
pub fn title_block_min_width(title: &str, subtitles: &[String]) -> f64 {
    let st = Style::new(1.0);
    let mut w = text_width(title, &st.title());
    for s in subtitles {
        w = w.max(text_width(s, &st.subtitle()));
    }
    w as f64 + 40.0
}

/// Draws a centred bold title and subtitle lines at the top of `area`; returns the area below.
pub fn draw_title_block<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    st: &Style,
    title: &str,
    subtitles: &[String],
) -> Result<DrawingArea<DB, Shift>> {
    if title.is_empty() && subtitles.is_empty() {
        return Ok(area.clone());
    }
    let (w, _) = area.dim_in_pixel();
    let cx = w as i32 / 2;
    let max = w as i32 - st.px(20.0);
    let title_style = st.title();
    text(
        area,
        &fit_text(title, &title_style, max),
        (cx, st.px(10.0)),
        &title_style,
        HPos::Center,
        VPos::Top,
    )?;
    let sub = st.subtitle();
    for (i, line) in subtitles.iter().enumerate() {
        text(
            area,
            &fit_text(line, &sub, max),
            (cx, st.px(36.0 + 20.0 * i as f64)),
            &sub,
            HPos::Center,
            VPos::Top,
        )?;
    }
    let (top, bottom) = area.split_vertically(st.px(title_block_height(subtitles.len())));
    drop(top);
    Ok(bottom)
}

/// "Nice" tick values inside [lo, hi] (steps of 1, 2, 2.5 or 5 × 10^k), about `target` many and
/// at least two whenever the range is not empty.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let mut target = target.max(2);
    loop {
        let ticks = nice_ticks_once(lo, hi, target);
        if ticks.len() >= 2 || target >= 12 {
            return ticks;
        }
        target += 1;
    }
}

/// [`nice_ticks`] restricted to whole numbers (layers, steps): steps of 1, 2 or 5 × 10^k ≥ 1.
pub fn nice_int_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo.round()];
    }
    let mut target = target.max(2);
    loop {
        let raw = ((hi - lo) / target as f64).max(1.0);
        let mag = 10f64.powf(raw.log10().floor()).max(1.0);
        let step = smallest_step(lo, hi, target, &[1.0, 2.0, 5.0, 10.0], mag);
        let ticks = ticks_with_step(lo, hi, step);
        if ticks.len() >= 2 || target >= 12 || step <= 1.0 {
            return ticks;
        }
        target += 1;
    }
}

/// The smallest step `m × mag` (m from `mults`, ascending) that gives at most `target + 1`
/// ticks in [lo, hi]: a range just over a round number (-3 to 99) keeps ticks every 20 instead
/// of jumping to every 50.
fn smallest_step(lo: f64, hi: f64, target: usize, mults: &[f64], mag: f64) -> f64 {
    let one = mults.iter().map(|m| m * mag);
    one.chain(mults.iter().map(|m| m * mag * 10.0))
        .find(|&s| ticks_with_step(lo, hi, s).len() <= target + 1)
        .unwrap_or(100.0 * mag)
}

fn nice_ticks_once(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let raw = (hi - lo) / target as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = smallest_step(lo, hi, target, &[1.0, 2.0, 2.5, 5.0], mag);
    ticks_with_step(lo, hi, step)
}

/// `v` rounded to one decimal digit finer than `step` (integers for steps of 10 and more).
fn round_to(v: f64, step: f64) -> f64 {
    let digits = (1 - step.log10().floor() as i32).max(0);
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

fn ticks_with_step(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step - 1e-9).ceil();
    let last = (hi / step + 1e-9).floor();
    let mut out = Vec::new();
    let mut k = first;
    while k <= last {
        // Multiplying the integer index keeps values free of accumulated error; rounding to one
        // digit below the step removes the last-bit error of a decimal step (3 × 0.1).
        let v = round_to(k * step, step);
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        k += 1.0;
    }
    out
}

/// Decimals needed to print ticks of `ticks` distinctly.
pub fn decimals_for(ticks: &[f64]) -> usize {
    if ticks.len() < 2 {
        return 2;
    }
    let step = (ticks[1] - ticks[0]).abs();
    let mut d = 0;
    while d < 8
        && ((step * 10f64.powi(d as i32)).round() - step * 10f64.powi(d as i32)).abs() > 1e-6
    {
        d += 1;
    }
    d
}

/// Vertical colorbar filling `area`: gradient strip, ticks and a vertical label on the right.
pub fn draw_colorbar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    st: &Style,
    cmap: Colormap,
    norm: Norm,
    label: &str,
) -> Result<()> {
    let (w, h) = area.dim_in_pixel();
    let bar_w = st.px(16.0).min(w as i32 / 3).max(4);
    let pad_y = st.px(12.0);
    let x0 = st.px(6.0);
    let y0 = pad_y;
    let y1 = h as i32 - pad_y;
    let bar_h = (y1 - y0).max(4);
    let mut strip = RgbImage::new(bar_w as u32, bar_h as u32);
    for y in 0..bar_h {
        let t = 1.0 - y as f64 / (bar_h - 1).max(1) as f64;
        let c = cmap.rgb(t);
        for x in 0..bar_w {
            strip.put_pixel(x as u32, y as u32, Rgb(c));
        }
    }
    blit(area, &strip, x0, y0)?;
    area.draw(&Rectangle::new(
        [(x0, y0), (x0 + bar_w - 1, y0 + bar_h - 1)],
        ShapeStyle::from(&TEXT).stroke_width(1),
    ))
    .draw_ctx()?;
    let (lo, hi) = norm.display_range();
    let ticks = nice_ticks(
        lo,
        hi,
        ((bar_h as f64 / st.px(40.0) as f64) as usize).clamp(2, 6),
    );
    let dec = decimals_for(&ticks);
    let tick_style = st.tick();
    let mut max_label = 0;
    for &v in &ticks {
        let y = y1 - ((v - lo) / (hi - lo) * (bar_h - 1) as f64).round() as i32;
        area.draw(&PathElement::new(
            vec![(x0 + bar_w, y), (x0 + bar_w + st.px(4.0), y)],
            ShapeStyle::from(&TEXT).stroke_width(1),
        ))
        .draw_ctx()?;
        let s = format_tick(v, dec);
        max_label = max_label.max(text_width(&s, &tick_style));
        text(
            area,
            &s,
            (x0 + bar_w + st.px(6.0), y),
            &tick_style,
            HPos::Left,
            VPos::Center,
        )?;
    }
    let label_style = st.axis_label();
    let line_h = (st.font_px(super::style::AXIS_LABEL_SIZE) * 1.3).round() as i32;
    let lines = wrap_text(label, &label_style, bar_h, 2);
    for (i, line) in lines.iter().enumerate() {
        let lx = x0 + bar_w + st.px(16.0) + max_label + line_h / 2 + line_h * i as i32;
        vertical_text(area, line, (lx, (y0 + y1) / 2), &label_style)?;
    }
    Ok(())
}

/// Layout width of a colorbar with its tick labels and label.
pub const COLORBAR_WIDTH: f64 = 110.0;

/// Layout width a colorbar of `norm` labelled `label` needs so that nothing is cut (its tick
/// labels and its label, on two lines when the bar is short).
pub fn colorbar_width(norm: Norm, label: &str) -> f64 {
    let st = Style::new(1.0);
    let (lo, hi) = norm.display_range();
    let ticks = nice_ticks(lo, hi, 6);
    let dec = decimals_for(&ticks);
    let widest = ticks
        .iter()
        .map(|&v| text_width(&format_tick(v, dec), &st.tick()))
        .max()
        .unwrap_or(0) as f64;
    let lines = if label.is_empty() {
        0.0
    } else if text_width(label, &st.axis_label()) > 140 {
        // a short bar wraps the label onto a second line
        2.0
    } else {
        1.0
    };
    let line_h = st.font_px(super::style::AXIS_LABEL_SIZE) * 1.3;
    (6.0 + 16.0 + 16.0 + widest + lines * line_h + 8.0).max(COLORBAR_WIDTH * 0.6)
}

/// What a legend entry shows next to its label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Swatch {
    Line,
    Dashed,
    Dotted,
    Box,
    Marker,
    LineMarker,
}

/// One legend entry.
#[derive(Debug, Clone)]
pub struct LegendEntry {
    pub label: String,
    pub color: RGBColor,
    pub swatch: Swatch,
}

impl LegendEntry {
    pub fn new(label: impl Into<String>, color: RGBColor, swatch: Swatch) -> LegendEntry {
        LegendEntry {
            label: label.into(),
            color,
            swatch,
        }
    }
}

const SWATCH_W: f64 = 30.0;

fn entry_width(e: &LegendEntry, st: &Style) -> i32 {
    st.px(SWATCH_W + 6.0) + text_width(&e.label, &st.legend()) + st.px(22.0)
}

/// Rows of a horizontal legend that fits `width_px`.
pub fn legend_rows(entries: &[LegendEntry], st: &Style, width_px: i32) -> Vec<Vec<usize>> {
    let mut rows: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut used = 0;
    for (i, e) in entries.iter().enumerate() {
        let w = entry_width(e, st);
        if !cur.is_empty() && used + w > width_px {
            rows.push(std::mem::take(&mut cur));
            used = 0;
        }
        cur.push(i);
        used += w;
    }
    if !cur.is_empty() {
        rows.push(cur);
    }
    rows
}

/// Layout height of a horizontal legend with `rows` rows.
pub fn legend_height(rows: usize) -> f64 {
    if rows == 0 {
        0.0
    } else {
        24.0 * rows as f64 + 8.0
    }
}

/// Draws a centred horizontal legend (rows as computed by [`legend_rows`]) in `area`.
pub fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    st: &Style,
    entries: &[LegendEntry],
) -> Result<()> {
    let (w, _) = area.dim_in_pixel();
    let rows = legend_rows(entries, st, w as i32 - st.px(20.0));
    let style = st.legend();
    for (r, row) in rows.iter().enumerate() {
        let total: i32 = row
            .iter()
            .map(|&i| entry_width(&entries[i], st))
            .sum::<i32>()
            - st.px(22.0);
        let mut x = (w as i32 - total) / 2;
        let y = st.px(4.0 + 12.0 + 24.0 * r as f64);
        for &i in row {
            let e = &entries[i];
            draw_swatch(area, st, e, x, y)?;
            let tx = x + st.px(SWATCH_W + 6.0);
            text(area, &e.label, (tx, y), &style, HPos::Left, VPos::Center)?;
            x += entry_width(e, st);
        }
    }
    Ok(())
}

fn draw_swatch<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    st: &Style,
    e: &LegendEntry,
    x: i32,
    y: i32,
) -> Result<()> {
    let sw = st.px(SWATCH_W);
    let line = ShapeStyle::from(&e.color).stroke_width(st.line_width());
    match e.swatch {
        Swatch::Line => area
            .draw(&PathElement::new(vec![(x, y), (x + sw, y)], line))
            .draw_ctx(),
        Swatch::Dashed | Swatch::Dotted => {
            let (on, off) = if e.swatch == Swatch::Dashed {
                (st.px(7.0), st.px(4.0))
            } else {
                (st.px(2.0), st.px(3.0))
            };
            let mut a = x;
            while a < x + sw {
                let b = (a + on).min(x + sw);
                area.draw(&PathElement::new(vec![(a, y), (b, y)], line))
                    .draw_ctx()?;
                a = b + off;
            }
            Ok(())
        }
        Swatch::Box => area
            .draw(&Rectangle::new(
                [
                    (x + st.px(4.0), y - st.px(7.0)),
                    (x + sw - st.px(4.0), y + st.px(7.0)),
                ],
                e.color.filled(),
            ))
            .draw_ctx(),
        Swatch::Marker => area
            .draw(&Circle::new((x + sw / 2, y), st.px(4.5), e.color.filled()))
            .draw_ctx(),
        Swatch::LineMarker => {
            area.draw(&PathElement::new(vec![(x, y), (x + sw, y)], line))
                .draw_ctx()?;
            area.draw(&Circle::new((x + sw / 2, y), st.px(4.0), e.color.filled()))
                .draw_ctx()
        }
    }
}

/// Columns for `n` panels of aspect `aspect` (width / height) so that the grid is roughly
/// `target` (width / height) overall.
pub fn auto_cols(n: usize, aspect: f64, target: f64) -> usize {
    if n <= 3 {
        return n.max(1);
    }
    let c = (n as f64 * target / aspect.max(0.05)).sqrt().round() as usize;
    c.clamp(1, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep over budgets 0–96 (axis padded to -3…99) showed only 0 and 50.
    #[test]
    fn ranges_just_past_a_round_number_keep_enough_ticks() {
        assert_eq!(
            nice_int_ticks(-3.0, 99.0, 5),
            vec![0.0, 20.0, 40.0, 60.0, 80.0]
        );
        assert_eq!(nice_ticks(-0.02, 0.41, 4), vec![0.0, 0.1, 0.2, 0.3, 0.4]);
        assert_eq!(
            nice_int_ticks(0.0, 600.0, 7),
            vec![0.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0]
        );
    }
}
