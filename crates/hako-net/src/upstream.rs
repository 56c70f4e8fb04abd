//! Dify's upstream proxies (`proxy.http`, `proxy.https`, `proxy.socks5`): when set, the guard
//! still decides, then reaches the destination through them.

use crate::http::Destination;
use base64::Engine;
use std::net::IpAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{key}: {value:?} is not a proxy URL (expected {expected})")]
    Url {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("upstream proxy {proxy}: {source}")]
    Io {
        proxy: String,
        source: std::io::Error,
    },
    #[error("upstream proxy {proxy} answered {answer:?}")]
    Refused { proxy: String, answer: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub host: String,
    pub port: u16,
    pub user: Option<(String, String)>,
}

impl std::fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}",
            Destination {
                host: self.host.clone(),
                port: self.port
            }
        )
    }
}

/// The upstreams configured for the guard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upstreams {
    pub http: Option<ProxyUrl>,
    pub https: Option<ProxyUrl>,
    pub socks5: Option<ProxyUrl>,
}

/// How one connection leaves the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    Direct,
    /// Plain HTTP forwarded in absolute form.
    HttpProxy(&'a ProxyUrl),
    /// A CONNECT tunnel through an HTTP proxy.
    Tunnel(&'a ProxyUrl),
    Socks5(&'a ProxyUrl),
}

impl Upstreams {
    /// Parses Dify's `proxy.*` values; empty strings mean unset.
    pub fn parse(http: &str, https: &str, socks5: &str) -> Result<Upstreams, UpstreamError> {
        Ok(Upstreams {
            http: parse_url("proxy.http", http, &["http"])?,
            https: parse_url("proxy.https", https, &["http", "https"])?,
            socks5: parse_url("proxy.socks5", socks5, &["socks5", "socks5h"])?,
        })
    }

    /// plain HTTP: proxy.http, else socks5; CONNECT: proxy.https, else socks5.
    pub fn route(&self, connect: bool) -> Route<'_> {
        let http = if connect {
            self.https.as_ref().map(Route::Tunnel)
        } else {
            self.http.as_ref().map(Route::HttpProxy)
        };
        http.or(self.socks5.as_ref().map(Route::Socks5))
            .unwrap_or(Route::Direct)
    }
}

fn parse_url(
    key: &'static str,
    value: &str,
    schemes: &[&str],
) -> Result<Option<ProxyUrl>, UpstreamError> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let expected = if schemes[0] == "socks5" {
        "socks5://[user:pass@]host:port"
    } else {
        "http://[user:pass@]host:port"
    };
    let bad = || UpstreamError::Url {
        key,
        value: value.to_string(),
        expected,
    };
    let (scheme, rest) = v.split_once("://").ok_or_else(bad)?;
    if !schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
        return Err(bad());
    }
    let rest = rest.trim_end_matches('/');
    let (user, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => {
            let (name, pass) = u.split_once(':').unwrap_or((u, ""));
            (Some((name.to_string(), pass.to_string())), h)
        }
        None => (None, rest),
    };
    let default = if scheme.starts_with("socks") {
        1080
    } else {
        80
    };
    let dest = crate::http::authority(hostport, Some(default)).map_err(|_| bad())?;
    Ok(Some(ProxyUrl {
        host: dest.host,
        port: dest.port,
        user,
    }))
}

impl ProxyUrl {
    pub(crate) fn basic_auth(&self) -> Option<String> {
        self.user.as_ref().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        })
    }

    fn io(&self, source: std::io::Error) -> UpstreamError {
        UpstreamError::Io {
            proxy: self.to_string(),
            source,
        }
    }

    pub async fn connect(&self) -> Result<TcpStream, UpstreamError> {
        TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.io(e))
    }

    /// Opens a CONNECT tunnel to `target` (`host:port`).
    pub async fn tunnel(&self, target: &str) -> Result<TcpStream, UpstreamError> {
        let mut s = self.connect().await?;
        let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(auth) = self.basic_auth() {
            head.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await.map_err(|e| self.io(e))?;
        // Read byte by byte up to the blank line so no tunnelled byte is consumed.
        let mut answer = Vec::new();
        while !answer.ends_with(b"\r\n\r\n") {
            if answer.len() > 16 << 10 {
                return Err(UpstreamError::Refused {
                    proxy: self.to_string(),
                    answer: "oversized answer".into(),
                });
            }
            let b = s.read_u8().await.map_err(|e| self.io(e))?;
            answer.push(b);
        }
        let status_line =
            String::from_utf8_lossy(answer.split(|b| *b == b'\n').next().unwrap_or_default())
                .trim()
                .to_string();
        if status_line.split_whitespace().nth(1) != Some("200") {
            return Err(UpstreamError::Refused {
                proxy: self.to_string(),
                answer: status_line,
            });
        }
        Ok(s)
    }

    /// SOCKS5 CONNECT (RFC 1928, 1929): to `ip` when the guard resolved the name, else by name.
    pub async fn socks5(
        &self,
        dest: &Destination,
        ip: Option<IpAddr>,
    ) -> Result<TcpStream, UpstreamError> {
        let mut s = self.connect().await?;
        let refused = |answer: &str| UpstreamError::Refused {
            proxy: self.to_string(),
            answer: answer.to_string(),
        };
        let method: u8 = if self.user.is_some() { 2 } else { 0 };
        s.write_all(&[5, 1, method]).await.map_err(|e| self.io(e))?;
        let mut reply = [0u8; 2];
        s.read_exact(&mut reply).await.map_err(|e| self.io(e))?;
        if reply != [5, method] {
            return Err(refused("no acceptable authentication method"));
        }
        if let Some((user, pass)) = &self.user {
            let mut msg = vec![1, user.len().min(255) as u8];
            msg.extend_from_slice(&user.as_bytes()[..user.len().min(255)]);
            msg.push(pass.len().min(255) as u8);
            msg.extend_from_slice(&pass.as_bytes()[..pass.len().min(255)]);
            s.write_all(&msg).await.map_err(|e| self.io(e))?;
            s.read_exact(&mut reply).await.map_err(|e| self.io(e))?;
            if reply[1] != 0 {
                return Err(refused("authentication failed"));
            }
        }
        let mut msg = vec![5, 1, 0];
        match ip {
            Some(IpAddr::V4(v4)) => {
                msg.push(1);
                msg.extend_from_slice(&v4.octets());
            }
            Some(IpAddr::V6(v6)) => {
                msg.push(4);
                msg.extend_from_slice(&v6.octets());
            }
            None => {
                let name = dest.host.as_bytes();
                msg.push(3);
                msg.push(name.len().min(255) as u8);
                msg.extend_from_slice(&name[..name.len().min(255)]);
            }
        }
        msg.extend_from_slice(&dest.port.to_be_bytes());
        s.write_all(&msg).await.map_err(|e| self.io(e))?;
        let mut head = [0u8; 4];
        s.read_exact(&mut head).await.map_err(|e| self.io(e))?;
        if head[1] != 0 {
            return Err(refused(&format!("SOCKS5 reply code {}", head[1])));
        }
        let skip = match head[3] {
            1 => 4 + 2,
            4 => 16 + 2,
            3 => usize::from(s.read_u8().await.map_err(|e| self.io(e))?) + 2,
            _ => return Err(refused("bad SOCKS5 address type")),
        };
        let mut rest = vec![0u8; skip];
        s.read_exact(&mut rest).await.map_err(|e| self.io(e))?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dify_proxy_urls() {
        let u =
            Upstreams::parse("http://ssrf_proxy:3128", "", "socks5://u:p@10.0.0.2:1080").unwrap();
        assert_eq!(
            u.http,
            Some(ProxyUrl {
                host: "ssrf_proxy".into(),
                port: 3128,
                user: None
            })
        );
        assert_eq!(u.route(false), Route::HttpProxy(u.http.as_ref().unwrap()));
        assert_eq!(u.route(true), Route::Socks5(u.socks5.as_ref().unwrap()));
        assert_eq!(
            u.socks5.as_ref().unwrap().basic_auth().unwrap(),
            "Basic dTpw"
        );
        assert_eq!(
            Upstreams::parse("", "", "").unwrap().route(true),
            Route::Direct
        );
        let err = Upstreams::parse("socks5://x:1", "", "").unwrap_err();
        assert!(err.to_string().contains("proxy.http"), "{err}");
    }
}
