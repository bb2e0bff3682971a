//! Drawing a figure onto a PNG raster or an SVG document.
//!
//! plotters' SVG backend can only embed bitmaps through an image-encoding feature that would
//! pull a second `image` version; without it every pixel becomes an SVG rectangle. So while an
//! SVG document is drawn, [`blit`] records the bitmap and draws a placeholder text element where
//! it belongs in the drawing order; the placeholder is replaced by an `<image>` element holding
//! a PNG data URI when the document is finished.

use std::cell::RefCell;
use std::fmt::Display;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{ensure_fonts, Style};

/// Turns any displayable drawing error into an `anyhow` error (plotters' error types are not
/// `'static` for a generic backend).
pub trait DrawResultExt<T> {
    fn draw_ctx(self) -> Result<T>;
}

impl<T, E: Display> DrawResultExt<T> for std::result::Result<T, E> {
    fn draw_ctx(self) -> Result<T> {
        self.map_err(|e| anyhow!("drawing failed: {e}"))
    }
}

/// A figure that can be drawn on any plotters backend.
pub trait Figure {
    /// Default canvas size in layout pixels (before the scale factor).
    fn size(&self) -> (u32, u32);
    /// Draws onto `root`, whose pixel size is the final canvas.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, st: &Style) -> Result<()>;
}

/// Canvas size and output formats.
#[derive(Debug, Clone, Copy)]
pub struct Canvas {
    /// Canvas width in layout pixels (None: the figure's default).
    pub width: Option<u32>,
    /// Canvas height in layout pixels (None: the figure's default, or proportional to a given
    /// width).
    pub height: Option<u32>,
    /// Multiplies the canvas and every size in it (fonts, lines): 2 gives a 2× raster.
    pub scale: f64,
    pub png: bool,
    pub svg: bool,
    /// Publication mode: no titles or provenance lines, one- or two-column widths, smaller
    /// text, and a PDF beside the PNG.
    pub paper: bool,
    /// Text size relative to the layout sizes (smaller in publication mode).
    pub text: f64,
}

impl Default for Canvas {
    fn default() -> Self {
        Canvas {
            width: None,
            height: None,
            scale: 1.0,
            png: true,
            svg: false,
            paper: false,
            text: 1.0,
        }
    }
}

/// Widths of a two-column paper in layout pixels (100 per inch): one column, the full page.
pub const PAPER_WIDTHS: (u32, u32) = (330, 690);
/// Text size in publication mode relative to the screen layout (8–9 pt at print size).
pub const PAPER_TEXT: f64 = 0.8;

impl Canvas {
    /// The canvas of a figure in publication mode: one column (3.3 in) for a one-panel figure,
    /// the page width (6.9 in) for several, unless a width was given; a one-panel figure gets at
    /// least 0.7 of its width in height so that a wide screen layout does not flatten it.
    pub fn for_paper(&self, default: (u32, u32), panels: usize) -> Canvas {
        let width = self.width.unwrap_or(if panels <= 1 {
            PAPER_WIDTHS.0
        } else {
            PAPER_WIDTHS.1
        });
        let proportional = width as f64 * default.1.max(1) as f64 / default.0.max(1) as f64;
        let height = self.height.unwrap_or_else(|| {
            let least = if panels <= 1 { 0.7 * width as f64 } else { 0.0 };
            proportional.max(least).round() as u32
        });
        Canvas {
            width: Some(width),
            height: Some(height),
            text: PAPER_TEXT,
            ..*self
        }
    }
}

/// Largest raster drawn, in pixels (about 750 MB of RGB).
pub const MAX_PIXELS: u64 = 250_000_000;

impl Canvas {
    /// Final pixel size for a figure whose default layout size is `default`.
    pub fn pixel_size(&self, default: (u32, u32)) -> (u32, u32) {
        let (dw, dh) = (default.0.max(1) as f64, default.1.max(1) as f64);
        let (w, h) = match (self.width, self.height) {
            (Some(w), Some(h)) => (w as f64, h as f64),
            (Some(w), None) => (w as f64, w as f64 * dh / dw),
            (None, Some(h)) => (h as f64 * dw / dh, h as f64),
            (None, None) => (dw, dh),
        };
        let s = self.scale;
        (
            ((w * s).round() as u32).max(16),
            ((h * s).round() as u32).max(16),
        )
    }
}

/// Draws `fig` onto an RGB raster.
pub fn render_rgb<F: Figure>(fig: &F, canvas: &Canvas) -> Result<RgbImage> {
    ensure_fonts()?;
    let (w, h) = checked_size(fig, canvas)?;
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).draw_ctx()?;
        fig.draw(&root, &Style::with_text(canvas.scale, canvas.text))?;
        root.present().draw_ctx()?;
    }
    RgbImage::from_raw(w, h, buf).context("raster size mismatch")
}

/// Draws `fig` as an SVG document.
pub fn render_svg<F: Figure>(fig: &F, canvas: &Canvas) -> Result<String> {
    ensure_fonts()?;
    let (w, h) = checked_size(fig, canvas)?;
    let mut doc = String::new();
    let scope = SvgImageScope::begin();
    {
        let root = SVGBackend::with_string(&mut doc, (w, h)).into_drawing_area();
        root.fill(&WHITE).draw_ctx()?;
        fig.draw(&root, &Style::with_text(canvas.scale, canvas.text))?;
        root.present().draw_ctx()?;
    }
    let images = scope.take();
    finish_svg(doc, &images)
}

fn checked_size<F: Figure>(fig: &F, canvas: &Canvas) -> Result<(u32, u32)> {
    let (w, h) = canvas.pixel_size(fig.size());
    if w as u64 * h as u64 > MAX_PIXELS {
        return crate::error::invalid(
            "scale",
            format!(
                "{} makes a figure of {w}x{h} pixels, more than {MAX_PIXELS}; lower it, `width` \
                 or `height`",
                canvas.scale
            ),
        );
    }
    Ok((w, h))
}

/// Writes `STEM.png` (and `STEM.svg` when asked); returns the files written.
pub fn save<F: Figure>(fig: &F, stem: &Path, canvas: &Canvas) -> Result<Vec<PathBuf>> {
    if let Some(parent) = stem.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create directory {}", parent.display()))?;
    }
    let mut written = Vec::new();
    if canvas.png {
        let path = stem.with_extension("png");
        let img = render_rgb(fig, canvas)?;
        // through a temporary file: a full disk leaves no truncated PNG
        crate::fsutil::replace_with(&path, |tmp| {
            img.save_with_format(tmp, image::ImageFormat::Png)
                .map_err(std::io::Error::other)
        })
        .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path.clone());
        if canvas.paper {
            let pdf_path = stem.with_extension("pdf");
            let png = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let pdf = super::pdf::from_png(&png, 100.0 * canvas.scale)?;
            crate::fsutil::write_atomic(&pdf_path, &pdf)
                .with_context(|| format!("cannot write {}", pdf_path.display()))?;
            written.push(pdf_path);
        }
    }
    if canvas.svg {
        let path = stem.with_extension("svg");
        let doc = render_svg(fig, canvas)?;
        crate::fsutil::write_atomic(&path, doc.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Draws an RGB raster with its top-left corner at `(x, y)` of `area`.
pub fn blit<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    img: &RgbImage,
    x: i32,
    y: i32,
) -> Result<()> {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Ok(());
    }
    let (bx, by) = area.get_base_pixel();
    if let Some(marker) = record_svg_image(img, (bx + x, by + y))? {
        let style = TextStyle::from((super::style::FONT_FAMILY, 10.0).into_font());
        return area.draw(&Text::new(marker, (x, y), style)).draw_ctx();
    }
    let elem = BitMapElement::<(i32, i32)>::with_owned_buffer((x, y), (w, h), img.as_raw().clone())
        .context("bitmap buffer size mismatch")?;
    area.draw(&elem).draw_ctx()
}

const MARKER: &str = "rhlens-bitmap-";

struct RecordedImage {
    pos: (i32, i32),
    size: (u32, u32),
    png: Vec<u8>,
}

thread_local! {
    /// Bitmaps of the SVG document being drawn on this thread (None when drawing a raster).
    static SVG_IMAGES: RefCell<Option<Vec<RecordedImage>>> = const { RefCell::new(None) };
}

/// Collects bitmaps while an SVG document is drawn; clears the collection when dropped.
struct SvgImageScope;

impl SvgImageScope {
    fn begin() -> SvgImageScope {
        SVG_IMAGES.with(|c| *c.borrow_mut() = Some(Vec::new()));
        SvgImageScope
    }
    fn take(&self) -> Vec<RecordedImage> {
        SVG_IMAGES.with(|c| c.borrow_mut().take().unwrap_or_default())
    }
}

impl Drop for SvgImageScope {
    fn drop(&mut self) {
        SVG_IMAGES.with(|c| *c.borrow_mut() = None);
    }
}

/// When an SVG document is being drawn, records the bitmap and returns the placeholder text to
/// draw in its place.
fn record_svg_image(img: &RgbImage, pos: (i32, i32)) -> Result<Option<String>> {
    let recording = SVG_IMAGES.with(|c| c.borrow().is_some());
    if !recording {
        return Ok(None);
    }
    let png = encode_png(img.as_raw(), img.width(), img.height())?;
    Ok(SVG_IMAGES.with(|c| {
        c.borrow_mut().as_mut().map(|v| {
            let marker = format!("{MARKER}{}", v.len());
            v.push(RecordedImage {
                pos,
                size: img.dimensions(),
                png,
            });
            marker
        })
    }))
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(rgb, w, h, image::ExtendedColorType::Rgb8)
        .context("PNG encoding failed")?;
    Ok(out)
}

/// Replaces bitmap placeholders by `<image>` elements and names the bundled font first.
fn finish_svg(doc: String, images: &[RecordedImage]) -> Result<String> {
    let mut doc = doc.replace(
        "font-family=\"sans-serif\"",
        "font-family=\"DejaVu Sans, sans-serif\"",
    );
    for (i, img) in images.iter().enumerate() {
        let needle = format!("{MARKER}{i}");
        // The text content may be wrapped in whitespace; skip matches that are a prefix of a
        // longer number (marker 1 vs marker 10).
        let mut from = 0;
        let at = loop {
            let k = doc[from..]
                .find(&needle)
                .map(|k| k + from)
                .with_context(|| format!("SVG bitmap placeholder {i} not found"))?;
            let next = doc[k + needle.len()..].chars().next();
            if !next.is_some_and(|c| c.is_ascii_digit()) {
                break k;
            }
            from = k + needle.len();
        };
        let start = doc[..at]
            .rfind("<text")
            .context("SVG bitmap placeholder has no opening tag")?;
        let end = at
            + doc[at..]
                .find("</text>")
                .context("SVG bitmap placeholder has no closing tag")?
            + "</text>".len();
        let element = format!(
            "<image x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" preserveAspectRatio=\"none\" href=\"data:image/png;base64,{}\"/>",
            img.pos.0,
            img.pos.1,
            img.size.0,
            img.size.1,
            base64(&img.png)
        );
        doc.replace_range(start..end, &element);
    }
    Ok(doc)
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        out.push(ALPHABET[(n >> 18) as usize & 63] as char);
        out.push(ALPHABET[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            ALPHABET[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            ALPHABET[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}
