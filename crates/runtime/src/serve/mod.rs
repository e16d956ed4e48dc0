//! `braid serve`: an OpenAI-compatible HTTP server (axum + tokio) over one engine thread.
//!
//! - [`api`]: request and response bodies, and the checks of a request.
//! - [`error`]: OpenAI-style error bodies.
//! - [`engine_thread`]: the thread that owns the model and runs one request at a time from a
//!   bounded queue, keeping the KV cache of the previous request for prefix reuse.
//! - [`metrics`]: Prometheus metrics.
//! - [`routes`]: the HTTP handlers and the router.
//!
//! The listener is bound first, then the model loads on the engine thread: `GET /health` answers
//! 503 until it is ready.

pub mod api;
pub mod engine_thread;
pub mod error;
pub mod metrics;
pub mod routes;

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::Router;
use tokio::sync::watch;

use engine_thread::{Engine, EngineConfig, LoadDone};
use metrics::Metrics;
use routes::AppState;

/// Default limit of a request body: 4 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 << 20;

/// How long a shutdown waits for open responses (streams) before the server exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything `braid serve` needs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The engine thread's model and limits.
    pub engine: EngineConfig,
    /// Address to listen on (`127.0.0.1` by default: loopback only).
    pub host: String,
    /// Port; 0 picks a free one (printed on stderr).
    pub port: u16,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
}

/// The application without a listener: the router, the engine (its model starts loading now on
/// the engine thread) and a receiver that answers when loading is over. Tests drive the router
/// directly.
///
/// Errors: the engine thread cannot be spawned.
pub fn app(engine: EngineConfig, max_body_bytes: usize) -> Result<(Router, Engine, LoadDone)> {
    let metrics = Arc::new(Metrics::new());
    let (engine, loaded) = Engine::start(engine, metrics.clone())?;
    let state = AppState {
        engine: engine.clone(),
        metrics,
        max_body_bytes,
    };
    Ok((routes::router(state), engine, loaded))
}

/// Binds the listener, starts loading the model, and serves until Ctrl-C or SIGTERM.
///
/// Prints `braid serve: listening on http://ADDR` on stderr once bound, and `braid serve:
/// ready` once the model is loaded.
///
/// Errors: the address cannot be bound; the model fails to load (the server stops); the HTTP
/// server fails.
pub async fn run(config: ServeConfig) -> Result<()> {
    let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port))
        .await
        .with_context(|| {
            format!(
                "--host {} --port {}: cannot listen there",
                config.host, config.port
            )
        })?;
    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    let model = config.engine.model.clone();
    let (router, _engine, loaded) = app(config.engine, config.max_body_bytes)?;
    eprintln!("braid serve: listening on http://{addr} (loading model {model})");

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        eprintln!("braid serve: shutting down");
        let _ = stop_tx.send(true);
    });
    let mut graceful = stop_rx.clone();
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = graceful.wait_for(|stop| *stop).await;
        })
        .into_future();
    let mut server = std::pin::pin!(server);
    tokio::select! {
        r = &mut server => return r.context("serving HTTP"),
        r = loaded => match r {
            Ok(Ok(())) => eprintln!("braid serve: ready on http://{addr}"),
            Ok(Err(e)) => bail!("loading the model failed: {e}"),
            Err(_) => bail!("the engine thread stopped while loading the model"),
        },
    }
    let mut deadline = stop_rx;
    tokio::select! {
        r = &mut server => r.context("serving HTTP"),
        _ = async move {
            let _ = deadline.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            eprintln!("braid serve: open responses did not finish within {SHUTDOWN_GRACE:?}; exiting");
            Ok(())
        }
    }
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM; never when neither can be listened for.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
