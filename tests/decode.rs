//! Image decoding against Pillow and the Hugging Face image processor, format by format, on
//! files written at test time by `scripts/fixtures_decode.py` with the pinned stack in `.venv`;
//! the pixel limit checked before decoding; prefill on a JPEG against Hugging Face.
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;
use rhlens::error::InvalidSetting;
use rhlens::preprocess::{
    load_image, load_image_limited, preprocess, ImageProcessorConfig, DEFAULT_MAX_IMAGE_PIXELS,
};
use safetensors::SafeTensors;
use serde_json::Value;

fn run_python(args: &[&std::ffi::OsStr]) {
    let out = Command::new(python()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What one file gave: values of the decoded RGB and of pixel_values that differ from the
/// reference, the largest difference of each.
#[derive(Default)]
struct Tally {
    files: usize,
    rgb_values: usize,
    rgb_differ: usize,
    rgb_max: u8,
    pv_values: usize,
    pv_differ: usize,
    pv_max: f32,
    differing: Vec<String>,
}

fn compare_file(dir: &Path, st: &SafeTensors, file: &str, tally: &mut Tally) {
    let differ_before = tally.rgb_differ + tally.pv_differ;
    let img = load_image(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e:#}"));
    let want = st.tensor(&format!("{file}.rgb")).unwrap();
    assert_eq!(
        want.shape(),
        [img.height() as usize, img.width() as usize, 3],
        "{file}: size"
    );
    for (&a, &b) in img.as_raw().iter().zip(want.data()) {
        tally.rgb_differ += usize::from(a != b);
        tally.rgb_max = tally.rgb_max.max(a.abs_diff(b));
    }
    tally.rgb_values += want.data().len();

    let cfg = ImageProcessorConfig {
        min_pixels: 3136,
        max_pixels: 12845056,
        ..Default::default()
    };
    let out = preprocess(&img, &cfg).unwrap();
    let grid = st.tensor(&format!("{file}.grid_thw")).unwrap();
    let grid: Vec<usize> = grid
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
        .collect();
    assert_eq!(out.grid_thw.to_vec(), grid, "{file}: grid");
    let want = st.tensor(&format!("{file}.pixel_values")).unwrap();
    assert_eq!(want.shape(), [out.n_patches, out.patch_dim], "{file}");
    for (a, b) in out.pixel_values.iter().zip(want.data().chunks_exact(4)) {
        let b = f32::from_le_bytes(b.try_into().unwrap());
        tally.pv_differ += usize::from(a.to_bits() != b.to_bits());
        tally.pv_max = tally.pv_max.max((a - b).abs());
    }
    tally.pv_values += out.pixel_values.len();
    tally.files += 1;
    if tally.rgb_differ + tally.pv_differ > differ_before {
        tally.differing.push(file.to_string());
    }
}

/// The group a file is counted in: its format, with the JPEG variants apart.
fn group(file: &str) -> String {
    let (stem, ext) = file.rsplit_once('.').unwrap_or((file, ""));
    let variant = if stem.starts_with("exif") {
        "exif orientation"
    } else if ext == "jpg" {
        let chroma = stem.split('_').find(|p| ["420", "422", "444"].contains(p));
        match (stem.starts_with("photo"), chroma) {
            (true, Some(c)) if stem.ends_with("_prog") => return format!("jpg {c} progressive"),
            (true, Some(c)) => return format!("jpg {c} baseline"),
            _ => stem.split('_').next().unwrap_or_default(),
        }
    } else {
        ""
    };
    format!("{ext} {variant}").trim().to_string()
}

#[test]
fn every_format_decodes_like_pillow_and_the_image_processor() {
    let dir = tempfile::tempdir().unwrap();
    let script = root().join("scripts").join("fixtures_decode.py");
    run_python(&[script.as_os_str(), dir.path().as_os_str()]);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("manifest.json")).unwrap())
            .unwrap();
    let bytes = std::fs::read(dir.path().join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut groups: BTreeMap<String, Tally> = BTreeMap::new();
    for case in manifest["cases"].as_array().unwrap() {
        let file = case["file"].as_str().unwrap();
        let tally = groups.entry(group(file)).or_default();
        compare_file(dir.path(), &st, file, tally);
    }
    let mut files = 0;
    for (name, t) in &groups {
        println!(
            "{name}: {} files, RGB {} of {} values differ (max {}), pixel_values {} of {} differ \
             (max |diff| {:e})",
            t.files, t.rgb_differ, t.rgb_values, t.rgb_max, t.pv_differ, t.pv_values, t.pv_max
        );
        files += t.files;
    }
    for (name, t) in &groups {
        assert_eq!(
            (t.rgb_differ, t.pv_differ),
            (0, 0),
            "{name}: {:?}",
            t.differing
        );
    }
    // Refused rather than decoded differently (the image crate's JPEG decoder is not Pillow's).
    let jpeg_tiff = load_image(dir.path().join("rgb_jpeg_71x43.tif")).unwrap_err();
    let msg = format!("{jpeg_tiff:#}");
    assert!(
        msg.contains("rgb_jpeg_71x43.tif") && msg.contains("JPEG-compressed TIFF"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    // 4:2:0 / 4:2:2 / 4:4:4 x baseline / progressive x quality 50-95 x 2 sizes, grey, CMYK,
    // the committed encodings, EXIF 1-8, WebP, GIF, BMP, TIFF.
    assert!(files >= 90, "only {files} files compared");
}

/// A PNG whose header claims `w x h` pixels, followed by a little image data.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, tag: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(tag);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    // a stored (uncompressed) deflate block of zero rows
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x01, 0x01, 0x00, 0x01, 0xff, 0xfe, 0x00],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A copy of a small JPEG whose frame header claims `w x h` pixels.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut jpg = std::fs::read(fixtures().join("decode").join("s440_61x47.jpg")).unwrap();
    let sof = jpg
        .windows(2)
        .position(|m| m[0] == 0xFF && (0xC0..=0xC2).contains(&m[1]))
        .unwrap();
    jpg[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    jpg[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    jpg
}

/// An extended WebP header (VP8X) whose canvas is `w x h` (each at most 2^24).
fn webp_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut vp8x = vec![0u8; 10];
    vp8x[4..7].copy_from_slice(&(w - 1).to_le_bytes()[..3]);
    vp8x[7..10].copy_from_slice(&(h - 1).to_le_bytes()[..3]);
    let mut body = b"WEBPVP8X".to_vec();
    body.extend_from_slice(&10u32.to_le_bytes());
    body.extend_from_slice(&vp8x);
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

#[test]
fn jpeg_variants_the_decoder_lacks_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let jpg = jpeg_claiming(61, 47);
    let sof = jpg.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
    let mut twelve_bit = jpg.clone();
    twelve_bit[sof + 4] = 12;
    let mut lossless = jpg.clone();
    lossless[sof + 1] = 0xC3;
    // libjpeg's own reasons come through its unwinding error handler as one line.
    let cases = [
        (
            "twelve.jpg",
            twelve_bit,
            "Unsupported JPEG data precision 12",
        ),
        (
            "lossless.jpg",
            lossless,
            "Unsupported JPEG process: SOF type 0xc3",
        ),
    ];
    for (name, bytes, reason) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let msg = format!("{:#}", load_image(&path).unwrap_err());
        assert!(
            msg.starts_with("cannot decode image") && msg.contains(name),
            "{msg}"
        );
        assert!(msg.ends_with(reason), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
    // the unpatched copy decodes
    let path = dir.path().join("good.jpg");
    std::fs::write(&path, jpg).unwrap();
    assert_eq!(load_image(&path).unwrap().dimensions(), (61, 47));
}

fn assert_refused_by_limit(err: anyhow::Error, name: &str) {
    let msg = format!("{err:#}");
    assert!(!msg.contains('\n'), "{msg}");
    assert!(msg.contains(name), "{msg}");
    let setting = err
        .downcast_ref::<InvalidSetting>()
        .unwrap_or_else(|| panic!("not a setting error: {msg}"));
    assert_eq!(setting.setting, "max_image_pixels", "{msg}");
}

#[test]
fn headers_claiming_huge_images_are_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("huge.png", png_claiming(60000, 60000)),
        ("huge.jpg", jpeg_claiming(60000, 60000)),
        ("huge.webp", webp_claiming(60000, 60000)),
    ];
    for (name, bytes) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = load_image(&path).unwrap_err();
        assert!(format!("{err:#}").contains("60000x60000"), "{err:#}");
        assert_refused_by_limit(err, name);
    }
}

#[test]
fn the_pixel_limit_is_inclusive_and_can_be_raised() {
    // 61x47 = 2867 pixels
    let path = fixtures().join("decode").join("s440_61x47.jpg");
    assert_eq!(
        load_image_limited(&path, 2867).unwrap().dimensions(),
        (61, 47)
    );
    assert_refused_by_limit(load_image_limited(&path, 2866).unwrap_err(), "s440");
    let png = tempfile::tempdir().unwrap();
    let tall = png.path().join("tall.png");
    image::RgbImage::new(3, 1000).save(&tall).unwrap();
    assert_refused_by_limit(load_image_limited(&tall, 2999).unwrap_err(), "tall.png");
    assert!(load_image_limited(&tall, 3000).is_ok());
    // Pillow's limit: it refuses above twice Image.MAX_IMAGE_PIXELS (89,478,485).
    assert_eq!(DEFAULT_MAX_IMAGE_PIXELS, 178_956_970);
}

#[test]
fn the_command_line_refuses_a_huge_image_in_one_line_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.png");
    std::fs::write(&huge, png_claiming(60000, 60000)).unwrap();
    let run = |extra: &[&str]| {
        Command::new(bin())
            .args([
                "dump",
                "--device",
                "cpu",
                "--prompt",
                "Describe it.",
                "--model",
            ])
            .arg(model_dir("tiny-flat"))
            .arg("--image")
            .arg(&huge)
            .arg("--out")
            .arg(dir.path().join("out.safetensors"))
            .args(extra)
            .output()
            .unwrap()
    };
    for extra in [&[][..], &["--max-image-pixels", "1000"][..]] {
        let out = run(extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains("--max-image-pixels"), "{stderr}");
        assert!(errors[0].contains("60000x60000"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = run(&["--max-image-pixels", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--max-image-pixels"), "{stderr}");
    assert!(!dir.path().join("out.safetensors").exists());
}

#[test]
fn prefill_on_a_jpeg_is_bit_exact_with_hugging_face() {
    let dir = tempfile::tempdir().unwrap();
    let image = fixtures().join("decode").join("prefill_420_157x113.jpg");
    let prompt = "Describe the picture. How many shapes are there?";
    let model = model_dir("tiny-flat");
    let (hf, rh) = (
        dir.path().join("hf.safetensors"),
        dir.path().join("rh.safetensors"),
    );
    let out = Command::new(bin())
        .args(["dump", "--device", "cpu", "--prompt", prompt, "--model"])
        .arg(&model)
        .arg("--image")
        .arg(&image)
        .arg("--out")
        .arg(&rh)
        .output()
        .unwrap();
    assert!(out.status.success(), "rhlens dump: {out:?}");
    let script = root().join("scripts").join("hf_prefill.py");
    run_python(&[
        script.as_os_str(),
        model.as_os_str(),
        image.as_os_str(),
        prompt.as_ref(),
        hf.as_os_str(),
    ]);
    let read = |p: &Path| -> BTreeMap<String, tch::Tensor> {
        tch::Tensor::read_safetensors(p)
            .unwrap()
            .into_iter()
            .collect()
    };
    let (hf, rh) = (read(&hf), read(&rh));
    for name in [
        "input_ids",
        "pixel_values",
        "image_grid_thw",
        "position_ids",
        "logits",
    ] {
        let (want, got) = (&hf[name], &rh[name]);
        assert_eq!(want.size(), got.size(), "{name}");
        let diff = max_abs_diff(want, got);
        println!("{name}: max |diff| {diff:e}");
        assert_eq!(
            diff, 0.0,
            "{name} differs from Hugging Face by up to {diff}"
        );
    }
}
