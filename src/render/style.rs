//! Shared look of every figure: the bundled DejaVu Sans font, text sizes, line widths, the
//! colour-blind-safe palette and tick-label formatting.
//!
//! Lines and bars use the Okabe–Ito palette (Okabe & Ito, "Color Universal Design", 2002): its
//! eight colours stay distinguishable under the three common colour-vision deficiencies and in
//! greyscale print better than Tableau/Category10, whose red/green and orange/brown pairs merge
//! for deuteranopes. Ordered series (settings of a sweep) use the sequential colormap instead.

use std::sync::OnceLock;

use anyhow::{anyhow, Result};
use plotters::style::{FontStyle, IntoFont, RGBColor, TextStyle};

use crate::formats::Role;

/// Family name every text style asks for; the bundled font is registered under it.
pub const FONT_FAMILY: &str = "sans-serif";

static REGULAR: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
static BOLD: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-Bold.ttf");

/// Registers the bundled fonts with plotters (once per process).
pub fn ensure_fonts() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        // InvalidFont implements neither Debug nor Display.
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, REGULAR)
            .map_err(|_| "the bundled DejaVuSans.ttf could not be parsed".to_string())?;
        plotters::style::register_font(FONT_FAMILY, FontStyle::Bold, BOLD)
            .map_err(|_| "the bundled DejaVuSans-Bold.ttf could not be parsed".to_string())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Colour of all text, axes and frames.
pub const TEXT: RGBColor = RGBColor(0x1a, 0x1a, 0x1a);
/// Light grey for grid lines.
pub const GRID: RGBColor = RGBColor(0xe3, 0xe3, 0xe3);
/// Mid grey for secondary marks.
pub const MUTED: RGBColor = RGBColor(0x80, 0x80, 0x80);

/// The Okabe–Ito colours, in the order used for series: blue, vermillion, bluish green,
/// reddish purple, orange, sky blue, black, yellow.
pub const OKABE_ITO: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0x56, 0xB4, 0xE9),
    RGBColor(0x00, 0x00, 0x00),
    RGBColor(0xF0, 0xE4, 0x42),
];

/// Colour of the `i`-th categorical series (models, traces).
pub fn series_color(i: usize) -> RGBColor {
    OKABE_ITO[i % OKABE_ITO.len()]
}

/// Fixed colour per token role, so that every figure reads the same way; roles this build does
/// not know (`None`) share one colour.
pub fn role_color(role: Option<Role>) -> RGBColor {
    match role {
        Some(Role::Visual) => OKABE_ITO[0],
        Some(Role::Instruction) => OKABE_ITO[4],
        Some(Role::System) => RGBColor(0x99, 0x99, 0x99),
        Some(Role::Reasoning) => OKABE_ITO[1],
        Some(Role::Answer) => OKABE_ITO[2],
        None => OKABE_ITO[3],
    }
}

/// Legend words for a role named in a file (an unknown role keeps its name).
pub fn role_label(name: &str) -> String {
    match Role::from_name(name) {
        Some(Role::Visual) => "Visual (image tokens)".into(),
        Some(Role::Instruction) => "Instruction".into(),
        Some(Role::System) => "System prompt".into(),
        Some(Role::Reasoning) => "Reasoning (thinking)".into(),
        Some(Role::Answer) => "Answer".into(),
        None => name.to_string(),
    }
}

/// Order in which the roles named in a file are stacked (bottom first) and listed: known roles
/// first, then the others as listed.
pub fn role_order(roles: &[String]) -> Vec<usize> {
    const STACKED: [Role; 5] = [
        Role::Visual,
        Role::Instruction,
        Role::Reasoning,
        Role::Answer,
        Role::System,
    ];
    let mut out: Vec<usize> = STACKED
        .iter()
        .filter_map(|&p| roles.iter().position(|r| Role::from_name(r) == Some(p)))
        .collect();
    for i in 0..roles.len() {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// Sizes in layout pixels, multiplied by `scale` (a DPI-like factor) when drawn.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub scale: f64,
    /// Text size relative to the layout sizes.
    pub text: f64,
}

impl Style {
    pub fn new(scale: f64) -> Style {
        Style { scale, text: 1.0 }
    }
    /// A style whose text is `text` times the layout sizes (publication mode's smaller text).
    pub fn with_text(scale: f64, text: f64) -> Style {
        Style { scale, text }
    }
    /// Layout pixels to device pixels.
    pub fn px(&self, v: f64) -> i32 {
        (v * self.scale).round() as i32
    }
    /// Layout pixels to device pixels, as u32 (at least 1).
    pub fn upx(&self, v: f64) -> u32 {
        ((v * self.scale).round() as i64).max(1) as u32
    }
    /// Font size in device pixels, rounded to an even number: plotters places each glyph at
    /// `size / 2 + top` truncated to an integer, so odd or fractional sizes shift glyphs that
    /// sit low (such as '.') by a pixel relative to the others.
    pub fn font_px(&self, size: f64) -> f64 {
        ((size * self.text * self.scale / 2.0).round() * 2.0).max(2.0)
    }
    pub fn font(&self, size: f64) -> TextStyle<'static> {
        (FONT_FAMILY, self.font_px(size)).into_font().color(&TEXT)
    }
    pub fn bold(&self, size: f64) -> TextStyle<'static> {
        (FONT_FAMILY, self.font_px(size), FontStyle::Bold)
            .into_font()
            .color(&TEXT)
    }
    pub fn title(&self) -> TextStyle<'static> {
        self.bold(TITLE_SIZE)
    }
    pub fn subtitle(&self) -> TextStyle<'static> {
        self.font(SUBTITLE_SIZE).color(&RGBColor(0x44, 0x44, 0x44))
    }
    pub fn panel_title(&self) -> TextStyle<'static> {
        self.font(PANEL_TITLE_SIZE)
    }
    pub fn axis_label(&self) -> TextStyle<'static> {
        self.font(AXIS_LABEL_SIZE)
    }
    pub fn tick(&self) -> TextStyle<'static> {
        self.font(TICK_SIZE)
    }
    pub fn legend(&self) -> TextStyle<'static> {
        self.font(LEGEND_SIZE)
    }
    pub fn line_width(&self) -> u32 {
        self.upx(2.0)
    }
}

// Sizes of text in layout pixels (the glyph height from descender to ascender).
pub const TITLE_SIZE: f64 = 22.0;
pub const SUBTITLE_SIZE: f64 = 14.0;
pub const PANEL_TITLE_SIZE: f64 = 16.0;
pub const AXIS_LABEL_SIZE: f64 = 16.0;
pub const TICK_SIZE: f64 = 14.0;
pub const LEGEND_SIZE: f64 = 14.0;

/// Formats a tick value with `decimals` decimals, switching to scientific notation for very
/// small or large magnitudes, without a "-0".
pub fn format_tick(v: f64, decimals: usize) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e6).contains(&a) {
        return format!("{v:.1e}");
    }
    let s = format!("{v:.decimals$}");
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        s.trim_start_matches('-').to_string()
    } else {
        s
    }
}

/// Shortens `text` to at most `max` characters with an ellipsis.
pub fn ellipsize(text: &str, max: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max {
        text.to_string()
    } else {
        let mut s: String = chars[..max.saturating_sub(1)].iter().collect();
        s.push('…');
        s
    }
}

/// Width in device pixels of `text` drawn with `style` (estimate from the font metrics).
pub fn text_width(text: &str, style: &TextStyle) -> i32 {
    style
        .font
        .box_size(text)
        .map(|(w, _)| w as i32)
        .unwrap_or((text.chars().count() as f64 * style.font.get_size() * 0.6) as i32)
}
