//! A Model Context Protocol server over the agent API: JSON-RPC messages in, JSON-RPC
//! answers out, independent of the transport (`hako mcp` over stdio, `/mcp` over streamable
//! HTTP, see [`crate::mcp_http`]).
//!
//! Tools: `run_code`, `session_create`, `session_exec`, `session_upload`,
//! `session_download`, `session_close`. Tool failures are results with `isError: true`
//! (the model reads them); protocol failures are JSON-RPC errors.

use crate::admission::Admission;
use crate::result::error_text;
use hako_runtime::agent::{Agent, AgentError, RunSpec, SessionAnswer, SessionSpec};
use hako_runtime::result::RunReport;
use serde_json::{json, Value};
use std::sync::Arc;

/// Protocol versions this server speaks, newest first.
pub const PROTOCOL_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

/// The MCP server of one hako process.
#[derive(Clone)]
pub struct McpServer {
    agent: Agent,
    /// The HTTP server's admission (runs and execs count as runs); none on stdio.
    admission: Option<Arc<Admission>>,
}

/// A tool call that could not be served: the text goes back with `isError: true`.
struct ToolFailure(String);

impl From<AgentError> for ToolFailure {
    fn from(e: AgentError) -> Self {
        ToolFailure(e.to_string())
    }
}

impl McpServer {
    pub fn new(agent: Agent, admission: Option<Arc<Admission>>) -> McpServer {
        McpServer { agent, admission }
    }

    /// Answers one message; `None` for notifications and responses.
    pub async fn handle(&self, message: Value) -> Option<Value> {
        let Some(object) = message.as_object() else {
            return Some(error(
                Value::Null,
                INVALID_REQUEST,
                "expected a JSON-RPC object",
            ));
        };
        let id = object.get("id").cloned();
        let Some(method) = object.get("method").and_then(Value::as_str) else {
            // A response to us (we send no requests) or garbage without an id.
            return id.map(|id| error(id, INVALID_REQUEST, "expected a method"));
        };
        let id = id?;
        let params = object.get("params").cloned().unwrap_or(json!({}));
        let result = match method {
            "initialize" => Ok(initialize(&params)),
            "ping" => Ok(json!({})),
            "tools/list" => Ok(json!({ "tools": tools() })),
            "tools/call" => self.call(&params).await,
            other => Err((METHOD_NOT_FOUND, format!("method {other} is not supported"))),
        };
        Some(match result {
            Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Err((code, message)) => error(id, code, &message),
        })
    }

    /// Parses a message's text; a parse failure is a JSON-RPC error.
    pub async fn handle_text(&self, text: &str) -> Option<Value> {
        match serde_json::from_str::<Value>(text) {
            Ok(message) => self.handle(message).await,
            Err(e) => Some(error(
                Value::Null,
                PARSE_ERROR,
                &format!("parse error: {e}"),
            )),
        }
    }

    async fn call(&self, params: &Value) -> Result<Value, (i64, String)> {
        let name = params
            .get("name")
            .and_then(Value::as_str)
            .ok_or((INVALID_PARAMS, "tools/call needs a tool name".to_string()))?;
        let args = params.get("arguments").cloned().unwrap_or(json!({}));
        let sessions = self.agent.sessions();
        let outcome: Result<Vec<Value>, ToolFailure> = match name {
            "run_code" => self.run_code(&args).await,
            "session_create" => {
                let spec = SessionSpec {
                    language: str_arg(&args, "language")?.to_string(),
                    timeout_s: args.get("timeout_s").and_then(Value::as_f64),
                    memory_mb: args.get("memory_mb").and_then(Value::as_u64),
                    ..Default::default()
                };
                sessions
                    .create(spec, "mcp")
                    .await
                    .map(|id| vec![text(&json!({ "session_id": id }).to_string())])
                    .map_err(ToolFailure::from)
            }
            "session_exec" => {
                let id = str_arg(&args, "session_id")?;
                let code = str_arg(&args, "code")?;
                match self.admit().await {
                    Err(e) => Err(e),
                    Ok(_slot) => match sessions.exec(id, code).await {
                        Ok(answer) => return Ok(exec_result(&answer)),
                        Err(e) => Err(e.into()),
                    },
                }
            }
            "session_upload" => {
                let id = str_arg(&args, "session_id")?;
                let path = str_arg(&args, "path")?;
                let data = decode(str_arg(&args, "content_base64")?)?;
                sessions
                    .put_file(id, path, &data)
                    .await
                    .map(|()| vec![text(&format!("uploaded {} bytes to {path}", data.len()))])
                    .map_err(ToolFailure::from)
            }
            "session_download" => {
                let id = str_arg(&args, "session_id")?;
                let path = str_arg(&args, "path")?;
                sessions
                    .get_file(id, path)
                    .await
                    .map(|data| vec![blob(path, &data)])
                    .map_err(ToolFailure::from)
            }
            "session_close" => {
                let id = str_arg(&args, "session_id")?;
                if sessions.close(id) {
                    Ok(vec![text(&format!("session {id} closed"))])
                } else {
                    Err(AgentError::NoSession(id.to_string()).into())
                }
            }
            other => return Err((INVALID_PARAMS, format!("unknown tool {other}"))),
        };
        Ok(match outcome {
            Ok(content) => json!({ "content": content, "isError": false }),
            Err(ToolFailure(message)) => json!({ "content": [text(&message)], "isError": true }),
        })
    }

    async fn run_code(&self, args: &Value) -> Result<Vec<Value>, ToolFailure> {
        let spec = RunSpec {
            language: str_arg(args, "language")?.to_string(),
            code: str_arg(args, "code")?.to_string(),
            timeout_s: args.get("timeout_s").and_then(Value::as_f64),
            ..Default::default()
        };
        let _slot = self.admit().await?;
        let result = self.agent.run(spec, "mcp", None).await?;
        let mut content = run_texts(&result.run);
        if result.run.status != hako_runtime::RunStatus::Ok {
            return Err(ToolFailure(
                content
                    .iter()
                    .filter_map(|c| c["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ));
        }
        if content.is_empty() {
            content.push(text("(no output)"));
        }
        Ok(content)
    }

    /// Holds a worker slot like any run (HTTP only).
    async fn admit(&self) -> Result<Option<crate::admission::Running>, ToolFailure> {
        let Some(admission) = &self.admission else {
            return Ok(None);
        };
        let ticket = admission
            .try_admit()
            .ok_or_else(|| ToolFailure("Too many requests; try again later".into()))?;
        let running = ticket
            .start()
            .await
            .map_err(|_| ToolFailure("the server is shutting down".into()))?;
        Ok(Some(running))
    }
}

impl From<(i64, String)> for ToolFailure {
    fn from((_, message): (i64, String)) -> Self {
        ToolFailure(message)
    }
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn initialize(params: &Value) -> Value {
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    let version = asked
        .filter(|v| PROTOCOL_VERSIONS.contains(v))
        .unwrap_or(PROTOCOL_VERSIONS[1]);
    json!({
        "protocolVersion": version,
        "capabilities": { "tools": { "listChanged": false } },
        "serverInfo": { "name": "hako", "version": env!("CARGO_PKG_VERSION") },
        "instructions": "Runs Python 3 and Node.js code in hako's sandbox. Use run_code for one-off code; use sessions to keep variables, imports and files between calls (files live under /tmp, the working directory).",
    })
}

fn str_arg<'a>(args: &'a Value, name: &str) -> Result<&'a str, (i64, String)> {
    args.get(name).and_then(Value::as_str).ok_or((
        INVALID_PARAMS,
        format!("argument `{name}` (a string) is required"),
    ))
}

fn decode(text: &str) -> Result<Vec<u8>, (i64, String)> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| (INVALID_PARAMS, format!("content_base64 is not base64: {e}")))
}

fn text(value: &str) -> Value {
    json!({ "type": "text", "text": value })
}

fn blob(path: &str, data: &[u8]) -> Value {
    use base64::Engine;
    json!({
        "type": "resource",
        "resource": {
            "uri": format!("file:///tmp/{path}"),
            "mimeType": "application/octet-stream",
            "blob": base64::engine::general_purpose::STANDARD.encode(data),
        }
    })
}

/// stdout, stderr and the error of a run, each as a text block when not empty.
fn run_texts(run: &RunReport) -> Vec<Value> {
    let mut content = Vec::new();
    if !run.stdout.is_empty() {
        content.push(text(&run.stdout));
    }
    let error = error_text(run);
    if !run.stderr.is_empty() && error.is_empty() {
        content.push(text(&format!("stderr:\n{}", run.stderr)));
    }
    if !error.is_empty() {
        content.push(text(&format!(
            "error ({}):\n{}",
            run.status.as_str(),
            error
        )));
    }
    content
}

fn exec_result(answer: &SessionAnswer) -> Value {
    let mut content = run_texts(&answer.run);
    if let Some(value) = &answer.value {
        content.push(text(value));
    }
    for image in &answer.images {
        content.push(json!({"type": "image", "data": image.base64, "mimeType": image.mime}));
    }
    if answer.session_ended {
        content.push(text("the session has ended; create a new one"));
    }
    if content.is_empty() {
        content.push(text("(no output)"));
    }
    let failed = answer.run.status != hako_runtime::RunStatus::Ok;
    json!({ "content": content, "isError": failed })
}

fn tools() -> Value {
    let language = json!({"type": "string", "enum": ["python3", "nodejs"], "description": "python3 or nodejs"});
    let session_id = json!({"type": "string", "description": "the id session_create returned"});
    json!([
        {
            "name": "run_code",
            "description": "Run a Python 3 or Node.js program once in a fresh sandbox and return what it printed.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "language": language,
                    "code": {"type": "string", "description": "the program"},
                    "timeout_s": {"type": "number", "exclusiveMinimum": 0, "description": "wall-clock limit in seconds (at most the server's)"}
                },
                "required": ["language", "code"]
            }
        },
        {
            "name": "session_create",
            "description": "Start a sandboxed interpreter that keeps variables, imports and files between session_exec calls.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "language": language,
                    "timeout_s": {"type": "number", "exclusiveMinimum": 0, "description": "limit of each exec in seconds"},
                    "memory_mb": {"type": "integer", "minimum": 1, "description": "memory limit in MiB"}
                },
                "required": ["language"]
            }
        },
        {
            "name": "session_exec",
            "description": "Run code in a session. Returns output, the value of a final expression, and matplotlib figures as images.",
            "inputSchema": {
                "type": "object",
                "properties": {"session_id": session_id, "code": {"type": "string"}},
                "required": ["session_id", "code"]
            }
        },
        {
            "name": "session_upload",
            "description": "Write a file into a session's working directory (/tmp).",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "session_id": session_id,
                    "path": {"type": "string", "description": "relative path, e.g. data/input.csv"},
                    "content_base64": {"type": "string", "contentEncoding": "base64"}
                },
                "required": ["session_id", "path", "content_base64"]
            }
        },
        {
            "name": "session_download",
            "description": "Read a file from a session's working directory (/tmp).",
            "inputSchema": {
                "type": "object",
                "properties": {"session_id": session_id, "path": {"type": "string"}},
                "required": ["session_id", "path"]
            }
        },
        {
            "name": "session_close",
            "description": "End a session and free its sandbox.",
            "inputSchema": {
                "type": "object",
                "properties": {"session_id": session_id},
                "required": ["session_id"]
            }
        }
    ])
}
