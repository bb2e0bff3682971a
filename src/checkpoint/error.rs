//! The one error type of the checkpoint loader.
//!
//! Every variant renders as a single line that names the file or field at fault and, where
//! there is one, what to do about it. Callers normally propagate it with `?` into `anyhow`.

use std::path::PathBuf;

/// Anything that can go wrong while finding or reading a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The model directory itself is missing.
    #[error("model directory `{0}` does not exist")]
    NoDir(PathBuf),

    /// A file the checkpoint needs is absent.
    #[error("`{path}` not found: {why}")]
    MissingFile { path: PathBuf, why: String },

    /// Reading a file failed at the OS level.
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A JSON file does not parse.
    #[error("`{path}` is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// config.json parses but describes something rhlens cannot run, or lacks a field.
    #[error("`{path}`: {msg}")]
    Config { path: PathBuf, msg: String },

    /// A safetensors file is unreadable (usually truncated by an interrupted download).
    #[error("`{path}` is not a valid safetensors file ({reason}); it may be truncated or corrupt, download it again")]
    Safetensors { path: PathBuf, reason: String },

    /// The shard index is inconsistent with the shard files.
    #[error("`{path}`: {msg}")]
    Index { path: PathBuf, msg: String },

    /// A weight the model needs is not in the checkpoint.
    #[error("checkpoint has no weight `{0}`")]
    MissingWeight(String),

    /// A weight exists but its shape disagrees with config.json.
    #[error("weight `{name}` has shape {actual:?} but the config implies {expected:?}")]
    ShapeMismatch {
        name: String,
        actual: Vec<i64>,
        expected: Vec<i64>,
    },

    /// A weight is stored in an element type libtorch (via tch) cannot hold.
    #[error("weight `{name}` is stored as {dtype}, which rhlens cannot load")]
    UnsupportedDtype { name: String, dtype: String },

    /// libtorch refused an operation while materialising a weight.
    #[error("libtorch failed while loading weight `{name}`: {msg}")]
    Torch { name: String, msg: String },

    /// tokenizer.json could not be loaded or used.
    #[error("tokenizer `{path}`: {msg}")]
    Tokenizer { path: PathBuf, msg: String },

    /// The chat template is missing, does not compile, or fails to render.
    #[error("chat template ({origin}): {msg}")]
    Template { origin: String, msg: String },

    /// A Hugging Face Hub id could not be resolved to a local directory.
    #[error("{0}")]
    Hub(String),
}

/// Result alias used throughout the checkpoint module.
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// Collapse a multi-line message from a third-party error into one line.
pub(crate) fn one_line(msg: impl std::fmt::Display) -> String {
    let s = msg.to_string();
    let mut out = String::with_capacity(s.len());
    for (i, part) in s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(part);
    }
    out
}

/// Read a file as UTF-8 text, mapping "not found" and other I/O failures to our errors.
pub(crate) fn read_text(path: &std::path::Path, why_needed: &str) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CheckpointError::MissingFile {
            path: path.to_path_buf(),
            why: why_needed.to_string(),
        }),
        Err(e) => Err(CheckpointError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Read and parse a JSON file.
pub(crate) fn read_json(path: &std::path::Path, why_needed: &str) -> Result<serde_json::Value> {
    let text = read_text(path, why_needed)?;
    serde_json::from_str(&text).map_err(|source| CheckpointError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Fail with [`CheckpointError::NoDir`] unless `dir` is an existing directory.
pub(crate) fn ensure_dir(dir: &std::path::Path) -> Result<()> {
    if dir.is_dir() {
        Ok(())
    } else if dir.exists() {
        Err(CheckpointError::Config {
            path: dir.to_path_buf(),
            msg: "is a file, but a checkpoint directory was expected".into(),
        })
    } else {
        Err(CheckpointError::NoDir(dir.to_path_buf()))
    }
}
