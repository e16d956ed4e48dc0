//! Compiles every kernel source with NVRTC for sm_90, no GPU needed, and checks what the host
//! assumes about the compiled kernels: the parameter structs' layout and the recorded register
//! counts that size launches in plans for an H200.
//!
//! Skipped (with a printed reason) when libnvrtc cannot be loaded, unless `BRAID_REQUIRE_NVRTC=1`
//! (CI sets it), in which case a missing NVRTC fails the test. Needs `LD_LIBRARY_PATH` to hold
//! libnvrtc.so.13 (e.g. the `nvidia-cuda-nvrtc` wheel's `nvidia/cu13/lib`).

use braid_backend_cuda::compile::{kernel_source, nvrtc_available, Compiler, KERNEL_SOURCES};
use braid_backend_cuda::facts::{KernelRef, SM90_KERNELS};
use braid_backend_cuda::lower::attention;
use braid_backend_cuda::params::c_layout_assertions;
use braid_ir::DType;

/// The compiler, or `None` (test skipped) when NVRTC is missing and not required.
fn compiler(cache: bool) -> Option<Compiler> {
    if let Err(why) = nvrtc_available() {
        if std::env::var("BRAID_REQUIRE_NVRTC").is_ok_and(|v| v == "1") {
            panic!("BRAID_REQUIRE_NVRTC=1 but {why}");
        }
        eprintln!("skipped: {why}");
        return None;
    }
    Some(Compiler::new("sm_90", cache).expect("NVRTC loads"))
}

/// Sources compiled one variant at a time, with defines.
const VARIANT_SOURCES: [&str; 2] = ["attention.cu", "attention_prefill.cu"];

/// Every attention instantiation (decode with the default unroll, and prefill).
fn attention_variants() -> Vec<KernelRef> {
    let mut out = Vec::new();
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        for d in attention::INSTANCES.0 {
            for gm in attention::INSTANCES.1 {
                out.push(attention::kernel(dtype, d, gm, 4).expect("float dtype"));
                out.push(attention::prefill_kernel(dtype, d, gm).expect("float dtype"));
                out.extend(attention::prefill_kernel_mma(dtype, d, gm));
            }
        }
    }
    out
}

#[test]
fn every_kernel_compiles_for_sm_90() {
    let Some(compiler) = compiler(false) else {
        return;
    };
    let mut failures = Vec::new();
    for src in KERNEL_SOURCES
        .iter()
        .filter(|s| !VARIANT_SOURCES.contains(&s.file))
    {
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
    // attention.cu and attention_prefill.cu compile one variant at a time, with the defines the
    // lowering passes; the variants are independent NVRTC programs, compiled on every core.
    let variants = attention_variants();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = variants.len().div_ceil(threads);
    let compiler = &compiler;
    let att_failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = variants
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .filter_map(|k| {
                            let src = kernel_source(k.file).expect("embedded");
                            compiler
                                .cubin(src, &k.define_pairs())
                                .err()
                                .map(|e| format!("{}: {e}", k.name))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("compile thread"))
            .collect()
    });
    failures.extend(att_failures);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn param_structs_match_the_rust_layout() {
    let Some(compiler) = compiler(false) else {
        return;
    };
    let text = c_layout_assertions();
    assert!(text.matches("static_assert").count() > 100, "{text}");
    if let Err(e) = compiler.check_text("params_layout.cu", &text) {
        panic!("kernels/params.cuh and crates/backend-cuda/src/params.rs disagree:\n{e}");
    }
}

/// `(kernel, registers, static shared memory, spill store bytes)` from a ptxas `-v` log.
fn ptxas_resources(log: &str) -> Vec<(String, u32, u32, u32)> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    let mut spills = 0;
    for line in log.lines() {
        if let Some(at) = line.find("Compiling entry function '") {
            let rest = &line[at + "Compiling entry function '".len()..];
            current = rest.split('\'').next().map(str::to_string);
            spills = 0;
        } else if let Some(at) = line.find("bytes spill stores") {
            let words: Vec<&str> = line[..at]
                .split([' ', ','])
                .filter(|w| !w.is_empty())
                .collect();
            spills = words.last().and_then(|w| w.parse().ok()).unwrap_or(0);
        } else if let (Some(name), Some(at)) = (&current, line.find("Used ")) {
            let words: Vec<&str> = line[at..]
                .split([' ', ','])
                .filter(|w| !w.is_empty())
                .collect();
            let regs = words.get(1).and_then(|w| w.parse().ok()).unwrap_or(0);
            let smem = words
                .windows(3)
                .find(|w| w[1] == "bytes" && w[2] == "smem")
                .and_then(|w| w[0].parse().ok())
                .unwrap_or(0);
            out.push((name.clone(), regs, smem, spills));
            current = None;
        }
    }
    out
}

#[test]
fn recorded_sm90_registers_match_the_kernels() {
    let Some(compiler) = compiler(false) else {
        return;
    };
    let gemv = kernel_source("gemv.cu").expect("embedded");
    let (_, log) = compiler
        .compile_with_log(gemv, &["--ptxas-options=-v"])
        .expect("gemv.cu compiles");
    let found = ptxas_resources(&log);
    assert!(found.len() >= SM90_KERNELS.len(), "{log}");
    let mut wrong = Vec::new();
    for k in SM90_KERNELS {
        match found.iter().find(|(n, _, _, _)| n == k.name) {
            Some((_, _, _, spills)) if *spills > 0 => wrong.push(format!(
                "{}: ptxas spills {spills} bytes (a GEMV in the hot loop must not spill; check its \
                 __launch_bounds__)",
                k.name
            )),
            Some((_, regs, smem, _)) if (*regs, *smem) == (k.registers, k.static_smem) => {}
            Some((_, regs, smem, _)) => wrong.push(format!(
                "{}: recorded {} registers / {} B smem, ptxas says {regs} / {smem}",
                k.name, k.registers, k.static_smem
            )),
            None => wrong.push(format!("{}: not in the ptxas report", k.name)),
        }
    }
    assert!(
        wrong.is_empty(),
        "facts::SM90_KERNELS is stale (update it from this report):\n{}",
        wrong.join("\n")
    );
}

/// Prints ptxas's register / spill report for every kernel.
#[test]
#[ignore = "a report, not a check: run with --ignored --nocapture to print ptxas's registers/spills"]
fn ptxas_report() {
    let compiler = Compiler::new("sm_90", false).expect("NVRTC loads");
    for src in KERNEL_SOURCES
        .iter()
        .filter(|s| !VARIANT_SOURCES.contains(&s.file))
    {
        let (_, log) = compiler
            .compile_with_log(src, &["--ptxas-options=-v"])
            .expect("compiles");
        eprintln!("== {}\n{log}", src.file);
    }
    let pa = kernel_source("attention_prefill.cu").expect("embedded");
    for dtype in [DType::BF16, DType::F32] {
        for d in [16, 64, 128, 256] {
            let simt = attention::prefill_kernel(dtype, d, 2).expect("float dtype");
            for k in std::iter::once(simt).chain(attention::prefill_kernel_mma(dtype, d, 2)) {
                let mut opts: Vec<String> = k
                    .defines
                    .iter()
                    .map(|(a, b)| format!("-D{a}={b}"))
                    .collect();
                opts.push("--ptxas-options=-v".into());
                let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
                let (_, log) = compiler.compile_with_log(pa, &opts).expect("compiles");
                eprintln!("== {}\n{log}", k.name);
            }
        }
    }
}

/// Fills the on-disk kernel cache (`BRAID_CACHE_DIR`) with every kernel source and every attention
/// variant for sm_90, as the backend compiles them; a machine given that cache skips NVRTC at
/// start-up.
#[test]
#[ignore = "a tool, not a check: run with --ignored and BRAID_CACHE_DIR set to fill that cache"]
fn warm_the_kernel_cache() {
    let compiler = Compiler::new("sm_90", true).expect("NVRTC loads");
    for src in KERNEL_SOURCES
        .iter()
        .filter(|s| !VARIANT_SOURCES.contains(&s.file))
    {
        compiler.cubin(src, &[]).expect("compiles");
    }
    for k in attention_variants() {
        let src = kernel_source(k.file).expect("embedded");
        compiler.cubin(src, &k.define_pairs()).expect("compiles");
    }
}
