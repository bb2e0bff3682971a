//! Charts with axes: line/marker panels (attention shift, accuracy curves, RH-AUC), stacked
//! share bars (attention allocation) and matrix heatmaps (layer × setting, layer × head).
//! Legends sit above the panels, never over the data.

use anyhow::Result;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::colormap::{Colormap, Norm};
use super::draw::{
    auto_cols, colorbar_width, decimals_for, draw_colorbar, draw_legend, draw_title_block,
    fit_text, legend_height, legend_rows, nice_int_ticks, nice_ticks, text, title_block_min_width,
    title_height, LegendEntry, Swatch,
};
use super::output::{DrawResultExt, Figure};
use super::style::{format_tick, Style, GRID, TEXT};

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    Line,
    Dashed,
    Markers,
    LineMarkers,
}

/// A data series of one panel.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
    pub kind: SeriesKind,
    /// Listed in the legend (entries with the same label and colour are listed once).
    pub in_legend: bool,
}

impl Series {
    pub fn new(label: impl Into<String>, color: RGBColor, points: Vec<(f64, f64)>) -> Series {
        Series {
            label: label.into(),
            color,
            points,
            kind: SeriesKind::Line,
            in_legend: true,
        }
    }
    pub fn kind(mut self, kind: SeriesKind) -> Series {
        self.kind = kind;
        self
    }
    pub fn hidden(mut self) -> Series {
        self.in_legend = false;
        self
    }
}

/// A vertical marker line at `x` (events such as the end of thinking).
#[derive(Debug, Clone)]
pub struct VLine {
    pub x: f64,
    pub color: RGBColor,
    pub swatch: Swatch,
    /// Legend label (listed once per label).
    pub label: String,
}

/// A shaded area between a polyline and y = `baseline`.
#[derive(Debug, Clone)]
pub struct Fill {
    pub points: Vec<(f64, f64)>,
    pub baseline: f64,
    pub color: RGBColor,
    pub alpha: f64,
    /// Legend label (empty: not listed).
    pub label: String,
}

/// A shaded band between a lower and an upper curve (an interval around a mean), drawn under
/// the series.
#[derive(Debug, Clone)]
pub struct Band {
    /// (x, lower, upper), in x order; one contiguous stretch.
    pub points: Vec<(f64, f64, f64)>,
    pub color: RGBColor,
    pub alpha: f64,
}

/// A text label next to a data point.
#[derive(Debug, Clone)]
pub struct Annotation {
    pub x: f64,
    pub y: f64,
    pub text: String,
    pub color: RGBColor,
}

/// One chart with axes.
#[derive(Debug, Clone, Default)]
pub struct ChartPanel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub vlines: Vec<VLine>,
    pub fills: Vec<Fill>,
    /// Intervals drawn under the series.
    pub bands: Vec<Band>,
    pub annotations: Vec<Annotation>,
    /// Axis ranges (None: the data range with a margin).
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
    /// Text shown in the middle of an empty panel.
    pub empty_note: Option<String>,
    /// Whole-number ticks on the x axis (layers, steps).
    pub x_integer: bool,
}

/// A figure of chart panels with one legend above them.
#[derive(Debug, Clone)]
pub struct ChartFigure {
    pub title: String,
    pub subtitles: Vec<String>,
    pub panels: Vec<ChartPanel>,
    /// Columns (None: chosen from the panel count).
    pub cols: Option<usize>,
    /// Default layout size of one panel.
    pub panel_size: (f64, f64),
    /// Legend entries listed before those collected from the panels.
    pub extra_legend: Vec<LegendEntry>,
}

const MARGIN: f64 = 14.0;
const PANEL_TITLE_H: f64 = 24.0;
const Y_AREA: f64 = 72.0;
const X_AREA: f64 = 46.0;

fn swatch_of(kind: SeriesKind) -> Swatch {
    match kind {
        SeriesKind::Line => Swatch::Line,
        SeriesKind::Dashed => Swatch::Dashed,
        SeriesKind::Markers => Swatch::Marker,
        SeriesKind::LineMarkers => Swatch::LineMarker,
    }
}

fn push_unique(entries: &mut Vec<LegendEntry>, e: LegendEntry) {
    if e.label.is_empty() {
        return;
    }
    if !entries
        .iter()
        .any(|x| x.label == e.label && x.color == e.color && x.swatch == e.swatch)
    {
        entries.push(e);
    }
}

impl ChartFigure {
    fn cols(&self) -> usize {
        self.cols
            .unwrap_or_else(|| {
                auto_cols(
                    self.panels.len(),
                    self.panel_size.0 / self.panel_size.1,
                    1.6,
                )
            })
            .clamp(1, self.panels.len().max(1))
    }

    /// Legend entries collected from every panel, in first-seen order.
    pub fn legend(&self) -> Vec<LegendEntry> {
        let mut out = Vec::new();
        for e in &self.extra_legend {
            push_unique(&mut out, e.clone());
        }
        for p in &self.panels {
            for s in p.series.iter().filter(|s| s.in_legend) {
                push_unique(
                    &mut out,
                    LegendEntry::new(&s.label, s.color, swatch_of(s.kind)),
                );
            }
            for f in &p.fills {
                push_unique(&mut out, LegendEntry::new(&f.label, f.color, Swatch::Box));
            }
            for v in &p.vlines {
                push_unique(&mut out, LegendEntry::new(&v.label, v.color, v.swatch));
            }
        }
        out
    }
}

impl Figure for ChartFigure {
    fn size(&self) -> (u32, u32) {
        let cols = self.cols();
        let rows = self.panels.len().div_ceil(cols).max(1);
        let w = (2.0 * MARGIN + cols as f64 * self.panel_size.0)
            .max(title_block_min_width(&self.title, &self.subtitles).min(1400.0));
        let st = Style::new(1.0);
        let legend_rows = legend_rows(&self.legend(), &st, (w - 20.0) as i32).len();
        let h = title_height(&self.title, &self.subtitles)
            + legend_height(legend_rows)
            + rows as f64 * self.panel_size.1
            + MARGIN;
        (w.round() as u32, h.round() as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, st: &Style) -> Result<()> {
        let body = draw_title_block(root, st, &self.title, &self.subtitles)?;
        let legend = self.legend();
        let (w, _) = body.dim_in_pixel();
        let rows = legend_rows(&legend, st, w as i32 - st.px(20.0)).len();
        let (legend_area, body) = body.split_vertically(st.px(legend_height(rows)));
        draw_legend(&legend_area, st, &legend)?;
        let margin = st.px(MARGIN);
        let body = body.margin(0, margin, margin, margin);
        let cols = self.cols();
        let n = self.panels.len();
        let rows = n.div_ceil(cols).max(1);
        let cells = body.split_evenly((rows, cols));
        for (p, cell) in self.panels.iter().zip(cells.iter()) {
            draw_chart_panel(cell, st, p)?;
        }
        Ok(())
    }
}

fn data_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo <= hi).then_some((lo, hi))
}

fn padded((lo, hi): (f64, f64), frac: f64) -> (f64, f64) {
    if hi > lo {
        let pad = (hi - lo) * frac;
        (lo - pad, hi + pad)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    }
}

/// Draws a panel title centred over the plotting area; returns the area below it.
fn panel_title<DB: DrawingBackend>(
    cell: &DrawingArea<DB, Shift>,
    st: &Style,
    title: &str,
) -> Result<DrawingArea<DB, Shift>> {
    let (w, _) = cell.dim_in_pixel();
    if title.is_empty() {
        return Ok(cell.margin(st.px(6.0), 0, 0, 0));
    }
    let style = st.bold(16.0);
    let plot_left = st.px(Y_AREA);
    let cx = plot_left + (w as i32 - plot_left) / 2;
    text(
        cell,
        &fit_text(title, &style, w as i32 - st.px(8.0)),
        (
            cx.min(w as i32 / 2 + plot_left / 2),
            st.px(PANEL_TITLE_H / 2.0),
        ),
        &style,
        HPos::Center,
        VPos::Center,
    )?;
    Ok(cell.margin(st.px(PANEL_TITLE_H), 0, 0, 0))
}

/// Axis formatting shared by the chart kinds.
struct Axes {
    x: (f64, f64),
    y: (f64, f64),
    x_ticks: Vec<f64>,
    y_ticks: Vec<f64>,
    /// Labels of the x ticks (None: their values).
    x_labels: Option<Vec<String>>,
}

fn axes(x: (f64, f64), y: (f64, f64), w_px: i32, h_px: i32, st: &Style, x_integer: bool) -> Axes {
    let nx = ((w_px as f64 / st.px(80.0) as f64) as usize).clamp(2, 10);
    let ny = ((h_px as f64 / st.px(50.0) as f64) as usize).clamp(2, 8);
    Axes {
        x,
        y,
        x_ticks: if x_integer {
            nice_int_ticks(x.0, x.1, nx)
        } else {
            nice_ticks(x.0, x.1, nx)
        },
        y_ticks: nice_ticks(y.0, y.1, ny),
        x_labels: None,
    }
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Builds a cartesian chart in `area` with our mesh: grid lines at nice ticks, tick labels and
/// axis descriptions.
fn build_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    st: &Style,
    ax: &Axes,
    x_label: &str,
    y_label: &str,
) -> Result<Chart<'a, DB>> {
    build_chart_with(area, st, ax, x_label, y_label, None, st.px(Y_AREA))
}

/// [`build_chart`] with categorical rows (`y_categories[k]` labels the band [k, k+1), counted
/// from the bottom; no grid lines) and a chosen width of the y label area.
fn build_chart_with<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    st: &Style,
    ax: &Axes,
    x_label: &str,
    y_label: &str,
    y_categories: Option<&[String]>,
    y_area: i32,
) -> Result<Chart<'a, DB>> {
    let mut chart = ChartBuilder::on(area)
        .margin_right(st.px(14.0))
        .margin_top(st.px(10.0))
        .margin_bottom(st.px(8.0))
        .x_label_area_size(st.px(X_AREA))
        .y_label_area_size(y_area)
        .build_cartesian_2d(ax.x.0..ax.x.1, ax.y.0..ax.y.1)
        .draw_ctx()?;
    let xd = decimals_for(&ax.x_ticks);
    let yd = decimals_for(&ax.y_ticks);
    let x_fmt = |v: &f64| format_tick(*v, xd);
    let y_fmt = |v: &f64| format_tick(*v, yd);
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .y_labels(0)
        .x_desc(x_label)
        .y_desc(y_label)
        .axis_desc_style(st.axis_label())
        .axis_style(ShapeStyle::from(&TEXT).stroke_width(1))
        .draw()
        .draw_ctx()?;
    // Grid lines and tick labels at our own nice ticks (plotters' f64 key points can land on
    // values such as 0.30000000000000004 and skip the range ends).
    let grid = ShapeStyle::from(&GRID).stroke_width(1);
    let grid_lines = y_categories.is_none();
    for &t in ax.y_ticks.iter().filter(|_| grid_lines) {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(ax.x.0, t), (ax.x.1, t)],
                grid,
            )))
            .draw_ctx()?;
    }
    for &t in ax.x_ticks.iter().filter(|_| grid_lines) {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(t, ax.y.0), (t, ax.y.1)],
                grid,
            )))
            .draw_ctx()?;
    }
    let plot = chart.plotting_area();
    let (px0, py0) = plot.get_base_pixel();
    let (abs_x0, abs_y0) = area.get_base_pixel();
    let (pw, ph) = plot.dim_in_pixel();
    let tick = st.tick();
    let tick_len = st.px(5.0);
    let axis = ShapeStyle::from(&TEXT).stroke_width(1);
    let to_px = |v: f64, lo: f64, hi: f64, n: u32| (v - lo) / (hi - lo) * (n as f64 - 1.0);
    for (i, &t) in ax.x_ticks.iter().enumerate() {
        let x = px0 - abs_x0 + to_px(t, ax.x.0, ax.x.1, pw).round() as i32;
        let label = match &ax.x_labels {
            Some(l) => l.get(i).cloned().unwrap_or_default(),
            None => x_fmt(&t),
        };
        let y = py0 - abs_y0 + ph as i32;
        area.draw(&PathElement::new(vec![(x, y), (x, y + tick_len)], axis))
            .draw_ctx()?;
        text(
            area,
            &label,
            (x, y + tick_len + st.px(3.0)),
            &tick,
            HPos::Center,
            VPos::Top,
        )?;
    }
    let y_ticks: Vec<(f64, String)> = match y_categories {
        Some(cats) => cats
            .iter()
            .enumerate()
            .map(|(k, l)| (k as f64 + 0.5, l.clone()))
            .collect(),
        None => ax.y_ticks.iter().map(|&t| (t, y_fmt(&t))).collect(),
    };
    for (t, label) in &y_ticks {
        let y = py0 - abs_y0 + ph as i32 - 1 - to_px(*t, ax.y.0, ax.y.1, ph).round() as i32;
        let x = px0 - abs_x0;
        area.draw(&PathElement::new(vec![(x - tick_len, y), (x, y)], axis))
            .draw_ctx()?;
        text(
            area,
            label,
            (x - tick_len - st.px(3.0), y),
            &tick,
            HPos::Right,
            VPos::Center,
        )?;
    }
    Ok(chart)
}

fn dashed_segments(a: (f64, f64), b: (f64, f64), parts: usize) -> Vec<Vec<(f64, f64)>> {
    // Dashes along a straight data-space segment: `parts` dashes with equal gaps.
    let mut out = Vec::new();
    let n = (parts * 2).max(2);
    for k in (0..n).step_by(2) {
        let t0 = k as f64 / n as f64;
        let t1 = (k + 1) as f64 / n as f64;
        out.push(vec![
            (a.0 + (b.0 - a.0) * t0, a.1 + (b.1 - a.1) * t0),
            (a.0 + (b.0 - a.0) * t1, a.1 + (b.1 - a.1) * t1),
        ]);
    }
    out
}

/// Axis ranges of a panel: the given ones, else the data range with a margin.
fn panel_ranges(p: &ChartPanel) -> ((f64, f64), (f64, f64)) {
    let xs = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|q| q.0))
        .chain(p.fills.iter().flat_map(|f| f.points.iter().map(|q| q.0)))
        .chain(p.vlines.iter().map(|v| v.x));
    let ys = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|q| q.1))
        .chain(p.fills.iter().flat_map(|f| f.points.iter().map(|q| q.1)))
        .chain(
            p.bands
                .iter()
                .flat_map(|b| b.points.iter().flat_map(|q| [q.1, q.2])),
        );
    let x = p
        .x_range
        .unwrap_or_else(|| padded(data_range(xs).unwrap_or((0.0, 1.0)), 0.03));
    let y = p
        .y_range
        .unwrap_or_else(|| padded(data_range(ys).unwrap_or((0.0, 1.0)), 0.06));
    (x, y)
}

fn draw_chart_panel<DB: DrawingBackend>(
    cell: &DrawingArea<DB, Shift>,
    st: &Style,
    p: &ChartPanel,
) -> Result<()> {
    let area = panel_title(cell, st, &p.title)?;
    let (x, y) = panel_ranges(p);
    let (w, h) = area.dim_in_pixel();
    let ax = axes(
        x,
        y,
        w as i32 - st.px(Y_AREA),
        h as i32 - st.px(X_AREA),
        st,
        p.x_integer,
    );
    let mut chart = build_chart(&area, st, &ax, &p.x_label, &p.y_label)?;
    for f in &p.fills {
        chart
            .draw_series(AreaSeries::new(
                f.points.iter().copied(),
                f.baseline,
                f.color.mix(f.alpha),
            ))
            .draw_ctx()?;
    }
    for b in &p.bands {
        let mut outline: Vec<(f64, f64)> = b.points.iter().map(|q| (q.0, q.2)).collect();
        outline.extend(b.points.iter().rev().map(|q| (q.0, q.1)));
        chart
            .draw_series(std::iter::once(Polygon::new(
                outline,
                b.color.mix(b.alpha).filled(),
            )))
            .draw_ctx()?;
    }
    for v in &p.vlines {
        draw_vline(&mut chart, st, v, y, h)?;
    }
    for s in &p.series {
        draw_series(&mut chart, st, s)?;
    }
    draw_annotations(&mut chart, st, &p.annotations)?;
    if let Some(note) = &p.empty_note {
        draw_empty_note(&area, &chart, st, note)?;
    }
    Ok(())
}

/// A vertical line over the whole y range `y` of a chart `h` pixels high.
fn draw_vline<DB: DrawingBackend>(
    chart: &mut Chart<DB>,
    st: &Style,
    v: &VLine,
    y: (f64, f64),
    h: u32,
) -> Result<()> {
    let style = ShapeStyle::from(&v.color).stroke_width(st.upx(1.5));
    let (a, b) = ((v.x, y.0), (v.x, y.1));
    match v.swatch {
        Swatch::Dashed | Swatch::Dotted => {
            let h_px = h as f64;
            let dash = if v.swatch == Swatch::Dashed {
                11.0
            } else {
                5.0
            };
            let parts = (h_px / st.px(dash) as f64).round().max(2.0) as usize;
            for seg in dashed_segments(a, b, parts) {
                chart
                    .draw_series(std::iter::once(PathElement::new(seg, style)))
                    .draw_ctx()?;
            }
        }
        _ => {
            chart
                .draw_series(std::iter::once(PathElement::new(vec![a, b], style)))
                .draw_ctx()?;
        }
    }
    Ok(())
}

/// A series as a line (solid or dashed) and/or markers.
fn draw_series<DB: DrawingBackend>(chart: &mut Chart<DB>, st: &Style, s: &Series) -> Result<()> {
    let style = ShapeStyle::from(&s.color).stroke_width(st.line_width());
    match s.kind {
        SeriesKind::Line | SeriesKind::LineMarkers => {
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), style))
                .draw_ctx()?;
        }
        SeriesKind::Dashed => {
            chart
                .draw_series(DashedLineSeries::new(
                    s.points.iter().copied(),
                    st.px(8.0),
                    st.px(5.0),
                    style,
                ))
                .draw_ctx()?;
        }
        SeriesKind::Markers => {}
    }
    if matches!(s.kind, SeriesKind::Markers | SeriesKind::LineMarkers) {
        let r = st.px(4.5);
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(|&q| Circle::new(q, r, s.color.filled())),
            )
            .draw_ctx()?;
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(|&q| Circle::new(q, r, ShapeStyle::from(&WHITE).stroke_width(1))),
            )
            .draw_ctx()?;
    }
    Ok(())
}

/// Text labels up and to the right of their points.
fn draw_annotations<DB: DrawingBackend>(
    chart: &mut Chart<DB>,
    st: &Style,
    annotations: &[Annotation],
) -> Result<()> {
    let label_style = st.font(14.0);
    for a in annotations {
        let style = super::draw::colored(&label_style, a.color);
        let dx = st.px(7.0);
        let dy = -st.px(7.0);
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((a.x, a.y))
                    + Text::new(
                        a.text.clone(),
                        (dx, dy),
                        style.pos(plotters::style::text_anchor::Pos::new(
                            HPos::Left,
                            VPos::Bottom,
                        )),
                    ),
            ))
            .draw_ctx()?;
    }
    Ok(())
}

/// A note in the middle of the plotting area of an empty panel (up to three lines).
fn draw_empty_note<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &Chart<DB>,
    st: &Style,
    note: &str,
) -> Result<()> {
    let plot = chart.plotting_area();
    let (pw, ph) = plot.dim_in_pixel();
    let style = st.font(14.0);
    let (bx, by) = plot.get_base_pixel();
    let (ax0, ay0) = area.get_base_pixel();
    let lines = super::draw::wrap_text(note, &style, pw as i32 - st.px(20.0), 3);
    for (i, line) in lines.iter().enumerate() {
        text(
            area,
            line,
            (
                bx - ax0 + pw as i32 / 2,
                by - ay0 + ph as i32 / 2 + st.px(20.0) * (i as i32 - lines.len() as i32 / 2),
            ),
            &style,
            HPos::Center,
            VPos::Center,
        )?;
    }
    Ok(())
}

/// One panel of stacked shares: for each x, segments stacked from the bottom in `stacks` order.
#[derive(Debug, Clone)]
pub struct StackPanel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x: Vec<f64>,
    /// (legend label, colour, value at every x)
    pub stacks: Vec<(String, RGBColor, Vec<f64>)>,
}

/// Stacked bar panels side by side with one legend above.
#[derive(Debug, Clone)]
pub struct StackFigure {
    pub title: String,
    pub subtitles: Vec<String>,
    pub panels: Vec<StackPanel>,
    pub panel_size: (f64, f64),
}

impl StackFigure {
    fn legend(&self) -> Vec<LegendEntry> {
        let mut out = Vec::new();
        for p in &self.panels {
            for (label, color, _) in &p.stacks {
                push_unique(&mut out, LegendEntry::new(label, *color, Swatch::Box));
            }
        }
        out
    }
}

impl Figure for StackFigure {
    fn size(&self) -> (u32, u32) {
        let n = self.panels.len().max(1) as f64;
        let w = (2.0 * MARGIN + n * self.panel_size.0)
            .max(title_block_min_width(&self.title, &self.subtitles).min(1400.0));
        let st = Style::new(1.0);
        let rows = legend_rows(&self.legend(), &st, (w - 20.0) as i32).len();
        let h = title_height(&self.title, &self.subtitles)
            + legend_height(rows)
            + self.panel_size.1
            + MARGIN;
        (w.round() as u32, h.round() as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, st: &Style) -> Result<()> {
        let body = draw_title_block(root, st, &self.title, &self.subtitles)?;
        let legend = self.legend();
        let (w, _) = body.dim_in_pixel();
        let rows = legend_rows(&legend, st, w as i32 - st.px(20.0)).len();
        let (legend_area, body) = body.split_vertically(st.px(legend_height(rows)));
        draw_legend(&legend_area, st, &legend)?;
        let margin = st.px(MARGIN);
        let body = body.margin(0, margin, margin, margin);
        let cells = body.split_evenly((1, self.panels.len().max(1)));
        for (p, cell) in self.panels.iter().zip(cells.iter()) {
            let area = panel_title(cell, st, &p.title)?;
            let spacing = column_spacing(&p.x);
            let (lo, hi) = data_range(p.x.iter().copied()).unwrap_or((0.0, 1.0));
            let x = (lo - spacing * 0.7, hi + spacing * 0.7);
            let top =
                p.x.iter()
                    .enumerate()
                    .map(|(i, _)| p.stacks.iter().map(|s| s.2[i]).sum::<f64>())
                    .fold(0.0, f64::max);
            let y = (0.0, if top <= 1.0 + 1e-9 { 1.0 } else { top * 1.05 });
            let (aw, ah) = area.dim_in_pixel();
            let ax = axes(
                x,
                y,
                aw as i32 - st.px(Y_AREA),
                ah as i32 - st.px(X_AREA),
                st,
                true,
            );
            let mut chart = build_chart(&area, st, &ax, &p.x_label, &p.y_label)?;
            let half = spacing * 0.4;
            for (i, &xv) in p.x.iter().enumerate() {
                let mut base = 0.0;
                for (_, color, values) in &p.stacks {
                    let v = values[i];
                    if v > 0.0 {
                        chart
                            .draw_series(std::iter::once(Rectangle::new(
                                [(xv - half, base), (xv + half, base + v)],
                                color.filled(),
                            )))
                            .draw_ctx()?;
                    }
                    base += v;
                }
            }
        }
        Ok(())
    }
}

/// One heatmap panel: `values[row][col]`, rows labelled (categorical, listed from the top),
/// columns at x positions (or categories, when `x_labels` names them).
#[derive(Debug, Clone, Default)]
pub struct MatrixPanel {
    pub title: String,
    pub x: Vec<f64>,
    /// Tick labels of the columns, one per x (None: numeric ticks).
    pub x_labels: Option<Vec<String>>,
    pub row_labels: Vec<String>,
    pub values: Vec<Vec<f64>>,
}

/// Matrix heatmaps stacked vertically, on one colour scale with one colorbar.
#[derive(Debug, Clone)]
pub struct MatrixFigure {
    pub title: String,
    pub subtitles: Vec<String>,
    pub x_label: String,
    pub y_label: String,
    pub panels: Vec<MatrixPanel>,
    pub colormap: Colormap,
    pub colorbar_label: String,
    /// Layout height of one row (rows are labelled every few rows when this is small).
    pub row_height: f64,
}

impl MatrixFigure {
    /// One panel without a title.
    pub fn single(panel: MatrixPanel) -> Vec<MatrixPanel> {
        vec![panel]
    }

    fn norm(&self) -> Norm {
        Norm::from_values(
            self.panels
                .iter()
                .flat_map(|p| p.values.iter().flatten().copied()),
        )
    }

    fn panel_height(&self, p: &MatrixPanel) -> f64 {
        let title = if p.title.is_empty() {
            0.0
        } else {
            PANEL_TITLE_H
        };
        title + X_AREA + (p.row_labels.len() as f64 * self.row_height).clamp(160.0, 900.0)
    }
}

impl Figure for MatrixFigure {
    fn size(&self) -> (u32, u32) {
        let cols = self.panels.iter().map(|p| p.x.len()).max().unwrap_or(1) as f64;
        let longest = self
            .panels
            .iter()
            .flat_map(|p| p.row_labels.iter())
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(4) as f64;
        let w = (2.0 * MARGIN
            + Y_AREA
            + longest * 7.0
            + (cols * 24.0).clamp(560.0, 1100.0)
            + colorbar_width(self.norm(), &self.colorbar_label))
        .max(title_block_min_width(&self.title, &self.subtitles).min(1400.0));
        let h = title_height(&self.title, &self.subtitles)
            + self
                .panels
                .iter()
                .map(|p| self.panel_height(p))
                .sum::<f64>()
            + 2.0 * MARGIN;
        (w.round() as u32, h.round() as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, st: &Style) -> Result<()> {
        let body = draw_title_block(root, st, &self.title, &self.subtitles)?;
        let margin = st.px(MARGIN);
        let body = body.margin(st.px(6.0), margin, margin, margin);
        let (bw, _) = body.dim_in_pixel();
        let norm = self.norm();
        let cb_w = st.px(colorbar_width(norm, &self.colorbar_label));
        let (left, right) = body.split_horizontally(bw as i32 - cb_w);
        let mut rest = left;
        let mut remaining: f64 = self.panels.iter().map(|p| self.panel_height(p)).sum();
        for (i, p) in self.panels.iter().enumerate() {
            let (_, h) = rest.dim_in_pixel();
            let take = if i + 1 == self.panels.len() {
                h as i32
            } else {
                (h as f64 * self.panel_height(p) / remaining).round() as i32
            };
            remaining -= self.panel_height(p);
            let (cell, below) = rest.split_vertically(take);
            rest = below;
            let area = panel_title(&cell, st, &p.title)?;
            draw_matrix_panel(&area, st, self, p, norm)?;
        }
        let top = if self.panels.first().is_some_and(|p| !p.title.is_empty()) {
            st.px(PANEL_TITLE_H)
        } else {
            0
        };
        let cb = right.margin(top + st.px(6.0), st.px(X_AREA), 0, 0);
        draw_colorbar(&cb, st, self.colormap, norm, &self.colorbar_label)
    }
}

/// Every `k`-th row label, so that labels do not overlap when rows are short.
fn thinned(labels: &[String], row_px: f64, st: &Style) -> Vec<String> {
    let need = st.font_px(super::style::TICK_SIZE) * 1.15;
    let k = (need / row_px.max(1e-9)).ceil().max(1.0) as usize;
    let n = labels.len();
    // keep the bottom row's label (listed last) and every k-th above it
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if (n - 1 - i) % k == 0 {
                l.clone()
            } else {
                String::new()
            }
        })
        .collect()
}

fn draw_matrix_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    st: &Style,
    fig: &MatrixFigure,
    p: &MatrixPanel,
    norm: Norm,
) -> Result<()> {
    let nrows = p.row_labels.len();
    let spacing = column_spacing(&p.x);
    let (lo, hi) = data_range(p.x.iter().copied()).unwrap_or((0.0, 1.0));
    let label_w = p
        .row_labels
        .iter()
        .map(|l| super::style::text_width(l, &st.tick()))
        .max()
        .unwrap_or(0);
    let y_area = st.px(40.0) + label_w;
    let (lw, lh) = area.dim_in_pixel();
    let x = (lo - spacing / 2.0, hi + spacing / 2.0);
    let integer = p.x.iter().all(|v| v.fract() == 0.0);
    let mut ax = axes(
        x,
        (0.0, nrows.max(1) as f64),
        lw as i32 - y_area,
        lh as i32,
        st,
        integer,
    );
    ax.x_ticks.retain(|t| *t >= lo - 1e-9 && *t <= hi + 1e-9);
    if let Some(labels) = &p.x_labels {
        ax.x_ticks = p.x.clone();
        ax.x_labels = Some(labels.clone());
    }
    // Categories are listed from the top: band k (from the bottom) is row nrows-1-k.
    let row_px = (lh as f64 - st.px(X_AREA) as f64) / nrows.max(1) as f64;
    let cats: Vec<String> = thinned(&p.row_labels, row_px, st)
        .into_iter()
        .rev()
        .collect();
    let mut chart = build_chart_with(
        area,
        st,
        &ax,
        &fig.x_label,
        &fig.y_label,
        Some(&cats),
        y_area,
    )?;
    let lut = fig.colormap.lut();
    for (r, row) in p.values.iter().enumerate() {
        let y0 = (nrows - 1 - r) as f64;
        for (c, &v) in row.iter().enumerate() {
            let xv = p.x[c];
            let [cr, cg, cb] = lut.at(norm.t(v));
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(xv - spacing / 2.0, y0), (xv + spacing / 2.0, y0 + 1.0)],
                    RGBColor(cr, cg, cb).filled(),
                )))
                .draw_ctx()?;
        }
    }
    Ok(())
}

/// The smallest gap between neighbouring x values (1 when there are fewer than two distinct
/// values): the width of one bar or matrix column.
fn column_spacing(x: &[f64]) -> f64 {
    let spacing = x
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(f64::INFINITY, f64::min);
    if spacing.is_finite() && spacing > 0.0 {
        spacing
    } else {
        1.0
    }
}
