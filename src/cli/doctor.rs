//! `rhlens doctor`: what libtorch this binary runs on and which devices it sees.
use anyhow::Result;

pub fn run() -> Result<()> {
    println!("rhlens {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch: {}", crate::libtorch_version());
    let cuda = tch::Cuda::is_available();
    println!("cuda available: {cuda}");
    if cuda {
        let n = tch::Cuda::device_count();
        println!("cuda devices: {n}");
        for i in 0..n {
            println!(
                "  cuda:{i}: {}",
                crate::cuda_device_name(i).unwrap_or_else(|| "?".into())
            );
        }
    }
    println!("cpu threads: {}", tch::get_num_threads());
    println!(
        "demo checkpoint: {}",
        crate::runtime::demo_model_dir().display()
    );
    Ok(())
}
