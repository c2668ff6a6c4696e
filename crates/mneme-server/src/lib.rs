//! Mneme's gRPC server: `mneme.v1.MemoryService` and `mneme.v1.AdminService` over an
//! [`mneme_engine::Engine`], with API keys, limits, `grpc.health.v1.Health`, server
//! reflection (v1 and v1alpha, so `grpcurl list` works without a proto file), Prometheus
//! metrics and graceful shutdown.
//!
//! Only this crate (and the `mneme` binary) knows tokio, tonic, prost or the wire format.

mod admin;
pub mod admission;
pub mod auth;
mod codec;
pub mod convert;
mod health;
mod metrics;
pub mod route;
mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mneme_engine::Engine;
use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

pub use admission::{
    CONCURRENT_REQUESTS_PER_TENANT_MAX, STREAM_DEADLINE_DEFAULT, STREAM_IDLE_TIMEOUT,
};
pub use auth::{Auth, hash_key};
pub use codec::StrictCodec;
pub use health::HealthReporter;
pub use metrics::Metrics;

/// Generated protobuf types, service traits and clients of `mneme.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic, reason = "generated code")]
pub mod pb {
    tonic::include_proto!("mneme.v1");

    /// The encoded descriptors of `mneme.v1` and `grpc.health.v1`, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/mneme_descriptor.bin"));
}

/// Generated types, service trait and client of `grpc.health.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic, reason = "generated code")]
pub mod hpb {
    tonic::include_proto!("grpc.health.v1");
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
    /// The keys file `auth` came from; reloaded on SIGHUP (an invalid file is refused and
    /// the old keys stay).
    pub keys_file: Option<PathBuf>,
    /// Allow listening beyond loopback without keys.
    pub insecure: bool,
    /// Per-request deadline.
    pub request_timeout: Duration,
    /// A stream whose client neither reads nor sends for this long is ended.
    pub stream_idle_timeout: Duration,
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
            keys_file: None,
            insecure: false,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            stream_idle_timeout: STREAM_IDLE_TIMEOUT,
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

fn refuse_public_without_keys(
    what: &str,
    addr: SocketAddr,
    config: &ServerConfig,
) -> Result<(), ServerError> {
    if !config.auth.enabled() && !addr.ip().is_loopback() && !config.insecure {
        return Err(ServerError::Config(format!(
            "refusing to serve {what} on {addr} without API keys: pass --keys-file, or --insecure to allow it"
        )));
    }
    Ok(())
}

/// Mneme's services never answer `OUT_OF_RANGE`; the transport does, for a message over
/// [`MESSAGE_BYTES_MAX`]. The contract says `RESOURCE_EXHAUSTED`, so this layer rewrites
/// it on the (trailers-only) responses such refusals are.
fn out_of_range_is_resource_exhausted(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    if headers.get("grpc-status").is_some_and(|v| v == "11") {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

/// Serves until `shutdown` resolves, then: health `NOT_SERVING`, stop accepting, drain
/// in-flight calls (up to [`SHUTDOWN_DRAIN_MAX`]), flush, checkpoint and fsync the engine.
/// Prometheus text a host adds to `/metrics` (a cluster's status).
#[derive(Clone)]
pub struct ExtraMetrics(pub Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for ExtraMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtraMetrics")
    }
}

/// Checks admin keys and takes permits for services a host adds to the client port (the
/// cluster's admin service), with the server's own key table (reloaded on SIGHUP).
#[derive(Debug, Clone)]
pub struct AdminGate {
    auth: Arc<RwLock<Arc<Auth>>>,
    admission: Arc<admission::Admission>,
}

impl AdminGate {
    /// Authenticates `metadata` as an admin key and takes a permit for the call.
    pub fn admit(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<admission::Permit, tonic::Status> {
        let auth = Arc::clone(&self.auth.read());
        let principal = auth.authenticate(metadata)?;
        auth.require_admin(&principal)?;
        self.admission
            .admit(&service::tenant(&auth, &principal, ""))
    }
}

/// What a host (the `mneme` binary, clustered) adds to the server.
#[derive(Default)]
pub struct Extras {
    /// More gRPC services on the client port, given the admin gate.
    pub routes: Option<Box<dyn FnOnce(AdminGate) -> tonic::service::Routes + Send>>,
    /// More `/metrics` series.
    pub metrics: Option<ExtraMetrics>,
    /// Where agents are served (a sharded cluster).
    pub router: Option<Arc<dyn route::Router>>,
}

impl std::fmt::Debug for Extras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extras")
            .field("routes", &self.routes.is_some())
            .field("metrics", &self.metrics.is_some())
            .field("router", &self.router.is_some())
            .finish()
    }
}

pub async fn run(
    engine: Engine,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(Bound),
) -> Result<(), ServerError> {
    run_with(
        Arc::new(engine),
        config,
        Extras::default(),
        shutdown,
        on_ready,
    )
    .await
}

/// [`run`] over a shared engine, with a host's [`Extras`]. On the way out the engine is
/// closed if this holds the last reference, flushed otherwise.
pub async fn run_with(
    engine: Arc<Engine>,
    config: ServerConfig,
    extras: Extras,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(Bound),
) -> Result<(), ServerError> {
    refuse_public_without_keys("gRPC", config.listen, &config)?;
    if let Some(addr) = config.metrics_listen {
        refuse_public_without_keys("metrics", addr, &config)?;
    }
    if config.auth.enabled() && config.tls.is_none() && !config.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %config.listen,
            "API keys will travel in plaintext: serve TLS (--tls-cert/--tls-key) on a non-loopback address"
        );
    }
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
    let mut metrics = Metrics::default();
    metrics.extra = extras.metrics;
    let metrics = Arc::new(metrics);
    let auth = Arc::new(RwLock::new(Arc::new(config.auth.clone())));
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
                Arc::clone(&auth),
            ));
            bound
        }
        None => None,
    };
    if let Some(path) = config.keys_file.clone() {
        tokio::spawn(reload_keys_on_sighup(path, Arc::clone(&auth)));
    }
    let admission = admission::Admission::new(
        config.concurrency.max(1),
        CONCURRENT_REQUESTS_PER_TENANT_MAX.min(config.concurrency.max(1)),
    );
    let gate = AdminGate {
        auth: Arc::clone(&auth),
        admission: Arc::clone(&admission),
    };
    let shared = service::Shared {
        engine: Arc::clone(&engine),
        auth,
        metrics,
        admission: Arc::clone(&admission),
        stream_idle: config.stream_idle_timeout,
        routes: route::Routes::new(extras.router.clone()),
    };
    let (health, health_api) = health::health(admission);
    tokio::spawn(watch_poison(health.clone(), Arc::downgrade(&engine)));
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
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
    let health_service =
        hpb::health_server::HealthServer::new(health_api).max_decoding_message_size(64 * 1024);

    on_ready(Bound {
        grpc,
        metrics: metrics_addr,
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let health_on_stop = health.clone();
    tokio::spawn(async move {
        shutdown.await;
        health_on_stop.set_serving(false);
        let _ = stop_tx.send(());
    });
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        builder = with_tls(builder, tls)?;
    }
    let serve = builder
        .timeout(config.request_timeout)
        .layer(tower::util::MapResponseLayer::new(
            out_of_range_is_resource_exhausted,
        ))
        .add_routes(
            extras
                .routes
                .map_or_else(tonic::service::Routes::default, |routes| routes(gate)),
        )
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

/// Reloads the keys file on every SIGHUP, so a key can be revoked without a restart. A file
/// that does not load is refused (logged) and the keys in force stay.
async fn reload_keys_on_sighup(path: PathBuf, auth: Arc<RwLock<Arc<Auth>>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: keys are not reloadable");
            return;
        };
        while hup.recv().await.is_some() {
            match Auth::from_file(&path) {
                Ok(keys) => {
                    let n = keys.len();
                    *auth.write() = Arc::new(keys);
                    tracing::info!(keys = n, path = %path.display(), "API keys reloaded");
                }
                Err(err) => {
                    tracing::error!(%err, "keys file refused on reload; the previous keys stay in force");
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, auth);
    }
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

/// Reports `NOT_SERVING` once the store is poisoned (an fsync failed).
async fn watch_poison(health: HealthReporter, engine: std::sync::Weak<Engine>) {
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
            health.set_serving(false);
            return;
        }
    }
}
