//! `rhlens::preprocess::resize` against Pillow's `Image.resize` on 7,800 seeded random cases
//! written at test time by `scripts/resize_cases.py` with the pinned Pillow in `.venv`: every
//! convolution filter, down- and upscaling, 1-pixel and unchanged sides, whole-image copies,
//! tiny images and extreme aspect ratios, noise, gradients and hard 0/255 edges. The committed
//! fixtures in tests/preprocess.rs cover a few dozen chosen cases; this covers the space around
//! them, so a rounding or window slip that only shows on some sizes cannot hide.
mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;
use image::RgbImage;
use rhlens::preprocess::{resize, Filter};
use serde_json::Value;

/// Fixed seed: a failure names the case, and rerunning reproduces it.
const SEED: u64 = 19;
const CASES: usize = 7800;

/// Mismatches of one filter: cases and values that differ from Pillow, the largest difference.
#[derive(Default)]
struct Tally {
    cases: usize,
    values: usize,
    differing_cases: usize,
    differing_values: usize,
    max_diff: u8,
}

/// One case of `index.json`: source and target size, Pillow's filter code, byte offsets.
struct Case {
    size: (u32, u32),
    target: (u32, u32),
    filter: Filter,
    source_at: usize,
    expected_at: usize,
}

fn parse_case(row: &Value) -> Case {
    let field = |i: usize| row[i].as_u64().unwrap_or_else(|| panic!("bad case {row}"));
    let code = field(4) as i64;
    Case {
        size: (field(0) as u32, field(1) as u32),
        target: (field(2) as u32, field(3) as u32),
        filter: Filter::from_pil_code(code).unwrap_or_else(|| panic!("filter code {code}")),
        source_at: field(5) as usize,
        expected_at: field(6) as usize,
    }
}

#[test]
fn resize_matches_pillow_on_thousands_of_random_cases() {
    let dir = tempfile::tempdir().unwrap();
    let script = root().join("scripts").join("resize_cases.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(SEED.to_string())
        .arg(CASES.to_string())
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("index.json")).unwrap())
            .unwrap();
    let blob = std::fs::read(dir.path().join("cases.bin")).unwrap();
    let cases = index["cases"].as_array().unwrap();
    assert_eq!(cases.len(), CASES);

    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut first_failures = Vec::new();
    for row in cases {
        let case = parse_case(row);
        let ((w, h), (new_w, new_h)) = (case.size, case.target);
        let source_len = (w * h * 3) as usize;
        let expected_len = (new_w * new_h * 3) as usize;
        let source = blob[case.source_at..case.source_at + source_len].to_vec();
        let expected = &blob[case.expected_at..case.expected_at + expected_len];
        let img = RgbImage::from_raw(w, h, source).unwrap();
        let got = resize(&img, new_w, new_h, case.filter);
        assert_eq!(got.dimensions(), (new_w, new_h));

        let tally = tallies.entry(format!("{:?}", case.filter)).or_default();
        let differing = (got.as_raw().iter().zip(expected))
            .filter(|(a, b)| a != b)
            .map(|(a, b)| a.abs_diff(*b))
            .fold((0usize, 0u8), |(n, max), d| (n + 1, max.max(d)));
        tally.cases += 1;
        tally.values += expected_len;
        tally.differing_values += differing.0;
        tally.max_diff = tally.max_diff.max(differing.1);
        if differing.0 > 0 {
            tally.differing_cases += 1;
            if first_failures.len() < 10 {
                first_failures.push(format!(
                    "{:?} {w}x{h} -> {new_w}x{new_h}: {} values differ, max {}",
                    case.filter, differing.0, differing.1
                ));
            }
        }
    }

    let (mut differing_cases, mut differing_values) = (0, 0);
    println!(
        "Pillow {} seed {SEED}",
        index["pillow"].as_str().unwrap_or("?")
    );
    for (filter, t) in &tallies {
        println!(
            "{filter:>9}: {} cases ({} values), {} cases / {} values differ, max diff {}",
            t.cases, t.values, t.differing_cases, t.differing_values, t.max_diff
        );
        differing_cases += t.differing_cases;
        differing_values += t.differing_values;
    }
    println!("all: {CASES} cases, {differing_cases} differ ({differing_values} values)");
    // every filter Filter::from_pil_code knows is drawn
    assert_eq!(tallies.len(), 5, "filters covered: {:?}", tallies.keys());
    assert_eq!(
        (differing_cases, differing_values),
        (0, 0),
        "resize differs from Pillow; first cases:\n{}",
        first_failures.join("\n")
    );
}
