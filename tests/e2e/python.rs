//! The Python SDK's suite (clients/python/tests) and the MCP server's suite (tests/mcp,
//! with the official Python MCP client), each run by pytest against this binary. Outside CI
//! they are skipped, with a message, when the Python packages are not installed
//! (`pip install ./clients/python pytest mcp`); in CI they must run.

use std::process::Command;

fn python_has(modules: &[&str]) -> bool {
    let probe = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    Command::new("python3")
        .args(["-c", &probe])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn pytest(path: &str, modules: &[&str]) {
    if !python_has(modules) {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install the Python packages {modules:?}"
        );
        eprintln!("skipping {path}: pip install ./clients/python pytest mcp");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", path])
        .current_dir(root)
        .env("MNEME_BIN", env!("CARGO_BIN_EXE_mneme"))
        .status()
        .expect("python3 runs");
    assert!(status.success(), "pytest {path} failed");
}

#[test]
fn python_sdk_suite() {
    pytest(
        "clients/python/tests",
        &["mneme_client", "pytest", "grpc_tools"],
    );
}

#[cfg(feature = "mcp")]
#[test]
fn mcp_suite_with_the_official_python_client() {
    pytest("tests/mcp", &["mneme_client", "pytest", "mcp"]);
}
