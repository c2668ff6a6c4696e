//! The five memory tools, their JSON schemas (from the parameter types) and what they
//! answer. Answers are short text meant for a model: ids, confidences, contents.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use mneme_engine::{ListQuery, MemoryType, RecallQuery, RememberInput, Scope};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::backend::{Backend, Failure};

/// A memory's kind.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// What happened (decays over days to weeks).
    Episodic,
    /// What is true (barely decays).
    Semantic,
    /// How to do things (decays slowly).
    Procedural,
}

impl From<Kind> for MemoryType {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Episodic => MemoryType::Episodic,
            Kind::Semantic => MemoryType::Semantic,
            Kind::Procedural => MemoryType::Procedural,
        }
    }
}

/// Arguments of `remember`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RememberArgs {
    /// What to remember, as a self-contained sentence ("The user prefers formal tone").
    pub content: String,
    /// episodic (an event), semantic (a fact, the default) or procedural (how to do something).
    pub memory_type: Option<Kind>,
    /// Forget it after this many seconds (omit: keep it).
    pub ttl_seconds: Option<u64>,
    /// How much it matters, 0 to 1 (default 0.5).
    pub importance: Option<f32>,
    /// Pinned memories never fade.
    pub pinned: Option<bool>,
    /// Free-form string labels to filter on later.
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Arguments of `recall`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecallArgs {
    /// What you want to know, in natural language.
    pub query: String,
    /// How many memories at most (default 5, up to 1000).
    pub top_k: Option<u32>,
    /// Only these kinds of memory.
    pub memory_types: Option<Vec<Kind>>,
    /// Leave out memories below this confidence (0 to 1).
    pub min_confidence: Option<f32>,
}

/// Arguments of `get_context`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContextArgs {
    /// What the context is for (the user's message, the task at hand).
    pub query: String,
    /// Token budget of the block (default 1024; ~4 characters per token).
    pub max_tokens: Option<u32>,
    /// How many memories at most (default 10).
    pub top_k: Option<u32>,
}

/// Arguments of `forget`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetArgs {
    /// Ids of the memories to delete (as `recall` or `list_memories` show them).
    pub ids: Vec<String>,
}

/// Arguments of `mark_used`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkUsedArgs {
    /// Ids of the memories you actually relied on (as `recall` shows them).
    pub ids: Vec<String>,
}

/// Arguments of `list_memories`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Memories per page (default 20, up to 1000).
    pub page_size: Option<u32>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
    /// Only these kinds of memory.
    pub memory_types: Option<Vec<Kind>>,
}

/// The memory tools of one agent (and optionally one session).
#[derive(Debug, Clone)]
pub struct MemoryTools {
    backend: Backend,
    agent: String,
    session: String,
    tool_router: ToolRouter<Self>,
}

fn kinds(k: Option<Vec<Kind>>) -> Vec<MemoryType> {
    k.unwrap_or_default().into_iter().map(Into::into).collect()
}

fn type_name(t: MemoryType) -> &'static str {
    t.name()
}

impl MemoryTools {
    /// Tools for `agent` (and `session`, empty for agent-wide) over `backend`.
    pub fn new(backend: Backend, agent: &str, session: &str) -> Self {
        Self {
            backend,
            agent: agent.to_owned(),
            session: session.to_owned(),
            tool_router: Self::tool_router(),
        }
    }

    fn scope(&self, memory_types: Vec<MemoryType>) -> Scope {
        Scope {
            session_id: self.session.clone(),
            memory_types,
            ..Scope::default()
        }
    }
}

#[tool_router]
impl MemoryTools {
    #[tool(
        description = "Store something worth remembering about the user, the task or the world, \
                       as one self-contained sentence. Near-duplicates are merged, not stored twice."
    )]
    async fn remember(
        &self,
        Parameters(args): Parameters<RememberArgs>,
    ) -> Result<String, Failure> {
        let input = RememberInput {
            content: args.content,
            memory_type: args.memory_type.map(Into::into),
            session_id: self.session.clone(),
            ttl_seconds: args.ttl_seconds.unwrap_or(0),
            vector: None,
            metadata: args.metadata.unwrap_or_default(),
            pinned: args.pinned.unwrap_or(false),
            importance: args.importance,
        };
        let r = self.backend.remember(&self.agent, input).await?;
        Ok(if r.deduplicated {
            format!(
                "Already known; reinforced memory {} ({} uses).",
                r.memory.id, r.memory.access_count
            )
        } else {
            format!(
                "Remembered as {} memory {}.",
                type_name(r.memory.memory_type),
                r.memory.id
            )
        })
    }

    #[tool(
        description = "Find the stored memories most relevant to a question, best first, each \
                       with its confidence (0 to 1) and id."
    )]
    async fn recall(&self, Parameters(args): Parameters<RecallArgs>) -> Result<String, Failure> {
        let q = RecallQuery {
            query: args.query,
            top_k: u64::from(args.top_k.unwrap_or(5)),
            scope: self.scope(kinds(args.memory_types)),
            min_confidence: args.min_confidence.unwrap_or(0.0),
            ..RecallQuery::default()
        };
        let hits = self.backend.recall(&self.agent, q).await?;
        if hits.is_empty() {
            return Ok("No memories found.".into());
        }
        let mut out = String::new();
        for h in hits {
            let _ = writeln!(
                out,
                "- [{:.2}] {} (id {}, {})",
                h.confidence,
                h.memory.content.replace('\n', " "),
                h.memory.id,
                type_name(h.memory.memory_type)
            );
        }
        Ok(out)
    }

    #[tool(
        description = "Get a ready-to-use block of what is known that is relevant to a query, \
                       grouped by kind and fitted to a token budget: paste it into your reasoning."
    )]
    async fn get_context(
        &self,
        Parameters(args): Parameters<ContextArgs>,
    ) -> Result<String, Failure> {
        let q = RecallQuery {
            query: args.query,
            top_k: u64::from(args.top_k.unwrap_or(10)),
            scope: self.scope(Vec::new()),
            ..RecallQuery::default()
        };
        let max_tokens = u64::from(args.max_tokens.unwrap_or(0));
        let ctx = self.backend.context(&self.agent, q, max_tokens).await?;
        Ok(if ctx.context.is_empty() {
            "No relevant memories.".into()
        } else {
            ctx.context
        })
    }

    #[tool(description = "Delete memories by id (ids come from recall or list_memories).")]
    async fn forget(&self, Parameters(args): Parameters<ForgetArgs>) -> Result<String, Failure> {
        if args.ids.is_empty() {
            return Err("ids: give at least one memory id".into());
        }
        let n = self.backend.forget(&self.agent, args.ids).await?;
        Ok(format!("Forgot {n} memories."))
    }

    #[tool(
        description = "Say which recalled memories you actually used (relied on in your answer \
                       or action): used memories rank higher later. Being recalled alone does \
                       not count."
    )]
    async fn mark_used(
        &self,
        Parameters(args): Parameters<MarkUsedArgs>,
    ) -> Result<String, Failure> {
        if args.ids.is_empty() {
            return Err("ids: give at least one memory id".into());
        }
        let n = self.backend.mark_used(&self.agent, args.ids).await?;
        Ok(format!("Marked {n} memories used."))
    }

    #[tool(
        description = "List stored memories in the order they were made, a page at a time \
                       (pass next_page_token back for the next page)."
    )]
    async fn list_memories(
        &self,
        Parameters(args): Parameters<ListArgs>,
    ) -> Result<String, Failure> {
        let q = ListQuery {
            scope: self.scope(kinds(args.memory_types)),
            page_size: u64::from(args.page_size.unwrap_or(20)),
            page_token: args.page_token.unwrap_or_default(),
            include_vectors: false,
        };
        let page = self.backend.list(&self.agent, q).await?;
        let mut out = String::new();
        for m in &page.memories {
            let _ = writeln!(
                out,
                "- {} (id {}, {})",
                m.content.replace('\n', " "),
                m.id,
                type_name(m.memory_type)
            );
        }
        if page.memories.is_empty() {
            out.push_str("No memories.\n");
        }
        if !page.next_page_token.is_empty() {
            let _ = writeln!(out, "next_page_token: {}", page.next_page_token);
        }
        Ok(out)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for MemoryTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_instructions(
            "Long-term memory for this agent (Mneme). Use `recall` or `get_context` before \
             answering questions that may depend on what you learned earlier; use `remember` \
             for durable facts, preferences, events and procedures worth keeping.",
        )
    }
}
