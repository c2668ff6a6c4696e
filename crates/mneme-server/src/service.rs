//! `mneme.v1.MemoryService`: authenticate, authorise the agent, take a permit, convert, run
//! the engine call on the blocking pool (never on the reactor), convert back, record
//! metrics.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use mneme_engine::{Engine, ReadConsistency};
use parking_lot::RwLock;
use tonic::{Request, Response, Status};

use crate::admission::{Admission, Permit};
use crate::auth::{Auth, Principal};
use crate::convert::{self, RecallFields};
use crate::metrics::Metrics;
use crate::pb;
use crate::pb::memory_service_client::MemoryServiceClient;
use crate::pb::memory_service_server::MemoryService;

/// What every handler needs.
#[derive(Debug, Clone)]
pub struct Shared {
    pub(crate) engine: Arc<Engine>,
    /// The key table; replaced as a whole when the keys file is reloaded (SIGHUP).
    pub(crate) auth: Arc<RwLock<Arc<Auth>>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) admission: Arc<Admission>,
    /// Streams whose client neither reads nor sends for this long are ended.
    pub(crate) stream_idle: std::time::Duration,
    /// Where agents are served (a sharded cluster).
    pub(crate) routes: crate::route::Routes,
}

impl Shared {
    /// The current key table.
    pub(crate) fn auth(&self) -> Arc<Auth> {
        Arc::clone(&self.auth.read())
    }

    /// Runs an engine call on the blocking pool, holding `permit` until it is done (a
    /// call whose client gave up still finishes, and still counts).
    pub(crate) async fn blocking<T, F>(&self, permit: Permit, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> mneme_engine::Result<T> + Send + 'static,
    {
        let engine = Arc::clone(&self.engine);
        let out = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&engine)
        })
        .await
        .map_err(|e| Status::internal(format!("request task failed: {e}")))?;
        out.map_err(convert::status)
    }

    /// Runs an engine call inline on this async worker when `light` (a short read: the
    /// thread switches of the blocking pool would cost more than the call), else on the
    /// blocking pool; holds `permit` either way.
    pub(crate) async fn read<T, F>(&self, permit: Permit, light: bool, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> mneme_engine::Result<T> + Send + 'static,
    {
        if light {
            let _permit = permit;
            return f(&self.engine).map_err(convert::status);
        }
        self.blocking(permit, f).await
    }

    /// Runs a handler body, recording its latency and status code.
    pub(crate) async fn timed<T>(
        &self,
        rpc: &'static str,
        body: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let start = Instant::now();
        let out = body.await;
        let code = out.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics.record(rpc, code, start.elapsed());
        if let Err(status) = &out {
            tracing::debug!(rpc, code = ?status.code(), message = status.message(), "request failed");
        }
        out
    }

    /// Authenticates the request, authorises `agent_id` for it and takes its permit.
    pub(crate) fn admit<T>(
        &self,
        request: &Request<T>,
        agent_id: impl FnOnce(&T) -> &str,
    ) -> Result<Permit, Status> {
        let auth = self.auth();
        let principal = auth.authenticate(request.metadata())?;
        let agent = agent_id(request.get_ref());
        auth.authorize(&principal, agent)?;
        self.admission.admit(&tenant(&auth, &principal, agent))
    }

    /// Authenticates the request as an admin and takes its permit.
    pub(crate) fn admit_admin<T>(&self, request: &Request<T>) -> Result<Permit, Status> {
        let auth = self.auth();
        let principal = auth.authenticate(request.metadata())?;
        auth.require_admin(&principal)?;
        self.admission.admit(&tenant(&auth, &principal, ""))
    }
}

/// The request header choosing read consistency in a cluster: `linearizable` (the
/// default) or `stale` (a follower read: this node's state, if it heard from the leader
/// within the cluster's staleness bound). Single nodes ignore it.
pub const CONSISTENCY_HEADER: &str = "x-mneme-consistency";

/// The read consistency a request asks for.
pub(crate) fn consistency<T>(request: &Request<T>) -> Result<ReadConsistency, Status> {
    match request.metadata().get(CONSISTENCY_HEADER) {
        None => Ok(ReadConsistency::Linearizable),
        Some(v) => match v.to_str() {
            Ok("linearizable") => Ok(ReadConsistency::Linearizable),
            Ok("stale") => Ok(ReadConsistency::Stale),
            _ => Err(Status::invalid_argument(format!(
                "{CONSISTENCY_HEADER}: must be \"linearizable\" or \"stale\""
            ))),
        },
    }
}

/// Whose share of the permits a call uses: its API key's, or on a server without keys its
/// agent's.
pub(crate) fn tenant(auth: &Auth, principal: &Principal, agent: &str) -> String {
    match principal {
        Principal::Key(_) => format!("key:{}", auth.name(principal)),
        Principal::Open => format!("agent:{agent}"),
    }
}

/// The recall fields of a `RecallRequest` or `InjectContextRequest` (same names, two types).
macro_rules! recall_fields {
    ($r:ident) => {
        RecallFields {
            query: $r.query,
            vector: $r.vector,
            top_k: $r.top_k,
            session_id: $r.session_id,
            session_only: $r.session_only,
            memory_types: $r.memory_types,
            min_confidence: $r.min_confidence,
            metadata: $r.metadata,
            include_vectors: $r.include_vectors,
            mark_used: $r.mark_used,
        }
    };
}

/// The memory service.
#[derive(Debug, Clone)]
pub struct MemoryApi(pub(crate) Shared);

#[tonic::async_trait]
impl MemoryService for MemoryApi {
    async fn remember(
        &self,
        request: Request<pb::RememberRequest>,
    ) -> Result<Response<pb::RememberResponse>, Status> {
        let s = &self.0;
        s.timed("Remember", async {
            let permit = s.admit(&request, |r| &r.agent_id)?;
            if let Some(to) = s.routes.remote(&request, &request.get_ref().agent_id)? {
                let _permit = permit;
                return s
                    .routes
                    .forward(to, request, |c, r| async move {
                        MemoryServiceClient::new(c).remember(r).await
                    })
                    .await;
            }
            let r = request.into_inner();
            let agent = r.agent_id.clone();
            let request_id = r.request_id.clone();
            let input = convert::remember_input(r)?;
            let out = s
                .blocking(permit, move |e| e.remember_once(&agent, input, &request_id))
                .await?;
            Ok(Response::new(convert::remembered(out)))
        })
        .await
    }

    async fn remember_batch(
        &self,
        request: Request<pb::RememberBatchRequest>,
    ) -> Result<Response<pb::RememberBatchResponse>, Status> {
        let s = &self.0;
        s.timed("RememberBatch", async {
            let permit = s.admit(&request, |r| &r.agent_id)?;
            if let Some(to) = s.routes.remote(&request, &request.get_ref().agent_id)? {
                let _permit = permit;
                return s
                    .routes
                    .forward(to, request, |c, r| async move {
                        MemoryServiceClient::new(c).remember_batch(r).await
                    })
                    .await;
            }
            let r = request.into_inner();
            let mut items = Vec::with_capacity(r.items.len());
            for (i, item) in r.items.into_iter().enumerate() {
                if !item.agent_id.is_empty() && item.agent_id != r.agent_id {
                    return Err(Status::invalid_argument(format!(
                        "items[{i}].agent_id: must be empty or equal to agent_id"
                    )));
                }
                if !item.request_id.is_empty() {
                    return Err(Status::invalid_argument(format!(
                        "items[{i}].request_id: must be empty (set the batch's request_id)"
                    )));
                }
                items.push(convert::remember_input(item)?);
            }
            let agent = r.agent_id;
            let request_id = r.request_id;
            let out = s
                .blocking(permit, move |e| {
                    e.remember_batch_once(&agent, items, &request_id)
                })
                .await?;
            Ok(Response::new(pb::RememberBatchResponse {
                results: out.into_iter().map(convert::remembered).collect(),
            }))
        })
        .await
    }

    async fn recall(
        &self,
        request: Request<pb::RecallRequest>,
    ) -> Result<Response<pb::RecallResponse>, Status> {
        let s = &self.0;
        s.timed("Recall", async {
            let permit = s.admit(&request, |r| &r.agent_id)?;
            if let Some(to) = s.routes.remote(&request, &request.get_ref().agent_id)? {
                let _permit = permit;
                return s
                    .routes
                    .forward(to, request, |c, r| async move {
                        MemoryServiceClient::new(c).recall(r).await
                    })
                    .await;
            }
            let read = consistency(&request)?;
            let r = request.into_inner();
            let agent = r.agent_id;
            let query = convert::recall_query(recall_fields!(r))?;
            let light = s.engine.read_is_light(&agent, &query);
            let out = s
                .read(permit, light, move |e| {
                    e.consistent_read(&agent, read, |e| e.recall(&agent, &query))
                })
                .await?;
            Ok(Response::new(pb::RecallResponse {
                memories: out.into_iter().map(convert::recalled).collect(),
            }))
        })
        .await
    }

    async fn inject_context(
        &self,
        request: Request<pb::InjectContextRequest>,
    ) -> Result<Response<pb::InjectContextResponse>, Status> {
        let s = &self.0;
        s.timed("InjectContext", async {
            let permit = s.admit(&request, |r| &r.agent_id)?;
            if let Some(to) = s.routes.remote(&request, &request.get_ref().agent_id)? {
                let _permit = permit;
                return s
                    .routes
                    .forward(to, request, |c, r| async move {
                        MemoryServiceClient::new(c).inject_context(r).await
                    })
                    .await;
            }
            let read = consistency(&request)?;
            let r = request.into_inner();
            let agent = r.agent_id;
            let max_tokens = u64::from(r.max_tokens);
            let query = convert::recall_query(recall_fields!(r))?;
            let light = s.engine.read_is_light(&agent, &query);
            let out = s
                .read(permit, light, move |e| {
                    e.consistent_read(&agent, read, |e| {
                        e.inject_context(&agent, &query, max_tokens)
                    })
                })
                .await?;
            Ok(Response::new(pb::InjectContextResponse {
                context: out.context,
                memories: out.memories.into_iter().map(convert::recalled).collect(),
                truncated: out.truncated,
            }))
        })
        .await
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::Memory>, Status> {
        let s = &self.0;
        s.timed("Get", async {
            let permit = s.admit(&request, |r| &r.agent_id)?;
            if let Some(to) = s.routes.remote(&request, &request.get_ref().agent_id)? {
                let _permit = permit;
                return s
                    .routes
                    .forward(to, request, |c, r| async move {
                        MemoryServiceClient::new(c).get(r).await
                    })
                    .await;
            }
            let read = consistency(&request)?;
            let r = request.into_inner();
            let id = r.id.clone();
            let light = !s.engine.is_replicated();
            let found = s
                .read(permit, light, move |e| {
                    e.consistent_read(&r.agent_id, read, |e| {
                        e.get(&r.agent_id, &r.id, r.include_vector)
                    })
                })
                .await?;
            found
                .map(|m| Response::new(convert::memory(m)))
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "memory {} not found",
                        mneme_engine::limits::echo(&id)
                    ))
                })
        })
        .await
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let s = &self.0;
        s.timed("List", async {
            let permit = s.admit(&request, |r| &r.agent_id)?;
            if let Some(to) = s.routes.remote(&request, &request.get_ref().agent_id)? {
                let _permit = permit;
                return s
                    .routes
                    .forward(to, request, |c, r| async move {
                        MemoryServiceClient::new(c).list(r).await
                    })
                    .await;
            }
            let read = consistency(&request)?;
            let r = request.into_inner();
            let agent = r.agent_id.clone();
            let query = convert::list_query(r)?;
            let page = s
                .blocking(permit, move |e| {
                    e.consistent_read(&agent, read, |e| e.list(&agent, &query))
                })
                .await?;
            Ok(Response::new(pb::ListResponse {
                memories: page.memories.into_iter().map(convert::memory).collect(),
                next_page_token: page.next_page_token,
            }))
        })
        .await
    }

    async fn update(
        &self,
        request: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::Memory>, Status> {
        let s = &self.0;
        s.timed("Update", async {
            let permit = s.admit(&request, |r| &r.agent_id)?;
            if let Some(to) = s.routes.remote(&request, &request.get_ref().agent_id)? {
                let _permit = permit;
                return s
                    .routes
                    .forward(to, request, |c, r| async move {
                        MemoryServiceClient::new(c).update(r).await
                    })
                    .await;
            }
            let r = request.into_inner();
            let (agent, id) = (r.agent_id.clone(), r.id.clone());
            let input = convert::update_input(r);
            let shown = id.clone();
            let out = s
                .blocking(permit, move |e| e.update(&agent, &id, input))
                .await?;
            out.map(|m| Response::new(convert::memory(m)))
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "memory {} not found",
                        mneme_engine::limits::echo(&shown)
                    ))
                })
        })
        .await
    }

    async fn forget(
        &self,
        request: Request<pb::ForgetRequest>,
    ) -> Result<Response<pb::ForgetResponse>, Status> {
        let s = &self.0;
        s.timed("Forget", async {
            let permit = s.admit(&request, |r| &r.agent_id)?;
            if let Some(to) = s.routes.remote(&request, &request.get_ref().agent_id)? {
                let _permit = permit;
                return s
                    .routes
                    .forward(to, request, |c, r| async move {
                        MemoryServiceClient::new(c).forget(r).await
                    })
                    .await;
            }
            let r = request.into_inner();
            let forgotten = s
                .blocking(permit, move |e| e.forget(&r.agent_id, &r.ids))
                .await?;
            Ok(Response::new(pb::ForgetResponse { forgotten }))
        })
        .await
    }

    async fn mark_used(
        &self,
        request: Request<pb::MarkUsedRequest>,
    ) -> Result<Response<pb::MarkUsedResponse>, Status> {
        let s = &self.0;
        s.timed("MarkUsed", async {
            let permit = s.admit(&request, |r| &r.agent_id)?;
            if let Some(to) = s.routes.remote(&request, &request.get_ref().agent_id)? {
                let _permit = permit;
                return s
                    .routes
                    .forward(to, request, |c, r| async move {
                        MemoryServiceClient::new(c).mark_used(r).await
                    })
                    .await;
            }
            let r = request.into_inner();
            let marked = s
                .blocking(permit, move |e| e.mark_used(&r.agent_id, &r.ids))
                .await?;
            Ok(Response::new(pb::MarkUsedResponse { marked }))
        })
        .await
    }

    async fn forget_session(
        &self,
        request: Request<pb::ForgetSessionRequest>,
    ) -> Result<Response<pb::ForgetResponse>, Status> {
        let s = &self.0;
        s.timed("ForgetSession", async {
            let permit = s.admit(&request, |r| &r.agent_id)?;
            if let Some(to) = s.routes.remote(&request, &request.get_ref().agent_id)? {
                let _permit = permit;
                return s
                    .routes
                    .forward(to, request, |c, r| async move {
                        MemoryServiceClient::new(c).forget_session(r).await
                    })
                    .await;
            }
            let r = request.into_inner();
            let forgotten = s
                .blocking(permit, move |e| {
                    e.forget_session(&r.agent_id, &r.session_id)
                })
                .await?;
            Ok(Response::new(pb::ForgetResponse { forgotten }))
        })
        .await
    }

    async fn clear_all(
        &self,
        request: Request<pb::ClearAllRequest>,
    ) -> Result<Response<pb::ForgetResponse>, Status> {
        let s = &self.0;
        s.timed("ClearAll", async {
            let permit = s.admit(&request, |r| &r.agent_id)?;
            if let Some(to) = s.routes.remote(&request, &request.get_ref().agent_id)? {
                let _permit = permit;
                return s
                    .routes
                    .forward(to, request, |c, r| async move {
                        MemoryServiceClient::new(c).clear_all(r).await
                    })
                    .await;
            }
            let r = request.into_inner();
            let forgotten = s
                .blocking(permit, move |e| e.clear_all(&r.agent_id))
                .await?;
            Ok(Response::new(pb::ForgetResponse { forgotten }))
        })
        .await
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let s = &self.0;
        s.timed("Stats", async {
            let permit = s.admit(&request, |r| &r.agent_id)?;
            if let Some(to) = s.routes.remote(&request, &request.get_ref().agent_id)? {
                let _permit = permit;
                return s
                    .routes
                    .forward(to, request, |c, r| async move {
                        MemoryServiceClient::new(c).stats(r).await
                    })
                    .await;
            }
            let read = consistency(&request)?;
            let agent = request.into_inner().agent_id;
            let a = agent.clone();
            let light = !s.engine.is_replicated();
            let stats = s
                .read(permit, light, move |e| {
                    e.consistent_read(&a, read, |e| e.stats(&a))
                })
                .await?;
            Ok(Response::new(convert::stats(agent, stats)))
        })
        .await
    }
}
