//! `tokenizer.json` through the `tokenizers` crate (the engine behind Hugging Face's fast
//! tokenizers), plus an incremental decoder for streaming generated text.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use super::error::{ensure_dir, one_line, CheckpointError, Result};

/// A checkpoint's text tokenizer.
pub struct TextTokenizer {
    inner: Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl TextTokenizer {
    /// Load `tokenizer.json` from a checkpoint directory.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<TextTokenizer> {
        let dir = dir.as_ref();
        ensure_dir(dir)?;
        Self::from_file(dir.join("tokenizer.json"))
    }

    /// Load a `tokenizer.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<TextTokenizer> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(CheckpointError::MissingFile {
                path: path.to_path_buf(),
                why: "rhlens needs the fast-tokenizer file tokenizer.json (slow-tokenizer files such \
                      as vocab.json + merges.txt alone are not enough)"
                    .into(),
            });
        }
        let inner = Tokenizer::from_file(path).map_err(|e| CheckpointError::Tokenizer {
            path: path.to_path_buf(),
            msg: format!("cannot load: {}", one_line(e)),
        })?;
        Ok(TextTokenizer {
            inner,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, msg: impl std::fmt::Display) -> CheckpointError {
        CheckpointError::Tokenizer {
            path: self.path.clone(),
            msg: one_line(msg),
        }
    }

    /// Token ids of `text`, without adding special tokens (like HF's
    /// `tokenizer(text, add_special_tokens=False)`). Added and special tokens written in the
    /// text, such as `<|im_start|>`, become their single ids.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| self.err(format!("cannot encode text: {e}")))?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    fn to_u32(&self, ids: &[i64]) -> Result<Vec<u32>> {
        ids.iter()
            .map(|&id| {
                u32::try_from(id).map_err(|_| self.err(format!("token id {id} is out of range")))
            })
            .collect()
    }

    /// Text of `ids`; `skip_special` drops special tokens (HF's `skip_special_tokens`).
    /// Ids the tokenizer does not know (e.g. embedding rows past the vocabulary) decode to
    /// nothing, as in Hugging Face.
    pub fn decode(&self, ids: &[i64], skip_special: bool) -> Result<String> {
        let ids = self.to_u32(ids)?;
        self.decode_u32(&ids, skip_special)
    }

    fn decode_u32(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| self.err(format!("cannot decode: {e}")))
    }

    /// Id of a token string (vocabulary or added token).
    pub fn token_to_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    /// Token string of an id.
    pub fn id_to_token(&self, id: i64) -> Option<String> {
        u32::try_from(id)
            .ok()
            .and_then(|i| self.inner.id_to_token(i))
    }

    /// Vocabulary size including added tokens (HF's `len(tokenizer)`).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The tokenizer.json this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying `tokenizers` object, for anything not wrapped here.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// A streaming decoder over this tokenizer.
    pub fn decode_stream(&self, skip_special: bool) -> DecodeStream<'_> {
        DecodeStream {
            tokenizer: self,
            skip_special,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }
}

/// Turns ids arriving one at a time into text chunks that are safe to print.
///
/// Decoding each id on its own is wrong for byte-level vocabularies: a character such as "é" or
/// "好" can be split over several tokens whose individual decodings are invalid UTF-8 (shown as
/// U+FFFD), and some decoders change a token's text depending on its neighbours. The stream
/// decodes a short window of ids — the previous chunk as context plus the new ids — and emits
/// only the text beyond the context, and only once it no longer ends in an incomplete
/// character. Concatenating every chunk (plus [`DecodeStream::finish`]) gives the same text as
/// decoding all ids at once.
pub struct DecodeStream<'a> {
    tokenizer: &'a TextTokenizer,
    skip_special: bool,
    /// Ids from the start of the context window.
    ids: Vec<u32>,
    /// `ids[prefix_offset..read_offset]` is the context whose text was already emitted.
    prefix_offset: usize,
    read_offset: usize,
}

impl DecodeStream<'_> {
    /// Feed one id; returns the newly completed text, if any.
    pub fn step(&mut self, id: i64) -> Result<Option<String>> {
        let id = u32::try_from(id)
            .map_err(|_| self.tokenizer.err(format!("token id {id} is out of range")))?;
        self.ids.push(id);
        let prefix = self.tokenizer.decode_u32(
            &self.ids[self.prefix_offset..self.read_offset],
            self.skip_special,
        )?;
        let full = self
            .tokenizer
            .decode_u32(&self.ids[self.prefix_offset..], self.skip_special)?;
        if full.len() <= prefix.len() || full.ends_with('\u{FFFD}') {
            // Nothing new yet, or the last character is still incomplete.
            return Ok(None);
        }
        let new = match full.strip_prefix(prefix.as_str()) {
            Some(rest) => rest.to_string(),
            // The decoder rewrote the context (rare); emit what follows the common part.
            None => {
                let common = full
                    .char_indices()
                    .zip(prefix.chars())
                    .take_while(|((_, a), b)| a == b)
                    .last()
                    .map_or(0, |((i, c), _)| i + c.len_utf8());
                full[common..].to_string()
            }
        };
        // The ids just emitted become the context of the next step.
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        self.ids.drain(..self.prefix_offset);
        self.read_offset -= self.prefix_offset;
        self.prefix_offset = 0;
        Ok(Some(new))
    }

    /// Flush text still held back at the end of generation (an incomplete character decodes
    /// as U+FFFD, as in a full decode).
    pub fn finish(self) -> Result<Option<String>> {
        if self.read_offset == self.ids.len() {
            return Ok(None);
        }
        let prefix = self.tokenizer.decode_u32(
            &self.ids[self.prefix_offset..self.read_offset],
            self.skip_special,
        )?;
        let full = self
            .tokenizer
            .decode_u32(&self.ids[self.prefix_offset..], self.skip_special)?;
        let rest = full.strip_prefix(prefix.as_str()).unwrap_or(&full);
        Ok((!rest.is_empty()).then(|| rest.to_string()))
    }
}
