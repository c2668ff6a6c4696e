//! Node-to-node gRPC: the `mneme.cluster.v1.Raft` client (openraft's network) and server.
//!
//! Every call carries the cluster secret (`x-mneme-cluster-secret`, compared in constant
//! time), a deadline, and the raft group it is for (`x-mneme-group`; absent: group 0). Snapshots travel as their agent files in CRC-checked chunks; the
//! receiver keeps partial files under `incoming/<snapshot id>/`, so a transfer cut short
//! resumes where it stopped (the sender asks for the offsets first). File and snapshot
//! names from the wire are checked against a strict pattern before they touch a path.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{Snapshot, SnapshotMeta, Vote};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::node::{ClusterNode, Group};
use crate::pb::raft_client::RaftClient;
use crate::pb::{self, RaftMessage};
use crate::sm::{FileMeta, SnapshotFiles};
use crate::{GroupId, NodeAddr, NodeId, Proposal, TypeConfig};

/// The request header carrying the cluster secret.
pub const SECRET_HEADER: &str = "x-mneme-cluster-secret";

/// Snapshot chunks carry at most this many bytes.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// An AppendEntries carries at most about this many bytes (unless it is one entry).
pub const APPEND_BYTES_MAX: usize = 2 * 1024 * 1024;

/// The request header naming the raft group a call is for (absent: group 0).
pub const GROUP_HEADER: &str = "x-mneme-group";

/// What the shared secret must at least be.
pub const SECRET_BYTES_MIN: usize = 16;

/// A channel to a peer's cluster port, with the secret.
#[derive(Clone, Debug)]
pub struct PeerClient {
    client: RaftClient<tonic::transport::Channel>,
    secret: Arc<str>,
    group: GroupId,
}

impl PeerClient {
    /// A lazily connecting client of `addr` (outgoing connections from `local_ip`).
    pub fn new(addr: &str, secret: Arc<str>, local_ip: Option<IpAddr>) -> Result<Self, String> {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("peer address {addr:?}: {e}"))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .local_address(local_ip);
        let client = RaftClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(crate::MESSAGE_BYTES_MAX)
            .max_encoding_message_size(crate::MESSAGE_BYTES_MAX);
        Ok(Self {
            client,
            secret,
            group: 0,
        })
    }

    /// The same connection, for calls about group `group`.
    pub fn for_group(&self, group: GroupId) -> Self {
        Self {
            client: self.client.clone(),
            secret: Arc::clone(&self.secret),
            group,
        }
    }

    fn request<T>(&self, msg: T, timeout: Duration) -> Request<T> {
        let mut r = Request::new(msg);
        if let Ok(v) = MetadataValue::try_from(&*self.secret) {
            r.metadata_mut().insert(SECRET_HEADER, v);
        }
        if self.group != 0 {
            r.metadata_mut()
                .insert(GROUP_HEADER, MetadataValue::from(self.group));
        }
        r.set_timeout(timeout);
        r
    }

    /// Sends a follower's proposal to (what it believes is) the leader.
    pub async fn forward(&self, p: &Proposal, timeout: Duration) -> Result<ForwardReply, Status> {
        let reply = self
            .client
            .clone()
            .forward(self.request(
                RaftMessage {
                    payload: crate::encode(p),
                },
                timeout,
            ))
            .await?
            .into_inner();
        crate::decode(&reply.payload).map_err(Status::internal)
    }

    /// Asks (what it believes is) the group's leader to replace a replica: add `add` as a
    /// learner, wait for it to catch up, then make `voters` the voters.
    pub async fn change_replicas(
        &self,
        change: &ReplicaChange,
        timeout: Duration,
    ) -> Result<ForwardReply, Status> {
        let reply = self
            .client
            .clone()
            .change_replicas(self.request(
                RaftMessage {
                    payload: crate::encode(change),
                },
                timeout,
            ))
            .await?
            .into_inner();
        crate::decode(&reply.payload).map_err(Status::internal)
    }

    /// Asks the leader for its read index.
    pub async fn read_index(&self, timeout: Duration) -> Result<ForwardReply, Status> {
        let reply = self
            .client
            .clone()
            .read_index(self.request(
                RaftMessage {
                    payload: Vec::new(),
                },
                timeout,
            ))
            .await?
            .into_inner();
        crate::decode(&reply.payload).map_err(Status::internal)
    }
}

/// A leader's answer to a forwarded proposal or a read-index request.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ForwardReply {
    /// Committed and applied on the leader at this index (or: the read index).
    Index(u64),
    /// Not the leader; it may know who is.
    NotLeader(Option<(NodeId, NodeAddr)>),
    /// Failed.
    Failed(String),
}

/// A shard move's membership change (see [`PeerClient::change_replicas`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ReplicaChange {
    /// The node joining.
    pub add: (NodeId, NodeAddr),
    /// The voters afterwards.
    pub voters: std::collections::BTreeSet<NodeId>,
}

/// openraft's network for one group: a client per peer.
#[derive(Clone, Debug)]
pub struct Network {
    /// The secret.
    pub secret: Arc<str>,
    /// Outgoing connections' source address.
    pub local_ip: Option<IpAddr>,
    /// The group.
    pub group: GroupId,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> Self::Network {
        Peer {
            target,
            client: PeerClient::new(&node.raft, Arc::clone(&self.secret), self.local_ip)
                .map(|c| c.for_group(self.group)),
        }
    }
}

/// openraft's connection to one peer.
#[derive(Debug)]
pub struct Peer {
    target: NodeId,
    client: Result<PeerClient, String>,
}

fn unreachable<E: std::error::Error>(e: String) -> RPCError<NodeId, NodeAddr, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e)))
}

impl Peer {
    fn client<E: std::error::Error>(&self) -> Result<&PeerClient, RPCError<NodeId, NodeAddr, E>> {
        self.client.as_ref().map_err(|e| unreachable(e.clone()))
    }
}

fn status_error<E: std::error::Error>(s: &Status) -> RPCError<NodeId, NodeAddr, E> {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            unreachable(s.message().to_owned())
        }
        _ => RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
            "{:?}: {}",
            s.code(),
            s.message()
        )))),
    }
}

type RaftResult<T> = Result<T, RaftError<NodeId>>;

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        let c = self.client()?;
        let payload = crate::encode(&rpc);
        // openraft gives an append one heartbeat interval: a lagging follower must get its
        // backlog in batches that fit in one, not in one of up to `max_payload_entries`
        // fat entries that never does. Ask openraft for fewer entries.
        let n = rpc.entries.len();
        if payload.len() > APPEND_BYTES_MAX && n > 1 {
            let per_entry = payload.len().div_ceil(n);
            let fit = (APPEND_BYTES_MAX / per_entry.max(1)).clamp(1, n - 1);
            return Err(RPCError::PayloadTooLarge(
                openraft::error::PayloadTooLarge::new_entries_hint(fit as u64),
            ));
        }
        let msg = RaftMessage { payload };
        let reply = c
            .client
            .clone()
            .append_entries(c.request(msg, option.hard_ttl()))
            .await
            .map_err(|s| status_error(&s))?
            .into_inner();
        let r: RaftResult<AppendEntriesResponse<NodeId>> =
            crate::decode(&reply.payload).map_err(unreachable)?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        let c = self.client()?;
        let msg = RaftMessage {
            payload: crate::encode(&rpc),
        };
        let reply = c
            .client
            .clone()
            .vote(c.request(msg, option.hard_ttl()))
            .await
            .map_err(|s| status_error(&s))?
            .into_inner();
        let r: RaftResult<VoteResponse<NodeId>> =
            crate::decode(&reply.payload).map_err(unreachable)?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let c = self
            .client
            .as_ref()
            .map_err(|e| {
                StreamingError::Unreachable(Unreachable::new(&std::io::Error::other(e.clone())))
            })?
            .clone();
        let target = self.target;
        let send = async move {
            let id = snapshot.meta.snapshot_id.clone();
            let received = c
                .client
                .clone()
                .snapshot_offsets(c.request(
                    pb::SnapshotProbe {
                        snapshot_id: id.clone(),
                    },
                    Duration::from_secs(10),
                ))
                .await
                .map_err(|s| stream_status(&s))?
                .into_inner()
                .received;
            let (tx, rx) = tokio::sync::mpsc::channel::<pb::SnapshotChunk>(4);
            let data = *snapshot.snapshot;
            let meta = snapshot.meta.clone();
            let reader = tokio::spawn(send_files(tx, id, data, meta, vote, received));
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
            // Long enough for a large snapshot on a slow link; the stream ends the call.
            let reply = c
                .client
                .clone()
                .install_snapshot(c.request(stream, Duration::from_secs(3600)))
                .await
                .map_err(|s| stream_status(&s))?
                .into_inner();
            match reader.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(StreamingError::Network(NetworkError::new(
                        &std::io::Error::other(e),
                    )));
                }
                Err(e) => {
                    return Err(StreamingError::Network(NetworkError::new(
                        &std::io::Error::other(e.to_string()),
                    )));
                }
            }
            let r: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> = crate::decode(&reply.payload)
                .map_err(|e| {
                    StreamingError::Network(NetworkError::new(&std::io::Error::other(e)))
                })?;
            r.map_err(|e| StreamingError::RemoteError(RemoteError::new(target, e)))
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = send => r,
        }
    }
}

fn stream_status(s: &Status) -> StreamingError<TypeConfig, Fatal<NodeId>> {
    StreamingError::Unreachable(Unreachable::new(&std::io::Error::other(format!(
        "{:?}: {}",
        s.code(),
        s.message()
    ))))
}

/// The last message of a snapshot transfer.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Done {
    vote: Vote<NodeId>,
    meta: SnapshotMeta<NodeId, NodeAddr>,
    files: Vec<FileMeta>,
}

/// Streams `data`'s files from the offsets the receiver has, then the metadata.
async fn send_files(
    tx: tokio::sync::mpsc::Sender<pb::SnapshotChunk>,
    id: String,
    data: SnapshotFiles,
    meta: SnapshotMeta<NodeId, NodeAddr>,
    vote: Vote<NodeId>,
    received: HashMap<String, u64>,
) -> Result<(), String> {
    let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
    for f in &data.files {
        let have = received.get(&f.name).copied().unwrap_or(0);
        let mut offset = if have <= f.bytes { have } else { 0 };
        if offset == f.bytes && f.bytes > 0 {
            continue;
        }
        let path = data.dir.join(&f.name);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let chunk = pb::SnapshotChunk {
                snapshot_id: id.clone(),
                file: f.name.clone(),
                offset,
                data: buf[..n].to_vec(),
                crc: crc32fast::hash(&buf[..n]),
                done: Vec::new(),
            };
            if tx.send(chunk).await.is_err() {
                return Err("the receiver closed the snapshot stream".into());
            }
            offset += n as u64;
            if n == 0 || offset >= f.bytes {
                break;
            }
        }
    }
    let done = Done {
        vote,
        meta,
        files: data.files,
    };
    let last = pb::SnapshotChunk {
        snapshot_id: id,
        file: String::new(),
        offset: 0,
        data: Vec::new(),
        crc: 0,
        done: crate::encode(&done),
    };
    tx.send(last)
        .await
        .map_err(|_| "the receiver closed the snapshot stream".to_owned())
}

/// Snapshot ids are `term-index-millis`; file names `NNNNNN.agent` (or the shard map's). Nothing else from the
/// wire names a path.
fn valid_snapshot_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_digit() || b == b'-')
}

fn valid_file_name(name: &str) -> bool {
    if name == crate::meta::MAP_FILE {
        return true;
    }
    name.len() == 12 && name.ends_with(".agent") && name[..6].bytes().all(|b| b.is_ascii_digit())
}

/// The `Raft` service a node serves on its cluster port.
#[derive(Clone)]
pub struct RaftService {
    /// The node (set once it is built): its groups.
    pub node: Arc<std::sync::OnceLock<std::sync::Weak<crate::node::ClusterNode>>>,
}

impl std::fmt::Debug for RaftService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftService").finish_non_exhaustive()
    }
}

/// Checks the cluster secret of every call.
#[derive(Clone)]
pub struct SecretCheck(pub Arc<str>);

impl std::fmt::Debug for SecretCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretCheck")
    }
}

impl tonic::service::Interceptor for SecretCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let given = request
            .metadata()
            .get(SECRET_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        let ok: bool = given.ct_eq(self.0.as_bytes()).into();
        if ok {
            Ok(request)
        } else {
            Err(Status::unauthenticated("cluster secret missing or wrong"))
        }
    }
}

impl RaftService {
    /// The node and the group a call names.
    fn group<T>(&self, request: &Request<T>) -> Result<(Arc<ClusterNode>, Arc<Group>), Status> {
        let Some(node) = self.node.get().and_then(std::sync::Weak::upgrade) else {
            return Err(Status::unavailable("starting"));
        };
        let id: GroupId = match request.metadata().get(GROUP_HEADER) {
            None => 0,
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Status::invalid_argument(format!("{GROUP_HEADER}: malformed")))?,
        };
        let group = node
            .group(id)
            .ok_or_else(|| Status::unavailable(format!("group {id} does not run here")))?;
        Ok((node, group))
    }
}

fn message(payload: Vec<u8>) -> Response<RaftMessage> {
    Response::new(RaftMessage { payload })
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let (node, g) = self.group(&request)?;
        let rpc: AppendEntriesRequest<TypeConfig> =
            crate::decode(&request.into_inner().payload).map_err(Status::invalid_argument)?;
        let r = g.raft.append_entries(rpc).await;
        if r.as_ref().is_ok_and(|resp| resp.is_success()) {
            g.last_contact_ms.store(node.now_ms(), Ordering::SeqCst);
        }
        Ok(message(crate::encode(&r)))
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let (_, g) = self.group(&request)?;
        let rpc: VoteRequest<NodeId> =
            crate::decode(&request.into_inner().payload).map_err(Status::invalid_argument)?;
        let r = g.raft.vote(rpc).await;
        Ok(message(crate::encode(&r)))
    }

    async fn forward(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let (_, g) = self.group(&request)?;
        let p: Proposal =
            crate::decode(&request.into_inner().payload).map_err(Status::invalid_argument)?;
        let limit = crate::node::PROPOSE_TIMEOUT;
        let Ok(written) = tokio::time::timeout(limit, g.raft.client_write(p)).await else {
            return Ok(message(crate::encode(&ForwardReply::Failed(
                "not committed in time (no majority reachable); it may or may not be stored — retry with the same request_id".into(),
            ))));
        };
        let reply = match written {
            Ok(r) => ForwardReply::Index(r.log_id.index),
            Err(RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(f))) => {
                ForwardReply::NotLeader(f.leader_id.zip(f.leader_node))
            }
            Err(e) => ForwardReply::Failed(e.to_string()),
        };
        Ok(message(crate::encode(&reply)))
    }

    async fn read_index(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let (node, g) = self.group(&request)?;
        // Only a leader answers with an index: a follower asked this would ask its leader.
        let reply = if g.is_leader(node.id()) {
            match node.read_index_batched(&g).await {
                Ok(Some(i)) => ForwardReply::Index(i),
                Ok(None) => ForwardReply::NotLeader(node.leader_of(&g)),
                Err(e) => ForwardReply::Failed(e),
            }
        } else {
            ForwardReply::NotLeader(node.leader_of(&g))
        };
        Ok(message(crate::encode(&reply)))
    }

    async fn change_replicas(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let (node, g) = self.group(&request)?;
        let change: ReplicaChange =
            crate::decode(&request.into_inner().payload).map_err(Status::invalid_argument)?;
        if !g.is_leader(node.id()) {
            return Ok(message(crate::encode(&ForwardReply::NotLeader(
                node.leader_of(&g),
            ))));
        }
        let reply = match node.change_replicas(&g, change).await {
            Ok(()) => ForwardReply::Index(g.applied_index()),
            Err(e) => ForwardReply::Failed(e.to_string()),
        };
        Ok(message(crate::encode(&reply)))
    }

    async fn snapshot_offsets(
        &self,
        request: Request<pb::SnapshotProbe>,
    ) -> Result<Response<pb::SnapshotOffsetsReply>, Status> {
        let (_, g) = self.group(&request)?;
        let id = request.into_inner().snapshot_id;
        if !valid_snapshot_id(&id) {
            return Err(Status::invalid_argument("snapshot_id: malformed"));
        }
        // Partial transfers of other snapshots are stale now.
        if let Ok(entries) = std::fs::read_dir(&g.incoming) {
            for e in entries.flatten() {
                if e.file_name().to_str() != Some(id.as_str()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let mut received = HashMap::new();
        if let Ok(entries) = std::fs::read_dir(g.incoming.join(&id)) {
            for e in entries.flatten() {
                if let (Some(name), Ok(m)) =
                    (e.file_name().to_str().map(str::to_owned), e.metadata())
                    && valid_file_name(&name)
                {
                    received.insert(name, m.len());
                }
            }
        }
        Ok(Response::new(pb::SnapshotOffsetsReply { received }))
    }

    async fn install_snapshot(
        &self,
        request: Request<tonic::Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let (_, g) = self.group(&request)?;
        let mut stream = request.into_inner();
        let mut open: Option<(String, tokio::fs::File, u64)> = None;
        let mut dir: Option<PathBuf> = None;
        while let Some(chunk) = stream.message().await? {
            if !valid_snapshot_id(&chunk.snapshot_id) {
                return Err(Status::invalid_argument("snapshot_id: malformed"));
            }
            let d = g.incoming.join(&chunk.snapshot_id);
            if dir.as_ref().is_some_and(|x| *x != d) {
                return Err(Status::invalid_argument(
                    "snapshot_id changed within a transfer",
                ));
            }
            if dir.is_none() {
                tokio::fs::create_dir_all(&d)
                    .await
                    .map_err(|e| Status::internal(format!("creating {}: {e}", d.display())))?;
                dir = Some(d.clone());
            }
            if !chunk.done.is_empty() {
                if let Some((_, f, _)) = open.take() {
                    f.sync_all()
                        .await
                        .map_err(|e| Status::internal(e.to_string()))?;
                }
                let done: Done = crate::decode(&chunk.done).map_err(Status::invalid_argument)?;
                let r = finish(&g, &d, done).await?;
                return Ok(message(crate::encode(&r)));
            }
            if !valid_file_name(&chunk.file) {
                return Err(Status::invalid_argument("file: malformed"));
            }
            if crc32fast::hash(&chunk.data) != chunk.crc {
                return Err(Status::data_loss(format!(
                    "snapshot chunk {} at {}: checksum mismatch",
                    chunk.file, chunk.offset
                )));
            }
            let switch = open.as_ref().is_none_or(|(name, _, _)| *name != chunk.file);
            if switch {
                if let Some((_, f, _)) = open.take() {
                    f.sync_all()
                        .await
                        .map_err(|e| Status::internal(e.to_string()))?;
                }
                let path = d.join(&chunk.file);
                let mut f = tokio::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .await
                    .map_err(|e| Status::internal(format!("{}: {e}", path.display())))?;
                let len = f
                    .metadata()
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
                    .len();
                if chunk.offset > len {
                    return Err(Status::failed_precondition(format!(
                        "{}: chunk at {} but {} bytes held",
                        chunk.file, chunk.offset, len
                    )));
                }
                f.set_len(chunk.offset)
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?;
                f.seek(std::io::SeekFrom::Start(chunk.offset))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?;
                open = Some((chunk.file.clone(), f, chunk.offset));
            }
            let Some((_, f, at)) = open.as_mut() else {
                return Err(Status::internal("no open file"));
            };
            if chunk.offset != *at {
                return Err(Status::invalid_argument("snapshot chunks out of order"));
            }
            f.write_all(&chunk.data)
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            *at += chunk.data.len() as u64;
        }
        Err(Status::aborted(
            "snapshot stream ended before its last message",
        ))
    }
}

/// Checks every file of a received snapshot whole, then installs it in group `g`.
async fn finish(
    g: &Group,
    dir: &Path,
    done: Done,
) -> Result<Result<SnapshotResponse<NodeId>, Fatal<NodeId>>, Status> {
    {
        if done.meta.snapshot_id.as_str() != dir.file_name().and_then(|n| n.to_str()).unwrap_or("")
        {
            return Err(Status::invalid_argument(
                "snapshot id differs from the chunks'",
            ));
        }
        for f in &done.files {
            if !valid_file_name(&f.name) {
                return Err(Status::invalid_argument("file: malformed"));
            }
            let path = dir.join(&f.name);
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| Status::failed_precondition(format!("{}: {e}", path.display())))?;
            if bytes.len() as u64 != f.bytes || crc32fast::hash(&bytes) != f.crc {
                // Start this file over next time.
                let _ = tokio::fs::remove_file(&path).await;
                return Err(Status::data_loss(format!(
                    "snapshot file {} ({}): length or checksum differs",
                    f.name, f.agent
                )));
            }
        }
        let snapshot = Snapshot {
            meta: done.meta,
            snapshot: Box::new(SnapshotFiles {
                dir: dir.to_path_buf(),
                files: done.files,
            }),
        };
        Ok(g.raft.install_full_snapshot(done.vote, snapshot).await)
    }
}
