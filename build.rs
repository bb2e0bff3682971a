//! Link libtorch so that the binary finds it without LD_LIBRARY_PATH and sees CUDA when present.
//!
//! torch-sys reports the libtorch `lib/` directory through `DEP_TCH_LIBTORCH_LIB` (it declares
//! `links = "tch"`). We add a RUNPATH there (RUNPATH, not RPATH, so LD_LIBRARY_PATH can point a
//! copied binary at another machine's torch) and link `libtorch_cuda` with `--no-as-needed`:
//! nothing references its symbols directly, so an as-needed link would drop it and libtorch would
//! then report no CUDA device.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").ok();
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    if let Some(lib) = lib.as_deref() {
        println!("cargo:rustc-link-arg=-Wl,--enable-new-dtags,-rpath,{lib}");
        if Path::new(lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-ltorch_cuda");
        }
    }
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}
