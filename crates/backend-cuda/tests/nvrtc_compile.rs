//! Compiles every kernel source with NVRTC for sm_90, no GPU needed.
//!
//! Skipped (with a printed reason) when libnvrtc cannot be loaded, unless `BRAID_REQUIRE_NVRTC=1`
//! (CI sets it), in which case a missing NVRTC fails the test. Needs `LD_LIBRARY_PATH` to hold
//! libnvrtc.so.13 (e.g. the `nvidia-cuda-nvrtc` wheel's `nvidia/cu13/lib`).

use braid_backend_cuda::compile::{nvrtc_available, Compiler, KERNEL_SOURCES};

#[test]
fn every_kernel_compiles_for_sm_90() {
    if let Err(why) = nvrtc_available() {
        if std::env::var("BRAID_REQUIRE_NVRTC").is_ok_and(|v| v == "1") {
            panic!("BRAID_REQUIRE_NVRTC=1 but {why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let compiler = Compiler::new("sm_90", false).expect("NVRTC loads");
    let mut failures = Vec::new();
    for src in KERNEL_SOURCES {
        let started = std::time::Instant::now();
        match compiler.cubin(src, &[]) {
            Ok(cubin) => {
                assert!(
                    cubin.len() > 1000,
                    "{}: cubin of {} bytes",
                    src.file,
                    cubin.len()
                );
                eprintln!(
                    "{}: {} bytes of sm_90 CUBIN in {:?}",
                    src.file,
                    cubin.len(),
                    started.elapsed()
                );
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Prints ptxas's register / spill report for every kernel.
#[test]
#[ignore = "a report, not a check: run with --ignored --nocapture to print ptxas's registers/spills"]
fn ptxas_report() {
    let compiler = Compiler::new("sm_90", false).expect("NVRTC loads");
    for src in KERNEL_SOURCES {
        let (_, log) = compiler
            .compile_with_log(src, &["--ptxas-options=-v"])
            .expect("compiles");
        eprintln!("== {}\n{log}", src.file);
    }
}

/// Fills the on-disk kernel cache (`BRAID_CACHE_DIR`) with every kernel source and every attention
/// variant for sm_90, as the backend compiles them; a machine given that
/// cache skips NVRTC at start-up.
#[test]
#[ignore = "a tool, not a check: run with --ignored and BRAID_CACHE_DIR set to fill that cache"]
fn warm_the_kernel_cache() {
    use braid_backend_cuda::compile::kernel_source;
    use braid_backend_cuda::lower::{attention_variant, ATTENTION_INSTANCES};
    let compiler = Compiler::new("sm_90", true).expect("NVRTC loads");
    for src in KERNEL_SOURCES.iter().filter(|s| s.file != "attention.cu") {
        compiler.cubin(src, &[]).expect("compiles");
    }
    let att = kernel_source("attention.cu").expect("embedded");
    for dtype in [
        braid_ir::DType::BF16,
        braid_ir::DType::F16,
        braid_ir::DType::F32,
    ] {
        for d in ATTENTION_INSTANCES.0 {
            for gm in ATTENTION_INSTANCES.1 {
                let (_, defines) = attention_variant(dtype, d, gm).expect("float dtype");
                let defines: Vec<(&str, &str)> =
                    defines.iter().map(|(k, v)| (*k, v.as_str())).collect();
                compiler.cubin(att, &defines).expect("compiles");
            }
        }
    }
}
