//! Compact encodings for data embedded in the page: base64, and maps quantised to one byte per
//! value with a float32 scale per row (the page only draws them, 256 levels are plenty).

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Little-endian float32 bytes, base64.
pub fn f32_base64(values: impl IntoIterator<Item = f32>) -> String {
    let bytes: Vec<u8> = values.into_iter().flat_map(f32::to_le_bytes).collect();
    base64(&bytes)
}

/// Rows of `row_len` values (non-negative) as bytes `round(255 · v / max(row))` and the rows'
/// maxima: the page decodes `v = byte · scale / 255`.
pub fn quantise_rows(values: &[f32], row_len: usize) -> (Vec<u8>, Vec<f32>) {
    let mut bytes = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(values.len() / row_len.max(1));
    for row in values.chunks(row_len.max(1)) {
        let max = row.iter().fold(0f32, |m, &v| if v > m { v } else { m });
        scales.push(max);
        let k = if max > 0.0 { 255.0 / max } else { 0.0 };
        bytes.extend(
            row.iter()
                .map(|&v| (v.max(0.0) * k).round().min(255.0) as u8),
        );
    }
    (bytes, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        // RFC 4648, section 10
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }

    #[test]
    fn rows_quantise_against_their_own_maximum() {
        let (bytes, scales) = quantise_rows(&[0.0, 0.5, 1.0, 0.25, 0.0, 0.0], 3);
        assert_eq!(bytes, vec![0, 128, 255, 255, 0, 0]);
        assert_eq!(scales, vec![1.0, 0.25]);
    }
}
