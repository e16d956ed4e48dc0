//! `GET /metrics`: the server's counters, gauges and histograms in the Prometheus text format
//! (version 0.0.4), kept and encoded by the `prometheus-client` crate. Every name starts with
//! `braid_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::engine::GenerationStats;

/// The `Content-Type` of `GET /metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Labels of `braid_requests_total`: the route (`/v1/chat/completions`, or `other` for paths
/// that match no route) and the response status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route, or `other`.
    pub endpoint: String,
    /// HTTP status code.
    pub status: u16,
}

/// Labels of `braid_generations_total`: how a generation ended (`stop`, `length`, `cancelled`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishLabels {
    /// `stop`, `length` or `cancelled`.
    pub reason: String,
}

/// All metrics of one server. Cheap to share (`Arc`); every metric is atomic.
pub struct Metrics {
    registry: Registry,
    /// `braid_requests_total{endpoint, status}`: HTTP requests answered.
    pub requests: Family<RequestLabels, Counter>,
    /// `braid_generations_total{reason}`: generations run by the engine, by how they ended.
    pub generations: Family<FinishLabels, Counter>,
    /// `braid_prompt_tokens_total`: prompt tokens of generations run (cached ones included).
    pub prompt_tokens: Counter,
    /// `braid_prompt_tokens_cached_total`: prompt tokens whose KV-cache rows were reused from the
    /// previous request (prefix reuse), so not prefilled.
    pub cached_prompt_tokens: Counter,
    /// `braid_generated_tokens_total`: tokens generated.
    pub generated_tokens: Counter,
    /// `braid_queue_depth`: requests waiting for the engine (the one running not counted).
    pub queue_depth: Gauge,
    /// `braid_time_to_first_token_seconds`: from the request's arrival to its first generated
    /// token (queue wait and prefill included).
    pub ttft: Histogram,
    /// `braid_queue_wait_seconds`: from the request's arrival to the engine starting it.
    pub queue_wait: Histogram,
    /// `braid_decode_tokens_per_second`: decode speed of each generation with at least one decode
    /// step.
    pub decode_tok_per_s: Histogram,
}

impl Metrics {
    /// Fresh metrics, all zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("braid");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "HTTP requests answered", requests.clone());
        let generations = Family::<FinishLabels, Counter>::default();
        registry.register(
            "generations",
            "Generations run by the engine, by how they ended (stop, length, cancelled)",
            generations.clone(),
        );
        let prompt_tokens = Counter::default();
        registry.register(
            "prompt_tokens",
            "Prompt tokens of generations run, cached ones included",
            prompt_tokens.clone(),
        );
        let cached_prompt_tokens = Counter::default();
        registry.register(
            "prompt_tokens_cached",
            "Prompt tokens whose KV-cache rows were reused from the previous request",
            cached_prompt_tokens.clone(),
        );
        let generated_tokens = Counter::default();
        registry.register(
            "generated_tokens",
            "Tokens generated",
            generated_tokens.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Requests waiting for the engine (the running one not counted)",
            queue_depth.clone(),
        );
        // 5 ms .. ~160 s.
        let ttft = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        registry.register_with_unit(
            "time_to_first_token",
            "From a request's arrival to its first generated token (queue wait and prefill included)",
            Unit::Seconds,
            ttft.clone(),
        );
        let queue_wait = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        registry.register_with_unit(
            "queue_wait",
            "From a request's arrival to the engine starting it",
            Unit::Seconds,
            queue_wait.clone(),
        );
        // 1 .. 16384 tok/s.
        let decode_tok_per_s = Histogram::new(exponential_buckets(1.0, 2.0, 15));
        registry.register(
            "decode_tokens_per_second",
            "Decode speed of each generation (tokens per second after the first token)",
            decode_tok_per_s.clone(),
        );
        Metrics {
            registry,
            requests,
            generations,
            prompt_tokens,
            cached_prompt_tokens,
            generated_tokens,
            queue_depth,
            ttft,
            queue_wait,
            decode_tok_per_s,
        }
    }

    /// Counts one finished (or cancelled) generation.
    pub fn record_generation(&self, stats: &GenerationStats) {
        self.generations
            .get_or_create(&FinishLabels {
                reason: stats.stop_reason.as_str().into(),
            })
            .inc();
        self.prompt_tokens.inc_by(stats.prompt_tokens as u64);
        self.cached_prompt_tokens.inc_by(stats.cached_tokens as u64);
        self.generated_tokens.inc_by(stats.generated_tokens as u64);
        if stats.decode_steps > 0 {
            self.decode_tok_per_s.observe(stats.decode_tok_per_s());
        }
    }

    /// Counts one HTTP response.
    pub fn record_request(&self, endpoint: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.into(),
                status,
            })
            .inc();
    }

    /// The metrics in the Prometheus text format.
    ///
    /// Errors: none in practice (writing to a `String` does not fail).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::StopReason;

    #[test]
    fn text_format_names_every_metric() {
        let m = Metrics::new();
        m.record_request("/v1/chat/completions", 200);
        m.record_generation(&GenerationStats {
            prompt_tokens: 10,
            cached_tokens: 4,
            generated_tokens: 3,
            decode_steps: 2,
            decode: std::time::Duration::from_millis(20),
            stop_reason: StopReason::Length,
            ..Default::default()
        });
        let text = m.encode().unwrap();
        for line in [
            "braid_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 1",
            "braid_generations_total{reason=\"length\"} 1",
            "braid_prompt_tokens_total 10",
            "braid_prompt_tokens_cached_total 4",
            "braid_generated_tokens_total 3",
            "braid_queue_depth 0",
            "braid_decode_tokens_per_second_count 1",
            "braid_time_to_first_token_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
    }
}
