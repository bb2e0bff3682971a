//! Memory-mapped safetensors weights, single file or sharded, under canonical Hub names.
//!
//! Only the files' headers are parsed at [`Weights::open`]; a tensor's bytes are read when
//! [`Weights::tensor`] asks for it, straight from the file into the tensor that is returned (or
//! through a small staging buffer when it must be converted or moved to a device). Loading
//! therefore holds each weight once in host memory: nothing stays mapped and no file page is
//! counted twice. Every returned tensor owns its memory, so the tensors outlive the [`Weights`].
//!
//! Names are normalised to the layout of the original Hub checkpoints (`visual.*`, `model.*`,
//! `lm_head.*`), whatever layout the files use; see [`canonical_name`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensorError};
use safetensors::SafeTensors;
use tch::{Device, Kind, Tensor};

use super::error::{ensure_dir, read_json, CheckpointError, Result};

/// Single-file weights name.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Shard index name.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Map a stored weight name to the canonical Hub name.
///
/// | stored | canonical |
/// |---|---|
/// | `model.visual.X` | `visual.X` |
/// | `model.language_model.X` | `model.X` |
/// | `model.lm_head.X` | `lm_head.X` |
/// | `vision_tower.X` | `visual.X` |
/// | `language_model.model.X` | `model.X` |
/// | `language_model.lm_head.X` | `lm_head.X` |
///
/// Anything else is returned unchanged.
pub fn canonical_name(stored: &str) -> String {
    const RULES: &[(&str, &str)] = &[
        ("model.visual.", "visual."),
        ("model.language_model.", "model."),
        ("model.lm_head.", "lm_head."),
        ("vision_tower.", "visual."),
        ("language_model.model.", "model."),
        ("language_model.lm_head.", "lm_head."),
    ];
    for (from, to) in RULES {
        if let Some(rest) = stored.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    stored.to_string()
}

/// Bytes staged on the host at a time when a tensor is converted on the CPU or sent to a device:
/// host memory beyond the loaded weights stays at this, whatever the tensor's size.
const STAGING_BYTES: usize = 64 << 20;

struct Shard {
    path: PathBuf,
    /// Read with positioned reads; the file is mapped only while its header is parsed.
    file: File,
}

struct Entry {
    shard: usize,
    /// Name as written in the file (before normalisation), for messages.
    stored: String,
    dtype: Dtype,
    shape: Vec<i64>,
    /// Absolute byte range in the mapped file.
    start: usize,
    end: usize,
}

/// The weights of one checkpoint directory.
pub struct Weights {
    dir: PathBuf,
    shards: Vec<Shard>,
    entries: BTreeMap<String, Entry>,
    /// Host bytes that tensors being converted or sent to a device pass through, kept from one
    /// tensor to the next: a buffer freed and taken again per tensor leaves the C heap holding
    /// scattered free space (tens of MiB over a checkpoint).
    staging: std::sync::Mutex<Option<Tensor>>,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("dir", &self.dir)
            .field("files", &self.files())
            .field("tensors", &self.entries.len())
            .finish()
    }
}

/// The libtorch element type for a safetensors dtype, if tch can hold it.
pub fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F8_E5M2 => Kind::Float8e5m2,
        Dtype::F8_E4M3 => Kind::Float8e4m3fn,
        // U16/U32/U64 have no tch Kind.
        _ => return None,
    })
}

fn describe(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => "file shorter than the 8-byte header length".into(),
        SafeTensorError::InvalidHeaderLength => {
            "header length runs past the end of the file".into()
        }
        SafeTensorError::HeaderTooLarge => "header length is implausibly large".into(),
        SafeTensorError::InvalidHeader => "header is not UTF-8".into(),
        SafeTensorError::InvalidHeaderStart | SafeTensorError::InvalidHeaderDeserialization => {
            "header is not a valid safetensors JSON header".into()
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "file size does not match the sizes its header declares".into()
        }
        SafeTensorError::InvalidOffset(name) => format!("tensor `{name}` has invalid data offsets"),
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's byte size disagrees with its shape and dtype".into()
        }
        SafeTensorError::ValidationOverflow => "a tensor's declared size overflows".into(),
        other => super::error::one_line(format!("{other:?}")),
    }
}

impl Weights {
    /// Open `model.safetensors`, or the shards listed in `model.safetensors.index.json`
    /// (a single file wins when both exist, as in transformers).
    pub fn open(dir: impl AsRef<Path>) -> Result<Weights> {
        let dir = dir.as_ref();
        ensure_dir(dir)?;
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        let mut weights = Weights {
            dir: dir.to_path_buf(),
            shards: Vec::new(),
            entries: BTreeMap::new(),
            staging: std::sync::Mutex::new(None),
        };
        if single.is_file() {
            weights.add_file(&single)?;
        } else if index.is_file() {
            weights.open_index(&index)?;
        } else {
            let has_bin = dir.join("pytorch_model.bin").exists()
                || dir.join("pytorch_model.bin.index.json").exists();
            let why = if has_bin {
                format!(
                    "the directory has PyTorch .bin weights, which rhlens does not read; convert them \
                     to safetensors (neither {SINGLE_FILE} nor {INDEX_FILE} is present)"
                )
            } else {
                format!("a checkpoint needs {SINGLE_FILE} or {INDEX_FILE}")
            };
            return Err(CheckpointError::MissingFile { path: single, why });
        }
        Ok(weights)
    }

    fn open_index(&mut self, index: &Path) -> Result<()> {
        let json = read_json(index, "")?;
        let bad = |msg: String| CheckpointError::Index {
            path: index.to_path_buf(),
            msg,
        };
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("has no `weight_map` object".into()))?;
        // Shard file → names the index assigns to it.
        let mut by_file: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, file) in map {
            let file = file
                .as_str()
                .ok_or_else(|| bad(format!("`weight_map.{name}` must be a file name")))?;
            if file.contains('/') || file.contains('\\') || file == ".." {
                return Err(bad(format!("shard `{file}` is not a plain file name")));
            }
            by_file.entry(file).or_default().push(name);
        }
        if by_file.is_empty() {
            return Err(bad("`weight_map` is empty".into()));
        }
        for (file, names) in by_file {
            let path = self.dir.join(file);
            if !path.is_file() {
                return Err(CheckpointError::MissingFile {
                    path,
                    why: format!(
                        "{INDEX_FILE} lists it as a shard; the download is incomplete, fetch it again"
                    ),
                });
            }
            let shard = self.add_file(&path)?;
            for name in names {
                let found = self
                    .entries
                    .get(&canonical_name(name))
                    .is_some_and(|e| e.shard == shard && e.stored == name);
                if !found {
                    return Err(bad(format!(
                        "lists weight `{name}` in `{file}`, but that file does not contain it"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Map one safetensors file and register its tensors; returns the shard number.
    fn add_file(&mut self, path: &Path) -> Result<usize> {
        let io = |source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only and lives only while the header is parsed and checked
        // against the file's length (only the header's pages are touched); the tensors' bytes are
        // read later with positioned reads, which fail cleanly if the file has changed.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&mmap).map_err(|e| CheckpointError::Safetensors {
                path: path.to_path_buf(),
                reason: describe(&e),
            })?;
        let data_start = 8 + header_len;
        let shard = self.shards.len();
        for (stored, info) in metadata.tensors() {
            let canonical = canonical_name(&stored);
            if let Some(prev) = self.entries.get(&canonical) {
                let prev_file = self
                    .shards
                    .get(prev.shard)
                    .map_or(path, |s| s.path.as_path());
                return Err(CheckpointError::Index {
                    path: path.to_path_buf(),
                    msg: format!(
                        "weight `{canonical}` appears twice (as `{}` in `{}` and as `{stored}`)",
                        prev.stored,
                        prev_file.display()
                    ),
                });
            }
            let (s, e) = info.data_offsets;
            self.entries.insert(
                canonical,
                Entry {
                    shard,
                    stored,
                    dtype: info.dtype,
                    shape: info.shape.iter().map(|&d| d as i64).collect(),
                    start: data_start + s,
                    end: data_start + e,
                },
            );
        }
        drop(mmap);
        self.shards.push(Shard {
            path: path.to_path_buf(),
            file,
        });
        Ok(shard)
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The safetensors files in use.
    pub fn files(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the checkpoint holds no tensor at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Canonical names of all tensors, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries
            .get(name)
            .or_else(|| self.entries.get(&canonical_name(name)))
    }

    /// Whether a tensor exists (canonical or stored-layout name).
    pub fn contains(&self, name: &str) -> bool {
        self.entry(name).is_some()
    }

    /// Stored shape of a tensor.
    pub fn shape(&self, name: &str) -> Option<Vec<i64>> {
        self.entry(name).map(|e| e.shape.clone())
    }

    /// Stored element type, as the safetensors name (`"BF16"`, `"F32"`, ...).
    pub fn dtype_name(&self, name: &str) -> Option<String> {
        self.entry(name).map(|e| format!("{:?}", e.dtype))
    }

    /// Load a tensor as `kind` on `device`, checking its shape against `expected_shape`.
    ///
    /// The result owns its memory. When the stored type already is `kind` on the CPU, the bytes
    /// are read from the file straight into the result (no other copy). Otherwise they pass through
    /// a staging buffer of at most 64 MiB: converted chunk by chunk into the result on the CPU, or
    /// sent to the device in the stored (usually smaller) type and converted there. Host memory
    /// beyond the result is thus bounded by the staging buffer, whatever the tensor's size.
    pub fn tensor(
        &self,
        name: &str,
        expected_shape: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Tensor> {
        let entry = self
            .entry(name)
            .ok_or_else(|| CheckpointError::MissingWeight(canonical_name(name)))?;
        let canonical = canonical_name(name);
        if entry.shape != expected_shape {
            return Err(CheckpointError::ShapeMismatch {
                name: canonical,
                actual: entry.shape.clone(),
                expected: expected_shape.to_vec(),
            });
        }
        let stored_kind =
            kind_of(entry.dtype).ok_or_else(|| CheckpointError::UnsupportedDtype {
                name: canonical.clone(),
                dtype: format!("{:?}", entry.dtype),
            })?;
        let torch_err = torch_error(&canonical);
        if device == Device::Cpu && stored_kind == kind {
            let out =
                Tensor::f_empty(entry.shape.as_slice(), (kind, device)).map_err(&torch_err)?;
            self.read_into(entry, entry.start, &out)?;
            return Ok(out);
        }
        // On a device the bytes arrive in the stored type (the smaller transfer, as stored) and
        // are converted there; on the CPU each chunk is converted as it is copied into the result.
        let landing_kind = if device == Device::Cpu {
            kind
        } else {
            stored_kind
        };
        let landed =
            Tensor::f_empty(entry.shape.as_slice(), (landing_kind, device)).map_err(&torch_err)?;
        self.stage_into(entry, stored_kind, &landed, &canonical)?;
        if landing_kind == kind {
            Ok(landed)
        } else {
            landed.f_to_kind(kind).map_err(torch_err)
        }
    }

    /// Copy an entry's bytes into `target` (same shape, any kind, any device) through a host
    /// staging buffer of the stored type, one chunk of at most [`STAGING_BYTES`] at a time.
    fn stage_into(
        &self,
        entry: &Entry,
        stored_kind: Kind,
        target: &Tensor,
        name: &str,
    ) -> Result<()> {
        let elem = entry.dtype.size();
        let numel = (entry.end - entry.start) / elem;
        if numel == 0 {
            return Ok(());
        }
        let torch_err = torch_error(name);
        let chunk = (STAGING_BYTES / elem).clamp(1, numel);
        let mut slot = self.staging.lock().unwrap_or_else(|e| e.into_inner());
        let staging = staging_buffer(&mut slot, chunk * elem)
            .and_then(|b| {
                b.f_narrow(0, 0, (chunk * elem) as i64)?
                    .f_view_dtype(stored_kind)
            })
            .map_err(&torch_err)?;
        let flat = target.f_view([-1]).map_err(&torch_err)?;
        for first in (0..numel).step_by(chunk) {
            let n = chunk.min(numel - first);
            let part = staging.f_narrow(0, 0, n as i64).map_err(&torch_err)?;
            self.read_into(entry, entry.start + first * elem, &part)?;
            flat.f_narrow(0, first as i64, n as i64)
                .and_then(|mut dest| dest.f_copy_(&part))
                .map_err(&torch_err)?;
        }
        Ok(())
    }

    /// Fill the contiguous CPU tensor `dest` with the entry's file bytes starting at `offset`.
    fn read_into(&self, entry: &Entry, offset: usize, dest: &Tensor) -> Result<()> {
        let shard = &self.shards[entry.shard];
        let len = dest.numel() * entry.dtype.size();
        debug_assert!(dest.is_contiguous() && dest.device() == Device::Cpu);
        debug_assert!(offset + len <= entry.end);
        if len == 0 {
            return Ok(());
        }
        // SAFETY: `dest` is a contiguous CPU tensor allocated by the caller for this read, whose
        // storage holds exactly `len` bytes from `data_ptr`; nothing else reads or writes it
        // while the slice lives.
        let buf = unsafe { std::slice::from_raw_parts_mut(dest.data_ptr() as *mut u8, len) };
        read_exact_at(&shard.file, buf, offset as u64).map_err(|source| CheckpointError::Io {
            path: shard.path.clone(),
            source,
        })
    }
}

/// A CPU byte buffer of at least `need` bytes, kept in `slot` for the next tensor.
fn staging_buffer(
    slot: &mut Option<Tensor>,
    need: usize,
) -> std::result::Result<Tensor, tch::TchError> {
    if let Some(kept) = slot.as_ref().filter(|t| t.numel() >= need) {
        return Ok(kept.shallow_clone());
    }
    *slot = None; // free a smaller one before taking the new one
    let bytes = Tensor::f_empty([need as i64], (Kind::Uint8, Device::Cpu))?;
    *slot = Some(bytes.shallow_clone());
    Ok(bytes)
}

/// Turns a libtorch failure while loading `name` into a checkpoint error.
fn torch_error(name: &str) -> impl Fn(tch::TchError) -> CheckpointError + '_ {
    move |e| CheckpointError::Torch {
        name: name.to_string(),
        msg: super::error::one_line(e),
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(mut file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}
