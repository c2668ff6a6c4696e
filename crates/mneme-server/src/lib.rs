//! Mneme's gRPC server: `mneme.v1.MemoryService` and `mneme.v1.AdminService` over an
//! [`mneme_engine::Engine`], with API keys, limits, `grpc.health.v1.Health`, server
//! reflection (v1 and v1alpha, so `grpcurl list` works without a proto file), Prometheus
//! metrics and graceful shutdown.
//!
//! Only this crate (and the `mneme` binary) knows tokio, tonic, prost or the wire format.

mod admin;
pub mod auth;
mod codec;
mod convert;
mod metrics;
mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mneme_engine::Engine;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_stream::wrappers::TcpListenerStream;

pub use auth::{Auth, hash_key};
pub use codec::StrictCodec;
pub use metrics::Metrics;

/// Generated protobuf types, service traits and clients of `mneme.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic, reason = "generated code")]
pub mod pb {
    tonic::include_proto!("mneme.v1");

    /// The encoded descriptors of `mneme.v1`, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/mneme_descriptor.bin"));
}

/// Largest gRPC message accepted or sent (a 10 MB memory must reach validation and be
/// refused by name, not by transport).
pub const MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Requests running engine work at once; beyond it calls get `RESOURCE_EXHAUSTED`.
pub const CONCURRENT_REQUESTS_MAX: usize = 256;
/// Default per-request deadline (a client's `grpc-timeout` shorter than this wins).
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// How long shutdown waits for in-flight calls before closing anyway.
pub const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(30);

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// gRPC address.
    pub listen: SocketAddr,
    /// Prometheus `/metrics` address, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// API keys (empty: no authentication, loopback only unless `insecure`).
    pub auth: Auth,
    /// Allow listening beyond loopback without keys.
    pub insecure: bool,
    /// Per-request deadline.
    pub request_timeout: Duration,
    /// Concurrent engine calls.
    pub concurrency: usize,
    /// TLS certificate chain and private key (PEM); plaintext when `None`.
    pub tls: Option<TlsPem>,
}

/// A PEM certificate chain and its private key.
#[derive(Clone)]
pub struct TlsPem {
    /// Certificate chain.
    pub cert: Vec<u8>,
    /// Private key.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsPem { .. }")
    }
}

impl ServerConfig {
    /// Defaults for `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            metrics_listen: None,
            auth: Auth::open(),
            insecure: false,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            concurrency: CONCURRENT_REQUESTS_MAX,
            tls: None,
        }
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A configuration that must not run (for example no keys on a public address).
    #[error("{0}")]
    Config(String),
    /// Binding or serving failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Closing the engine (final flush and fsync) failed.
    #[error("closing the engine: {0}")]
    Close(#[from] mneme_engine::Error),
}

/// Addresses actually bound (port 0 resolves here).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// gRPC.
    pub grpc: SocketAddr,
    /// Metrics, when enabled.
    pub metrics: Option<SocketAddr>,
}

/// Serves until `shutdown` resolves, then: health `NOT_SERVING`, stop accepting, drain
/// in-flight calls (up to [`SHUTDOWN_DRAIN_MAX`]), flush and fsync the engine.
pub async fn run(
    engine: Engine,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(Bound),
) -> Result<(), ServerError> {
    if !config.auth.enabled() && !config.listen.ip().is_loopback() && !config.insecure {
        return Err(ServerError::Config(format!(
            "refusing to listen on {} without API keys: pass --keys-file, or --insecure to allow it",
            config.listen
        )));
    }
    let engine = Arc::new(engine);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Io {
            what: format!("binding {}", config.listen),
            source,
        })?;
    let grpc = listener.local_addr().map_err(|source| ServerError::Io {
        what: "reading the bound address".into(),
        source,
    })?;
    let metrics = Arc::new(Metrics::default());
    let metrics_addr = match config.metrics_listen {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Io {
                    what: format!("binding metrics {addr}"),
                    source,
                })?;
            let bound = l.local_addr().ok();
            tokio::spawn(metrics::serve(
                l,
                Arc::clone(&metrics),
                Arc::downgrade(&engine),
            ));
            bound
        }
        None => None,
    };
    let shared = service::Shared {
        engine: Arc::clone(&engine),
        auth: Arc::new(config.auth.clone()),
        metrics,
        permits: Arc::new(Semaphore::new(config.concurrency.max(1))),
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, true).await;
    tokio::spawn(watch_poison(health.clone(), Arc::downgrade(&engine)));
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let memory =
        pb::memory_service_server::MemoryServiceServer::new(service::MemoryApi(shared.clone()))
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX);
    let admin = pb::admin_service_server::AdminServiceServer::new(admin::AdminApi(shared))
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX);

    on_ready(Bound {
        grpc,
        metrics: metrics_addr,
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let health_on_stop = health.clone();
    tokio::spawn(async move {
        shutdown.await;
        set_health(&health_on_stop, false).await;
        let _ = stop_tx.send(());
    });
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        builder = with_tls(builder, tls)?;
    }
    let serve = builder
        .timeout(config.request_timeout)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(memory)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming(listener), async move {
            let _ = stop_rx.await;
            let _ = drain_tx.send(());
        });
    tokio::pin!(serve);
    tokio::select! {
        result = &mut serve => result?,
        _ = async {
            let _ = drain_rx.await;
            tokio::time::sleep(SHUTDOWN_DRAIN_MAX).await;
        } => tracing::warn!("in-flight calls did not finish within the drain limit; closing anyway"),
    }
    let engine = Arc::try_unwrap(engine);
    match engine {
        Ok(engine) => tokio::task::spawn_blocking(move || engine.close())
            .await
            .map_err(|e| ServerError::Config(format!("closing the engine: {e}")))??,
        // A straggling call still holds the engine: flush what is acknowledged anyway.
        Err(engine) => tokio::task::spawn_blocking(move || engine.flush())
            .await
            .map_err(|e| ServerError::Config(format!("flushing the engine: {e}")))??,
    }
    Ok(())
}

#[cfg(feature = "tls")]
fn with_tls(
    builder: tonic::transport::Server,
    tls: &TlsPem,
) -> Result<tonic::transport::Server, ServerError> {
    let identity = tonic::transport::Identity::from_pem(&tls.cert, &tls.key);
    builder
        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
        .map_err(|e| ServerError::Config(format!("TLS configuration: {e}")))
}

#[cfg(not(feature = "tls"))]
fn with_tls(
    _: tonic::transport::Server,
    _: &TlsPem,
) -> Result<tonic::transport::Server, ServerError> {
    Err(ServerError::Config(
        "this build has no TLS support (cargo feature `tls`)".into(),
    ))
}

/// Accepted connections with Nagle's algorithm off: small gRPC frames must not wait for
/// delayed ACKs (measured: 44 ms per unary call with it on).
fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn
            && let Err(err) = stream.set_nodelay(true)
        {
            tracing::warn!(%err, "could not set TCP_NODELAY");
        }
        conn
    })
}

async fn set_health(health: &tonic_health::server::HealthReporter, serving: bool) {
    use tonic_health::ServingStatus;
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for name in ["", "mneme.v1.MemoryService", "mneme.v1.AdminService"] {
        health.set_service_status(name, status).await;
    }
}

/// Reports `NOT_SERVING` once the store is poisoned (an fsync failed).
async fn watch_poison(
    health: tonic_health::server::HealthReporter,
    engine: std::sync::Weak<Engine>,
) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        if let Some(cause) = engine.poisoned() {
            tracing::error!(
                cause,
                "store is poisoned; health is NOT_SERVING until restart"
            );
            set_health(&health, false).await;
            return;
        }
    }
}
