//! Starting, stopping and killing the real server, and clients for it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mneme_server::pb;
use mneme_server::pb::admin_service_client::AdminServiceClient;
use mneme_server::pb::memory_service_client::MemoryServiceClient;
use tonic::transport::Channel;

/// A running `mneme serve`.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
}

impl Server {
    /// Starts the binary on a free loopback port with `dir` as its data directory.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        Self::start_with_env(dir, extra, &[])
    }

    /// Same, with extra environment variables for the server process.
    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mneme"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra)
            .envs(env.iter().copied());
        let (child, rx) = launch(command, "warn");
        let (_, addr) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server reports its address");
        let metrics = extra.contains(&"--metrics-listen").then(|| {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("metrics address")
                .1
                .parse()
                .unwrap()
        });
        Server {
            child: Some(child),
            addr: addr.parse().unwrap(),
            metrics,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn client(&self) -> MemoryServiceClient<Channel> {
        MemoryServiceClient::new(self.channel().await)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and wait (at most a minute) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server still running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits (at most `limit`) for the process to exit on its own; its status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `command` (a `mneme serve …`) at log level `log`, and reads its stdout on a
/// thread: the addresses it announces arrive on the receiver, `(false, serving address)` and
/// `(true, metrics address)`.
fn launch(mut command: Command, log: &str) -> (Child, mpsc::Receiver<(bool, String)>) {
    let mut child = command
        .env("RUST_LOG", log)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the mneme binary starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("mneme listening on ") {
                let _ = tx.send((false, addr.trim().to_owned()));
            }
            if let Some(addr) = line.strip_prefix("mneme metrics on http://") {
                let _ = tx.send((true, addr.trim().trim_end_matches("/metrics").to_owned()));
            }
        }
    });
    (child, rx)
}

/// Starts a cluster node from `command` (a `mneme serve …`), its log level from
/// `MNEME_NODE_LOG` (default `error`), and waits until it serves.
pub fn spawn_node(command: Command) -> Child {
    let log = std::env::var("MNEME_NODE_LOG").unwrap_or_else(|_| "error".into());
    let (child, rx) = launch(command, &log);
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the node reports its address");
    child
}

/// A request carrying an API key.
pub fn keyed<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

pub fn remember(agent: &str, content: &str) -> pb::RememberRequest {
    pb::RememberRequest {
        agent_id: agent.into(),
        content: content.into(),
        ..Default::default()
    }
}

pub fn recall(agent: &str, query: &str) -> pb::RecallRequest {
    pb::RecallRequest {
        agent_id: agent.into(),
        query: query.into(),
        top_k: 10,
        ..Default::default()
    }
}

/// Runs `mneme serve` with `args`, expecting it to refuse to start: returns its stderr.
pub fn refused(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mneme"))
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("the mneme binary runs");
    assert!(
        !out.status.success(),
        "mneme serve {args:?} started: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}
