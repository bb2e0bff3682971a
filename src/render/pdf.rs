//! A one-page PDF holding a figure's PNG raster, for journals that ask for PDF figures.
//!
//! plotters has no PDF backend, and turning the SVG into vector PDF needs an SVG renderer and
//! font embedding that rhlens does not bundle. PDF can carry a PNG's pixel stream as it is: the
//! concatenated IDAT chunks are a zlib stream with PNG row filters, which a PDF reader decodes
//! with `/FlateDecode` and `/Predictor 15`. So the PDF is the same 300-dpi raster as the PNG, at
//! its physical size, without re-encoding and without another dependency.

use anyhow::{bail, Result};

/// The PDF of an 8-bit RGB, non-interlaced PNG (what rhlens writes), at `dpi` pixels per inch.
pub fn from_png(png: &[u8], dpi: f64) -> Result<Vec<u8>> {
    let (width, height, idat) = png_pixels(png)?;
    let pt = |px: u32| px as f64 * 72.0 / dpi;
    let (w, h) = (pt(width), pt(height));
    let content = format!("q {w:.3} 0 0 {h:.3} 0 0 cm /Im0 Do Q\n");
    let image_dict = format!(
        "<< /Type /XObject /Subtype /Image /Width {width} /Height {height} /ColorSpace /DeviceRGB \
         /BitsPerComponent 8 /Filter /FlateDecode /DecodeParms << /Predictor 15 /Colors 3 \
         /BitsPerComponent 8 /Columns {width} >> /Length {} >>",
        idat.len()
    );
    let objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w:.3} {h:.3}] \
             /Resources << /XObject << /Im0 4 0 R >> >> /Contents 5 0 R >>"
        )
        .into_bytes(),
        stream(&image_dict, &idat),
        stream(
            &format!("<< /Length {} >>", content.len()),
            content.as_bytes(),
        ),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    Ok(out)
}

fn stream(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut s = format!("{dict}\nstream\n").into_bytes();
    s.extend_from_slice(data);
    s.extend_from_slice(b"\nendstream");
    s
}

/// Width, height and the concatenated IDAT data of an 8-bit RGB, non-interlaced PNG.
fn png_pixels(png: &[u8]) -> Result<(u32, u32, Vec<u8>)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !png.starts_with(SIGNATURE) {
        bail!("not a PNG");
    }
    let mut at = SIGNATURE.len();
    let mut size = None;
    let mut idat = Vec::new();
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]) as usize;
        let kind = &png[at + 4..at + 8];
        let Some(data) = png.get(at + 8..at + 8 + len) else {
            bail!("truncated PNG chunk");
        };
        match kind {
            b"IHDR" if len == 13 => {
                let be =
                    |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
                // bit depth 8, colour type 2 (RGB), no interlace
                if data[8] != 8 || data[9] != 2 || data[12] != 0 {
                    bail!("only 8-bit RGB non-interlaced PNGs are embedded");
                }
                size = Some((be(0), be(4)));
            }
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len;
    }
    match size {
        Some((w, h)) if !idat.is_empty() => Ok((w, h, idat)),
        _ => bail!("PNG without a header or pixel data"),
    }
}
