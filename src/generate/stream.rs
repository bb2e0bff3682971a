//! Streaming generated text as tokens arrive.
use anyhow::Result;

use crate::checkpoint::TextTokenizer;

/// Stream text to a callback as tokens arrive, holding back incomplete UTF-8 sequences.
pub(crate) struct TextStream {
    pending_from: usize,
    emitted_len: usize,
}

impl TextStream {
    pub(crate) fn new() -> Self {
        Self {
            pending_from: 0,
            emitted_len: 0,
        }
    }

    /// The text that `ids` (all generated ids so far) add to what was already emitted.
    pub(crate) fn push(&mut self, tok: &TextTokenizer, ids: &[i64]) -> Result<String> {
        let text = tok.decode(&ids[self.pending_from..], true)?;
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted_len {
            return Ok(String::new());
        }
        let new = text[self.emitted_len..].to_string();
        if text.ends_with(char::is_whitespace) {
            self.pending_from = ids.len();
            self.emitted_len = 0;
        } else {
            self.emitted_len = text.len();
        }
        Ok(new)
    }
}
