//! Attention maps on the image-token grid: overlays on the original photograph and plain
//! heatmaps, one or many panels, optionally in side-by-side groups (two models), with a shared
//! colour scale and one colorbar, or one colorbar per panel.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use image::imageops::FilterType;
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::colormap::{Colormap, Norm};
use super::draw::{
    auto_cols, colorbar_width, draw_colorbar, draw_title_block, fit_text, text,
    title_block_min_width, title_height,
};
use super::output::{blit, DrawResultExt, Figure};
use super::overlay::{heatmap_raster, overlay, Upsample};
use super::style::{Style, TEXT};

/// How panels share colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorScale {
    /// One scale (min..max over every panel) and one colorbar: panels compare directly.
    #[default]
    Shared,
    /// Each panel scaled to its own min..max with its own colorbar: shows every panel's pattern.
    Panel,
}

/// One map: `rows × cols` values in raster order.
#[derive(Debug, Clone)]
pub struct MapPanel {
    pub title: String,
    pub values: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

/// Panels laid out together, under an optional heading, over an optional photograph.
#[derive(Debug, Clone)]
pub struct MapGroup {
    pub heading: Option<String>,
    pub panels: Vec<MapPanel>,
    /// When present every panel is blended over it; it must show the whole original image.
    pub photo: Option<Arc<RgbImage>>,
}

/// A figure of attention maps.
#[derive(Debug, Clone)]
pub struct MapFigure {
    pub title: String,
    pub subtitles: Vec<String>,
    pub groups: Vec<MapGroup>,
    /// Columns per group (None: chosen from the panel count and aspect).
    pub cols: Option<usize>,
    pub colormap: Colormap,
    /// Upsampling of overlays; plain heatmaps always show the token cells.
    pub upsample: Upsample,
    pub alpha: f64,
    pub scale: ColorScale,
    pub colorbar_label: String,
    /// Default layout width of one map.
    pub panel_width: f64,
}

const PANEL_TITLE_H: f64 = 22.0;
const GAP: f64 = 12.0;
const HEADING_H: f64 = 28.0;
const MARGIN: f64 = 14.0;
const PANEL_CB_W: f64 = 78.0;
const GROUP_GAP: f64 = 22.0;

impl MapGroup {
    fn aspect(&self) -> f64 {
        match (&self.photo, self.panels.first()) {
            (Some(p), _) => p.width() as f64 / p.height().max(1) as f64,
            (None, Some(m)) => m.cols as f64 / m.rows.max(1) as f64,
            (None, None) => 1.0,
        }
    }
}

impl MapFigure {
    fn group_cols(&self, g: &MapGroup) -> usize {
        let n = g.panels.len();
        self.cols
            .unwrap_or_else(|| auto_cols(n, g.aspect(), 1.5 / self.groups.len().max(1) as f64))
            .clamp(1, n.max(1))
    }

    fn has_headings(&self) -> bool {
        self.groups.iter().any(|g| g.heading.is_some())
    }

    fn panel_cb(&self) -> f64 {
        if self.scale == ColorScale::Panel {
            PANEL_CB_W
        } else {
            0.0
        }
    }

    /// Layout width of the one colorbar of a shared scale.
    fn shared_colorbar_width(&self) -> f64 {
        let norm = self.norms().into_iter().flatten().next();
        norm.map_or(0.0, |n| colorbar_width(n, &self.colorbar_label))
    }

    /// The colour scale of every panel, by (group, panel).
    fn norms(&self) -> Vec<Vec<Norm>> {
        match self.scale {
            ColorScale::Shared => {
                let all = Norm::from_values(
                    self.groups
                        .iter()
                        .flat_map(|g| g.panels.iter())
                        .flat_map(|p| p.values.iter().map(|&v| v as f64)),
                );
                self.groups
                    .iter()
                    .map(|g| vec![all; g.panels.len()])
                    .collect()
            }
            ColorScale::Panel => self
                .groups
                .iter()
                .map(|g| {
                    g.panels
                        .iter()
                        .map(|p| Norm::from_values(p.values.iter().map(|&v| v as f64)))
                        .collect()
                })
                .collect(),
        }
    }
}

impl Figure for MapFigure {
    fn size(&self) -> (u32, u32) {
        let mut width = 2.0 * MARGIN;
        let mut height: f64 = 0.0;
        for g in &self.groups {
            let cols = self.group_cols(g);
            let rows = g.panels.len().div_ceil(cols).max(1);
            let map_h = self.panel_width / g.aspect();
            width += cols as f64 * (self.panel_width + self.panel_cb() + GAP) + GROUP_GAP;
            height = height.max(rows as f64 * (map_h + PANEL_TITLE_H + GAP));
        }
        if self.scale == ColorScale::Shared {
            width += self.shared_colorbar_width();
        }
        let head = if self.has_headings() { HEADING_H } else { 0.0 };
        let top = title_height(&self.title, &self.subtitles) + head;
        let width = width
            .max(520.0)
            .max(title_block_min_width(&self.title, &self.subtitles).min(1400.0));
        (width.round() as u32, (top + height + MARGIN).round() as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, st: &Style) -> Result<()> {
        let body = draw_title_block(root, st, &self.title, &self.subtitles)?;
        let (bw, bh) = body.dim_in_pixel();
        let margin = st.px(MARGIN);
        let body = body.margin(0, margin, margin, margin);
        let norms = self.norms();
        let body = if self.scale == ColorScale::Shared {
            let cb_w = st.px(self.shared_colorbar_width()).min(bw as i32 / 3);
            let (left, right) = body.split_horizontally(body.dim_in_pixel().0 as i32 - cb_w);
            let head = if self.has_headings() {
                st.px(HEADING_H)
            } else {
                0
            };
            let cb_area = right.margin(head + st.px(PANEL_TITLE_H), 0, 0, 0);
            let cb_h = cb_area.dim_in_pixel().1 as i32;
            // A colorbar taller than about 60% of the figure looks odd next to small grids.
            let cb_h_max = (bh as f64 * 0.8) as i32;
            let cb_area = if cb_h > cb_h_max {
                cb_area.margin(0, cb_h - cb_h_max, 0, 0)
            } else {
                cb_area
            };
            if let Some(n) = norms.iter().flatten().next() {
                draw_colorbar(&cb_area, st, self.colormap, *n, &self.colorbar_label)?;
            }
            left
        } else {
            body
        };
        // Groups side by side, widths proportional to their default widths.
        let weights: Vec<f64> = self
            .groups
            .iter()
            .map(|g| self.group_cols(g) as f64 * (self.panel_width + self.panel_cb() + GAP))
            .collect();
        let mut rest = body;
        let mut cache: HashMap<(usize, u32, u32), RgbImage> = HashMap::new();
        for (gi, g) in self.groups.iter().enumerate() {
            let w_px = rest.dim_in_pixel().0 as i32;
            let area = if gi + 1 < self.groups.len() {
                let remaining: f64 = weights[gi..].iter().sum();
                let take = (w_px as f64 * weights[gi] / remaining).round() as i32;
                let (a, b) = rest.split_horizontally(take);
                rest = b;
                // A wider gap between groups than between panels.
                a.margin(0, 0, 0, st.px(GROUP_GAP))
            } else {
                rest.clone()
            };
            self.draw_group(&area, st, gi, g, &norms[gi], &mut cache)?;
        }
        Ok(())
    }
}

impl MapFigure {
    fn draw_group<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        st: &Style,
        gi: usize,
        g: &MapGroup,
        norms: &[Norm],
        cache: &mut HashMap<(usize, u32, u32), RgbImage>,
    ) -> Result<()> {
        let area = if self.has_headings() {
            let (w, _) = area.dim_in_pixel();
            let style = st.bold(16.0);
            if let Some(h) = &g.heading {
                text(
                    area,
                    &fit_text(h, &style, w as i32 - st.px(8.0)),
                    (w as i32 / 2, st.px(HEADING_H / 2.0)),
                    &style,
                    HPos::Center,
                    VPos::Center,
                )?;
            }
            area.margin(st.px(HEADING_H), 0, 0, 0)
        } else {
            area.clone()
        };
        let n = g.panels.len();
        if n == 0 {
            return Ok(());
        }
        let cols = self.group_cols(g);
        let rows = n.div_ceil(cols);
        let cells = area.split_evenly((rows, cols));
        let lut = self.colormap.lut();
        let aspect = g.aspect();
        for (pi, (panel, cell)) in g.panels.iter().zip(cells.iter()).enumerate() {
            let (cw, ch) = cell.dim_in_pixel();
            let gap = st.px(GAP);
            let title_h = st.px(PANEL_TITLE_H);
            let cb_w = st.px(self.panel_cb());
            let avail_w = (cw as i32 - gap - cb_w).max(8);
            let avail_h = (ch as i32 - gap - title_h).max(8);
            let (mw, mh) = if avail_w as f64 / avail_h as f64 > aspect {
                ((avail_h as f64 * aspect).round() as i32, avail_h)
            } else {
                (avail_w, (avail_w as f64 / aspect).round() as i32)
            };
            let (mw, mh) = (mw.max(1) as u32, mh.max(1) as u32);
            let x0 = gap / 2 + (avail_w - mw as i32) / 2;
            let y0 = title_h;
            let title_style = st.panel_title();
            text(
                cell,
                &fit_text(&panel.title, &title_style, cw as i32 - st.px(4.0)),
                (x0 + mw as i32 / 2, title_h / 2),
                &title_style,
                HPos::Center,
                VPos::Center,
            )?;
            let norm = norms[pi];
            let raster = match &g.photo {
                Some(photo) => {
                    let resized = cache.entry((gi, mw, mh)).or_insert_with(|| {
                        image::imageops::resize(&**photo, mw, mh, FilterType::Triangle)
                    });
                    overlay(
                        resized,
                        &panel.values,
                        panel.rows,
                        panel.cols,
                        self.upsample,
                        &lut,
                        norm,
                        self.alpha,
                    )
                }
                None => heatmap_raster(
                    &panel.values,
                    panel.rows,
                    panel.cols,
                    mw,
                    mh,
                    Upsample::Nearest,
                    &lut,
                    norm,
                ),
            };
            blit(cell, &raster, x0, y0)?;
            cell.draw(&Rectangle::new(
                [(x0 - 1, y0 - 1), (x0 + mw as i32, y0 + mh as i32)],
                ShapeStyle::from(&TEXT).stroke_width(1),
            ))
            .draw_ctx()?;
            if self.scale == ColorScale::Panel {
                // The colorbar pads its strip by 12 layout pixels: align the strip with the map.
                let pad = st.px(12.0);
                let cb = cell.margin((y0 - pad).max(0), 0, x0 + mw as i32 + st.px(2.0), 0);
                let (cbw, _) = cb.dim_in_pixel();
                let cb = cb.shrink((0, 0), (cbw.min(cb_w as u32), mh + 2 * pad as u32));
                draw_colorbar(&cb, st, self.colormap, norm, "")?;
            }
        }
        Ok(())
    }
}
