//! `mneme.v1.AdminService`: streaming export and import, compaction, agent configuration.
//!
//! Streams hold their permit for their whole life and never park a thread on a slow
//! client: an export reads one page at a time on the blocking pool and then waits,
//! asynchronously, for the client to take it; an import reads chunks asynchronously and
//! hands the blocking pool a batch of lines at a time. A client that stops reading or
//! sending for the idle timeout ([`crate::STREAM_IDLE_TIMEOUT`] by default), or runs past
//! its deadline, loses the stream.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use mneme_engine::{EXPORT_LINE_BYTES_MAX, Engine, ExportCursor, IMPORT_BATCH, Importer};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use std::time::Duration;

use crate::admission::{STREAM_DEADLINE_DEFAULT, requested_deadline};
use crate::convert;
use crate::pb;
use crate::pb::admin_service_server::AdminService;
use crate::service::{Shared, tenant};

/// Bytes per export chunk.
pub const EXPORT_CHUNK_BYTES: usize = 64 * 1024;

/// The admin service.
#[derive(Debug, Clone)]
pub struct AdminApi(pub(crate) Shared);

/// The export stream: chunks from the producer task, then the end — or, if the producer
/// stopped without finishing (the client stalled past the idle timeout or the deadline),
/// an error instead of a silently truncated export.
pub struct ExportStream {
    rx: mpsc::Receiver<Result<pb::ExportChunk, Status>>,
    finished: Arc<AtomicBool>,
    ended: bool,
}

impl Stream for ExportStream {
    type Item = Result<pb::ExportChunk, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(None) => {
                self.ended = true;
                if self.finished.load(Ordering::SeqCst) {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(Status::deadline_exceeded(
                        "the export stopped: the client did not read within the idle timeout or the deadline passed",
                    ))))
                }
            }
            other => other,
        }
    }
}

/// Sends `item` within both the idle timeout and the deadline; false when the client is
/// gone or too slow.
async fn send<T>(tx: &mpsc::Sender<T>, item: T, idle: Duration, deadline: Instant) -> bool {
    let idle = Instant::now() + idle;
    matches!(
        timeout_at(idle.min(deadline), tx.send(item)).await,
        Ok(Ok(()))
    )
}

/// Maps the transport's "message too large" to the contract's `RESOURCE_EXHAUSTED`.
fn limit_status(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange {
        Status::resource_exhausted(status.message().to_owned())
    } else {
        status
    }
}

/// The next import chunk, within the idle timeout and the deadline.
async fn next_chunk(
    stream: &mut Streaming<pb::ImportChunk>,
    idle: Duration,
    deadline: Instant,
) -> Result<Option<pb::ImportChunk>, Status> {
    let idle = Instant::now() + idle;
    match timeout_at(idle.min(deadline), stream.message()).await {
        Ok(message) => message.map_err(limit_status),
        Err(_) => Err(Status::deadline_exceeded(
            "import: the client sent nothing within the idle timeout, or the deadline passed",
        )),
    }
}

/// Runs `f(importer)` for a batch on the blocking pool, and gives the importer back.
async fn import_batch(
    engine: &Arc<Engine>,
    mut importer: Importer,
    lines: Vec<String>,
) -> Result<Importer, Status> {
    let engine = Arc::clone(engine);
    let (importer, result) = tokio::task::spawn_blocking(move || {
        let result = (|| {
            for line in &lines {
                importer.push_line(line)?;
            }
            importer.commit(&engine)
        })();
        (importer, result)
    })
    .await
    .map_err(|e| Status::internal(format!("import task failed: {e}")))?;
    result.map_err(convert::status)?;
    Ok(importer)
}

/// An Import for an agent another node holds: the caller's chunks go on to it, within
/// this call's idle timeout and deadline. A caller's stream that fails mid-way cancels the
/// relayed call (the holder sees an aborted stream, never a short one that looks whole).
async fn relay_import(
    s: &Shared,
    to: Vec<String>,
    caller: &Request<()>,
    first: pb::ImportChunk,
    mut stream: Streaming<pb::ImportChunk>,
    deadline: Instant,
) -> Result<Response<pb::ImportResponse>, Status> {
    let Some(addr) = to.first() else {
        return Err(Status::unavailable(
            "no node holds the agent's shard right now; retry",
        ));
    };
    let (tx, rx) = mpsc::channel::<pb::ImportChunk>(2);
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<Status>();
    let idle = s.stream_idle;
    let reader = tokio::spawn(async move {
        if !send(&tx, first, idle, deadline).await {
            return;
        }
        let failure = loop {
            match next_chunk(&mut stream, idle, deadline).await {
                Ok(Some(chunk)) => {
                    if !send(&tx, chunk, idle, deadline).await {
                        return;
                    }
                }
                Ok(None) => return,
                Err(status) => break status,
            }
        };
        let _ = failed_tx.send(failure);
        // Keep `tx` open until the relayed call is cancelled (aborting this task).
        std::future::pending::<()>().await;
        drop(tx);
    });
    let left = deadline.saturating_duration_since(Instant::now());
    let call = s.routes.part(
        addr,
        caller.metadata(),
        tokio_stream::wrappers::ReceiverStream::new(rx),
        left,
        |c, r| async move {
            pb::admin_service_client::AdminServiceClient::new(c)
                .import(r)
                .await
        },
    );
    let out = tokio::select! {
        out = call => out,
        Ok(status) = failed_rx => Err(status),
    };
    reader.abort();
    out
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    type ExportStream = ExportStream;

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let s = &self.0;
        s.timed("Export", async {
            let permit = s.admit(&request, |r| &r.agent_id)?;
            let wanted = requested_deadline(request.metadata(), STREAM_DEADLINE_DEFAULT);
            let deadline = Instant::now() + wanted;
            if let Some(to) = s.routes.remote(&request, &request.get_ref().agent_id)? {
                // Relay the holder's stream, under this call's permit, idle timeout and
                // deadline.
                let mut remote = s
                    .routes
                    .forward_within(to, request, wanted, |c, r| async move {
                        pb::admin_service_client::AdminServiceClient::new(c)
                            .export(r)
                            .await
                    })
                    .await?
                    .into_inner();
                let (tx, rx) = mpsc::channel(2);
                let finished = Arc::new(AtomicBool::new(false));
                let done = Arc::clone(&finished);
                let idle = s.stream_idle;
                tokio::spawn(async move {
                    let _permit = permit;
                    loop {
                        let next = timeout_at(deadline, remote.message()).await;
                        let item = match next {
                            Ok(Ok(Some(chunk))) => Ok(chunk),
                            Ok(Ok(None)) => {
                                done.store(true, Ordering::SeqCst);
                                return;
                            }
                            Ok(Err(status)) => Err(status),
                            Err(_) => return,
                        };
                        let failed = item.is_err();
                        if failed {
                            done.store(true, Ordering::SeqCst);
                        }
                        if !send(&tx, item, idle, deadline).await || failed {
                            return;
                        }
                    }
                });
                return Ok(Response::new(ExportStream {
                    rx,
                    finished,
                    ended: false,
                }));
            }
            let agent = request.into_inner().agent_id;
            // The first page is read before answering, so a bad agent is a status, not an
            // error in the middle of a stream.
            let engine = Arc::clone(&s.engine);
            let a = agent.clone();
            let first =
                tokio::task::spawn_blocking(move || engine.export_page(&a, &ExportCursor::Start))
                    .await
                    .map_err(|e| Status::internal(format!("export task failed: {e}")))?
                    .map_err(convert::status)?;
            let (tx, rx) = mpsc::channel(2);
            let finished = Arc::new(AtomicBool::new(false));
            let done = Arc::clone(&finished);
            let engine = Arc::clone(&s.engine);
            let idle = s.stream_idle;
            tokio::spawn(async move {
                let _permit = permit;
                let mut page = first;
                loop {
                    let (bytes, next) = page;
                    for chunk in bytes.chunks(EXPORT_CHUNK_BYTES) {
                        let item = Ok(pb::ExportChunk {
                            data: chunk.to_vec(),
                        });
                        if !send(&tx, item, idle, deadline).await {
                            return;
                        }
                    }
                    let Some(cursor) = next else {
                        done.store(true, Ordering::SeqCst);
                        return;
                    };
                    if Instant::now() >= deadline {
                        return;
                    }
                    let engine = Arc::clone(&engine);
                    let a = agent.clone();
                    let read =
                        tokio::task::spawn_blocking(move || engine.export_page(&a, &cursor)).await;
                    page = match read {
                        Ok(Ok(page)) => page,
                        Ok(Err(err)) => {
                            done.store(true, Ordering::SeqCst);
                            let _ = send(&tx, Err(convert::status(err)), idle, deadline).await;
                            return;
                        }
                        Err(err) => {
                            done.store(true, Ordering::SeqCst);
                            let status = Status::internal(format!("export task failed: {err}"));
                            let _ = send(&tx, Err(status), idle, deadline).await;
                            return;
                        }
                    };
                }
            });
            Ok(Response::new(ExportStream {
                rx,
                finished,
                ended: false,
            }))
        })
        .await
    }

    async fn import(
        &self,
        request: Request<Streaming<pb::ImportChunk>>,
    ) -> Result<Response<pb::ImportResponse>, Status> {
        let s = &self.0;
        s.timed("Import", async {
            let auth = s.auth();
            let principal = auth.authenticate(request.metadata())?;
            let deadline =
                Instant::now() + requested_deadline(request.metadata(), STREAM_DEADLINE_DEFAULT);
            let (metadata, _, mut stream) = request.into_parts();
            let mut metadata_only = Request::new(());
            *metadata_only.metadata_mut() = metadata;
            let first = next_chunk(&mut stream, s.stream_idle, deadline)
                .await?
                .ok_or_else(|| Status::invalid_argument("import: the stream is empty"))?;
            auth.authorize(&principal, &first.agent_id)?;
            let _permit = s
                .admission
                .admit(&tenant(&auth, &principal, &first.agent_id))?;
            if let Some(to) = s.routes.remote(&metadata_only, &first.agent_id)? {
                return relay_import(s, to, &metadata_only, first, stream, deadline).await;
            }
            let agent = first.agent_id;
            let mut buf = first.data;
            let mut importer: Option<Importer> = None;
            let mut lines: Vec<String> = Vec::new();
            let mut line_no = 0usize;
            let mut at_end = false;
            loop {
                // Split off every complete line; the partial one stays in `buf`.
                let mut start = 0;
                while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
                    let raw = &buf[start..start + pos];
                    start += pos + 1;
                    line_no += 1;
                    let line = String::from_utf8(raw.to_vec()).map_err(|_| {
                        Status::invalid_argument(format!("import: line {line_no} is not UTF-8"))
                    })?;
                    if importer.is_none() {
                        if line.trim().is_empty() {
                            continue;
                        }
                        importer = Some(
                            s.engine
                                .import_start(&agent, &line)
                                .map_err(convert::status)?,
                        );
                    } else {
                        lines.push(line);
                    }
                }
                buf.drain(..start);
                if buf.len() > EXPORT_LINE_BYTES_MAX {
                    return Err(Status::invalid_argument(format!(
                        "import: line {} is longer than {EXPORT_LINE_BYTES_MAX} bytes",
                        line_no + 1
                    )));
                }
                if at_end && !buf.is_empty() {
                    // The last line had no newline.
                    let line = String::from_utf8(std::mem::take(&mut buf)).map_err(|_| {
                        Status::invalid_argument(format!(
                            "import: line {} is not UTF-8",
                            line_no + 1
                        ))
                    })?;
                    match &importer {
                        None => {
                            importer = Some(
                                s.engine
                                    .import_start(&agent, &line)
                                    .map_err(convert::status)?,
                            )
                        }
                        Some(_) => lines.push(line),
                    }
                }
                if let Some(imp) = importer.take() {
                    if lines.len() >= IMPORT_BATCH || at_end {
                        importer =
                            Some(import_batch(&s.engine, imp, std::mem::take(&mut lines)).await?);
                    } else {
                        importer = Some(imp);
                    }
                }
                if at_end {
                    break;
                }
                match next_chunk(&mut stream, s.stream_idle, deadline).await? {
                    Some(chunk) => buf.extend_from_slice(&chunk.data),
                    None => at_end = true,
                }
            }
            let Some(importer) = importer else {
                return Err(Status::invalid_argument("import: is empty"));
            };
            Ok(Response::new(pb::ImportResponse {
                imported: importer.imported(),
            }))
        })
        .await
    }

    async fn compact(
        &self,
        request: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactResponse>, Status> {
        let s = &self.0;
        s.timed("Compact", async {
            let permit = s.admit_admin(&request)?;
            let fan_out = s.routes.fan_out(&request);
            let metadata = request.metadata().clone();
            let (before, after, expired) = s
                .blocking(permit, |e| {
                    let size = |e: &mneme_engine::Engine| {
                        let st = e.store_stats();
                        st.wal_bytes + st.snapshot_bytes
                    };
                    let before = size(e);
                    let expired = e.sweep_expired()?;
                    e.compact()?;
                    Ok((before, size(e), expired))
                })
                .await?;
            let Some(nodes) = fan_out else {
                return Ok(Response::new(pb::CompactResponse {
                    bytes_before: before,
                    bytes_after: after,
                    expired_removed: expired,
                    parts: Vec::new(),
                }));
            };
            // A sharded cluster: every other node compacts too, and says so.
            let mut parts = Vec::with_capacity(nodes.len());
            for n in nodes {
                let mut part = pb::CompactPart {
                    node: n.api.clone(),
                    shards: n.shards.clone(),
                    ..Default::default()
                };
                if n.local {
                    part.answered = true;
                    part.bytes_before = before;
                    part.bytes_after = after;
                    part.expired_removed = expired;
                } else {
                    let answer = s
                        .routes
                        .part(
                            &n.api,
                            &metadata,
                            pb::CompactRequest {},
                            crate::route::ROUTED_TIMEOUT,
                            |c, r| async move {
                                pb::admin_service_client::AdminServiceClient::new(c)
                                    .compact(r)
                                    .await
                            },
                        )
                        .await;
                    match answer {
                        Ok(r) => {
                            let r = r.into_inner();
                            part.answered = true;
                            part.bytes_before = r.bytes_before;
                            part.bytes_after = r.bytes_after;
                            part.expired_removed = r.expired_removed;
                        }
                        Err(e) => part.error = mneme_engine::limits::echo(e.message()),
                    }
                }
                parts.push(part);
            }
            let answered = parts.iter().filter(|p| p.answered);
            Ok(Response::new(pb::CompactResponse {
                bytes_before: answered.clone().map(|p| p.bytes_before).sum(),
                bytes_after: answered.clone().map(|p| p.bytes_after).sum(),
                expired_removed: answered.map(|p| p.expired_removed).sum(),
                parts,
            }))
        })
        .await
    }

    async fn configure_agent(
        &self,
        request: Request<pb::ConfigureAgentRequest>,
    ) -> Result<Response<pb::ConfigureAgentResponse>, Status> {
        let s = &self.0;
        s.timed("ConfigureAgent", async {
            let permit = s.admit(&request, |r| &r.agent_id)?;
            if let Some(to) = s.routes.remote(&request, &request.get_ref().agent_id)? {
                let _permit = permit;
                return s
                    .routes
                    .forward(to, request, |c, r| async move {
                        pb::admin_service_client::AdminServiceClient::new(c)
                            .configure_agent(r)
                            .await
                    })
                    .await;
            }
            let r = request.into_inner();
            let settings = mneme_engine::AgentSettings {
                embedder: (!r.embedder.is_empty()).then_some(r.embedder),
                lexical_weight_from_family: r
                    .scoring
                    .as_ref()
                    .is_some_and(|p| p.lexical_weight.is_none()),
                scoring: r.scoring.map(convert::scoring),
            };
            let agent = r.agent_id;
            let stats = s
                .blocking(permit, move |e| {
                    e.configure_agent(&agent, settings, &|done, total| {
                        tracing::info!(agent, done, total, "re-embedding");
                    })?;
                    e.stats(&agent)
                })
                .await?;
            Ok(Response::new(pb::ConfigureAgentResponse {
                embedder: stats.embedder,
                dimensions: stats.dimensions,
            }))
        })
        .await
    }
}
