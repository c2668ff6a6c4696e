//! Embeddings from any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, Ollama, vLLM,
//! Hugging Face TEI, …): batched requests, a timeout per request, retries with exponential
//! backoff on 429, 5xx and transport errors (honouring `Retry-After`), and errors that say
//! what the server answered. The key is read from an environment variable, never from a
//! flag or file. Built with the `openai` cargo feature.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Embedder, Family};

/// Where and how to call the endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Base URL such as `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`
    /// (`/embeddings` is appended unless present).
    pub url: String,
    /// Model name, sent with every request; part of the embedder id.
    pub model: String,
    /// Environment variable holding the API key (`None`: send no key, e.g. for Ollama).
    pub api_key_env: Option<String>,
    /// Vector dimension; asked of the endpoint with a probe request when `None`.
    pub dim: Option<usize>,
    /// Texts per request.
    pub batch_max: usize,
    /// Deadline of one request.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// First backoff; doubles per retry, capped at 8 s.
    pub backoff: Duration,
}

impl OpenAiConfig {
    /// Defaults for `url` and `model`: key from `OPENAI_API_KEY`, 64 texts per request,
    /// 30 s timeout, 4 retries from 250 ms.
    pub fn new(url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            model: model.into(),
            api_key_env: Some("OPENAI_API_KEY".into()),
            dim: None,
            batch_max: 64,
            timeout: Duration::from_secs(30),
            retries: 4,
            backoff: Duration::from_millis(250),
        }
    }
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    input: &'a [&'a str],
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    embedding: Vec<f32>,
    #[serde(default)]
    index: usize,
}

/// An OpenAI-compatible remote embedder.
pub struct OpenAiEmbedder {
    id: String,
    endpoint: String,
    config: OpenAiConfig,
    key: Option<String>,
    agent: ureq::Agent,
    dim: usize,
}

impl std::fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("id", &self.id)
            .field("endpoint", &self.endpoint)
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

/// Outcome of one attempt.
enum Attempt {
    Done(Vec<Vec<f32>>),
    Retry(String, Option<Duration>),
    Fail(String),
}

impl OpenAiEmbedder {
    /// Connects (probing the dimension if not configured).
    pub fn new(config: OpenAiConfig) -> Result<Self, String> {
        if config.model.is_empty() {
            return Err("openai embedder: a model name is required".into());
        }
        let key =
            match &config.api_key_env {
                Some(var) => Some(std::env::var(var).map_err(|_| {
                    format!("openai embedder: environment variable {var} is not set")
                })?),
                None => None,
            };
        let base = config.url.trim_end_matches('/');
        let endpoint = if base.ends_with("/embeddings") {
            base.to_owned()
        } else {
            format!("{base}/embeddings")
        };
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(config.timeout))
                .http_status_as_error(false)
                .build(),
        );
        let mut embedder = Self {
            id: format!("openai:{}", config.model),
            endpoint,
            key,
            agent,
            dim: config.dim.unwrap_or(0),
            config,
        };
        if embedder.dim == 0 {
            let probe = embedder.request(&["dimension probe"])?;
            embedder.dim = probe.first().map_or(0, Vec::len);
            if embedder.dim == 0 || embedder.dim > crate::DIMENSIONS_MAX {
                return Err(format!(
                    "openai embedder: the endpoint returned {}-dimensional vectors",
                    embedder.dim
                ));
            }
        }
        Ok(embedder)
    }

    fn attempt(&self, texts: &[&str]) -> Attempt {
        let mut request = self
            .agent
            .post(&self.endpoint)
            .header("Content-Type", "application/json");
        if let Some(key) = &self.key {
            request = request.header("Authorization", &format!("Bearer {key}"));
        }
        let mut response = match request.send_json(Request {
            model: &self.config.model,
            input: texts,
        }) {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry(format!("request to {} failed: {e}", self.endpoint), None);
            }
        };
        let status = response.status().as_u16();
        if status == 429 || status >= 500 {
            let after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Attempt::Retry(format!("{} answered HTTP {status}", self.endpoint), after);
        }
        if status != 200 {
            let body = response.body_mut().read_to_string().unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            return Attempt::Fail(format!("{} answered HTTP {status}: {body}", self.endpoint));
        }
        let parsed: Response = match response.body_mut().read_json() {
            Ok(p) => p,
            Err(e) => {
                return Attempt::Fail(format!(
                    "{} sent an unreadable response: {e}",
                    self.endpoint
                ));
            }
        };
        let mut items = parsed.data;
        if items.len() != texts.len() {
            return Attempt::Fail(format!(
                "{} returned {} embeddings for {} inputs",
                self.endpoint,
                items.len(),
                texts.len()
            ));
        }
        items.sort_by_key(|i| i.index);
        Attempt::Done(items.into_iter().map(|i| i.embedding).collect())
    }

    fn request(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let mut last = String::new();
        for attempt in 0..=self.config.retries {
            match self.attempt(texts) {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry(e, after) => {
                    last = e;
                    if attempt == self.config.retries {
                        break;
                    }
                    let backoff = self
                        .config
                        .backoff
                        .saturating_mul(1 << attempt.min(16))
                        .min(Duration::from_secs(8));
                    std::thread::sleep(after.unwrap_or(backoff).min(Duration::from_secs(30)));
                }
            }
        }
        Err(format!(
            "{last} (gave up after {} attempts)",
            self.config.retries + 1
        ))
    }
}

impl Embedder for OpenAiEmbedder {
    fn id(&self) -> &str {
        &self.id
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn family(&self) -> Family {
        // Unknown geometry: the neutral curve. Fit one with `fit_calibration` on your model.
        Family::Unknown
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.config.batch_max.max(1)) {
            let vectors = self.request(chunk)?;
            if let Some(bad) = vectors.iter().find(|v| v.len() != self.dim) {
                return Err(format!(
                    "{} returned a {}-dimensional vector, expected {}",
                    self.endpoint,
                    bad.len(),
                    self.dim
                ));
            }
            out.extend(vectors);
        }
        Ok(out)
    }
}
