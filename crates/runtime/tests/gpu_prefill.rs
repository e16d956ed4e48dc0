//! Batched prefill on the GPU, with Qwen3-0.6B-shaped graphs from the real lowering and passes
//! (`models/qwen3-0.6b/config.json`, seeded random bf16 weights): the prefill step against the
//! interpreter on the same graph; a whole batched prefill (chunks of several sizes, executors
//! sharing the decode step's KV cache and weights) against token-by-token prefill, with the
//! greedy continuation after each; every position's logits from one all-logits prefill against
//! decode steps; the live plan of a prefill step against the recorded H200 plan; and the time to
//! first token of the full 28-layer model at 128 / 512 / 2,048 tokens.
//!
//! Run on a GPU machine: `cargo test --release -p braid-runtime --test gpu_prefill -- --ignored
//! --nocapture --test-threads=1`.

use std::time::Instant;

use braid_backend_cuda::lower::lower;
use braid_backend_cuda::{CudaDevice, CudaExecutor, ExecOptions, Target};
use braid_ir::interp::Interpreter;
use braid_ir::{DType, Graph, Tensor};
use braid_runtime::cuda::CudaBackend;
use braid_runtime::decoder::{lower_decode_step, LowerOptions, WeightTypes};
use braid_runtime::engine::{DecodeBackend, PrefillMode};
use braid_runtime::load::LoadedModel;
use braid_runtime::model::{Checkpoint, Qwen3Config};
use braid_runtime::pipeline::{cuda_backend, run_passes, BackendRequest, Device};
use braid_runtime::reference::rel_l2;

/// bf16 activations into every prefill GEMM (the decode GEMVs keep f32): logits of a 2-layer model
/// stay within this relative L2 of the f32 interpreter (transformers' own bf16 forward is ~1e-2
/// off its f32 one).
const TOL: f64 = 2e-2;

fn device() -> CudaDevice {
    CudaDevice::open(0).unwrap_or_else(|e| panic!("{e}"))
}

fn config(layers: usize) -> Qwen3Config {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/qwen3-0.6b/config.json"
    );
    let mut c = Qwen3Config::from_file(std::path::Path::new(path)).expect("Qwen3-0.6B config");
    c.num_hidden_layers = layers;
    c
}

/// The step of `c` over `tokens` tokens (bf16 cache), after the passes `spec`.
fn graph(
    c: &Qwen3Config,
    w: &Checkpoint,
    ctx: usize,
    tokens: usize,
    all: bool,
    spec: &str,
) -> Graph {
    let opts = LowerOptions::decode(ctx, DType::BF16).with_tokens(tokens, all);
    let mut g = lower_decode_step(c, WeightTypes::Checkpoint(w), opts).expect("lowering");
    run_passes(&mut g, spec, &[], &mut |_, _| {}).expect("passes");
    g
}

fn prompt(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 7919 + seed * 104_729) % 151_000)
        .collect()
}

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn the_prefill_step_matches_the_interpreter() {
    let c = config(2);
    let w = Checkpoint::random(&c, 21);
    let dev = device();
    for spec in ["default", "none"] {
        for t in [64, 13] {
            let g = graph(&c, &w, 256, t, true, spec);
            let mut ex = CudaExecutor::new(&dev, &g, &w, ExecOptions::default())
                .unwrap_or_else(|e| panic!("{spec} T={t}: {e}"));
            let mut interp = Interpreter::new(&w);
            // Two chunks: the second attends over the first's rows.
            for chunk in 0..2 {
                let ids = prompt(t, chunk as u32 + 1);
                let ins = [
                    (
                        "token",
                        Tensor::i32([t], ids.iter().map(|&x| x as i32).collect()),
                    ),
                    ("position", Tensor::i32([1], vec![(chunk * t) as i32])),
                ];
                let want = interp.run(&g, &ins).unwrap_or_else(|e| panic!("{e}"));
                let got = ex
                    .prefill_logits(&ids, chunk * t)
                    .unwrap_or_else(|e| panic!("{e}"));
                let err = rel_l2(&got, &want[0].data);
                println!("{spec} T={t} chunk {chunk}: logits [{t}, vocab] relative L2 {err:.3e}");
                assert!(err <= TOL, "{spec} T={t} chunk {chunk}: {err:.3e}");
            }
        }
    }
}

/// A decode backend of `model` with batched (chunks of at most `chunk`) or token-by-token
/// prefill.
fn backend<'m>(
    dev: &CudaDevice,
    model: &'m LoadedModel,
    ctx: usize,
    mode: PrefillMode,
) -> CudaBackend<'m> {
    let req = BackendRequest {
        prefill: mode,
        ..BackendRequest::new(Device::Cuda, "default", ctx)
    };
    cuda_backend(dev, model, &req).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn batched_prefill_continues_like_token_by_token_prefill() {
    let c = config(2);
    let model = LoadedModel::from_parts(
        "qwen3-0.6b-shaped, 2 layers",
        c.clone(),
        Checkpoint::random(&c, 22),
    );
    let dev = device();
    let ctx = 512;
    // 203 tokens in chunks of at most 64: 64, 64, 64, 8, 2, 1 (sizes built once, shared KV).
    let p = prompt(203, 5);
    let mut batched = backend(&dev, &model, ctx, PrefillMode::Batched { chunk: 64 });
    let mut token = backend(&dev, &model, ctx, PrefillMode::Token);
    for b in [&mut batched, &mut token] {
        b.reset().unwrap_or_else(|e| panic!("{e}"));
    }
    let a = batched
        .prefill(&p, 0, true)
        .unwrap_or_else(|e| panic!("{e}"));
    let b = token.prefill(&p, 0, true).unwrap_or_else(|e| panic!("{e}"));
    let err = rel_l2(a.logits.as_ref().unwrap(), b.logits.as_ref().unwrap());
    println!("last-token logits after 203 tokens: batched vs token-by-token relative L2 {err:.3e}");
    assert!(err <= TOL, "{err:.3e}");
    // 64 greedy tokens after each.
    let n = 64;
    let (mut ta, mut tb) = (a.next_token, b.next_token);
    let (mut sa, mut sb) = (vec![ta], vec![tb]);
    // The token-by-token run's logits before each of its tokens.
    let mut before = vec![b.logits.clone().unwrap()];
    for pos in p.len()..p.len() + n - 1 {
        ta = batched.step(ta, pos, false).unwrap().next_token;
        let out = token.step(tb, pos, true).unwrap();
        tb = out.next_token;
        before.push(out.logits.unwrap());
        sa.push(ta);
        sb.push(tb);
    }
    let agree = sa.iter().zip(&sb).take_while(|(x, y)| x == y).count();
    println!("greedy continuation: {agree}/{n} tokens agree");
    if agree < n {
        // Only a near-tie may flip: the token-by-token run's logits of the two tokens are close.
        let l = &before[agree];
        let rms = (l.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / l.len() as f64).sqrt();
        let gap = (l[sa[agree] as usize] - l[sb[agree] as usize]).abs() as f64;
        println!(
            "  first difference at step {agree}: gap {gap:.3e} = {:.3} x RMS",
            gap / rms
        );
        assert!(
            gap <= 0.05 * rms,
            "not a near-tie: gap {gap:.3e}, RMS {rms:.3e}"
        );
    }
    // Every position's logits of one all-logits prefill against the decode steps'.
    batched.reset().unwrap();
    token.reset().unwrap();
    let q = prompt(96, 6);
    let rows = batched.prefill_logits(&q, 0).unwrap();
    let want = token.prefill_logits(&q, 0).unwrap();
    assert_eq!(rows.len(), 96);
    let worst = rows
        .iter()
        .zip(&want)
        .map(|(a, b)| rel_l2(a, b))
        .fold(0.0, f64::max);
    println!("all-position logits of 96 tokens: worst relative L2 {worst:.3e}");
    assert!(worst <= TOL, "{worst:.3e}");
    // Bad input: too long for the context, empty.
    let long = prompt(ctx + 1, 8);
    assert!(batched.prefill(&long, 0, false).is_err());
    let e = batched.prefill(&[], 0, false).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
}

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn live_prefill_plan_matches_the_recorded_h200_plan() {
    let dev = device();
    let c = config(28);
    let opts = LowerOptions::decode(4096, DType::BF16).with_tokens(512, false);
    let mut g = lower_decode_step(&c, WeightTypes::Declared(DType::BF16), opts).expect("lowering");
    run_passes(&mut g, "default", &[], &mut |_, _| {}).expect("passes");
    let tuning = braid_backend_cuda::Tuning::default();
    let live = lower(&g, &dev.target().expect("live target"), &tuning).expect("plan");
    let recorded = lower(&g, &Target::h200(), &tuning).expect("plan");
    assert_eq!(live.launches.len(), recorded.launches.len());
    for (a, b) in live.launches.iter().zip(&recorded.launches) {
        assert_eq!(a, b, "live and recorded launches differ");
    }
    println!(
        "ok  live 512-token prefill plan equals the recorded H200 plan ({} launches, {} GEMMs)",
        live.launches.len(),
        live.gemm_count()
    );
}

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn full_depth_time_to_first_token() {
    let c = config(28);
    let w = Checkpoint::random(&c, 23);
    let dev = device();
    let ctx = 2048;
    let decode = graph(&c, &w, ctx, 1, false, "default");
    let ex = CudaExecutor::new(&dev, &decode, &w, ExecOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let bw = braid_backend_cuda::measure_read_bandwidth(&dev, ex.weight_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let rate = braid_backend_cuda::measure_gemm_rate(&dev, 8192, 8192, 8192)
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "read bandwidth {:.2} TB/s, cuBLAS bf16 GEMM {:.0} TFLOP/s",
        bw / 1e12,
        rate / 1e12
    );
    for t in [128, 512] {
        let t0 = Instant::now();
        let g = graph(&c, &w, ctx, t, false, "default");
        let mut pf = CudaExecutor::new_sharing(&dev, &g, &w, &ex, ExecOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let setup = t0.elapsed();
        let ids = prompt(t, 7);
        pf.prefill(&ids, 0).unwrap_or_else(|e| panic!("{e}"));
        let mut times = Vec::new();
        for _ in 0..9 {
            let s = Instant::now();
            pf.prefill(&ids, 0).unwrap_or_else(|e| panic!("{e}"));
            times.push(s.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let ms = times[times.len() / 2];
        let compute = pf.matmul_flops() / rate * 1e3;
        let memory = ex.weight_bytes() as f64 / bw * 1e3;
        println!(
            "T={t}: {ms:.2} ms ({:.0} tok/s), {} launches ({} GEMMs); floors: compute {compute:.3} ms, \
             memory {memory:.3} ms; set-up {setup:.1?}",
            t as f64 / (ms * 1e-3),
            pf.launches_per_step(),
            pf.plan().gemm_count()
        );
        let prof = pf
            .profile_prefill(&ids, 0, 5)
            .unwrap_or_else(|e| panic!("{e}"));
        println!("{prof}");
    }
}
