//! `mneme`: run the server (`mneme serve`), talk to one from a terminal (`remember`,
//! `recall`, `stats`, `export`, `import`), and hash API keys (`keys hash`).

mod cluster;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use mneme_engine::embed::{Embedder, Embedders, HashEmbedder, StaticEmbedder};
use mneme_engine::{Durability, Engine, EngineConfig, StorageOptions};
use mneme_server::pb;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
#[command(name = "mneme", version, about = "Vector memory for AI agents")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gRPC server.
    Serve(Box<ServeArgs>),
    /// Store a memory.
    Remember(RememberArgs),
    /// Recall the most relevant memories.
    Recall(RecallArgs),
    /// Show an agent's counts and sizes.
    Stats(AgentArgs),
    /// Write an agent's memories as JSON Lines.
    Export(ExportArgs),
    /// Load an export into an agent.
    Import(ImportArgs),
    /// Serve an agent's memory to MCP clients (Claude Desktop, Cursor, agent frameworks),
    /// over stdio or streamable HTTP.
    #[cfg(feature = "mcp")]
    Mcp(McpArgs),
    /// Cluster administration: init, status, add-node, remove-node.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// API key helpers.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

/// How `mneme mcp` serves, and whose memory.
#[cfg(feature = "mcp")]
#[derive(Debug, Args)]
struct McpArgs {
    /// The agent whose memory the tools use (the model cannot choose another).
    #[arg(long, env = "MNEME_AGENT")]
    agent: String,
    /// Scope every tool to this session (it also sees agent-wide memories).
    #[arg(long, env = "MNEME_SESSION", default_value = "")]
    session: String,
    /// Use a running Mneme server (e.g. http://127.0.0.1:50051) instead of a local data
    /// directory.
    #[arg(long, env = "MNEME_SERVER", conflicts_with = "data_dir")]
    server: Option<String>,
    /// API key for --server.
    #[arg(long, env = "MNEME_API_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Local data directory (embedded engine, no server needed) [default: ./mneme-data].
    #[arg(long, env = "MNEME_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Embedder for the local data directory [default: static].
    #[arg(long, env = "MNEME_EMBEDDER", value_enum)]
    embedder: Option<EmbedderChoice>,
    /// Model directory for --embedder static or minilm.
    #[arg(long, env = "MNEME_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// stdio (what desktop clients launch) or http (streamable HTTP at /mcp).
    #[arg(long, value_enum, default_value = "stdio")]
    transport: McpTransport,
    /// Address for --transport http.
    #[arg(long, env = "MNEME_MCP_LISTEN", default_value = "127.0.0.1:8808")]
    listen: SocketAddr,
    /// Bearer token HTTP clients must send; required off loopback.
    #[arg(long, env = "MNEME_MCP_TOKEN", hide_env_values = true)]
    http_token: Option<String>,
}

#[cfg(feature = "mcp")]
#[derive(Debug, Clone, Copy, ValueEnum)]
enum McpTransport {
    /// JSON-RPC on stdin/stdout.
    Stdio,
    /// Streamable HTTP.
    Http,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Print the SHA-256 of a key, as the keys file stores it.
    Hash {
        /// The key.
        key: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
enum EmbedderChoice {
    /// The static model2vec model (built in, or --model-dir).
    Static,
    /// The lexical hash embedder (no model at all).
    Hash,
    /// all-MiniLM-L6-v2 on CPU (needs --model-dir and the `minilm` build feature).
    Minilm,
    /// An OpenAI-compatible /v1/embeddings endpoint (needs --openai-url, --openai-model and
    /// the `openai` build feature).
    Openai,
}

#[derive(Debug, Clone, Copy, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
enum DurabilityChoice {
    /// Acknowledge after the fsync that covers the write (default).
    EveryCommit,
    /// Acknowledge after the write; fsync every --sync-interval-ms (may lose that much on power loss).
    Periodic,
}

#[derive(Debug, Clone, Copy, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
enum GraphChoice {
    /// Mneme's own graph (default): int8 traversal, parallel build, repaired deletes.
    Native,
    /// HNSW from the hnsw_rs crate (the older, slower baseline).
    HnswRs,
}

/// `mneme serve` options; each may also come from the environment or the TOML file.
#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML file with any of the options below (snake_case keys).
    #[arg(long, env = "MNEME_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./mneme-data].
    #[arg(long, env = "MNEME_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC address [default: 127.0.0.1:50051].
    #[arg(long, env = "MNEME_LISTEN")]
    listen: Option<SocketAddr>,
    /// Default embedder for new agents [default: static].
    #[arg(long, env = "MNEME_EMBEDDER", value_enum)]
    embedder: Option<EmbedderChoice>,
    /// Model directory (config.json, tokenizer.json, model.safetensors): a model2vec model
    /// for --embedder static, all-MiniLM-L6-v2 for --embedder minilm.
    #[arg(long, env = "MNEME_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// Threads for --embedder minilm inference [default: all cores].
    #[arg(long, env = "MNEME_EMBED_THREADS")]
    embed_threads: Option<usize>,
    /// Base URL of an OpenAI-compatible API, e.g. `https://api.openai.com/v1`.
    #[arg(long, env = "MNEME_OPENAI_URL")]
    openai_url: Option<String>,
    /// Embedding model name for --embedder openai.
    #[arg(long, env = "MNEME_OPENAI_MODEL")]
    openai_model: Option<String>,
    /// Environment variable holding the API key ("" for none) [default: OPENAI_API_KEY].
    #[arg(long, env = "MNEME_OPENAI_KEY_ENV")]
    openai_key_env: Option<String>,
    /// Prometheus metrics address (HTTP GET /metrics).
    #[arg(long, env = "MNEME_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// API keys file (TOML); without it the server only listens on loopback.
    #[arg(long, env = "MNEME_KEYS_FILE")]
    keys_file: Option<PathBuf>,
    /// Allow a non-loopback address without API keys.
    #[arg(long, env = "MNEME_INSECURE")]
    insecure: bool,
    /// When writes are acknowledged [default: every-commit].
    #[arg(long, env = "MNEME_DURABILITY", value_enum)]
    durability: Option<DurabilityChoice>,
    /// Sync period for --durability periodic [default: 10].
    #[arg(long, env = "MNEME_SYNC_INTERVAL_MS")]
    sync_interval_ms: Option<u64>,
    /// Graph index for agents with 20,000+ memories [default: native].
    #[arg(long, env = "MNEME_GRAPH_INDEX", value_enum)]
    graph_index: Option<GraphChoice>,
    /// Vectors an agent may hold outside its graph index before writes wait for the
    /// graph; `unbounded`: never wait (bulk loads are then acknowledged at log speed and
    /// searches scan the unlinked vectors until the background worker catches up)
    /// [default: 1024].
    #[arg(long, env = "MNEME_INDEX_TAIL_MAX", value_parser = parse_tail_max)]
    index_tail_max: Option<TailMax>,
    /// Per-request deadline in milliseconds [default: 30000].
    #[arg(long, env = "MNEME_REQUEST_TIMEOUT_MS")]
    request_timeout_ms: Option<u64>,
    /// End a stream whose client neither reads nor sends for this many milliseconds
    /// [default: 30000].
    #[arg(long, env = "MNEME_STREAM_IDLE_TIMEOUT_MS")]
    stream_idle_timeout_ms: Option<u64>,
    /// TLS certificate chain (PEM); serve TLS with --tls-key.
    #[arg(long, env = "MNEME_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "MNEME_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    cluster: cluster::ClusterArgs,
}

/// `--index-tail-max`: a count of vectors, or `unbounded` (`usize::MAX`).
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(try_from = "TailMaxRepr")]
struct TailMax(usize);

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum TailMaxRepr {
    Count(usize),
    Word(String),
}

impl TryFrom<TailMaxRepr> for TailMax {
    type Error = String;
    fn try_from(repr: TailMaxRepr) -> Result<Self, String> {
        match repr {
            TailMaxRepr::Count(n) => Ok(TailMax(n)),
            TailMaxRepr::Word(w) => parse_tail_max(&w),
        }
    }
}

fn parse_tail_max(s: &str) -> Result<TailMax, String> {
    if s == "unbounded" {
        return Ok(TailMax(usize::MAX));
    }
    s.parse()
        .map(TailMax)
        .map_err(|_| format!("expected a number of vectors or `unbounded`, got {s:?}"))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    embedder: Option<EmbedderChoice>,
    model_dir: Option<PathBuf>,
    embed_threads: Option<usize>,
    openai_url: Option<String>,
    openai_model: Option<String>,
    openai_key_env: Option<String>,
    metrics_listen: Option<SocketAddr>,
    keys_file: Option<PathBuf>,
    insecure: Option<bool>,
    durability: Option<DurabilityChoice>,
    sync_interval_ms: Option<u64>,
    graph_index: Option<GraphChoice>,
    index_tail_max: Option<TailMax>,
    request_timeout_ms: Option<u64>,
    stream_idle_timeout_ms: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    /// The `[cluster]` table: the cluster flags of `mneme serve`.
    cluster: Option<cluster::FileCluster>,
}

#[derive(Debug, Args)]
struct Connection {
    /// Server address.
    #[arg(long, env = "MNEME_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    /// API key (sent as `authorization: Bearer`).
    #[arg(long, env = "MNEME_API_KEY", hide_env_values = true)]
    key: Option<String>,
    /// CA certificate (PEM) to verify a TLS server (use an https:// --server).
    #[arg(long, env = "MNEME_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct AgentArgs {
    #[command(flatten)]
    conn: Connection,
    /// Agent id.
    #[arg(long)]
    agent: String,
}

#[derive(Debug, Args)]
struct RememberArgs {
    #[command(flatten)]
    agent: AgentArgs,
    /// episodic, semantic or procedural.
    #[arg(long = "type", default_value = "semantic")]
    memory_type: String,
    /// Session (empty: agent-wide).
    #[arg(long, default_value = "")]
    session: String,
    /// Seconds until it expires (0: never).
    #[arg(long, default_value_t = 0)]
    ttl: u64,
    /// Importance in [0, 1].
    #[arg(long)]
    importance: Option<f32>,
    /// Never decays.
    #[arg(long)]
    pinned: bool,
    /// The memory's text.
    content: String,
}

#[derive(Debug, Args)]
struct RecallArgs {
    #[command(flatten)]
    agent: AgentArgs,
    /// Results.
    #[arg(long, default_value_t = 5)]
    top_k: u32,
    /// Session scope.
    #[arg(long, default_value = "")]
    session: String,
    /// The query text.
    query: String,
}

#[derive(Debug, Args)]
struct ExportArgs {
    #[command(flatten)]
    agent: AgentArgs,
    /// Output file (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ImportArgs {
    #[command(flatten)]
    agent: AgentArgs,
    /// The export file.
    file: PathBuf,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Serve(args) => {
            abort_on_panic();
            runtime.block_on(serve(*args))
        }
        Command::Keys {
            command: KeysCommand::Hash { key },
        } => {
            println!("{}", mneme_server::hash_key(&key));
            Ok(())
        }
        Command::Remember(args) => runtime.block_on(remember(args)),
        Command::Recall(args) => runtime.block_on(recall(args)),
        Command::Stats(args) => runtime.block_on(stats(args)),
        Command::Export(args) => runtime.block_on(export(args)),
        Command::Import(args) => runtime.block_on(import(args)),
        Command::Cluster { command } => runtime.block_on(cluster::run(command)),
        #[cfg(feature = "mcp")]
        Command::Mcp(args) => runtime.block_on(mcp(args)),
    }
}

/// Where `--embedder openai` sends requests.
#[derive(Debug, Clone, Default)]
#[cfg_attr(
    not(feature = "openai"),
    allow(dead_code, reason = "read only with the openai feature")
)]
struct OpenAiArgs {
    url: Option<String>,
    model: Option<String>,
    key_env: Option<String>,
}

fn embedders(
    choice: EmbedderChoice,
    model_dir: Option<&PathBuf>,
    threads: usize,
    openai: OpenAiArgs,
) -> Result<Embedders> {
    let hash: Arc<dyn Embedder> = Arc::new(HashEmbedder::new());
    // The built-in models: the centered one (the default) and the one as distributed (for
    // agents created with it); none without the `builtin-model` feature.
    let builtins = || -> Result<Vec<Arc<dyn Embedder>>> {
        let mut out: Vec<Arc<dyn Embedder>> = Vec::new();
        for model in [
            StaticEmbedder::builtin_centered(),
            StaticEmbedder::builtin(),
        ]
        .into_iter()
        .flatten()
        {
            out.push(Arc::new(
                model
                    .map_err(anyhow::Error::msg)
                    .context("loading the built-in model")?,
            ));
        }
        Ok(out)
    };
    let (default, others): (Arc<dyn Embedder>, Vec<Arc<dyn Embedder>>) = match choice {
        EmbedderChoice::Minilm => {
            let dir = model_dir
                .context("--embedder minilm needs --model-dir (see scripts/fetch-minilm.sh)")?;
            let mut others = builtins()?;
            others.push(hash);
            (load_minilm(dir, threads)?, others)
        }
        EmbedderChoice::Static => {
            let mut others = builtins()?;
            let model: Arc<dyn Embedder> = match model_dir {
                Some(dir) => Arc::new(
                    StaticEmbedder::from_dir(dir)
                        .map_err(anyhow::Error::msg)
                        .context("loading --model-dir")?,
                ),
                None if others.is_empty() => anyhow::bail!(
                    "no static model: pass --model-dir (this build has no built-in model)"
                ),
                None => others.remove(0),
            };
            others.push(hash);
            (model, others)
        }
        EmbedderChoice::Hash => (hash, builtins()?),
        EmbedderChoice::Openai => {
            let mut others = builtins()?;
            others.push(hash);
            (load_openai(openai)?, others)
        }
    };
    Ok(others
        .into_iter()
        .fold(Embedders::new(default), Embedders::with))
}

#[cfg(feature = "openai")]
fn load_openai(args: OpenAiArgs) -> Result<Arc<dyn Embedder>> {
    let url = args.url.context("--embedder openai needs --openai-url")?;
    let model = args
        .model
        .context("--embedder openai needs --openai-model")?;
    let mut config = mneme_engine::embed::OpenAiConfig::new(url, model);
    if let Some(var) = args.key_env {
        config.api_key_env = (!var.is_empty()).then_some(var);
    }
    let embedder = mneme_engine::embed::OpenAiEmbedder::new(config).map_err(anyhow::Error::msg)?;
    Ok(Arc::new(embedder))
}

#[cfg(not(feature = "openai"))]
fn load_openai(_: OpenAiArgs) -> Result<Arc<dyn Embedder>> {
    bail!("this build has no OpenAI support: rebuild with `--features openai`")
}

#[cfg(feature = "minilm")]
fn load_minilm(dir: &std::path::Path, threads: usize) -> Result<Arc<dyn Embedder>> {
    let model = mneme_engine::embed::MiniLmEmbedder::from_dir(dir, threads)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("loading all-MiniLM-L6-v2 from {}", dir.display()))?;
    tracing::info!(kernel = ?model.kernel(), "all-MiniLM-L6-v2 loaded");
    Ok(Arc::new(model))
}

#[cfg(not(feature = "minilm"))]
fn load_minilm(_: &std::path::Path, _: usize) -> Result<Arc<dyn Embedder>> {
    bail!("this build has no MiniLM support: rebuild with `--features minilm`")
}

/// A panic in the server ends the process (after printing it), like PostgreSQL's PANIC:
/// memory is rebuilt from the log on restart instead of being served in a state that may no
/// longer match it. (Without this, a panic inside an engine call would be caught by the
/// blocking pool and the server would go on.)
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if mneme_engine::panic_is_caught_here() {
            // A third-party decoder rejecting hostile bytes; the caller turns it into an
            // error (see mneme_index::panic_is_caught_here).
            return;
        }
        report(info);
        eprintln!("mneme: aborting after a panic; restart to recover from the log");
        std::process::abort();
    }));
}

async fn serve(args: ServeArgs) -> Result<()> {
    let file: FileConfig = match &args.config {
        Some(path) => toml::from_str(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?,
        None => FileConfig::default(),
    };
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("./mneme-data"));
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 50051)));
    let embedder = args
        .embedder
        .or(file.embedder)
        .unwrap_or(EmbedderChoice::Static);
    let model_dir = args.model_dir.or(file.model_dir);
    let durability = match args
        .durability
        .or(file.durability)
        .unwrap_or(DurabilityChoice::EveryCommit)
    {
        DurabilityChoice::EveryCommit => Durability::EveryCommit,
        DurabilityChoice::Periodic => Durability::Periodic {
            interval_ms: args
                .sync_interval_ms
                .or(file.sync_interval_ms)
                .unwrap_or(10),
        },
    };
    let keys_file = args.keys_file.or(file.keys_file);
    let auth = match &keys_file {
        Some(path) => mneme_server::Auth::from_file(path).map_err(anyhow::Error::msg)?,
        None => mneme_server::Auth::open(),
    };
    let mut server = mneme_server::ServerConfig::new(listen);
    server.metrics_listen = args.metrics_listen.or(file.metrics_listen);
    server.auth = auth;
    server.keys_file = keys_file;
    server.insecure = args.insecure || file.insecure.unwrap_or(false);
    if let Some(ms) = args.request_timeout_ms.or(file.request_timeout_ms) {
        server.request_timeout = std::time::Duration::from_millis(ms);
    }
    if let Some(ms) = args.stream_idle_timeout_ms.or(file.stream_idle_timeout_ms) {
        server.stream_idle_timeout = std::time::Duration::from_millis(ms);
    }
    match (
        args.tls_cert.or(file.tls_cert),
        args.tls_key.or(file.tls_key),
    ) {
        (Some(cert), Some(key)) => {
            let read =
                |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            server.tls = Some(mneme_server::TlsPem {
                cert: read(&cert)?,
                key: read(&key)?,
            });
        }
        (None, None) => {}
        _ => bail!("TLS needs both tls_cert and tls_key"),
    }
    #[cfg_attr(not(feature = "fault-injection"), allow(unused_mut))]
    let mut config = EngineConfig {
        storage: StorageOptions {
            durability,
            ..StorageOptions::default()
        },
        embedders: embedders(
            embedder,
            model_dir.as_ref(),
            args.embed_threads.or(file.embed_threads).unwrap_or(0),
            OpenAiArgs {
                url: args.openai_url.or(file.openai_url),
                model: args.openai_model.or(file.openai_model),
                key_env: args.openai_key_env.or(file.openai_key_env),
            },
        )?,
        index: mneme_engine::IndexConfig {
            graph: match args
                .graph_index
                .or(file.graph_index)
                .unwrap_or(GraphChoice::Native)
            {
                GraphChoice::Native => mneme_engine::GraphKind::Native,
                GraphChoice::HnswRs => mneme_engine::GraphKind::HnswRs,
            },
            ..mneme_engine::IndexConfig::default()
        },
        index_tail_max: args
            .index_tail_max
            .or(file.index_tail_max)
            .map_or(mneme_engine::INDEX_TAIL_MAX_DEFAULT, |t| t.0),
        ..EngineConfig::default()
    };
    #[cfg(feature = "fault-injection")]
    if let Ok(marker) = std::env::var("MNEME_FAULT_PANIC_ON_CONTENT") {
        tracing::warn!("fault injection: applying a memory with this content panics");
        config.fault_panic_on_content = Some(marker);
    }
    let mut cluster_args = args.cluster;
    if let Some(from_file) = file.cluster {
        cluster_args.fill_from(from_file);
    }
    let clustered = cluster_args.config(&data_dir, listen)?;
    config.replicated = clustered.is_some();
    let default_embedder = config.embedders.default_embedder().id().to_owned();
    let dir = data_dir.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::open(&dir, config))
        .await?
        .with_context(|| format!("opening {}", data_dir.display()))?;
    tracing::info!(data_dir = %data_dir.display(), embedder = default_embedder, ?durability, "engine open");
    let on_ready = |bound: mneme_server::Bound| {
        println!("mneme listening on {}", bound.grpc);
        if let Some(m) = bound.metrics {
            println!("mneme metrics on http://{m}/metrics");
        }
        tracing::info!(grpc = %bound.grpc, "serving");
    };
    let Some(cluster_config) = clustered else {
        mneme_server::run(engine, server, shutdown_signal(), on_ready).await?;
        tracing::info!("shut down cleanly");
        return Ok(());
    };
    let engine = Arc::new(engine);
    let (node, extras) = cluster::start(cluster_config, Arc::clone(&engine)).await?;
    println!("mneme cluster node {} on {}", node.id(), node.addr().raft);
    mneme_server::run_with(
        Arc::clone(&engine),
        server,
        extras,
        shutdown_signal(),
        on_ready,
    )
    .await?;
    // Stop raft (it holds the engine), then close the engine: the next start replays less.
    node.shutdown().await;
    drop(node);
    match Arc::try_unwrap(engine) {
        Ok(engine) => tokio::task::spawn_blocking(move || engine.close()).await??,
        Err(_) => tracing::warn!("the engine is still shared; its state is in the raft log"),
    }
    tracing::info!("shut down cleanly");
    Ok(())
}

#[cfg(feature = "mcp")]
async fn mcp(args: McpArgs) -> Result<()> {
    use mneme_mcp::{Backend, HttpConfig, MemoryTools};
    mneme_engine::limits::check_agent_id(&args.agent).map_err(anyhow::Error::msg)?;
    let http = HttpConfig {
        listen: args.listen,
        token: args.http_token.clone(),
        allowed_hosts: Vec::new(),
    };
    if matches!(args.transport, McpTransport::Http) {
        http.check()?;
    }
    let backend = match &args.server {
        Some(server) => {
            let channel = channel(&Connection {
                server: server.clone(),
                key: args.key.clone(),
                tls_ca: None,
            })
            .await?;
            Backend::Remote {
                client: pb::memory_service_client::MemoryServiceClient::new(channel),
                key: args.key.clone(),
            }
        }
        None => {
            let dir = args
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("./mneme-data"));
            let config = EngineConfig {
                embedders: embedders(
                    args.embedder.unwrap_or(EmbedderChoice::Static),
                    args.model_dir.as_ref(),
                    0,
                    OpenAiArgs {
                        url: None,
                        model: None,
                        key_env: None,
                    },
                )?,
                ..EngineConfig::default()
            };
            let d = dir.clone();
            let engine = tokio::task::spawn_blocking(move || Engine::open(&d, config))
                .await?
                .with_context(|| {
                    format!(
                        "opening {} (if a server owns it, use --server instead)",
                        dir.display()
                    )
                })?;
            Backend::Embedded(Arc::new(engine))
        }
    };
    let tools = MemoryTools::new(backend.clone(), &args.agent, &args.session);
    let result = match args.transport {
        McpTransport::Stdio => mneme_mcp::serve_stdio(tools).await,
        McpTransport::Http => {
            let (agent, session) = (args.agent.clone(), args.session.clone());
            let make_backend = backend.clone();
            mneme_mcp::serve_http(
                move || MemoryTools::new(make_backend.clone(), &agent, &session),
                http,
                shutdown_signal(),
                |addr| println!("mneme mcp listening on http://{addr}/mcp"),
            )
            .await
        }
    };
    if let Backend::Embedded(engine) = backend
        && let Ok(engine) = Arc::try_unwrap(engine)
    {
        tokio::task::spawn_blocking(move || engine.close()).await??;
    }
    result
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
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
    tracing::info!("shutdown requested: draining in-flight calls");
}

fn with_key<T>(conn: &Connection, message: T) -> Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = &conn.key {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {key}")
                .parse()
                .context("the API key is not valid header text")?,
        );
    }
    Ok(request)
}

async fn channel(conn: &Connection) -> Result<Channel> {
    let mut endpoint = Channel::from_shared(conn.server.clone())
        .context("--server must be a URL such as http://127.0.0.1:50051")?;
    if let Some(ca) = &conn.tls_ca {
        endpoint = client_tls(endpoint, ca)?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {}", conn.server))
}

#[cfg(feature = "tls")]
fn client_tls(
    endpoint: tonic::transport::Endpoint,
    ca: &std::path::Path,
) -> Result<tonic::transport::Endpoint> {
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem));
    endpoint.tls_config(tls).context("TLS configuration")
}

#[cfg(not(feature = "tls"))]
fn client_tls(
    _: tonic::transport::Endpoint,
    _: &std::path::Path,
) -> Result<tonic::transport::Endpoint> {
    bail!("this build has no TLS support (cargo feature `tls`)")
}

fn parse_type(name: &str) -> Result<pb::MemoryType> {
    Ok(match name {
        "episodic" => pb::MemoryType::Episodic,
        "semantic" => pb::MemoryType::Semantic,
        "procedural" => pb::MemoryType::Procedural,
        other => bail!("--type must be episodic, semantic or procedural, not {other:?}"),
    })
}

async fn remember(args: RememberArgs) -> Result<()> {
    let conn = &args.agent.conn;
    let mut client = pb::memory_service_client::MemoryServiceClient::new(channel(conn).await?);
    let request = pb::RememberRequest {
        agent_id: args.agent.agent.clone(),
        content: args.content,
        memory_type: parse_type(&args.memory_type)? as i32,
        session_id: args.session,
        ttl_seconds: args.ttl,
        pinned: args.pinned,
        importance: args.importance.unwrap_or(0.0),
        ..Default::default()
    };
    let out = client
        .remember(with_key(conn, request)?)
        .await?
        .into_inner();
    let memory = out.memory.unwrap_or_default();
    println!(
        "{}{}",
        memory.id,
        if out.deduplicated {
            " (deduplicated: reinforced an existing memory)"
        } else {
            ""
        }
    );
    Ok(())
}

async fn recall(args: RecallArgs) -> Result<()> {
    let conn = &args.agent.conn;
    let mut client = pb::memory_service_client::MemoryServiceClient::new(channel(conn).await?);
    let request = pb::RecallRequest {
        agent_id: args.agent.agent.clone(),
        query: args.query,
        top_k: args.top_k,
        session_id: args.session,
        ..Default::default()
    };
    let out = client.recall(with_key(conn, request)?).await?.into_inner();
    if out.memories.is_empty() {
        println!("(no memories)");
    }
    for hit in out.memories {
        let m = hit.memory.unwrap_or_default();
        let s = hit.scores.unwrap_or_default();
        println!(
            "{:.2}  {}  [id {}; similarity {:.3}, recency {:.2}, frequency {:.2}, importance {:.2}, type weight {:.2}]",
            hit.confidence,
            m.content,
            m.id,
            hit.similarity,
            s.recency,
            s.frequency,
            s.importance,
            s.type_weight
        );
    }
    Ok(())
}

async fn stats(args: AgentArgs) -> Result<()> {
    let mut client =
        pb::memory_service_client::MemoryServiceClient::new(channel(&args.conn).await?);
    let request = pb::StatsRequest {
        agent_id: args.agent.clone(),
    };
    let s = client
        .stats(with_key(&args.conn, request)?)
        .await?
        .into_inner();
    println!("agent:          {}", s.agent_id);
    println!("memories:       {}", s.total_memories);
    for (t, n) in &s.by_type {
        println!("  {t:<13} {n}");
    }
    println!("sessions:       {}", s.by_session.len());
    println!("embedder:       {} ({} dims)", s.embedder, s.dimensions);
    println!("agent bytes:    {}", s.agent_bytes);
    println!("store on disk:  {} bytes", s.bytes_on_disk);
    println!("index lag:      {}", s.index_lag);
    Ok(())
}

async fn export(args: ExportArgs) -> Result<()> {
    use std::io::Write;
    let conn = &args.agent.conn;
    let mut client = pb::admin_service_client::AdminServiceClient::new(channel(conn).await?);
    let request = pb::ExportRequest {
        agent_id: args.agent.agent.clone(),
    };
    let mut stream = client.export(with_key(conn, request)?).await?.into_inner();
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    while let Some(chunk) = stream.message().await? {
        out.write_all(&chunk.data)?;
    }
    out.flush()?;
    Ok(())
}

async fn import(args: ImportArgs) -> Result<()> {
    use std::io::Read;
    let conn = &args.agent.conn;
    let mut client = pb::admin_service_client::AdminServiceClient::new(channel(conn).await?);
    let mut file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ImportChunk>(4);
    let agent = args.agent.agent.clone();
    let progress = bar.clone();
    let reader = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut first = true;
        loop {
            let mut buf = vec![0u8; 64 * 1024];
            let n = file.read(&mut buf)?;
            if n == 0 && !first {
                return Ok(());
            }
            buf.truncate(n);
            let chunk = pb::ImportChunk {
                agent_id: if first { agent.clone() } else { String::new() },
                data: buf,
            };
            first = false;
            progress.inc(n as u64);
            if tx.blocking_send(chunk).is_err() || n == 0 {
                return Ok(());
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let out = client.import(with_key(conn, stream)?).await?.into_inner();
    reader.await??;
    bar.finish();
    println!(
        "imported {} memories into {}",
        out.imported, args.agent.agent
    );
    Ok(())
}
