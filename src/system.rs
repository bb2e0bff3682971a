//! Facts about the machine rhlens runs on: libtorch's version, CUDA device names, CPU cores.
use crate::error::InvalidSetting;

/// The version of the libtorch this process loaded, read from the `torch` package it belongs to
/// (`torch/version.py` next to `torch/lib/`), or the version rhlens was built against.
pub fn libtorch_version() -> String {
    let built = "2.11.0 (build)";
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return built.into();
    };
    let Some(lib) = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
    else {
        return built.into();
    };
    let lib = std::path::Path::new(lib);
    let version_py = lib
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("version.py"));
    if let Some(text) = version_py.and_then(|p| std::fs::read_to_string(p).ok()) {
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("__version__ = ") {
                return format!(
                    "{} ({})",
                    v.trim_matches(|c| c == '\'' || c == '"'),
                    lib.display()
                );
            }
        }
    }
    format!("{built}, loaded from {}", lib.display())
}

/// The name of CUDA device `ordinal`, through the driver API (libcuda), if a driver is present.
pub fn cuda_device_name(ordinal: i64) -> Option<String> {
    type CuInit = unsafe extern "C" fn(u32) -> i32;
    type CuDeviceGet = unsafe extern "C" fn(*mut i32, i32) -> i32;
    type CuDeviceGetName = unsafe extern "C" fn(*mut std::os::raw::c_char, i32, i32) -> i32;
    // SAFETY: libcuda's driver API functions with their documented C signatures; the name buffer
    // is sized and NUL-terminated by the driver.
    unsafe {
        let lib = libloading::Library::new("libcuda.so.1").ok()?;
        let init: libloading::Symbol<CuInit> = lib.get(b"cuInit").ok()?;
        let get: libloading::Symbol<CuDeviceGet> = lib.get(b"cuDeviceGet").ok()?;
        let name: libloading::Symbol<CuDeviceGetName> = lib.get(b"cuDeviceGetName").ok()?;
        if init(0) != 0 {
            return None;
        }
        let mut dev = 0i32;
        if get(&mut dev, ordinal as i32) != 0 {
            return None;
        }
        let mut buf = [0 as std::os::raw::c_char; 256];
        if name(buf.as_mut_ptr(), buf.len() as i32, dev) != 0 {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(buf.as_ptr())
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// Peak resident memory of this process in MiB (VmHWM), if the OS reports it.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The CPU threads libtorch may use when `requested`: at least 1, and at most the cores this
/// process may run on (more only makes the threads wait on each other: 10000 of them take minutes
/// to do what 2 do in a second). Asking for more gives the cores and a warning to show.
pub fn cpu_threads(requested: i32) -> anyhow::Result<(i32, Option<InvalidSetting>)> {
    if requested < 1 {
        return crate::error::invalid("threads", format!("must be at least 1 (got {requested})"));
    }
    let cores = std::thread::available_parallelism()
        .map(|n| i32::try_from(n.get()).unwrap_or(i32::MAX))
        .unwrap_or(1);
    if requested <= cores {
        return Ok((requested, None));
    }
    let warning = InvalidSetting::new(
        "threads",
        format!(
            "{requested} is more than the {cores} CPU cores this process may use; using {cores}"
        ),
    );
    Ok((cores, Some(warning)))
}
