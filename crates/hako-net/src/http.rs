//! Proxy requests as clients send them: `CONNECT host:port` and absolute-form `http://` requests.

use std::fmt;

/// Largest request head the guard reads.
pub const MAX_HEAD: usize = 64 << 10;
const MAX_HEADERS: usize = 100;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("malformed request: {0}")]
    Malformed(#[source] httparse::Error),
    #[error("request head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("https:// URLs go through CONNECT (the guard does not terminate TLS)")]
    HttpsAbsolute,
    #[error("not a proxy request: use an absolute http:// URL or CONNECT")]
    NotProxy,
    #[error("bad destination {0:?}")]
    Destination(String),
}

/// Where a request wants to go. `host` has no brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `CONNECT host:port`: a tunnel.
    Connect(Destination),
    /// Absolute-form plain HTTP: `method`, destination, origin-form path, absolute URL, headers.
    Http {
        method: String,
        dest: Destination,
        path: String,
        url: String,
        headers: Vec<(String, Vec<u8>)>,
    },
}

/// Parses a request head. `Ok(None)`: incomplete. On success also returns the head length.
pub fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HeadError::Malformed(e)),
    };
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default();
    if method.eq_ignore_ascii_case("CONNECT") {
        return Ok(Some((Request::Connect(authority(target, None)?), len)));
    }
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(HeadError::HttpsAbsolute);
    }
    if !lower.starts_with("http://") {
        return Err(HeadError::NotProxy);
    }
    let rest = &target[7..];
    let (auth, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    let dest = authority(auth, Some(80))?;
    let headers = req
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    Ok(Some((
        Request::Http {
            method,
            dest,
            path,
            url: target.to_string(),
            headers,
        },
        len,
    )))
}

/// `host:port`, `[v6]:port`, or `host` with a default port.
pub(crate) fn authority(text: &str, default_port: Option<u16>) -> Result<Destination, HeadError> {
    let bad = || HeadError::Destination(text.to_string());
    if text.contains('@') {
        return Err(bad());
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(bad()),
        }
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| bad())?,
        None => default_port.ok_or_else(bad)?,
    };
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
        && (!host.contains(':') || host.parse::<std::net::Ipv6Addr>().is_ok());
    if !valid || port == 0 {
        return Err(bad());
    }
    Ok(Destination {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// The request head sent on: origin-form (direct) or absolute-form (to an upstream proxy),
/// without hop-by-hop proxy headers, one request per connection.
pub(crate) fn forward_head(
    method: &str,
    target: &str,
    dest: &Destination,
    headers: &[(String, Vec<u8>)],
    proxy_auth: Option<&str>,
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    let mut has_host = false;
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "proxy-connection" | "proxy-authorization" | "connection" | "keep-alive"
        ) {
            continue;
        }
        has_host |= lower == "host";
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !has_host {
        out.extend_from_slice(format!("Host: {dest}\r\n").as_bytes());
    }
    if let Some(auth) = proxy_auth {
        out.extend_from_slice(format!("Proxy-Authorization: {auth}\r\n").as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// A complete plain-text answer from the guard itself. The status line carries the body's
/// first line too: clients that report only the status line of a failed `CONNECT` (Python's
/// `Tunnel connection failed: 502 ...`) show the reason as well.
pub fn answer(status: u16, reason: &str, body: &str) -> Vec<u8> {
    let detail: String = body
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    let phrase = if detail.is_empty() {
        reason.to_string()
    } else {
        format!("{reason} ({detail})")
    };
    format!(
        "HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nX-Hako-Egress: {}\r\n\r\n{body}",
        body.len(),
        if status == 403 { "refused" } else { "error" }
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(host: &str, port: u16) -> Destination {
        Destination {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn connect_and_absolute_form() {
        let (r, n) = parse(b"CONNECT Example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nxx")
            .unwrap()
            .unwrap();
        assert_eq!((r, n), (Request::Connect(dest("example.com", 443)), 59));
        let (r, _) =
            parse(b"GET http://127.0.0.1:8080/a?b=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n")
                .unwrap()
                .unwrap();
        match r {
            Request::Http { dest: d, path, .. } => {
                assert_eq!((d, path.as_str()), (dest("127.0.0.1", 8080), "/a?b=1"))
            }
            other => panic!("{other:?}"),
        }
        let (r, _) = parse(b"GET http://[::1]?x HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        match r {
            Request::Http { dest: d, path, .. } => {
                assert_eq!((d, path.as_str()), (dest("::1", 80), "/?x"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(b"GET http://a").unwrap(), None);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            parse(b"GET https://x/ HTTP/1.1\r\n\r\n").unwrap_err(),
            HeadError::HttpsAbsolute
        );
        assert_eq!(
            parse(b"GET /x HTTP/1.1\r\n\r\n").unwrap_err(),
            HeadError::NotProxy
        );
        for bad in [
            "a@b:80", "x:0", "x:99999", "[::1", "", "a b:1", "[zz]:1", "x",
        ] {
            assert!(authority(bad, None).is_err(), "{bad}");
        }
        assert_eq!(
            authority("[::ffff:10.0.0.1]:80", None).unwrap(),
            dest("::ffff:10.0.0.1", 80)
        );
        assert_eq!(dest("::1", 443).to_string(), "[::1]:443");
        let big = vec![b'a'; MAX_HEAD + 1];
        assert!(parse(&big).is_err());
    }

    #[test]
    fn answers_carry_the_reason_in_the_status_line() {
        let text =
            String::from_utf8(answer(502, "Bad Gateway", "hako egress: no\r\nmore\n")).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 502 Bad Gateway (hako egress: no)\r\n"),
            "{text}"
        );
        let odd = String::from_utf8(answer(403, "Forbidden", "a\u{7f}b")).unwrap();
        assert!(odd.starts_with("HTTP/1.1 403 Forbidden (a?b)\r\n"), "{odd}");
    }

    #[test]
    fn forwarded_head_drops_proxy_headers() {
        let headers = vec![
            ("Host".to_string(), b"h:1".to_vec()),
            ("Proxy-Connection".to_string(), b"keep-alive".to_vec()),
            ("Proxy-Authorization".to_string(), b"Basic eA==".to_vec()),
            ("X-A".to_string(), b"1".to_vec()),
        ];
        let head =
            String::from_utf8(forward_head("GET", "/p", &dest("h", 1), &headers, None)).unwrap();
        assert_eq!(
            head,
            "GET /p HTTP/1.1\r\nHost: h:1\r\nX-A: 1\r\nConnection: close\r\n\r\n"
        );
    }
}
