//! `braid chat` driven through stdin: multi-turn with KV-cache reuse, /reset, /exit, and Ctrl-C
//! stopping an answer while the session goes on.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn chat(extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_braid"));
    cmd.args(["chat", "--model", "tiny", "--device", "cpu", "--stats"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The `(cached, prompt)` counts of each `[turn N]` stats line.
fn turns(stderr: &str) -> Vec<(usize, usize)> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("] prompt ")?.1;
            let (prompt, rest) = rest.split_once(" tokens (")?;
            let cached = rest.split_once(" cached")?.0;
            Some((cached.parse().ok()?, prompt.parse().ok()?))
        })
        .collect()
}

#[test]
fn turns_reuse_the_cache_and_reset_starts_over() {
    let mut child = chat(&["--system", "Be brief.", "--max-tokens", "4"])
        .spawn()
        .expect("braid chat starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello there\nAnd now?\n/nonsense\n/reset\nHello there\n/exit\nnot read\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let t = turns(&stderr);
    assert_eq!(
        t.len(),
        3,
        "three answered turns (the line after /exit is not read): {stderr}"
    );
    // Turn two reuses all of turn one's prompt (system + first question + the assistant header
    // but the answer, which Qwen3's template re-renders).
    assert!(
        t[1].0 >= t[0].1 - 1,
        "turn two reused only {} of {} tokens: {stderr}",
        t[1].0,
        t[0].1
    );
    // After /reset the conversation is the first one again: the system message and question are
    // still in the cache.
    assert_eq!(t[2].1, t[0].1, "{stderr}");
    assert_eq!(t[2].0, t[0].1 - 1, "{stderr}");
    assert!(stderr.contains("unknown command /nonsense"), "{stderr}");
    assert!(stderr.contains("(new conversation)"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
}

#[test]
fn ctrl_c_stops_the_answer_and_keeps_the_session() {
    let mut child = chat(&["--max-tokens", "800", "--max-context", "160"])
        .spawn()
        .expect("braid chat starts");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let mut out_pipe = child.stdout.take().unwrap();
    let sink = stdout.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = out_pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    stdin.write_all(b"Tell me everything\n").unwrap();
    stdin.flush().unwrap();
    let start = Instant::now();
    while stdout.lock().unwrap().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no answer started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    // The session goes on: a second turn, then /exit.
    stdin.write_all(b"Shorter please\n/exit\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("[stopped]"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("] prompt ")).collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].ends_with("cancelled"), "{stderr}");
    let generated: usize = lines[0]
        .split_once("generated ")
        .and_then(|(_, r)| r.split(' ').next()?.parse().ok())
        .expect("generated count");
    assert!(generated < 800, "Ctrl-C did not stop the answer: {stderr}");
    // The stopped answer is part of the conversation: turn two reuses turn one's prompt.
    let t = turns(&stderr);
    assert!(t[1].0 >= t[0].1 - 1, "{stderr}");
}
