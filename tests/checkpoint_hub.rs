//! `--model` resolution: Hub ids against a fake Hugging Face cache laid out like the real one
//! (refs → snapshots → symlinks into blobs), the cache-location rules, and downloading from a
//! local stand-in for the Hub (no network).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rhlens::checkpoint::{
    resolve_model, resolve_model_with, ChatTemplate, HubId, HubOptions, ModelConfig, TextTokenizer,
    Weights,
};

const COMMIT_A: &str = "0123456789abcdef0123456789abcdef01234567";
const COMMIT_B: &str = "fedcba9876543210fedcba9876543210fedcba98";
const COMMIT_C: &str = "cccccccccccccccccccccccccccccccccccccccc";

fn tiny_nested() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-nested")
}

fn checkpoint_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(tiny_nested())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Add a snapshot of tiny-nested (minus `skip`) to a cache, the way huggingface_hub stores it:
/// content in blobs/, snapshots/<commit>/<file> as relative symlinks, refs/<name> = commit.
fn add_snapshot(cache: &Path, repo: &str, commit: &str, refs: &[&str], skip: &[&str]) -> PathBuf {
    let folder = cache.join(format!("models--{}", repo.replace('/', "--")));
    let blobs = folder.join("blobs");
    let snapshot = folder.join("snapshots").join(commit);
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    for name in checkpoint_files() {
        if skip.contains(&name.as_str()) {
            continue;
        }
        let blob = format!("{commit}-{name}");
        std::fs::copy(tiny_nested().join(&name), blobs.join(&blob)).unwrap();
        std::os::unix::fs::symlink(Path::new("../../blobs").join(&blob), snapshot.join(&name))
            .unwrap();
    }
    std::fs::create_dir_all(folder.join("refs")).unwrap();
    for (i, r) in refs.iter().enumerate() {
        // One ref with a trailing newline: hand-edited refs happen.
        let text = if i == 1 {
            format!("{commit}\n")
        } else {
            commit.to_string()
        };
        std::fs::write(folder.join("refs").join(r), text).unwrap();
    }
    snapshot
}

fn offline(cache: &Path) -> HubOptions {
    HubOptions {
        cache_dir: Some(cache.to_path_buf()),
        offline: true,
        endpoint: "http://127.0.0.1:9".into(),
        token: None,
        progress: false,
    }
}

#[test]
fn parses_hub_ids() {
    let id = HubId::parse("Qwen/Qwen2.5-VL-7B-Instruct").unwrap();
    assert_eq!(id.repo, "Qwen/Qwen2.5-VL-7B-Instruct");
    assert_eq!(id.revision(), "main");
    let id = HubId::parse("owner/name@v1.0").unwrap();
    assert_eq!((id.repo.as_str(), id.revision()), ("owner/name", "v1.0"));
    assert_eq!(
        HubId::parse("o/n").unwrap().cache_folder(Path::new("/c")),
        PathBuf::from("/c/models--o--n")
    );
    for bad in [
        "name", "a/b/c", "/abs", "o/", "/n", "o/n@", "o/n@../x", "o n/x", "../x", "o/..",
    ] {
        assert_eq!(HubId::parse(bad), None, "{bad}");
    }
}

#[test]
fn cache_location_follows_huggingface_hub() {
    let opts = |vars: &[(&str, &str)]| {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubOptions::from_lookup(move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    };
    let all = [
        ("HF_HUB_CACHE", "/hub-cache"),
        ("HUGGINGFACE_HUB_CACHE", "/legacy-cache"),
        ("HF_HOME", "/hf-home"),
        ("XDG_CACHE_HOME", "/xdg"),
        ("HOME", "/home/u"),
    ];
    let expect = [
        "/hub-cache",
        "/legacy-cache",
        "/hf-home/hub",
        "/xdg/huggingface/hub",
        "/home/u/.cache/huggingface/hub",
    ];
    for i in 0..all.len() {
        assert_eq!(
            opts(&all[i..]).cache_dir,
            Some(PathBuf::from(expect[i])),
            "with {:?}",
            &all[i..]
        );
    }
    assert_eq!(opts(&[]).cache_dir, None);
    // Empty variables count as unset.
    assert_eq!(
        opts(&[("HF_HUB_CACHE", ""), ("HF_HOME", "/h")]).cache_dir,
        Some(PathBuf::from("/h/hub"))
    );

    for (v, off) in [
        ("1", true),
        ("TRUE", true),
        ("yes", true),
        ("On", true),
        ("0", false),
        ("no", false),
    ] {
        assert_eq!(opts(&[("HF_HUB_OFFLINE", v)]).offline, off, "{v}");
    }
    assert!(!opts(&[]).offline);
    assert_eq!(opts(&[]).endpoint, "https://huggingface.co");
    assert_eq!(
        opts(&[("HF_ENDPOINT", "http://mirror")]).endpoint,
        "http://mirror"
    );

    // Token: HF_TOKEN, else the login token file in HF_HOME.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("token"), "hf_file_token\n").unwrap();
    let home = tmp.path().to_str().unwrap();
    assert_eq!(
        opts(&[("HF_HOME", home)]).token.as_deref(),
        Some("hf_file_token")
    );
    assert_eq!(
        opts(&[("HF_HOME", home), ("HF_TOKEN", "hf_env")])
            .token
            .as_deref(),
        Some("hf_env")
    );
    assert_eq!(opts(&[("HOME", "/nonexistent")]).token, None);
}

#[test]
fn resolves_from_the_cache_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let snap_a = add_snapshot(&cache, "owner/name", COMMIT_A, &["main"], &[]);
    let snap_b = add_snapshot(&cache, "owner/name", COMMIT_B, &["v0", "v1"], &[]);
    let opts = offline(&cache);

    let dir = resolve_model_with("owner/name", &opts).unwrap();
    assert_eq!(dir, snap_a);
    // Everything loads through the symlinks.
    let cfg = ModelConfig::from_dir(&dir).unwrap();
    let w = Weights::open(&dir).unwrap();
    assert!(w.contains("model.embed_tokens.weight"));
    assert_eq!(
        w.shape("model.embed_tokens.weight"),
        Some(vec![
            cfg.text.vocab_size as i64,
            cfg.text.hidden_size as i64
        ])
    );
    TextTokenizer::from_dir(&dir).unwrap();
    ChatTemplate::from_dir(&dir).unwrap();

    // Branch/tag revisions via refs/ (one written with a trailing newline), and a commit hash
    // directly (no ref file for it).
    assert_eq!(resolve_model_with("owner/name@v0", &opts).unwrap(), snap_b);
    assert_eq!(resolve_model_with("owner/name@v1", &opts).unwrap(), snap_b);
    assert_eq!(
        resolve_model_with(&format!("owner/name@{COMMIT_A}"), &opts).unwrap(),
        snap_a
    );

    // An existing directory is used as is, even if it looks like an id.
    let local = tmp.path().join("owner").join("local");
    std::fs::create_dir_all(&local).unwrap();
    let spec = local.to_str().unwrap();
    assert_eq!(resolve_model_with(spec, &opts).unwrap(), local);
}

fn err(spec: &str, opts: &HubOptions) -> String {
    let e = resolve_model_with(spec, opts).expect_err(spec).to_string();
    assert!(!e.contains('\n'), "{e}");
    e
}

#[test]
fn offline_misses_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    add_snapshot(&cache, "owner/name", COMMIT_A, &["main"], &[]);
    add_snapshot(
        &cache,
        "owner/name",
        COMMIT_C,
        &["broken"],
        &["model-00002-of-00003.safetensors", "tokenizer.json"],
    );
    let opts = offline(&cache);

    let e = err("owner/other", &opts);
    assert!(
        e.contains("not in the local Hugging Face cache")
            && e.contains("HF_HUB_OFFLINE")
            && e.contains(&cache.join("models--owner--other").display().to_string()),
        "{e}"
    );
    let e = err("owner/name@v9", &opts);
    assert!(e.contains("revision v9"), "{e}");
    let e = err("owner/name@broken", &opts);
    assert!(
        e.contains("lacks tokenizer.json, model-00002-of-00003.safetensors"),
        "{e}"
    );

    let e = err("just-a-name", &opts);
    assert!(
        e.contains("neither an existing directory nor a Hugging Face model id"),
        "{e}"
    );
    let file = tmp.path().join("file.txt");
    std::fs::write(&file, "x").unwrap();
    let e = err(file.to_str().unwrap(), &opts);
    assert!(e.contains("is a file"), "{e}");
    let no_cache = HubOptions {
        cache_dir: None,
        ..offline(&cache)
    };
    let e = err("owner/name", &no_cache);
    assert!(e.contains("set HF_HUB_CACHE or HF_HOME"), "{e}");
}

/// The only test in this binary that touches the process environment.
#[test]
fn resolve_model_reads_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf-home");
    let snap = add_snapshot(&home.join("hub"), "env/model", COMMIT_A, &["main"], &[]);
    let other_cache = tmp.path().join("other-cache");
    let snap_other = add_snapshot(&other_cache, "env/model", COMMIT_B, &["main"], &[]);
    for k in ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN"] {
        std::env::remove_var(k);
    }
    std::env::set_var("HF_HUB_OFFLINE", "1");
    std::env::set_var("HF_HOME", &home);
    assert_eq!(resolve_model("env/model").unwrap(), snap);
    // HF_HUB_CACHE takes precedence over HF_HOME.
    std::env::set_var("HF_HUB_CACHE", &other_cache);
    assert_eq!(resolve_model("env/model").unwrap(), snap_other);
    let e = resolve_model("env/absent").unwrap_err().to_string();
    assert!(e.contains(&other_cache.display().to_string()), "{e}");
}

// ---------------------------------------------------------------------------------------------
// A local stand-in for the Hub's HTTP API (the endpoints hf-hub uses).

struct FakeHub {
    endpoint: String,
    requests: Arc<AtomicUsize>,
}

fn etag(data: &[u8]) -> String {
    // FNV-1a: a stable, content-derived blob name.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

fn handle(mut stream: TcpStream, repo: &str, sha: &str, files: &[(String, Vec<u8>)]) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    let range = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("range: bytes=")
            .map(str::to_string)
    });

    if path.starts_with(&format!("/api/models/{repo}/revision/")) {
        let siblings: Vec<_> = files
            .iter()
            .map(|(n, _)| serde_json::json!({ "rfilename": n }))
            .collect();
        let body = serde_json::json!({ "sha": sha, "siblings": siblings }).to_string();
        let headers = [("Content-Type".to_string(), "application/json".to_string())];
        return respond(&mut stream, "200 OK", &headers, body.as_bytes());
    }
    let prefix = format!("/{repo}/resolve/");
    let file = path
        .strip_prefix(&prefix)
        .and_then(|rest| rest.split_once('/'))
        .map(|(_rev, f)| f.to_string());
    let Some((_, data)) = file.and_then(|f| files.iter().find(|(n, _)| *n == f)) else {
        return respond(&mut stream, "404 Not Found", &[], b"Entry not found");
    };
    let (start, end) = match range.as_deref().and_then(|r| r.split_once('-')) {
        Some((s, e)) => {
            let s: usize = s.trim().parse().unwrap_or(0);
            let e: usize = e.trim().parse().unwrap_or(data.len().saturating_sub(1));
            (s.min(data.len()), (e + 1).min(data.len()))
        }
        None => (0, data.len()),
    };
    let headers = [
        ("ETag".to_string(), format!("\"{}\"", etag(data))),
        ("X-Repo-Commit".to_string(), sha.to_string()),
        (
            "Content-Range".to_string(),
            format!("bytes {start}-{}/{}", end.saturating_sub(1), data.len()),
        ),
    ];
    respond(
        &mut stream,
        "206 Partial Content",
        &headers,
        &data[start..end],
    );
}

fn serve(repo: &'static str, sha: &'static str, files: Vec<(String, Vec<u8>)>) -> FakeHub {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            handle(stream, repo, sha, &files);
        }
    });
    FakeHub { endpoint, requests }
}

fn proxied() -> bool {
    ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

#[test]
fn downloads_into_the_cache() {
    if proxied() {
        eprintln!("an HTTP proxy is configured: the local fake Hub is not reachable directly");
        return;
    }
    let mut files: Vec<(String, Vec<u8>)> = checkpoint_files()
        .into_iter()
        .map(|n| {
            let data = std::fs::read(tiny_nested().join(&n)).unwrap();
            (n, data)
        })
        .collect();
    // A file the loader does not need is not fetched.
    files.push(("README.md".into(), b"# readme".to_vec()));
    let hub = serve("org/tiny", COMMIT_A, files);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let opts = HubOptions {
        offline: false,
        endpoint: hub.endpoint.clone(),
        ..offline(&cache)
    };
    let dir = resolve_model_with("org/tiny", &opts).unwrap();
    let folder = cache.join("models--org--tiny");
    assert_eq!(dir, folder.join("snapshots").join(COMMIT_A));
    assert_eq!(
        std::fs::read_to_string(folder.join("refs/main")).unwrap(),
        COMMIT_A
    );
    assert!(!folder.join("refs").join(COMMIT_A).exists());
    for name in checkpoint_files() {
        assert_eq!(
            std::fs::read(dir.join(&name)).unwrap(),
            std::fs::read(tiny_nested().join(&name)).unwrap(),
            "{name}"
        );
    }
    assert!(!dir.join("README.md").exists());
    let w = Weights::open(&dir).unwrap();
    assert_eq!(w.names(), Weights::open(tiny_nested()).unwrap().names());

    // Now complete in the cache: resolving again makes no request, even when online.
    let before = hub.requests.load(Ordering::SeqCst);
    assert!(before > 0);
    assert_eq!(resolve_model_with("org/tiny", &opts).unwrap(), dir);
    assert_eq!(hub.requests.load(Ordering::SeqCst), before);

    // Unknown repository: the Hub's 404, in one line with a hint.
    let e = err("org/missing", &opts);
    assert!(
        e.contains("cannot fetch the file list for `org/missing`")
            && e.contains("check the model id"),
        "{e}"
    );
}

#[test]
fn download_refuses_repos_without_a_checkpoint() {
    if proxied() {
        return;
    }
    let hub = serve(
        "org/notes",
        COMMIT_B,
        vec![
            ("config.json".into(), b"{}".to_vec()),
            ("README.md".into(), b"x".to_vec()),
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let opts = HubOptions {
        offline: false,
        endpoint: hub.endpoint.clone(),
        ..offline(tmp.path())
    };
    let e = err("org/notes", &opts);
    assert!(
        e.contains("has no tokenizer.json on the Hugging Face Hub"),
        "{e}"
    );

    // Nothing listening: a connection error, in one line.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let opts = HubOptions { endpoint, ..opts };
    let e = err("org/notes", &opts);
    assert!(
        e.contains("cannot fetch the file list for `org/notes`"),
        "{e}"
    );
}
