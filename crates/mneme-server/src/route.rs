//! Routing in a sharded cluster: a request for an agent whose shard this node does not hold
//! goes, with the caller's credentials, to the client port of a node that does.
//!
//! The node that took the request authenticates and authorizes it and holds its permit
//! while it waits; the node that serves it checks the credentials again (every node has the
//! same keys). A routed request carries `x-mneme-routed`, and a node never routes one on:
//! if the map moved the shard meanwhile, the caller gets a retryable `UNAVAILABLE`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Where a sharded cluster serves an agent (implemented by the cluster).
pub trait Router: Send + Sync + std::fmt::Debug {
    /// `None`: this node serves `agent`; else the client ports (`host:port`) of the nodes
    /// holding its shard.
    fn route(&self, agent: &str) -> Option<Vec<String>>;

    /// Every node of the cluster for a call that covers all shards: its client address,
    /// the shards it holds, and whether it is this node.
    fn nodes(&self) -> Vec<NodeShards>;
}

/// A node and the shards it holds (see [`Router::nodes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeShards {
    /// Its client port (`host:port`).
    pub api: String,
    /// The shards it holds replicas of.
    pub shards: Vec<u32>,
    /// This node.
    pub local: bool,
}

/// The header marking a routed request.
pub const ROUTED_HEADER: &str = "x-mneme-routed";

/// A routed call's deadline.
pub const ROUTED_TIMEOUT: Duration = Duration::from_secs(30);

/// The request headers a routed call carries on.
const CARRIED: [&str; 3] = [
    "authorization",
    "x-api-key",
    crate::service::CONSISTENCY_HEADER,
];

/// The router and a channel per peer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Routes {
    router: Option<Arc<dyn Router>>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Routes {
    pub(crate) fn new(router: Option<Arc<dyn Router>>) -> Self {
        Self {
            router,
            channels: Arc::default(),
        }
    }

    /// The nodes to send a request for `agent` to, if not this one.
    pub(crate) fn remote<T>(
        &self,
        request: &Request<T>,
        agent: &str,
    ) -> Result<Option<Vec<String>>, Status> {
        let Some(router) = &self.router else {
            return Ok(None);
        };
        match router.route(agent) {
            None => Ok(None),
            Some(_) if request.metadata().contains_key(ROUTED_HEADER) => Err(Status::unavailable(
                "this node no longer holds the agent's shard (the shard map is changing); retry",
            )),
            Some(to) if to.is_empty() => Err(Status::unavailable(
                "no node holds the agent's shard right now; retry",
            )),
            Some(to) => Ok(Some(to)),
        }
    }

    /// The cluster's nodes, for a call that covers every shard (`None`: not sharded, or
    /// this call is itself one node's part of such a call).
    pub(crate) fn fan_out<T>(&self, request: &Request<T>) -> Option<Vec<NodeShards>> {
        let router = self.router.as_ref()?;
        if request.metadata().contains_key(ROUTED_HEADER) {
            return None;
        }
        Some(router.nodes())
    }

    /// Sends `message` to node `addr` with the caller's credentials from `metadata`, as
    /// routed (one node's part of a call covering every shard, or a routed stream).
    pub(crate) async fn part<Req, Resp, F, Fut>(
        &self,
        addr: &str,
        metadata: &tonic::metadata::MetadataMap,
        message: Req,
        timeout: Duration,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        call(self.channel(addr)?, routed(message, metadata, timeout)).await
    }

    fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::internal(format!("peer address: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(addr.to_owned(), c.clone());
        Ok(c)
    }

    /// Sends `request` to the first of `to` that can be reached, with `call`, within
    /// [`ROUTED_TIMEOUT`].
    pub(crate) async fn forward<Req, Resp, F, Fut>(
        &self,
        to: Vec<String>,
        request: Request<Req>,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        F: Fn(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        self.forward_within(to, request, ROUTED_TIMEOUT, call).await
    }

    /// [`Routes::forward`] with a deadline of `timeout` (a stream's).
    pub(crate) async fn forward_within<Req, Resp, F, Fut>(
        &self,
        to: Vec<String>,
        request: Request<Req>,
        timeout: Duration,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        F: Fn(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let metadata = request.metadata().clone();
        let message = request.into_inner();
        let mut last = Status::unavailable("no node holding the agent's shard answered; retry");
        for addr in to {
            let r = routed(message.clone(), &metadata, timeout);
            match call(self.channel(&addr)?, r).await {
                // Never reached it: the next one may be up.
                Err(s) if s.code() == tonic::Code::Unavailable && unreached(&s) => last = s,
                out => return out,
            }
        }
        Err(last)
    }
}

/// `message` as a routed request: the caller's credentials (and consistency) from
/// `metadata`, the routed mark, and a deadline of `timeout`.
fn routed<T>(message: T, metadata: &tonic::metadata::MetadataMap, timeout: Duration) -> Request<T> {
    let mut r = Request::new(message);
    for key in CARRIED {
        if let Some(v) = metadata.get(key) {
            r.metadata_mut().insert(key, v.clone());
        }
    }
    r.metadata_mut().insert(
        ROUTED_HEADER,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    r.set_timeout(timeout);
    r
}

/// True for a transport failure before the request was sent.
fn unreached(s: &Status) -> bool {
    let m = s.message();
    m.contains("connect") || m.contains("transport error")
}
