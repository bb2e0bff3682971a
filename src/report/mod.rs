//! `rhlens report`: one self-contained HTML file to explore traces token by token. The page's
//! HTML, CSS and JavaScript are files beside this one; the traces' data (quantised maps, role
//! curves, tokens, provenance), the image (a data URI) and the colour maps are embedded, so the
//! file opens from anywhere, offline, and loads nothing.
//!
//! Reads saved traces only (never a model), like the figures.
mod data;
pub mod encode;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

use crate::formats::sweep::SweepSummary;
use crate::formats::trace::Trace;
use crate::render::colormap::Colormap;

const PAGE: &str = include_str!("page.html");
const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// A trace and how the page names it.
pub struct ReportTrace {
    pub label: String,
    pub trace: Trace,
}

impl ReportTrace {
    /// Named after its model and its directory.
    pub fn new(trace: Trace) -> ReportTrace {
        let dir = trace
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let label = match trace.meta.model.name.as_str() {
            "" => dir,
            name if dir.is_empty() || dir == name => name.to_string(),
            name => format!("{name} · {dir}"),
        };
        ReportTrace { label, trace }
    }
}

/// How the page lays out its traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Up to two traces side by side (each with a switch when there are more).
    SideBySide,
    /// One panel and a switch between the settings of a sweep.
    Sweep,
}

/// Reads the traces of the sweep in `dir`, labelled by their setting (`budget=100`).
pub fn sweep_traces(dir: &Path, allow_partial: bool) -> Result<Vec<ReportTrace>> {
    let summary = SweepSummary::read(dir)?;
    summary
        .rows
        .iter()
        .map(|row| {
            let path = dir.join(&row.trace);
            let trace = read_trace(&path, allow_partial)?;
            let label = match row.sample {
                Some(s) => format!("{} (sample {s})", row.setting),
                None => row.setting.clone(),
            };
            Ok(ReportTrace { label, trace })
        })
        .collect()
}

/// Reads one trace (a partial one only when allowed).
pub fn read_trace(dir: &Path, allow_partial: bool) -> Result<Trace> {
    let trace = if allow_partial {
        Trace::read_allow_partial(dir)
    } else {
        Trace::read(dir)
    };
    Ok(trace?)
}

/// The page for `traces`, as HTML text; `notes` collects what the page had to do without (an
/// image that could not be found).
pub fn html(traces: &[ReportTrace], layout: Layout, notes: &mut Vec<String>) -> Result<String> {
    let mut images: Vec<String> = Vec::new();
    let mut seen: HashMap<PathBuf, usize> = HashMap::new();
    let mut records = Vec::with_capacity(traces.len());
    for t in traces {
        let index = match find_image(&t.trace) {
            Some(path) => match seen.get(&path) {
                Some(&i) => Some(i),
                None => {
                    images.push(image_data_uri(&path)?);
                    seen.insert(path, images.len() - 1);
                    Some(images.len() - 1)
                }
            },
            None => {
                notes.push(format!(
                    "{}: image {:?} not found; the page shows the maps without it",
                    t.trace.dir.display(),
                    t.trace.meta.image.path
                ));
                None
            }
        };
        records.push(data::trace_json(&t.trace, &t.label, index));
    }
    let colormaps: serde_json::Map<String, serde_json::Value> = Colormap::ALL
        .iter()
        .map(|c| {
            let lut: Vec<u8> = (0..256).flat_map(|i| c.rgb(i as f64 / 255.0)).collect();
            (c.name().to_string(), encode::base64(&lut).into())
        })
        .collect();
    let page = json!({
        "layout": match layout { Layout::SideBySide => "side", Layout::Sweep => "sweep" },
        "traces": records,
        "images": images,
        "colormaps": colormaps,
        "version": env!("CARGO_PKG_VERSION"),
    });
    // inside <script>: "</" would end the element
    let data = serde_json::to_string(&page)?.replace("</", "<\\/");
    let title = traces
        .first()
        .map(|t| t.trace.meta.prompt.as_str())
        .unwrap_or("");
    let title = escape_html(&format!("rhlens report: {title}"));
    // one pass over the template: the data is large, so it is copied once
    let mut out = String::with_capacity(PAGE.len() + STYLE.len() + SCRIPT.len() + data.len());
    let mut rest = PAGE;
    for (mark, text) in [
        ("__TITLE__", title.as_str()),
        ("/*STYLE*/", STYLE),
        ("__DATA__", data.as_str()),
        ("/*SCRIPT*/", SCRIPT),
    ] {
        let at = rest
            .find(mark)
            .with_context(|| format!("page template lacks {mark}"))?;
        out.push_str(&rest[..at]);
        out.push_str(text);
        rest = &rest[at + mark.len()..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Writes the page to `out` (atomically); returns notes on what it had to do without.
pub fn write(traces: &[ReportTrace], layout: Layout, out: &Path) -> Result<Vec<String>> {
    if traces.is_empty() {
        anyhow::bail!("no traces to report");
    }
    let mut notes = Vec::new();
    let text = html(traces, layout, &mut notes)?;
    crate::fsutil::write_atomic(out, text.as_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(notes)
}

fn find_image(trace: &Trace) -> Option<PathBuf> {
    let path = trace
        .meta
        .image_candidates(&trace.dir)
        .into_iter()
        .find(|p| p.is_file())?;
    Some(path.canonicalize().unwrap_or(path))
}

/// The image file as a data URI: as it is when browsers read its format, else re-encoded as PNG.
fn image_data_uri(path: &Path) -> Result<String> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))?;
    let mime = match bytes.as_slice() {
        [0x89, b'P', b'N', b'G', ..] => Some("image/png"),
        [0xff, 0xd8, 0xff, ..] => Some("image/jpeg"),
        [b'G', b'I', b'F', b'8', ..] => Some("image/gif"),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some("image/webp"),
        [b'B', b'M', ..] => Some("image/bmp"),
        _ => None,
    };
    if let Some(mime) = mime {
        return Ok(format!("data:{mime};base64,{}", encode::base64(&bytes)));
    }
    let img = image::open(path)
        .with_context(|| format!("cannot read image {}", path.display()))?
        .to_rgb8();
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .with_context(|| format!("cannot re-encode image {}", path.display()))?;
    Ok(format!("data:image/png;base64,{}", encode::base64(&png)))
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
