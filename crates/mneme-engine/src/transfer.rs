//! Export and import: a lossless, streaming JSON Lines format (documented in
//! `docs/export-format.md`). The first line describes the agent's vector space; every
//! following line is one memory with its id, timestamps, counters, metadata and vector.
//! Importing an export reproduces the same memories, so recall gives the same results.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};

use mneme_index::distance::normalize;
use serde::{Deserialize, Serialize};

use crate::agent::{MemoryState, type_to_wire};
use crate::apply::Outcome;
use crate::codec::{AccessRecord, MemoryRecord};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ids::is_memory_id;
use crate::limits;
use crate::mutation::{Entry, Import, ImportedMemory, Mutation, Space};

/// Version of the export format.
pub const EXPORT_FORMAT_VERSION: u32 = 1;
/// Longest line an import reads (a 4,096-dim vector as JSON plus a 64 KiB memory fit).
pub const EXPORT_LINE_BYTES_MAX: usize = 1024 * 1024;
/// Memories committed per import entry.
pub const IMPORT_BATCH: usize = 512;

/// First line of an export.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExportHeader {
    /// Always `"mneme-export"`.
    pub format: String,
    /// [`EXPORT_FORMAT_VERSION`].
    pub version: u32,
    /// The exported agent.
    pub agent_id: String,
    /// Its embedder id.
    pub embedder: String,
    /// Vector dimension.
    pub dim: usize,
    /// Number of memories that follow.
    pub count: u64,
}

/// One memory line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExportedMemory {
    /// ULID.
    pub id: String,
    /// Session ("" agent-wide).
    pub session_id: String,
    /// `episodic`, `semantic` or `procedural`.
    pub memory_type: String,
    /// Text.
    pub content: String,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Pinned.
    pub pinned: bool,
    /// Importance.
    pub importance: f32,
    /// Access count.
    pub access_count: u64,
    /// Times in ms since the epoch (0: never).
    pub created_at_ms: i64,
    /// Last change.
    pub updated_at_ms: i64,
    /// Last access.
    pub last_accessed_at_ms: i64,
    /// Expiry.
    pub expires_at_ms: i64,
    /// Unit vector.
    pub vector: Vec<f32>,
}

fn type_name_to_wire(name: &str) -> Option<u8> {
    mneme_scoring::MemoryType::ALL
        .iter()
        .find(|t| t.name() == name)
        .map(|t| type_to_wire(*t))
}

fn to_io(e: serde_json::Error) -> Error {
    Error::Io(std::io::Error::other(e))
}

/// Memories per export page.
pub const EXPORT_PAGE_MEMORIES: usize = 1_000;

/// Where an export continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportCursor {
    /// At the header.
    Start,
    /// After the memory with this id (ids are time-ordered, so this is creation order).
    After(String),
}

/// An import in progress: fed line by line (from a file, or from chunks arriving on a
/// stream), committing a batch of [`IMPORT_BATCH`] memories at a time.
#[derive(Debug)]
pub struct Importer {
    agent: String,
    dim: usize,
    create: crate::codec::AgentConfigRecord,
    space: Space,
    pending: Vec<ImportedMemory>,
    line_no: usize,
    imported: u64,
}

impl Importer {
    /// Parses and checks one line (blank lines are skipped); nothing is committed.
    pub fn push_line(&mut self, line: &str) -> Result<()> {
        self.line_no += 1;
        if line.trim().is_empty() {
            return Ok(());
        }
        let no = self.line_no;
        let m: ExportedMemory = serde_json::from_str(line)
            .map_err(|e| Error::invalid("import", format!("line {no}: {e}")))?;
        self.pending.push(import_memory(m, self.dim, no)?);
        Ok(())
    }

    /// True when a batch is ready to commit.
    pub fn ready(&self) -> bool {
        self.pending.len() >= IMPORT_BATCH
    }

    /// Commits what is pending as one logged entry; returns the memories imported so far.
    pub fn commit(&mut self, engine: &Engine) -> Result<u64> {
        if self.pending.is_empty() {
            return Ok(self.imported);
        }
        let entry = Entry {
            agent: self.agent.clone(),
            mutation: Mutation::Import(Import {
                create: self.create.clone(),
                space: self.space.clone(),
                memories: std::mem::take(&mut self.pending),
            }),
        };
        match crate::write::accepted(engine.submit(entry)?)? {
            Outcome::Count(n) => self.imported += n,
            other => {
                return Err(Error::FailedPrecondition(format!(
                    "unexpected outcome {other:?}"
                )));
            }
        }
        Ok(self.imported)
    }

    /// Memories committed so far.
    pub fn imported(&self) -> u64 {
        self.imported
    }
}

impl Engine {
    /// One page of an export: the header line first (at [`ExportCursor::Start`]), then up
    /// to [`EXPORT_PAGE_MEMORIES`] memory lines; returns the bytes and where the next page
    /// starts (`None`: done). Each page holds the agent's read locks only while it is read,
    /// so a slow reader never holds anything; memories forgotten between pages are skipped.
    pub fn export_page(
        &self,
        agent_id: &str,
        cursor: &ExportCursor,
    ) -> Result<(Vec<u8>, Option<ExportCursor>)> {
        limits::check_agent_id(agent_id)?;
        let Some(agent) = self.inner.agent(agent_id) else {
            return Err(Error::invalid("agent_id", "has no memories to export"));
        };
        let now = self.inner.now_ms();
        let mut out = Vec::new();
        let state = agent.state.read();
        if *cursor == ExportCursor::Start {
            let header = ExportHeader {
                format: "mneme-export".into(),
                version: EXPORT_FORMAT_VERSION,
                agent_id: agent_id.to_owned(),
                embedder: state.config.embedder.clone(),
                dim: state.config.dim,
                count: state.memories.len() as u64,
            };
            serde_json::to_writer(&mut out, &header).map_err(to_io)?;
            out.push(b'\n');
        }
        let index = agent.index.read();
        let range = match cursor {
            ExportCursor::Start => state.ids.range::<String, _>(..),
            ExportCursor::After(id) => state.ids.range::<String, _>((
                std::ops::Bound::Excluded(id.clone()),
                std::ops::Bound::Unbounded,
            )),
        };
        let mut last = None;
        let mut n = 0;
        for (id, key) in range {
            if n == EXPORT_PAGE_MEMORIES {
                break;
            }
            n += 1;
            last = Some(id.clone());
            let Some(m) = state.memories.get(key).filter(|m| !m.expired(now)) else {
                continue;
            };
            let Some(v) = index.get(*key) else { continue };
            serde_json::to_writer(&mut out, &export_line(m, v)).map_err(to_io)?;
            out.push(b'\n');
        }
        let next =
            (n == EXPORT_PAGE_MEMORIES).then(|| ExportCursor::After(last.unwrap_or_default()));
        Ok((out, next))
    }

    /// Writes every unexpired memory of the agent as JSON Lines; returns how many.
    pub fn export(&self, agent_id: &str, out: &mut dyn Write) -> Result<u64> {
        let mut cursor = ExportCursor::Start;
        let mut written = 0;
        loop {
            let (bytes, next) = self.export_page(agent_id, &cursor)?;
            written += bytes.iter().filter(|b| **b == b'\n').count() as u64;
            out.write_all(&bytes)?;
            match next {
                Some(c) => cursor = c,
                None => break,
            }
        }
        out.flush()?;
        // The header line is not a memory.
        Ok(written.saturating_sub(1))
    }

    /// Starts an import into `agent_id` from an export's header line. The agent must be
    /// new, or have no memories, or use the export's embedder and dimension.
    pub fn import_start(&self, agent_id: &str, header_line: &str) -> Result<Importer> {
        limits::check_agent_id(agent_id)?;
        let header: ExportHeader = serde_json::from_str(header_line)
            .map_err(|e| Error::invalid("import", format!("line 1: not an export header: {e}")))?;
        if header.format != "mneme-export" || header.version != EXPORT_FORMAT_VERSION {
            return Err(Error::invalid(
                "import",
                format!(
                    "format {} version {} is not supported",
                    limits::echo(&header.format),
                    header.version
                ),
            ));
        }
        if header.dim == 0 || header.dim > limits::DIMENSIONS_MAX {
            return Err(Error::invalid(
                "import",
                format!(
                    "dimension {} is outside 1..={}",
                    header.dim,
                    limits::DIMENSIONS_MAX
                ),
            ));
        }
        let (create, space) = self.import_space(agent_id, &header)?;
        Ok(Importer {
            agent: agent_id.to_owned(),
            dim: header.dim,
            create,
            space,
            pending: Vec::new(),
            line_no: 1,
            imported: 0,
        })
    }

    /// Reads an export into `agent_id` (see [`Engine::import_start`]). Memories keep their
    /// ids; an id that exists is overwritten. Returns how many memories were imported;
    /// `progress(done)` is called after each committed batch.
    pub fn import(
        &self,
        agent_id: &str,
        input: &mut dyn BufRead,
        progress: &dyn Fn(u64),
    ) -> Result<u64> {
        limits::check_agent_id(agent_id)?;
        let mut lines = LineReader { input, line_no: 0 };
        let Some(header) = lines.next_line()? else {
            return Err(Error::invalid("import", "is empty"));
        };
        let mut importer = self.import_start(agent_id, &header)?;
        while let Some(line) = lines.next_line_raw()? {
            importer.push_line(&line)?;
            if importer.ready() {
                progress(importer.commit(self)?);
            }
        }
        let total = importer.commit(self)?;
        progress(total);
        Ok(total)
    }

    /// The configuration an import creates its agent with, and the space of its vectors.
    /// An existing agent with memories must already be in that space.
    fn import_space(
        &self,
        agent_id: &str,
        header: &ExportHeader,
    ) -> Result<(crate::codec::AgentConfigRecord, Space)> {
        let client = header.embedder == crate::embed::CLIENT_EMBEDDER_ID;
        let embedder = self.inner.config.embedders.get(&header.embedder);
        if !client && embedder.is_none() {
            return Err(Error::FailedPrecondition(format!(
                "the export was made with embedder {:?}, which this server does not offer",
                header.embedder
            )));
        }
        let space = Space {
            embedder: header.embedder.clone(),
            dim: header.dim as u32,
        };
        if let Some(agent) = self.inner.agent(agent_id) {
            let state = agent.state.read();
            if state.config.space() != space && !state.memories.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "agent {agent_id:?} uses {:?} ({} dims); the export uses {:?} ({} dims)",
                    state.config.embedder, state.config.dim, header.embedder, header.dim
                )));
            }
        }
        let mut config = self.inner.default_config(client.then_some(header.dim));
        if let Some(e) = embedder {
            config.embedder = e.id().to_owned();
            config.dim = e.dim();
            config.calibration = crate::calibration_of(e.family());
        }
        if config.dim != header.dim {
            return Err(Error::invalid(
                "import",
                format!(
                    "the export's dimension {} is not embedder {:?}'s {}",
                    header.dim, header.embedder, config.dim
                ),
            ));
        }
        Ok((config.to_record(), space))
    }
}

fn export_line(m: &MemoryState, v: &[f32]) -> ExportedMemory {
    ExportedMemory {
        id: m.id.clone(),
        session_id: m.record.session_id.clone(),
        memory_type: m.memory_type.name().to_owned(),
        content: m.record.content.clone(),
        metadata: m.record.metadata.clone(),
        pinned: m.record.pinned,
        importance: m.record.importance,
        access_count: m.access.access_count,
        created_at_ms: m.record.created_at_ms,
        updated_at_ms: m.record.updated_at_ms,
        last_accessed_at_ms: m.access.last_accessed_at_ms,
        expires_at_ms: m.record.expires_at_ms,
        vector: v.to_vec(),
    }
}

fn import_memory(m: ExportedMemory, dim: usize, line: usize) -> Result<ImportedMemory> {
    let at = |field: &str| format!("line {line}: {field}");
    let bad = |e: Error| match e {
        Error::InvalidArgument { field, reason } => {
            Error::invalid("import", format!("line {line}: {field} {reason}"))
        }
        other => other,
    };
    if !is_memory_id(&m.id) {
        return Err(Error::invalid(
            "import",
            format!("{} {} is not a memory id", at("id"), limits::echo(&m.id)),
        ));
    }
    limits::check_content(&m.content).map_err(bad)?;
    limits::check_session_id("session_id", &m.session_id).map_err(bad)?;
    limits::check_metadata("metadata", &m.metadata).map_err(bad)?;
    limits::check_importance(m.importance).map_err(bad)?;
    limits::check_vector("vector", &m.vector).map_err(bad)?;
    if m.vector.len() != dim {
        return Err(Error::invalid(
            "import",
            format!(
                "{} has {} dimensions, the header says {dim}",
                at("vector"),
                m.vector.len()
            ),
        ));
    }
    let wire = type_name_to_wire(&m.memory_type).ok_or_else(|| {
        Error::invalid(
            "import",
            format!(
                "{} {} is unknown",
                at("memory_type"),
                limits::echo(&m.memory_type)
            ),
        )
    })?;
    let mut v = m.vector;
    normalize(&mut v).map_err(|e| Error::invalid("import", format!("{} {e}", at("vector"))))?;
    Ok(ImportedMemory {
        id: m.id,
        record: MemoryRecord {
            session_id: m.session_id,
            memory_type: wire,
            content: m.content,
            metadata: m.metadata,
            pinned: m.pinned,
            importance: m.importance,
            created_at_ms: m.created_at_ms,
            updated_at_ms: m.updated_at_ms,
            expires_at_ms: m.expires_at_ms,
        },
        access: AccessRecord {
            access_count: m.access_count,
            last_accessed_at_ms: m.last_accessed_at_ms,
        },
        vector: v,
    })
}

struct LineReader<'a> {
    input: &'a mut dyn BufRead,
    line_no: usize,
}

impl LineReader<'_> {
    /// Next non-empty line, refusing lines over the limit without reading them whole.
    fn next_line(&mut self) -> Result<Option<String>> {
        loop {
            match self.next_line_raw()? {
                Some(line) if line.trim().is_empty() => continue,
                other => return Ok(other),
            }
        }
    }

    /// Next line, blank or not.
    fn next_line_raw(&mut self) -> Result<Option<String>> {
        {
            let mut buf = Vec::new();
            let n = (&mut *self.input)
                .take(EXPORT_LINE_BYTES_MAX as u64 + 1)
                .read_until(b'\n', &mut buf)?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            if buf.len() > EXPORT_LINE_BYTES_MAX {
                return Err(Error::invalid(
                    "import",
                    format!(
                        "line {} is longer than {EXPORT_LINE_BYTES_MAX} bytes",
                        self.line_no
                    ),
                ));
            }
            let line = String::from_utf8(buf).map_err(|_| {
                Error::invalid("import", format!("line {} is not UTF-8", self.line_no))
            })?;
            Ok(Some(line))
        }
    }
}
