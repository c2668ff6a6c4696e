//! API keys: read from a TOML keys file, stored only as SHA-256 digests, each scoped to
//! agents (by name or prefix) or admin. A request's key is checked, and its agent
//! authorised, before any other work; refusals never mention other agents.
//!
//! ```toml
//! [[keys]]
//! name = "support"                 # unique; for logs and per-key limits
//! sha256 = "9f86d0…"               # hex SHA-256 of the key (`mneme keys hash <key>`)
//! agents = ["support-bot"]         # exact agent ids
//! agent_prefixes = ["support-"]    # or any agent id that starts with one of these
//! admin = false                    # admin keys may use every agent, Compact, and
//!                                  # per-agent metrics
//! ```
//!
//! Clients send the key as `authorization: Bearer <key>` or `x-api-key: <key>`. A prefix
//! matches by plain string prefix: `support-` grants `support-bot` and `support-2`, not
//! `support` (so end prefixes with a separator). The loader refuses what would grant more
//! than meant: an empty prefix (every agent), a key with no scope, two entries with the
//! same digest or name, the digest of the empty key, and agent ids that are not valid.
//! The file is reloaded on SIGHUP; a file that does not load is refused and the previous
//! keys stay in force.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::metadata::MetadataMap;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    sha256: String,
    #[serde(default)]
    agents: Vec<String>,
    #[serde(default)]
    agent_prefixes: Vec<String>,
    #[serde(default)]
    admin: bool,
}

#[derive(Debug, Clone)]
struct Key {
    name: String,
    digest: [u8; 32],
    agents: Vec<String>,
    agent_prefixes: Vec<String>,
    admin: bool,
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The server runs without keys (loopback only, or `--insecure`).
    Open,
    /// A key from the keys file (by index).
    Key(usize),
}

/// The key table (empty: no authentication).
#[derive(Debug, Clone, Default)]
pub struct Auth {
    keys: Vec<Key>,
}

/// Hex SHA-256 of a key, as the keys file stores it.
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Auth {
    /// No keys: every request is allowed.
    pub fn open() -> Self {
        Self::default()
    }

    /// Loads a keys file.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let file: KeysFile =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut keys: Vec<Key> = Vec::with_capacity(file.keys.len());
        let empty_digest = Sha256::digest(b"");
        for entry in file.keys {
            let bad = |why: String| format!("{}: key {:?}: {why}", path.display(), entry.name);
            let digest = parse_hex32(&entry.sha256.to_ascii_lowercase())
                .ok_or_else(|| bad("sha256 must be 64 hex digits".into()))?;
            if entry.name.is_empty() {
                return Err(format!("{}: a key has an empty name", path.display()));
            }
            if digest.as_slice() == empty_digest.as_slice() {
                return Err(bad("sha256 is the digest of the empty key".into()));
            }
            if keys.iter().any(|k| k.digest == digest) {
                return Err(bad("the same sha256 appears twice".into()));
            }
            if keys.iter().any(|k| k.name == entry.name) {
                return Err(bad("the same name appears twice".into()));
            }
            if entry.agent_prefixes.iter().any(String::is_empty) {
                return Err(bad(
                    "an empty agent prefix would grant every agent; use admin = true".into(),
                ));
            }
            if !entry.admin && entry.agents.is_empty() && entry.agent_prefixes.is_empty() {
                return Err(bad(
                    "no scope: give agents, agent_prefixes or admin = true".into()
                ));
            }
            for agent in &entry.agents {
                mneme_engine::limits::check_agent_id(agent)
                    .map_err(|e| bad(format!("agents: {e}")))?;
            }
            keys.push(Key {
                name: entry.name,
                digest,
                agents: entry.agents,
                agent_prefixes: entry.agent_prefixes,
                admin: entry.admin,
            });
        }
        if keys.is_empty() {
            return Err(format!("{}: no [[keys]] entries", path.display()));
        }
        Ok(Self { keys })
    }

    /// True when requests need a key.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key whose digest matches `token`, compared in constant time against every key.
    pub fn key_of(&self, token: &str) -> Option<Principal> {
        let digest = Sha256::digest(token.trim().as_bytes());
        // Compare against every key in constant time; no early exit reveals which matched.
        let mut found = None;
        for (i, key) in self.keys.iter().enumerate() {
            if bool::from(key.digest.ct_eq(digest.as_slice())) {
                found = Some(i);
            }
        }
        found.map(Principal::Key)
    }

    /// True for an admin key (or an open server).
    pub fn is_admin(&self, principal: &Principal) -> bool {
        match principal {
            Principal::Open => true,
            Principal::Key(i) => self.keys[*i].admin,
        }
    }

    /// Identifies the caller from `authorization: Bearer <key>` or `x-api-key: <key>`.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        if self.keys.is_empty() {
            return Ok(Principal::Open);
        }
        let token = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .or_else(|| metadata.get("x-api-key").and_then(|v| v.to_str().ok()))
            .ok_or_else(|| {
                Status::unauthenticated("missing API key: send `authorization: Bearer <key>`")
            })?;
        self.key_of(token)
            .ok_or_else(|| Status::unauthenticated("invalid API key"))
    }

    /// Allows the call only if the caller may use `agent_id`.
    pub fn authorize(&self, principal: &Principal, agent_id: &str) -> Result<(), Status> {
        let Principal::Key(i) = principal else {
            return Ok(());
        };
        let key = &self.keys[*i];
        let allowed = key.admin
            || key.agents.iter().any(|a| a == agent_id)
            || key
                .agent_prefixes
                .iter()
                .any(|p| !agent_id.is_empty() && agent_id.starts_with(p.as_str()));
        if allowed {
            Ok(())
        } else {
            Err(Status::permission_denied(
                "this API key may not access the requested agent",
            ))
        }
    }

    /// Allows the call only for admin keys (or an open server).
    pub fn require_admin(&self, principal: &Principal) -> Result<(), Status> {
        match principal {
            Principal::Open => Ok(()),
            Principal::Key(i) if self.keys[*i].admin => Ok(()),
            Principal::Key(_) => Err(Status::permission_denied(
                "this operation needs an admin API key",
            )),
        }
    }

    /// The key's name, for logs.
    pub fn name(&self, principal: &Principal) -> &str {
        match principal {
            Principal::Open => "-",
            Principal::Key(i) => &self.keys[*i].name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_by_digest_and_scoped() {
        let dir = std::env::temp_dir().join(format!("mneme-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.toml");
        std::fs::write(
            &path,
            format!(
                "[[keys]]\nname = \"a\"\nsha256 = \"{}\"\nagents = [\"agent-a\"]\nagent_prefixes = [\"team-\"]\n\n[[keys]]\nname = \"root\"\nsha256 = \"{}\"\nadmin = true\n",
                hash_key("key-a"),
                hash_key("key-root")
            ),
        )
        .unwrap();
        let auth = Auth::from_file(&path).unwrap();
        let mut md = MetadataMap::new();
        assert_eq!(
            auth.authenticate(&md).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        md.insert("authorization", "Bearer wrong".parse().unwrap());
        assert_eq!(
            auth.authenticate(&md).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        md.insert("authorization", "Bearer key-a".parse().unwrap());
        let p = auth.authenticate(&md).unwrap();
        assert!(auth.authorize(&p, "agent-a").is_ok());
        assert!(auth.authorize(&p, "team-x").is_ok());
        let denied = auth.authorize(&p, "agent-b").unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(!denied.message().contains("agent-a"));
        assert!(auth.require_admin(&p).is_err());
        let mut md = MetadataMap::new();
        md.insert("x-api-key", "key-root".parse().unwrap());
        let root = auth.authenticate(&md).unwrap();
        assert!(auth.authorize(&root, "anything").is_ok() && auth.require_admin(&root).is_ok());
        std::fs::remove_dir_all(&dir).ok();
    }
}
