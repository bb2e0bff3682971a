//! Small text utilities shared by the bench modules: answer normalisation, number scanning,
//! a stable hash, JSONL tail repair and minimal CSV reading/writing.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result};

/// Lowercase, punctuation to spaces, articles dropped, whitespace collapsed.
pub fn normalize_text(s: &str) -> String {
    let lowered: String = s
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    lowered
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether the word sequence `needle` occurs in `haystack` on word boundaries (both already
/// normalised).
pub fn contains_phrase(haystack: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let h: Vec<&str> = haystack.split_whitespace().collect();
    let n: Vec<&str> = needle.split_whitespace().collect();
    n.len() <= h.len() && h.windows(n.len()).any(|w| w == n.as_slice())
}

/// A number found in text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumberToken {
    pub value: f64,
    /// Byte range in the source text.
    pub start: usize,
    pub end: usize,
    /// Followed by `%`.
    pub percent: bool,
    /// Digits after the decimal point as written (0 for integers and fractions).
    pub decimals: usize,
}

/// Scan numbers: integers, decimals (`3.0`, `.5`), thousands separators (`1,234`), signs,
/// fractions (`1/2`), LaTeX fractions (`\frac{1}{2}`, `\dfrac`), optionally followed by `%`.
pub fn numbers_in(s: &str) -> Vec<NumberToken> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        // Only ASCII bytes are inspected, so slicing at `i` is always on a char boundary.
        if b[i] == b'\\' {
            if let Some(tok) = latex_frac_at(s, i) {
                i = tok.end;
                out.push(tok);
                continue;
            }
        }
        let starts_number =
            b[i].is_ascii_digit() || (b[i] == b'.' && i + 1 < b.len() && b[i + 1].is_ascii_digit());
        if !starts_number {
            i += 1;
            continue;
        }
        let mut start = i;
        let mut negative = false;
        // A sign counts only when it is not preceded by an alphanumeric (so "3-2" is 3 and 2).
        if i >= 1 && (b[i - 1] == b'-' || b[i - 1] == b'+') {
            let before_ok = i < 2 || !(b[i - 2].is_ascii_alphanumeric());
            if before_ok {
                negative = b[i - 1] == b'-';
                start = i - 1;
            }
        } else if i >= 3 && &s.as_bytes()[i - 3..i] == "\u{2212}".as_bytes() {
            negative = true;
            start = i - 3;
        }
        let (mut value, mut end, decimals) = scan_decimal(b, i);
        // Fraction a/b of two plain numbers.
        if end + 1 < b.len() && b[end] == b'/' && b[end + 1].is_ascii_digit() {
            let (den, den_end, _) = scan_decimal(b, end + 1);
            if den != 0.0 {
                value /= den;
                end = den_end;
            }
        }
        let percent = end < b.len() && b[end] == b'%';
        if negative {
            value = -value;
        }
        out.push(NumberToken {
            value,
            start,
            end: if percent { end + 1 } else { end },
            percent,
            decimals,
        });
        i = if percent { end + 1 } else { end };
    }
    out
}

/// Digits with optional thousands groups and decimal part starting at `i`.
/// Returns (value, end, decimals).
fn scan_decimal(b: &[u8], i: usize) -> (f64, usize, usize) {
    let mut j = i;
    let mut digits = String::new();
    while j < b.len() && b[j].is_ascii_digit() {
        digits.push(b[j] as char);
        j += 1;
    }
    // Thousands groups: ",ddd" not followed by another digit, only after 1-3 leading digits.
    if (1..=3).contains(&digits.len()) {
        loop {
            let group = j + 4 <= b.len()
                && b[j] == b','
                && b[j + 1..j + 4].iter().all(|c| c.is_ascii_digit())
                && (j + 4 == b.len() || !b[j + 4].is_ascii_digit());
            if !group {
                break;
            }
            digits.extend(b[j + 1..j + 4].iter().map(|&c| c as char));
            j += 4;
        }
    }
    let mut decimals = 0;
    if j + 1 < b.len() && b[j] == b'.' && b[j + 1].is_ascii_digit() {
        digits.push('.');
        j += 1;
        while j < b.len() && b[j].is_ascii_digit() {
            digits.push(b[j] as char);
            decimals += 1;
            j += 1;
        }
    }
    if digits.starts_with('.') {
        digits.insert(0, '0');
    }
    (digits.parse::<f64>().unwrap_or(f64::NAN), j, decimals)
}

/// `\frac{a}{b}` / `\dfrac{a}{b}` / `\tfrac{a}{b}` at byte `i`.
fn latex_frac_at(s: &str, i: usize) -> Option<NumberToken> {
    let rest = &s[i..];
    let after = ["\\frac{", "\\dfrac{", "\\tfrac{"]
        .iter()
        .find_map(|p| rest.strip_prefix(p).map(|r| (p.len(), r)))?;
    let (plen, r) = after;
    let close = r.find('}')?;
    let num = r[..close].trim();
    let r2 = r[close + 1..].strip_prefix('{')?;
    let close2 = r2.find('}')?;
    let den = r2[..close2].trim();
    let negative_num = num.starts_with('-');
    let parse = |t: &str| t.trim_start_matches('-').trim().parse::<f64>().ok();
    let (n, d) = (parse(num)?, parse(den)?);
    if d == 0.0 {
        return None;
    }
    let end = i + plen + close + 1 + 1 + close2 + 1;
    let negative = negative_num || (i > 0 && s.as_bytes()[i - 1] == b'-');
    let start = if i > 0 && s.as_bytes()[i - 1] == b'-' {
        i - 1
    } else {
        i
    };
    Some(NumberToken {
        value: if negative { -n / d } else { n / d },
        start,
        end,
        percent: false,
        decimals: 0,
    })
}

/// The single number a short answer stands for: exactly one number, and the rest is at most
/// three words of units or currency (`"3 cm"` -> 3, `"$1,200"` -> 1200, `"1/2"` -> 0.5,
/// `"12.5 square meters"` -> 12.5). A sentence that happens to hold one number is not a number.
pub fn parse_number(s: &str) -> Option<NumberToken> {
    let toks = numbers_in(s);
    if toks.len() != 1 || !toks[0].value.is_finite() {
        return None;
    }
    let t = toks[0];
    let rest = format!("{} {}", &s[..t.start], &s[t.end..]);
    let words = rest
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .count();
    (words <= 3).then_some(t)
}

/// Numbers written as words ("three", "twenty-one", "zero", "none"), in order of appearance.
pub fn word_numbers(s: &str) -> Vec<f64> {
    const UNITS: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 8] = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    let unit = |w: &str| UNITS.iter().position(|u| *u == w).map(|i| i as f64);
    let ten = |w: &str| {
        TENS.iter()
            .position(|u| *u == w)
            .map(|i| 20.0 + 10.0 * i as f64)
    };
    let lower = s.to_lowercase();
    let mut out = Vec::new();
    for word in lower.split(|c: char| !(c.is_alphabetic() || c == '-')) {
        let word = word.trim_matches('-');
        if word == "none" {
            out.push(0.0);
        } else if let Some(v) = unit(word).or_else(|| ten(word)) {
            out.push(v);
        } else if let Some((a, b)) = word.split_once('-') {
            if let (Some(t), Some(u)) = (ten(a), unit(b)) {
                if (1.0..10.0).contains(&u) {
                    out.push(t + u);
                }
            }
        }
    }
    out
}

/// Numeric equivalence of a predicted and a gold number. Equal within a relative 1e-6; a gold
/// written with d > 0 decimals also accepts a prediction that rounds to it at d decimals; a
/// percentage on one side only is also compared divided by 100.
pub fn numbers_match(pred: &NumberToken, gold: &NumberToken) -> bool {
    let close = |p: f64, g: f64| {
        if (p - g).abs() <= 1e-6 * g.abs().max(1.0) {
            return true;
        }
        if gold.decimals > 0 {
            let scale = 10f64.powi(gold.decimals as i32);
            return ((p * scale).round() - (g * scale).round()).abs() < 0.5;
        }
        false
    };
    if close(pred.value, gold.value) {
        return true;
    }
    match (pred.percent, gold.percent) {
        (true, false) => close(pred.value / 100.0, gold.value),
        (false, true) => close(pred.value, gold.value / 100.0),
        _ => false,
    }
}

/// yes/no reading of an answer: its first word, or the only one of "yes"/"no" it contains.
pub fn yes_no(s: &str) -> Option<bool> {
    let norm = normalize_text(s);
    let words: Vec<&str> = norm.split_whitespace().collect();
    let yes_word = |w: &str| matches!(w, "yes" | "yeah" | "yep" | "true" | "correct");
    let no_word = |w: &str| matches!(w, "no" | "nope" | "false" | "incorrect");
    match words.first() {
        Some(w) if yes_word(w) => return Some(true),
        Some(w) if no_word(w) => return Some(false),
        _ => {}
    }
    let has_yes = words.contains(&"yes");
    let has_no = words.contains(&"no");
    match (has_yes, has_no) {
        (true, false) => Some(true),
        (false, true) => Some(false),
        _ => None,
    }
}

/// 128-bit FNV-1a (two 64-bit lanes with different offsets) as 32 hex digits; stable across
/// platforms and releases, which `std`'s hasher does not promise.
pub fn stable_hash(parts: &[&str]) -> String {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x8422_2325_cbf2_9ce4;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            a = (a ^ 0xff).wrapping_mul(PRIME);
            b = (b ^ 0xfe).wrapping_mul(PRIME);
        }
        for &byte in part.as_bytes() {
            a = (a ^ byte as u64).wrapping_mul(PRIME);
            b = (b ^ (byte as u64).rotate_left(3)).wrapping_mul(PRIME);
        }
    }
    format!("{a:016x}{b:016x}")
}

/// Cut a partial last line off a JSONL file (when `complete` rejects it) or add the missing
/// newline (when it accepts it). Returns the number of bytes cut.
pub fn repair_jsonl_tail(path: &Path, complete: impl Fn(&str) -> bool) -> Result<Option<u64>> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(None);
    }
    let start = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|p| p + 1)
        .unwrap_or(0);
    let tail = &bytes[start..];
    if std::str::from_utf8(tail).is_ok_and(&complete) {
        file.seek(SeekFrom::End(0))?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        Ok(Some(0))
    } else {
        file.set_len(start as u64)
            .with_context(|| format!("cannot truncate {}", path.display()))?;
        file.sync_all()?;
        Ok(Some(tail.len() as u64))
    }
}

/// Parse CSV text (RFC 4180 quoting, `,` separator) into rows of fields.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    // the csv crate reads an unterminated quote to the end of the text; in valid CSV quotes pair up
    if text.matches('"').count() % 2 == 1 {
        let line = text[..text.rfind('"').unwrap_or(0)].lines().count().max(1);
        return Err(format!("unterminated quoted field (from line {line})"));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| format!("CSV record {}: {e}", i + 1))?;
        // a blank line is not a record
        if rec.len() == 1 && rec[0].is_empty() {
            continue;
        }
        rows.push(rec.iter().map(str::to_string).collect());
    }
    Ok(rows)
}

/// Quote a CSV field when needed.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
