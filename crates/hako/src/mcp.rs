//! `hako mcp`: the MCP server over stdio (newline-delimited JSON-RPC on stdin and stdout),
//! with its own jail runtime. Logs go to stderr; stdout carries only MCP messages.

use anyhow::{Context, Result};
use hako_api::mcp::McpServer;
use hako_runtime::agent::Agent;
use hako_runtime::Executor;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Serves until stdin ends, then closes the sessions it started.
pub async fn serve(executor: Executor) -> Result<()> {
    let server = McpServer::new(Agent::new(executor.clone()), None);
    let (tx, mut rx) = mpsc::channel::<String>(64);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = rx.recv().await {
            if stdout.write_all(line.as_bytes()).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(line) = lines.next_line().await.context("read stdin")? {
        if line.trim().is_empty() {
            continue;
        }
        // Requests run concurrently; each answer is one line.
        let server = server.clone();
        let tx = tx.clone();
        tasks.spawn(async move {
            if let Some(reply) = server.handle_text(&line).await {
                let _ = tx.send(format!("{reply}\n")).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    drop(tx);
    let _ = writer.await;
    executor.wait_for_helpers().await;
    Ok(())
}
