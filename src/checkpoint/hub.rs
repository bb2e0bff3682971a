//! `--model` resolution: a local directory, or a Hugging Face Hub id found in (or downloaded
//! into) the local Hugging Face cache.
//!
//! The cache is the one Python's `huggingface_hub` uses, so checkpoints downloaded by either
//! are shared: `<cache>/models--<owner>--<name>/refs/<revision>` holds a commit hash and
//! `snapshots/<hash>/` the files. The cache directory is `$HF_HUB_CACHE`, else
//! `$HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
//! `~/.cache/huggingface/hub`. With `HF_HUB_OFFLINE` set (1/true/yes/on) nothing is downloaded.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};

use super::error::{one_line, CheckpointError, Result};
use super::weights::{INDEX_FILE, SINGLE_FILE};

/// Files fetched when present in the repository (besides the weights).
const OPTIONAL_FILES: &[&str] = &[
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.json",
    "chat_template.jinja",
];
/// Files without which a checkpoint is unusable.
const REQUIRED_FILES: &[&str] = &["config.json", "tokenizer.json"];

/// A parsed `owner/name[@revision]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    /// `owner/name`.
    pub repo: String,
    /// Branch, tag or commit; `None` means `main`.
    pub revision: Option<String>,
}

impl HubId {
    /// Parse `owner/name` or `owner/name@revision`; `None` if `spec` does not look like one.
    pub fn parse(spec: &str) -> Option<HubId> {
        let (repo, revision) = match spec.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, Some(rev.to_string())),
            Some(_) => return None,
            None => (spec, None),
        };
        let (owner, name) = repo.split_once('/')?;
        let ok = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !ok(owner) || !ok(name) {
            return None;
        }
        if let Some(rev) = &revision {
            if rev.contains("..") || rev.starts_with('/') || rev.chars().any(char::is_whitespace) {
                return None;
            }
        }
        Some(HubId {
            repo: repo.to_string(),
            revision,
        })
    }

    /// The revision to use (`main` when none was given).
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// Folder of this repository inside the cache.
    pub fn cache_folder(&self, cache_dir: &Path) -> PathBuf {
        cache_dir.join(format!("models--{}", self.repo.replace('/', "--")))
    }
}

/// Where and how to look for Hub checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// The hub cache directory (`.../huggingface/hub`); `None` if it cannot be determined.
    pub cache_dir: Option<PathBuf>,
    /// Never touch the network.
    pub offline: bool,
    /// Hub endpoint (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub endpoint: String,
    /// Access token for gated or private repositories (`HF_TOKEN` or the cached login token).
    pub token: Option<String>,
    /// Show download progress bars.
    pub progress: bool,
}

impl HubOptions {
    /// Options from the process environment.
    pub fn from_env() -> HubOptions {
        HubOptions::from_lookup(|k| std::env::var(k).ok())
    }

    /// Options from an environment lookup function (lets tests avoid the process environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> HubOptions {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let hf_home = get("HF_HOME").map(PathBuf::from).or_else(|| {
            get("XDG_CACHE_HOME")
                .map(|x| PathBuf::from(x).join("huggingface"))
                .or_else(|| {
                    get("HOME").map(|h| PathBuf::from(h).join(".cache").join("huggingface"))
                })
        });
        let cache_dir = get("HF_HUB_CACHE")
            .or_else(|| get("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .or_else(|| hf_home.as_ref().map(|h| h.join("hub")));
        let offline = get("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        let token = get("HF_TOKEN").or_else(|| {
            let file = hf_home.as_ref()?.join("token");
            let t = std::fs::read_to_string(file).ok()?;
            let t = t.trim();
            (!t.is_empty()).then(|| t.to_string())
        });
        HubOptions {
            cache_dir,
            offline,
            endpoint: get("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into()),
            token,
            progress: true,
        }
    }
}

/// Resolve a model spec: an existing directory as is, else a Hub id via the cache (downloading
/// when allowed), using the process environment.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    resolve_model_with(spec, &HubOptions::from_env())
}

/// [`resolve_model`] with explicit options.
pub fn resolve_model_with(spec: &str, opts: &HubOptions) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.exists() {
        return Err(CheckpointError::Hub(format!(
            "`{spec}` is a file, but a checkpoint directory or a Hub id (owner/name) was expected"
        )));
    }
    let Some(id) = HubId::parse(spec) else {
        return Err(CheckpointError::Hub(format!(
            "`{spec}` is neither an existing directory nor a Hugging Face model id \
             (owner/name or owner/name@revision)"
        )));
    };
    let Some(cache_dir) = opts.cache_dir.clone() else {
        return Err(CheckpointError::Hub(format!(
            "`{spec}` is not a local directory and the Hugging Face cache cannot be located; \
             set HF_HUB_CACHE or HF_HOME"
        )));
    };
    match find_in_cache(&id, &cache_dir) {
        CacheLookup::Complete(dir) => Ok(dir),
        lookup if opts.offline => {
            let detail = match lookup {
                CacheLookup::Incomplete { dir, missing } => format!(
                    "the cached snapshot `{}` lacks {}",
                    dir.display(),
                    missing.join(", ")
                ),
                _ => format!("looked in `{}`", id.cache_folder(&cache_dir).display()),
            };
            Err(CheckpointError::Hub(format!(
                "model `{spec}` (revision {}) is not in the local Hugging Face cache and \
                 HF_HUB_OFFLINE is set ({detail}); unset HF_HUB_OFFLINE to download it or pass a \
                 directory",
                id.revision()
            )))
        }
        _ => download(&id, &cache_dir, opts),
    }
}

/// Result of looking a repository up in the cache.
#[derive(Debug)]
enum CacheLookup {
    Absent,
    Incomplete { dir: PathBuf, missing: Vec<String> },
    Complete(PathBuf),
}

/// The snapshot directory for `id`, if the cache has one.
fn snapshot_dir(id: &HubId, cache_dir: &Path) -> Option<PathBuf> {
    let folder = id.cache_folder(cache_dir);
    let rev = id.revision();
    let snapshots = folder.join("snapshots");
    if let Ok(hash) = std::fs::read_to_string(folder.join("refs").join(rev)) {
        let hash = hash.trim();
        if !hash.is_empty() && !hash.contains(['/', '\\']) {
            let dir = snapshots.join(hash);
            if dir.is_dir() {
                return Some(dir);
            }
        }
    }
    // A commit hash as revision has no ref file: the snapshot is named after it.
    let is_commit = rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit());
    let dir = snapshots.join(rev);
    (is_commit && dir.is_dir()).then_some(dir)
}

fn find_in_cache(id: &HubId, cache_dir: &Path) -> CacheLookup {
    match snapshot_dir(id, cache_dir) {
        None => CacheLookup::Absent,
        Some(dir) => {
            let missing = missing_files(&dir);
            if missing.is_empty() {
                CacheLookup::Complete(dir)
            } else {
                CacheLookup::Incomplete { dir, missing }
            }
        }
    }
}

/// Files a usable checkpoint directory lacks (config, tokenizer, weights incl. every shard).
pub fn missing_files(dir: &Path) -> Vec<String> {
    let mut missing: Vec<String> = REQUIRED_FILES
        .iter()
        .filter(|f| !dir.join(f).is_file())
        .map(|f| f.to_string())
        .collect();
    if dir.join(SINGLE_FILE).is_file() {
        return missing;
    }
    let index = dir.join(INDEX_FILE);
    match shard_names(&index) {
        Some(shards) => missing.extend(shards.into_iter().filter(|s| !dir.join(s).is_file())),
        None => missing.push(format!("{SINGLE_FILE} (or {INDEX_FILE})")),
    }
    missing
}

/// Shard file names listed by an index file, if it exists and parses.
fn shard_names(index: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(index).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let mut shards: Vec<String> = json
        .get("weight_map")?
        .as_object()?
        .values()
        .filter_map(|v| v.as_str())
        .map(str::to_string)
        .collect();
    shards.sort();
    shards.dedup();
    Some(shards)
}

fn hub_error(id: &HubId, what: &str, e: impl std::fmt::Display) -> CheckpointError {
    let msg = one_line(e);
    let hint = if msg.contains("401") || msg.contains("403") {
        " (gated or private repository? set HF_TOKEN or log in with `huggingface-cli login`)"
    } else if msg.contains("404") {
        " (check the model id and revision)"
    } else {
        ""
    };
    CheckpointError::Hub(format!(
        "cannot {what} for `{}` (revision {}) from the Hugging Face Hub: {msg}{hint}",
        id.repo,
        id.revision()
    ))
}

/// Download the files of a checkpoint into the cache and return its snapshot directory.
fn download(id: &HubId, cache_dir: &Path, opts: &HubOptions) -> Result<PathBuf> {
    let api = connect(id, cache_dir, opts)?;
    let listing = list_remote_files(&api, id)?;
    // Download against the resolved commit so that every file lands in one snapshot even if
    // the branch moves meanwhile.
    let refs = id.cache_folder(cache_dir).join("refs");
    let sha_ref = refs.join(&listing.sha);
    let had_sha_ref = sha_ref.exists();
    let fetcher = SnapshotFetcher {
        id,
        repo: api.repo(Repo::with_revision(
            id.repo.clone(),
            RepoType::Model,
            listing.sha.clone(),
        )),
        snapshot: id
            .cache_folder(cache_dir)
            .join("snapshots")
            .join(&listing.sha),
    };
    for file in checkpoint_files(&listing) {
        fetcher.fetch(&file)?;
    }
    fetch_weights(&fetcher, &listing)?;

    point_revision_at_commit(id, &refs, &listing.sha)?;
    // Downloading by hash leaves a ref named after the commit itself; huggingface_hub has none.
    if !had_sha_ref {
        let _ = std::fs::remove_file(&sha_ref);
    }
    verify_snapshot(id, fetcher.snapshot)
}

/// A Hub client writing into the cache at `cache_dir`.
fn connect(id: &HubId, cache_dir: &Path, opts: &HubOptions) -> Result<Api> {
    let mut builder = ApiBuilder::from_cache(Cache::new(cache_dir.to_path_buf()))
        .with_endpoint(opts.endpoint.trim_end_matches('/').to_string())
        .with_progress(opts.progress);
    if opts.token.is_some() {
        builder = builder.with_token(opts.token.clone());
    }
    builder
        .build()
        .map_err(|e| hub_error(id, "set up a connection", e))
}

/// What the Hub holds for a revision: the commit it resolves to and the files at that commit.
struct RemoteListing {
    sha: String,
    files: HashSet<String>,
}

impl RemoteListing {
    fn has(&self, file: &str) -> bool {
        self.files.contains(file)
    }
}

/// Resolve `id`'s revision to a commit and list its files, refusing a repository that lacks
/// the files every checkpoint needs before anything is downloaded.
fn list_remote_files(api: &Api, id: &HubId) -> Result<RemoteListing> {
    let info = api
        .repo(Repo::with_revision(
            id.repo.clone(),
            RepoType::Model,
            id.revision().to_string(),
        ))
        .info()
        .map_err(|e| hub_error(id, "fetch the file list", e))?;
    let sha = info.sha.trim().to_string();
    // The hash becomes a directory name inside the cache.
    if sha.is_empty() || sha.contains(['/', '\\', '.']) {
        return Err(hub_error(
            id,
            "fetch the file list",
            "the Hub returned no commit hash",
        ));
    }
    let files = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let listing = RemoteListing { sha, files };
    if let Some(f) = REQUIRED_FILES.iter().find(|f| !listing.has(f)) {
        return Err(CheckpointError::Hub(format!(
            "`{}` has no {f} on the Hugging Face Hub; it is not a checkpoint rhlens can load",
            id.repo
        )));
    }
    Ok(listing)
}

/// The configuration and tokenizer files to fetch: the required ones and the optional ones the
/// repository has.
fn checkpoint_files(listing: &RemoteListing) -> Vec<String> {
    let optional = OPTIONAL_FILES.iter().filter(|f| listing.has(f));
    REQUIRED_FILES
        .iter()
        .chain(optional)
        .map(|s| s.to_string())
        .collect()
}

/// Downloads files of one commit into its snapshot directory.
struct SnapshotFetcher<'a> {
    id: &'a HubId,
    repo: ApiRepo,
    snapshot: PathBuf,
}

impl SnapshotFetcher<'_> {
    /// Fetch `file` unless an earlier (possibly interrupted) download already brought it.
    fn fetch(&self, file: &str) -> Result<()> {
        if self.snapshot.join(file).is_file() {
            return Ok(());
        }
        self.repo
            .download(file)
            .map(|_| ())
            .map_err(|e| hub_error(self.id, &format!("download {file}"), e))
    }
}

/// Fetch the safetensors weights: the single file, or the index and every shard it names.
fn fetch_weights(fetcher: &SnapshotFetcher<'_>, listing: &RemoteListing) -> Result<()> {
    let repo = &fetcher.id.repo;
    if listing.has(SINGLE_FILE) {
        return fetcher.fetch(SINGLE_FILE);
    }
    if !listing.has(INDEX_FILE) {
        return Err(CheckpointError::Hub(format!(
            "`{repo}` has no safetensors weights ({SINGLE_FILE} or {INDEX_FILE}) on the Hugging \
             Face Hub"
        )));
    }
    fetcher.fetch(INDEX_FILE)?;
    let shards = shard_names(&fetcher.snapshot.join(INDEX_FILE)).ok_or_else(|| {
        CheckpointError::Hub(format!(
            "the {INDEX_FILE} downloaded for `{repo}` has no readable weight_map"
        ))
    })?;
    for s in &shards {
        // A shard path with separators would be written outside the snapshot.
        if s.contains(['/', '\\']) {
            return Err(CheckpointError::Hub(format!(
                "{INDEX_FILE} of `{repo}` names shard `{s}` outside the repository root"
            )));
        }
        fetcher.fetch(s)?;
    }
    Ok(())
}

/// Point the requested revision's ref at `sha`, as huggingface_hub does, so later lookups of
/// the same revision find the snapshot without the network.
fn point_revision_at_commit(id: &HubId, refs: &Path, sha: &str) -> Result<()> {
    if id.revision() == sha {
        return Ok(());
    }
    let rev_ref = refs.join(id.revision());
    if let Some(parent) = rev_ref.parent() {
        std::fs::create_dir_all(parent).map_err(|e| CheckpointError::Io {
            path: parent.to_path_buf(),
            source: e,
        })?;
    }
    std::fs::write(&rev_ref, sha).map_err(|e| CheckpointError::Io {
        path: rev_ref.clone(),
        source: e,
    })
}

/// The snapshot, once it holds every file a checkpoint needs.
fn verify_snapshot(id: &HubId, snapshot: PathBuf) -> Result<PathBuf> {
    let missing = missing_files(&snapshot);
    if !missing.is_empty() {
        return Err(CheckpointError::Hub(format!(
            "download of `{}` finished but `{}` still lacks {}",
            id.repo,
            snapshot.display(),
            missing.join(", ")
        )));
    }
    Ok(snapshot)
}
