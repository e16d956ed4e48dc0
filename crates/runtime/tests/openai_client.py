#!/usr/bin/env python3
"""The official `openai` Python client against `braid serve`.

Test mode (what CI runs, see .ci/run): starts `BRAID serve --model tiny --device cpu --port 0`
(loopback by default, a free port), then checks with the `openai` package: the models list, a chat
completion, a streamed one (with usage and prefix reuse), a completion (plain and streamed),
`enable_thinking` through `chat_template_kwargs`, error answers, a client that disconnects
mid-stream, and 32 concurrent streaming clients; the server must stay healthy. Ends with
`N passed, M failed` and exits non-zero on any failure.

    python3 crates/runtime/tests/openai_client.py --braid target/release/braid

Bench mode: time to first token and decode tok/s as a streaming client sees them, against a
running server (or one it starts with --braid):

    python3 crates/runtime/tests/openai_client.py --bench --base-url http://127.0.0.1:8080/v1 \\
        --model qwen3-0.6b --requests 8 --max-tokens 256
"""

import argparse
import re
import statistics
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

import openai
from openai import OpenAI

MODEL = "tiny"


class Server:
    """A `braid serve` child process on 127.0.0.1 and a free port."""

    def __init__(self, braid, extra):
        cmd = [braid, "serve", "--model", "tiny", "--device", "cpu", "--port", "0", *extra]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.log = []
        self.root = None
        deadline = time.time() + 60
        for line in self.proc.stderr:
            self.log.append(line)
            m = re.search(r"listening on (http://[^\s]+)", line)
            if m:
                self.root = m.group(1)
                break
            if time.time() > deadline:
                break
        if self.root is None:
            self.stop()
            raise RuntimeError("braid serve did not say where it listens:\n" + "".join(self.log))
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.time() + 120
        while health(self.root) != 200:
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError("braid serve did not become healthy:\n" + "".join(self.log))
            time.sleep(0.05)

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def health(root):
    try:
        with urllib.request.urlopen(root + "/health", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def metrics(root):
    """The server's metrics as {name{labels}: value}."""
    with urllib.request.urlopen(root + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def collect_chat_stream(stream):
    """Chunks of a streamed chat completion, checked for shape; returns (text, finish, usage, n)."""
    text, finish, usage, n = "", None, None, 0
    for i, chunk in enumerate(stream):
        n += 1
        check(chunk.object == "chat.completion.chunk", f"chunk object {chunk.object}")
        if chunk.usage is not None:
            check(chunk.choices == [], "the usage chunk has no choices")
            usage = chunk.usage
            continue
        choice = chunk.choices[0]
        if i == 0:
            check(choice.delta.role == "assistant", f"first delta {choice.delta}")
        text += choice.delta.content or ""
        if choice.finish_reason is not None:
            finish = choice.finish_reason
    return text, finish, usage, n


# ---- tests -------------------------------------------------------------------------------------


def test_binds_loopback_by_default(server, client):
    check(server.root.startswith("http://127.0.0.1:"), f"listening on {server.root}")


def test_models_list(server, client):
    models = client.models.list()
    ids = [m.id for m in models.data]
    check(ids == [MODEL], f"models {ids}")


def test_chat_completion(server, client):
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello, who are you?"}], max_tokens=8, temperature=0
    )
    check(r.object == "chat.completion", r.object)
    msg = r.choices[0].message
    check(msg.role == "assistant" and isinstance(msg.content, str), f"message {msg}")
    check(r.choices[0].finish_reason in ("length", "stop"), r.choices[0].finish_reason)
    u = r.usage
    check(u.prompt_tokens > 0 and u.total_tokens == u.prompt_tokens + u.completion_tokens, f"usage {u}")
    check(u.completion_tokens <= 8, f"usage {u}")
    check(u.prompt_tokens_details.cached_tokens is not None, f"usage {u}")


def test_streamed_chat_completion(server, client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count to ten."}]
    full = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=24, temperature=0)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, n = collect_chat_stream(stream)
    check(n >= 3, f"only {n} chunks")
    check(text == full.choices[0].message.content, f"streamed {text!r} != full {full.choices[0].message.content!r}")
    # The text has multi-byte characters (the tiny model's greedy output is fixed): none was split
    # across chunks, or the joined chunks would hold U+FFFD where the full text does not.
    check(any(ord(c) > 0x7F for c in text), f"no multi-byte character to check in {text!r}")
    check(finish == full.choices[0].finish_reason, f"finish {finish}")
    check(usage is not None and usage.completion_tokens == full.usage.completion_tokens, f"usage {usage}")
    # The same conversation right after: everything but the last prompt token comes from the cache.
    check(
        usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens - 1,
        f"prefix reuse: {usage.prompt_tokens_details.cached_tokens} of {usage.prompt_tokens} cached",
    )


def test_multi_turn_prefix_reuse(server, client):
    turn1 = [{"role": "user", "content": "Name a colour."}]
    a = client.chat.completions.create(model=MODEL, messages=turn1, max_tokens=4, temperature=0)
    turn2 = turn1 + [
        {"role": "assistant", "content": a.choices[0].message.content},
        {"role": "user", "content": "Another one?"},
    ]
    before = metrics(server.root).get("braid_prompt_tokens_cached_total", 0)
    b = client.chat.completions.create(model=MODEL, messages=turn2, max_tokens=4, temperature=0)
    cached = b.usage.prompt_tokens_details.cached_tokens
    check(cached >= a.usage.prompt_tokens - 1, f"turn two reused {cached} of {a.usage.prompt_tokens}")
    after = metrics(server.root)["braid_prompt_tokens_cached_total"]
    check(after - before == cached, f"metrics counted {after - before} cached tokens, usage {cached}")


def test_completion(server, client):
    r = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6, temperature=0)
    check(r.object == "text_completion", r.object)
    check(isinstance(r.choices[0].text, str), f"choice {r.choices[0]}")
    check(r.usage.completion_tokens <= 6 and r.usage.prompt_tokens > 0, f"usage {r.usage}")
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL, prompt="Once upon a time", max_tokens=6, temperature=0, stream=True
        )
        if c.choices
    )
    check(streamed == r.choices[0].text, f"streamed {streamed!r} != {r.choices[0].text!r}")


def test_enable_thinking_kwarg(server, client):
    msgs = [{"role": "user", "content": "Think about it."}]
    on = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=1)
    off = client.chat.completions.create(
        model=MODEL, messages=msgs, max_tokens=1, extra_body={"chat_template_kwargs": {"enable_thinking": False}}
    )
    # Qwen3's template appends an empty <think></think> block when thinking is off.
    check(off.usage.prompt_tokens > on.usage.prompt_tokens, f"{off.usage.prompt_tokens} vs {on.usage.prompt_tokens}")


def test_seeded_sampling_is_reproducible(server, client):
    kw = dict(model=MODEL, messages=[{"role": "user", "content": "Surprise me"}], max_tokens=6, temperature=0.9, top_p=0.95)
    a = client.chat.completions.create(seed=5, **kw).choices[0].message.content
    b = client.chat.completions.create(seed=5, **kw).choices[0].message.content
    check(a == b, f"{a!r} != {b!r}")


def test_errors_reach_the_client(server, client):
    def expect(exc, code, **kw):
        args = dict(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        args.update(kw)
        try:
            client.chat.completions.create(**args)
        except exc as e:
            body = e.body if isinstance(e.body, dict) else {}
            check(e.status_code == code, f"status {e.status_code}")
            check(isinstance(body.get("message"), str), f"error body {e.body}")
            return
        raise AssertionError(f"{kw} was accepted")

    expect(openai.NotFoundError, 404, model="no-such-model")
    expect(openai.BadRequestError, 400, max_tokens=0)
    expect(openai.BadRequestError, 400, max_tokens=10**9)
    expect(openai.BadRequestError, 400, temperature=3)
    expect(openai.BadRequestError, 400, top_p=1.5)
    expect(openai.BadRequestError, 400, messages=[])
    expect(openai.BadRequestError, 400, stop=["a", "b", "c", "d", "e"])
    check(health(server.root) == 200, "server unhealthy after bad requests")


def test_client_disconnects_mid_stream(server, client):
    before = metrics(server.root)
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Talk for a long time."}], max_tokens=800, stream=True
    )
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()  # the client goes away mid-stream
    started = time.time()
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "next"}], max_tokens=2)
    check(r.usage.completion_tokens >= 1, "the next request got no tokens")
    elapsed = time.time() - started
    deadline = time.time() + 10
    key = 'braid_generations_total{reason="cancelled"}'
    while metrics(server.root).get(key, 0) <= before.get(key, 0):
        check(time.time() < deadline, "the server never counted the generation as cancelled")
        time.sleep(0.05)
    after = metrics(server.root)
    generated = after["braid_generated_tokens_total"] - before.get("braid_generated_tokens_total", 0)
    check(generated < 800, f"the abandoned stream ran on: {generated} tokens generated")
    print(f"      the abandoned stream stopped after {generated - r.usage.completion_tokens:.0f} tokens")
    check(elapsed < 30, f"the next request waited {elapsed:.1f}s")


def test_32_concurrent_streaming_clients(server, client):
    n = 32
    results = [None] * n
    errors = []

    def one(i):
        try:
            c = OpenAI(base_url=server.root + "/v1", api_key="none", timeout=120, max_retries=0)
            stream = c.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": f"Client {i} says hello"}],
                max_tokens=6,
                stream=True,
                stream_options={"include_usage": True},
            )
            results[i] = collect_chat_stream(stream)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"client {i}: {e!r}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    check(not errors, "; ".join(errors[:5]))
    check(all(r is not None for r in results), f"{sum(r is None for r in results)} clients got nothing")
    for i, (text, finish, usage, chunks) in enumerate(results):
        check(finish in ("length", "stop"), f"client {i}: finish {finish}")
        check(usage is not None and 1 <= usage.completion_tokens <= 6, f"client {i}: usage {usage}")
        check(chunks >= 3, f"client {i}: {chunks} chunks")
    check(health(server.root) == 200, "server unhealthy after the load test")
    m = metrics(server.root)
    check(m.get("braid_queue_depth") == 0, f"queue depth {m.get('braid_queue_depth')}")
    print(f"      32 streams in {time.time() - started:.1f}s")


TESTS = [
    test_binds_loopback_by_default,
    test_models_list,
    test_chat_completion,
    test_streamed_chat_completion,
    test_multi_turn_prefix_reuse,
    test_completion,
    test_enable_thinking_kwarg,
    test_seeded_sampling_is_reproducible,
    test_errors_reach_the_client,
    test_client_disconnects_mid_stream,
    test_32_concurrent_streaming_clients,
]


def run_tests(args):
    server = Server(args.braid, args.serve_arg or [])
    client = OpenAI(base_url=server.root + "/v1", api_key="none", timeout=120, max_retries=0)
    passed = failed = 0
    try:
        for test in TESTS:
            started = time.time()
            try:
                test(server, client)
                passed += 1
                print(f"PASS {test.__name__} ({time.time() - started:.1f}s)", flush=True)
            except Exception:  # noqa: BLE001 - every failure is reported, then the next test runs
                failed += 1
                print(f"FAIL {test.__name__}", flush=True)
                traceback.print_exc()
    finally:
        server.stop()
    if failed:
        print("---- braid serve stderr (tail)")
        print("".join(server.log[-40:]))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


# ---- bench -------------------------------------------------------------------------------------


def run_bench(args):
    server = None
    base_url = args.base_url
    if args.braid:
        server = Server(args.braid, args.serve_arg or [])
        base_url = server.root + "/v1"
    model = args.model
    client = OpenAI(base_url=base_url, api_key="none", timeout=600, max_retries=0)
    if model is None:
        model = client.models.list().data[0].id
    ttfts, rates = [], []
    try:
        for i in range(args.requests):
            t0 = time.perf_counter()
            first = last = None
            pieces = 0
            usage = None
            stream = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": f"{args.prompt} ({i})"}],
                max_tokens=args.max_tokens,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"chat_template_kwargs": {"enable_thinking": False}},
            )
            for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                elif chunk.choices and chunk.choices[0].delta.content:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    pieces += 1
            tokens = usage.completion_tokens if usage else pieces
            ttft = (first - t0) if first else float("nan")
            rate = (tokens - 1) / (last - first) if first and last > first else float("nan")
            ttfts.append(ttft)
            rates.append(rate)
            print(f"request {i}: ttft {ttft * 1e3:8.1f} ms  {tokens:4d} tokens  decode {rate:8.1f} tok/s", flush=True)
    finally:
        if server:
            server.stop()
    ok_t = [t for t in ttfts if t == t]
    ok_r = [r for r in rates if r == r]
    if ok_t:
        print(f"ttft    median {statistics.median(ok_t) * 1e3:.1f} ms  mean {statistics.mean(ok_t) * 1e3:.1f} ms")
    if ok_r:
        print(f"decode  median {statistics.median(ok_r):.1f} tok/s  mean {statistics.mean(ok_r):.1f} tok/s")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--braid", help="the braid binary to start (`serve --model tiny --device cpu --port 0`)")
    p.add_argument("--serve-arg", action="append", help="an extra argument for `braid serve` (repeatable)")
    p.add_argument("--bench", action="store_true", help="measure TTFT and tok/s instead of testing")
    p.add_argument("--base-url", help="bench: a running server's /v1 URL, e.g. http://127.0.0.1:8080/v1")
    p.add_argument("--model", help="bench: the model name (default: the first of /v1/models)")
    p.add_argument("--requests", type=int, default=5, help="bench: sequential streaming requests")
    p.add_argument("--max-tokens", type=int, default=128, help="bench: max_tokens of each request")
    p.add_argument("--prompt", default="Write a long story about a lighthouse keeper.", help="bench: the prompt")
    args = p.parse_args()
    if args.bench:
        if not (args.braid or args.base_url):
            p.error("--bench needs --base-url or --braid")
        return run_bench(args)
    if not args.braid:
        p.error("test mode needs --braid PATH")
    return run_tests(args)


if __name__ == "__main__":
    sys.exit(main())
