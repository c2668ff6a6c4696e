//! The OpenAI-compatible embedder against a real HTTP server started here on 127.0.0.1:
//! batching, the key header, retries on 503 and 429, clear errors on 4xx and timeouts, and
//! recall through the engine.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mneme_engine::embed::{Embedder, Embedders, OpenAiConfig, OpenAiEmbedder};
use mneme_engine::{Engine, EngineConfig, RecallQuery, RememberInput};

/// What the fake endpoint does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    Fail503Then(usize),
    Always400,
    Slow,
}

struct Endpoint {
    url: String,
    requests: Arc<AtomicUsize>,
    batches: Arc<Mutex<Vec<usize>>>,
    auth: Arc<Mutex<Vec<String>>>,
}

/// A deterministic 8-d "embedding": letter counts folded into 8 buckets.
fn fake_embedding(text: &str) -> Vec<f32> {
    let mut v = vec![0.01f32; 8];
    for b in text.to_lowercase().bytes().filter(u8::is_ascii_alphabetic) {
        v[usize::from(b) % 8] += 1.0;
    }
    v
}

fn serve(mode: Mode) -> Endpoint {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let batches = Arc::new(Mutex::new(Vec::new()));
    let auth = Arc::new(Mutex::new(Vec::new()));
    let (r, b, a) = (
        Arc::clone(&requests),
        Arc::clone(&batches),
        Arc::clone(&auth),
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let mut content_length = 0;
            reader.read_line(&mut line).unwrap();
            assert!(line.starts_with("POST /v1/embeddings "), "{line}");
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let lower = h.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    content_length = v.trim().parse().unwrap();
                }
                if lower.starts_with("authorization:") {
                    a.lock()
                        .unwrap()
                        .push(h.trim()["authorization:".len()..].trim().to_owned());
                }
                if h == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; content_length];
            reader.read_exact(&mut body).unwrap();
            let n = r.fetch_add(1, Ordering::SeqCst);
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let inputs: Vec<String> = request["input"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect();
            let (status, reply) = match mode {
                Mode::Fail503Then(k) if n < k => ("503 Service Unavailable", "{}".to_owned()),
                Mode::Always400 => (
                    "400 Bad Request",
                    r#"{"error":{"message":"model not found"}}"#.to_owned(),
                ),
                Mode::Slow => {
                    std::thread::sleep(Duration::from_millis(1_500));
                    ("200 OK", "{}".to_owned())
                }
                _ => {
                    b.lock().unwrap().push(inputs.len());
                    // Answer out of order: the embedder must sort by index.
                    let data: Vec<serde_json::Value> = inputs
                        .iter()
                        .enumerate()
                        .rev()
                        .map(|(i, t)| serde_json::json!({"object": "embedding", "index": i, "embedding": fake_embedding(t)}))
                        .collect();
                    ("200 OK", serde_json::json!({"object": "list", "data": data, "model": request["model"]}).to_string())
                }
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    Endpoint {
        url,
        requests,
        batches,
        auth,
    }
}

fn config(url: &str) -> OpenAiConfig {
    OpenAiConfig {
        api_key_env: Some("MNEME_TEST_OPENAI_KEY".into()),
        batch_max: 3,
        timeout: Duration::from_millis(500),
        retries: 3,
        backoff: Duration::from_millis(10),
        ..OpenAiConfig::new(url, "test-embedder")
    }
}

fn set_key() {
    #[allow(
        unsafe_code,
        reason = "set_var is unsafe in edition 2024; single value shared by all tests"
    )]
    // SAFETY: every test sets the same value, so concurrent writers agree on it.
    unsafe {
        std::env::set_var("MNEME_TEST_OPENAI_KEY", "test-key");
    }
}

#[test]
fn batches_probes_the_dimension_and_sends_the_key() {
    set_key();
    let ep = serve(Mode::Ok);
    let e = OpenAiEmbedder::new(config(&ep.url)).unwrap();
    assert_eq!((e.id(), e.dim()), ("openai:test-embedder", 8));
    let texts = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"];
    let out = e.embed(&texts).unwrap();
    assert_eq!(
        out,
        texts.iter().map(|t| fake_embedding(t)).collect::<Vec<_>>(),
        "order preserved"
    );
    assert_eq!(
        *ep.batches.lock().unwrap(),
        vec![1, 3, 3, 1],
        "probe, then batches of at most 3"
    );
    assert!(
        ep.auth
            .lock()
            .unwrap()
            .iter()
            .all(|a| a == "Bearer test-key")
    );
}

#[test]
fn retries_through_503s_and_gives_up_with_a_clear_error() {
    set_key();
    let ep = serve(Mode::Fail503Then(2));
    let e = OpenAiEmbedder::new(OpenAiConfig {
        dim: Some(8),
        ..config(&ep.url)
    })
    .unwrap();
    assert_eq!(e.embed(&["hello"]).unwrap().len(), 1);
    assert_eq!(ep.requests.load(Ordering::SeqCst), 3);

    let ep = serve(Mode::Fail503Then(usize::MAX));
    let e = OpenAiEmbedder::new(OpenAiConfig {
        dim: Some(8),
        ..config(&ep.url)
    })
    .unwrap();
    let err = e.embed(&["hello"]).unwrap_err();
    assert!(
        err.contains("HTTP 503") && err.contains("4 attempts"),
        "{err}"
    );
}

#[test]
fn client_errors_and_timeouts_are_reported_not_retried_forever() {
    set_key();
    let ep = serve(Mode::Always400);
    let err = OpenAiEmbedder::new(config(&ep.url)).unwrap_err();
    assert!(
        err.contains("HTTP 400") && err.contains("model not found"),
        "{err}"
    );
    assert_eq!(ep.requests.load(Ordering::SeqCst), 1, "4xx is not retried");

    let ep = serve(Mode::Slow);
    let e = OpenAiEmbedder::new(OpenAiConfig {
        dim: Some(8),
        retries: 0,
        ..config(&ep.url)
    })
    .unwrap();
    let err = e.embed(&["slow"]).unwrap_err();
    assert!(err.to_lowercase().contains("time"), "{err}");

    let missing = OpenAiEmbedder::new(OpenAiConfig {
        api_key_env: Some("MNEME_NO_SUCH_KEY_VAR".into()),
        ..config(&ep.url)
    });
    assert!(missing.unwrap_err().contains("MNEME_NO_SUCH_KEY_VAR"));
}

#[test]
fn the_engine_remembers_and_recalls_through_the_endpoint() {
    set_key();
    let ep = serve(Mode::Ok);
    let embedder = Arc::new(OpenAiEmbedder::new(config(&ep.url)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        dir.path(),
        EngineConfig {
            embedders: Embedders::new(embedder),
            background: false,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    engine
        .remember(
            "bot",
            RememberInput {
                content: "zzz zzz".into(),
                ..Default::default()
            },
        )
        .unwrap();
    engine
        .remember(
            "bot",
            RememberInput {
                content: "aaa bbb".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let hits = engine
        .recall(
            "bot",
            &RecallQuery {
                query: "zzzz".into(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(hits[0].memory.content, "zzz zzz");
    assert_eq!(
        engine.stats("bot").unwrap().embedder,
        "openai:test-embedder"
    );
}
