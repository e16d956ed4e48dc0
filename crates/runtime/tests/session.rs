//! The engine session on the real CPU backend: a generation that reuses the KV cache of the
//! previous one produces exactly the tokens of a fresh run over the whole prompt.

use std::ops::ControlFlow;

use braid_runtime::engine::{generate, GenerateOptions, Session, StopReason};
use braid_runtime::load::LoadedModel;
use braid_runtime::model::ChatMessage;
use braid_runtime::pipeline::{open_backend, BackendRequest, Device};
use braid_runtime::sampling::SamplingParams;

fn opts(max_tokens: usize, sampling: SamplingParams) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampling,
        stop_tokens: vec![],
        stop_strings: vec![],
    }
}

#[test]
fn reused_prefix_gives_the_tokens_of_a_fresh_run() {
    let model = LoadedModel::load("tiny").unwrap();
    let tok = model.tokenizer().unwrap().clone();
    let req = BackendRequest::new(Device::Cpu, "default", 64);
    let mut session = Session::new(open_backend(&model, &req).unwrap());
    let sampled = SamplingParams {
        temperature: 0.9,
        top_k: 0,
        top_p: 0.95,
        seed: 11,
    };
    for sampling in [SamplingParams::greedy(), sampled] {
        session.reset().unwrap();
        let turn1 = tok.encode("The first turn", false).unwrap();
        let mut got = Vec::new();
        let g = session
            .generate(
                &turn1,
                &opts(4, sampling),
                &mut tok.stream(true),
                &mut |t| {
                    got.push(t.id);
                    Ok(ControlFlow::Continue(()))
                },
            )
            .unwrap();
        assert_eq!(g.stats.stop_reason, StopReason::Length);
        let mut turn2 = turn1.clone();
        turn2.extend(&got);
        turn2.extend(tok.encode(" and a second one", false).unwrap());

        let mut reused = Vec::new();
        let g2 = session
            .generate(
                &turn2,
                &opts(6, sampling),
                &mut tok.stream(true),
                &mut |t| {
                    reused.push(t.id);
                    Ok(ControlFlow::Continue(()))
                },
            )
            .unwrap();
        assert_eq!(g2.stats.cached_tokens, turn1.len() + 3);

        let mut backend = open_backend(&model, &req).unwrap();
        let mut fresh = Vec::new();
        generate(backend.as_mut(), &turn2, &opts(6, sampling), &mut |t| {
            fresh.push(t);
            Ok(())
        })
        .unwrap();
        assert_eq!(reused, fresh, "sampling {sampling:?}");
    }
}

/// What prefix reuse can expect from Qwen3's chat template: with thinking on (the default), the
/// prompt of turn N is a text prefix of turn N+1's; with `enable_thinking=false` it is not (the
/// empty `<think>` block is dropped from earlier answers), so reuse stops at the last assistant
/// header. The session reuses whatever token prefix is common, so both are correct.
#[test]
fn qwen3_template_turn_prefixes() {
    let model = LoadedModel::load("tiny").unwrap();
    let t = model.chat_template().unwrap();
    let turn1 = vec![ChatMessage::system("Be brief."), ChatMessage::user("Hi")];
    let mut turn2 = turn1.clone();
    turn2.push(ChatMessage::assistant("<think>\nhmm\n</think>\n\nHello!"));
    turn2.push(ChatMessage::user("Again"));
    let think1 = t.render(&turn1, true, None).unwrap();
    let think2 = t.render(&turn2, true, None).unwrap();
    assert!(think2.starts_with(&think1), "{think1:?}\n{think2:?}");
    // The earlier answer's thinking is not in the next prompt.
    assert!(!think2.contains("hmm"), "{think2}");
    let plain1 = t.render(&turn1, true, Some(false)).unwrap();
    let plain2 = t.render(&turn2, true, Some(false)).unwrap();
    assert!(!plain2.starts_with(&plain1));
    assert!(plain2.starts_with(plain1.trim_end_matches("<think>\n\n</think>\n\n")));
}
