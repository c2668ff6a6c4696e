//! Mneme as an MCP server: six memory tools (`remember`, `recall`, `get_context`,
//! `mark_used`, `forget`, `list_memories`) for one agent, over stdio (what desktop clients launch) or streamable
//! HTTP (for remote agents), backed by an embedded engine on a local data directory or by
//! a remote `mneme serve`.
//!
//! The agent (and optional session) is fixed by the operator (`--agent`, `--session`), not
//! chosen by the model: a model can only ever reach the memory it was given. Every failure
//! is a tool error with a clear message (the engine's limits and field names), never a
//! crash.

mod backend;
mod tools;

use std::net::SocketAddr;
use std::sync::Arc;

pub use backend::Backend;
pub use tools::MemoryTools;

/// Serves the tools on stdin/stdout until the client closes them.
pub async fn serve_stdio(tools: MemoryTools) -> anyhow::Result<()> {
    use rmcp::ServiceExt;
    let running = tools.serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}

/// Where the HTTP transport listens and who may use it.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// A bearer token clients must send (`Authorization: Bearer …`); required off loopback.
    pub token: Option<String>,
    /// Host names (besides loopback) accepted in the `Host` header.
    pub allowed_hosts: Vec<String>,
}

impl HttpConfig {
    /// Refuses what must not run: off loopback without a token.
    pub fn check(&self) -> anyhow::Result<()> {
        if !self.listen.ip().is_loopback() && self.token.is_none() {
            anyhow::bail!(
                "refusing to serve MCP over HTTP on {} without a token: set --http-token (or MNEME_MCP_TOKEN)",
                self.listen
            );
        }
        Ok(())
    }
}

/// Serves the tools over streamable HTTP at `/mcp` until `shutdown` resolves; calls
/// `on_ready` with the bound address.
pub async fn serve_http(
    make: impl Fn() -> MemoryTools + Send + Sync + 'static,
    config: HttpConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    };
    config.check()?;
    let mut http = StreamableHttpServerConfig::default();
    if !config.allowed_hosts.is_empty() {
        http.allowed_hosts
            .extend(config.allowed_hosts.iter().cloned());
    }
    let make = Arc::new(make);
    let service: StreamableHttpService<MemoryTools, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(make()), Default::default(), http);
    let token = config.token.map(Arc::new);
    let router = axum::Router::new().nest_service("/mcp", service).layer(
        axum::middleware::from_fn(move |request, next| {
            let token = token.clone();
            async move { require_token(token.as_deref().map(String::as_str), request, next).await }
        }),
    );
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    on_ready(listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn require_token(
    token: Option<&str>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(expected) = token {
        let given = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = given.is_some_and(|g| {
            use subtle::ConstantTimeEq;
            bool::from(g.as_bytes().ct_eq(expected.as_bytes()))
        });
        if !ok {
            return axum::response::Response::builder()
                .status(401)
                .body(axum::body::Body::from("missing or wrong bearer token\n"))
                .unwrap_or_default();
        }
    }
    next.run(request).await
}
