//! Reading and parsing request bodies ourselves: lenient on Content-Type (as Dify
//! Sandbox), strict on size, with messages that say what is wrong.

use crate::answer::Rejection;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use hako_runtime::result::LimitOverrides;
use http_body_util::BodyExt;
use serde::Deserialize;
use std::time::Duration;

/// How long a client may take to send its body.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// After the limit is passed, this much more is read and dropped so the client gets the 413
/// instead of a reset connection.
const DRAIN_BYTES: u64 = 64 << 20;

/// Reads a body of at most `limit` bytes.
pub(crate) async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> Result<Bytes, Rejection> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(DRAIN_BYTES)) {
        return Err(Rejection::BodyTooLarge { limit });
    }
    let read = async {
        let mut body = body;
        let capacity = declared.unwrap_or(0).min(limit).min(1 << 20) as usize;
        let mut buf = Vec::with_capacity(capacity);
        let mut seen: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(Rejection::ReadBody)?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen = seen.saturating_add(data.len() as u64);
            if seen <= limit {
                buf.extend_from_slice(&data);
            } else if seen > limit.saturating_add(DRAIN_BYTES) {
                break;
            } else if !buf.is_empty() {
                buf = Vec::new();
            }
        }
        if seen > limit {
            return Err(Rejection::BodyTooLarge { limit });
        }
        Ok(Bytes::from(buf))
    };
    tokio::time::timeout(BODY_READ_TIMEOUT, read)
        .await
        .map_err(|_| Rejection::BodyTimeout)?
}

/// The run request body. Unknown fields are ignored, as Dify Sandbox does.
#[derive(Debug, Deserialize)]
pub struct RunBody {
    pub language: String,
    pub code: String,
    #[serde(default)]
    pub preload: Option<String>,
    #[serde(default)]
    pub enable_network: Option<bool>,
    /// hako extension.
    #[serde(default)]
    pub limits: Option<LimitOverrides>,
}

pub fn parse_run_body(bytes: &[u8]) -> Result<RunBody, Rejection> {
    let body: RunBody = parse_json(bytes)?;
    if body.code.is_empty() {
        return Err(Rejection::BadRequest(
            "field `code` must not be empty".into(),
        ));
    }
    if let Some(limits) = &body.limits {
        if limits.timeout_ms == Some(0) || limits.memory_mb == Some(0) {
            return Err(Rejection::BadRequest(
                "limits must be greater than 0".into(),
            ));
        }
    }
    Ok(body)
}

/// Parses a JSON object body with a message that names the problem.
pub(crate) fn parse_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, Rejection> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Rejection::BadRequest(format!(
            "request body is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    if text.trim().is_empty() {
        return Err(Rejection::BadRequest(
            "request body is empty; expected a JSON object".into(),
        ));
    }
    serde_json::from_str(text).map_err(|source| Rejection::Json {
        what: if source.is_eof() {
            "request body is truncated JSON"
        } else {
            "invalid request body"
        },
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(bytes: &[u8]) -> String {
        match parse_run_body(bytes) {
            Ok(body) => panic!("accepted {body:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn accepts_difys_body_and_ignores_unknown_fields() {
        let body = parse_run_body(
            br#"{"language":"python3","code":"print(1)","preload":"","enable_network":true,"x":1}"#,
        )
        .unwrap();
        assert_eq!(
            (body.language.as_str(), body.code.as_str()),
            ("python3", "print(1)")
        );
        assert_eq!(body.enable_network, Some(true));
        let body = parse_run_body(br#"{"language":"nodejs","code":"1","preload":null}"#).unwrap();
        assert_eq!((body.preload, body.enable_network), (None, None));
        let body = parse_run_body(br#"{"language":"nodejs","code":"1","limits":{"timeout_ms":5}}"#)
            .unwrap();
        assert_eq!(body.limits.unwrap().timeout_ms, Some(5));
    }

    #[test]
    fn explains_bad_bodies() {
        assert!(message(b"").contains("empty"));
        assert!(message(br#"{"language":"python3","co"#).contains("truncated"));
        assert!(message(br#"{"language":"python3","code":5}"#).contains("invalid type"));
        assert!(message(br#"{"language":"python3"}"#).contains("missing field `code`"));
        assert!(message(br#"{"code":"x"}"#).contains("missing field `language`"));
        assert!(message(br#"{"language":"python3","code":""}"#).contains("must not be empty"));
        assert!(message(b"{\"language\":\"\xff\"}").contains("UTF-8"));
        assert!(message(b"[1]").contains("invalid request body"));
        assert!(
            message(br#"{"language":"nodejs","code":"1","limits":{"memory_mb":0}}"#)
                .contains("limits")
        );
    }

    #[tokio::test]
    async fn enforces_the_size_limit() {
        let headers = HeaderMap::new();
        let ok = read_limited(&headers, Body::from(vec![b'a'; 10]), 10)
            .await
            .unwrap();
        assert_eq!(ok.len(), 10);
        let e = read_limited(&headers, Body::from(vec![b'a'; 11]), 10)
            .await
            .unwrap_err();
        assert!(matches!(e, Rejection::BodyTooLarge { limit: 10 }));
        let mut declared = HeaderMap::new();
        declared.insert(
            header::CONTENT_LENGTH,
            (DRAIN_BYTES + 100).to_string().parse().unwrap(),
        );
        let e = read_limited(&declared, Body::empty(), 10)
            .await
            .unwrap_err();
        assert!(matches!(e, Rejection::BodyTooLarge { .. }));
    }
}
