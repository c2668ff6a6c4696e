//! `mneme.v1.AdminService`: streaming export and import, compaction, agent configuration.

use std::io::{self, Read, Write};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::convert;
use crate::pb;
use crate::pb::admin_service_server::AdminService;
use crate::service::Shared;

/// Bytes per export chunk.
pub const EXPORT_CHUNK_BYTES: usize = 64 * 1024;

/// The admin service.
#[derive(Debug, Clone)]
pub struct AdminApi(pub(crate) Shared);

/// A `Write` that sends fixed-size chunks down a channel (from the blocking pool).
struct ChunkWriter {
    tx: mpsc::Sender<Result<pb::ExportChunk, Status>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(EXPORT_CHUNK_BYTES));
        self.tx
            .blocking_send(Ok(pb::ExportChunk { data }))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= EXPORT_CHUNK_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// A `Read` over byte chunks arriving on a channel (read on the blocking pool).
struct ChunkReader {
    rx: mpsc::Receiver<Vec<u8>>,
    current: io::Cursor<Vec<u8>>,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.current.read(out)?;
            if n > 0 || out.is_empty() {
                return Ok(n);
            }
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = io::Cursor::new(chunk),
                None => return Ok(0),
            }
        }
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    type ExportStream = ReceiverStream<Result<pb::ExportChunk, Status>>;

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let s = &self.0;
        s.timed("Export", async {
            s.admit(&request, |r| &r.agent_id)?;
            let agent = request.into_inner().agent_id;
            let (tx, rx) = mpsc::channel(8);
            let engine = std::sync::Arc::clone(&s.engine);
            tokio::task::spawn_blocking(move || {
                let mut writer = ChunkWriter {
                    tx: tx.clone(),
                    buf: Vec::with_capacity(EXPORT_CHUNK_BYTES),
                };
                if let Err(err) = engine.export(&agent, &mut writer) {
                    // The client sees the failure as the stream's final status.
                    let _ = tx.blocking_send(Err(convert::status(err)));
                }
            });
            Ok(Response::new(ReceiverStream::new(rx)))
        })
        .await
    }

    async fn import(
        &self,
        request: Request<Streaming<pb::ImportChunk>>,
    ) -> Result<Response<pb::ImportResponse>, Status> {
        let s = &self.0;
        s.timed("Import", async {
            let principal = s.auth.authenticate(request.metadata())?;
            let mut stream = request.into_inner();
            let first = stream
                .message()
                .await?
                .ok_or_else(|| Status::invalid_argument("import: the stream is empty"))?;
            s.auth.authorize(&principal, &first.agent_id)?;
            let agent = first.agent_id.clone();
            let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
            let reader = ChunkReader {
                rx,
                current: io::Cursor::new(first.data),
            };
            let import = s.blocking(move |e| {
                let mut buffered = io::BufReader::new(reader);
                e.import(&agent, &mut buffered, &|_| {})
            });
            let forward = async move {
                while let Some(chunk) = stream.message().await? {
                    if tx.send(chunk.data).await.is_err() {
                        break;
                    }
                }
                Ok::<(), Status>(())
            };
            let (imported, forwarded) = tokio::join!(import, forward);
            forwarded?;
            Ok(Response::new(pb::ImportResponse {
                imported: imported?,
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
            let principal = s.auth.authenticate(request.metadata())?;
            s.auth.require_admin(&principal)?;
            let (before, after, expired) = s
                .blocking(|e| {
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
            Ok(Response::new(pb::CompactResponse {
                bytes_before: before,
                bytes_after: after,
                expired_removed: expired,
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
            s.admit(&request, |r| &r.agent_id)?;
            let r = request.into_inner();
            let settings = mneme_engine::AgentSettings {
                embedder: (!r.embedder.is_empty()).then_some(r.embedder),
                scoring: r.scoring.map(convert::scoring),
            };
            let agent = r.agent_id;
            let stats = s
                .blocking(move |e| {
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
