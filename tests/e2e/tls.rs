//! TLS: the server serves gRPC over rustls with a certificate signed by a test CA; a client
//! that trusts the CA talks to it, a plaintext client cannot.

use std::path::Path;
use std::process::Command;

use mneme_server::pb;
use mneme_server::pb::memory_service_client::MemoryServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::harness::{Server, remember};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=mneme-test-ca",
            ],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

#[tokio::test]
async fn serves_grpc_over_tls() {
    if Command::new("openssl").arg("version").output().is_err() {
        assert!(
            std::env::var("CI").is_err(),
            "openssl must be installed in CI"
        );
        eprintln!("skipping: openssl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let cert = dir.path().join("server.pem");
    let key = dir.path().join("server.key");
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = MemoryServiceClient::new(channel);
    let out = c
        .remember(remember("bot", "over TLS"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.memory.unwrap().content, "over TLS");
    let stats = c
        .stats(pb::StatsRequest {
            agent_id: "bot".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.total_memories, 1);

    let plaintext = async {
        let channel = Channel::from_shared(format!("http://{}", server.addr))
            .unwrap()
            .connect()
            .await?;
        MemoryServiceClient::new(channel)
            .stats(pb::StatsRequest {
                agent_id: "bot".into(),
            })
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)?;
        Ok::<(), Box<dyn std::error::Error>>(())
    };
    assert!(
        plaintext.await.is_err(),
        "a plaintext client got through a TLS server"
    );
}
