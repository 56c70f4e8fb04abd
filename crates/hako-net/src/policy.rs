//! Which destinations a run may reach: built-in refusal of internal address ranges, and the
//! operator's `hako.network.allow` / `hako.network.deny` lists (CIDRs, addresses or names).
//!
//! Order: a deny rule refuses; else an allow rule admits; else the address must be public.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("hako.network.{key}: {value:?} is not a CIDR, an IP address or a host name (e.g. 10.1.0.0/16, db.internal, *.corp.example)")]
    Rule { key: &'static str, value: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Net {
        addr: IpAddr,
        prefix: u8,
    },
    /// Exact host name, lower case, no trailing dot.
    Host(String),
    /// `*.example.com` / `.example.com`: any name below `example.com`, stored as `.example.com`.
    Suffix(String),
}

/// The verdict on one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(String),
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

impl Policy {
    pub fn new(allow: &[String], deny: &[String]) -> Result<Policy, PolicyError> {
        let parse = |key, list: &[String]| {
            list.iter()
                .map(|v| parse_rule(key, v))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Policy {
            allow: parse("allow", allow)?,
            deny: parse("deny", deny)?,
        })
    }

    /// Decides on a host name before it is resolved, when a name rule matches it.
    pub fn check_name(&self, host: &str) -> Option<Verdict> {
        let host = normalize_name(host);
        if self.deny.iter().any(|r| name_matches(r, &host)) {
            return Some(Verdict::Deny(format!("{host} is on hako.network.deny")));
        }
        if self.allow.iter().any(|r| name_matches(r, &host)) {
            return Some(Verdict::Allow);
        }
        None
    }

    /// Decides on one address. `name_allowed`: the name was on the allow list, so only the
    /// deny list applies.
    pub fn check_ip(&self, ip: IpAddr, name_allowed: bool) -> Verdict {
        let ip = canonical(ip);
        if self.deny.iter().any(|r| net_contains(r, ip)) {
            return Verdict::Deny(format!("{ip} is on hako.network.deny"));
        }
        if name_allowed || self.allow.iter().any(|r| net_contains(r, ip)) {
            return Verdict::Allow;
        }
        match forbidden(ip) {
            Some(kind) => {
                Verdict::Deny(format!("{ip} is {kind}; allow it with hako.network.allow"))
            }
            None => Verdict::Allow,
        }
    }
}

fn normalize_name(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn name_matches(rule: &Rule, host: &str) -> bool {
    match rule {
        Rule::Host(name) => name == host,
        Rule::Suffix(suffix) => host.ends_with(suffix.as_str()),
        Rule::Net { .. } => false,
    }
}

fn net_contains(rule: &Rule, ip: IpAddr) -> bool {
    let Rule::Net { addr, prefix } = rule else {
        return false;
    };
    match (addr, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), *prefix),
        (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), *prefix),
        _ => false,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || (a[full] ^ b[full]) & (0xffu8 << (8 - rest)) == 0
}

fn parse_rule(key: &'static str, value: &str) -> Result<Rule, PolicyError> {
    let bad = || PolicyError::Rule {
        key,
        value: value.to_string(),
    };
    let v = value.trim();
    let (addr, prefix) = match v.split_once('/') {
        Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
        None => (v, None),
    };
    let bare = addr.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        let ip = canonical(ip);
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        return Ok(Rule::Net { addr: ip, prefix });
    }
    if prefix.is_some() {
        return Err(bad());
    }
    let name = normalize_name(v);
    let (suffix, body) = match name.strip_prefix("*.").or_else(|| name.strip_prefix('.')) {
        Some(body) => (true, body.to_string()),
        None => (false, name.clone()),
    };
    let valid = !body.is_empty()
        && body.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(bad());
    }
    Ok(if suffix {
        Rule::Suffix(format!(".{body}"))
    } else {
        Rule::Host(body)
    })
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// Why an address is never a public destination, or `None` when it is one.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u8, &str)] = &[
        ([0, 0, 0, 0], 8, "an unspecified (\"this network\") address"),
        ([10, 0, 0, 0], 8, "a private address (RFC 1918)"),
        (
            [100, 64, 0, 0],
            10,
            "a carrier-grade NAT address (RFC 6598)",
        ),
        ([127, 0, 0, 0], 8, "a loopback address"),
        (
            [169, 254, 0, 0],
            16,
            "a link-local address (cloud metadata services live here)",
        ),
        ([172, 16, 0, 0], 12, "a private address (RFC 1918)"),
        ([192, 0, 0, 0], 24, "an IETF protocol address"),
        ([192, 0, 2, 0], 24, "a documentation address"),
        ([192, 88, 99, 0], 24, "a 6to4 relay address"),
        ([192, 168, 0, 0], 16, "a private address (RFC 1918)"),
        ([198, 18, 0, 0], 15, "a benchmarking address"),
        ([198, 51, 100, 0], 24, "a documentation address"),
        ([203, 0, 113, 0], 24, "a documentation address"),
        ([224, 0, 0, 0], 4, "a multicast address"),
        ([240, 0, 0, 0], 4, "a reserved or broadcast address"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| prefix_eq(net, &ip.octets(), *prefix))
        .map(|(_, _, kind)| *kind)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    // Addresses that embed an IPv4 address are judged by it.
    if prefix_eq(
        &o,
        &[0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        96,
    ) {
        return forbidden_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if o[0] == 0x20 && o[1] == 0x02 {
        return forbidden_v4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    const RANGES: &[([u8; 4], u8, &str)] = &[
        ([0, 0, 0, 0], 96, "an IPv4-compatible address"),
        ([0, 0x64, 0xff, 0x9b], 32, "a local-use NAT64 address"),
        ([0x01, 0, 0, 0], 64, "a discard address"),
        ([0x20, 0x01, 0, 0], 32, "a Teredo address"),
        ([0x20, 0x01, 0x0d, 0xb8], 32, "a documentation address"),
        ([0xfc, 0, 0, 0], 7, "a unique local address (ULA)"),
        ([0xfe, 0x80, 0, 0], 10, "a link-local address"),
        ([0xfe, 0xc0, 0, 0], 10, "a site-local address"),
        ([0xff, 0, 0, 0], 8, "a multicast address"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| {
            let mut full = [0u8; 16];
            full[..4].copy_from_slice(net);
            prefix_eq(&full, &o, *prefix)
        })
        .map(|(_, _, kind)| *kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_ranges_are_refused() {
        for s in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "::a00:1",
        ] {
            assert!(forbidden(ip(s)).is_some(), "{s} must be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
        ] {
            assert_eq!(forbidden(ip(s)), None, "{s} is public");
        }
    }

    #[test]
    fn allow_overrides_builtin_and_deny_overrides_allow() {
        let p = Policy::new(
            &[
                "127.0.0.1".into(),
                "10.1.0.0/16".into(),
                "db.internal".into(),
                "*.corp.example".into(),
            ],
            &[
                "10.1.2.0/24".into(),
                "1.1.1.1".into(),
                "bad.corp.example".into(),
            ],
        )
        .unwrap();
        assert_eq!(p.check_ip(ip("127.0.0.1"), false), Verdict::Allow);
        assert_eq!(p.check_ip(ip("::ffff:127.0.0.1"), false), Verdict::Allow);
        assert!(matches!(
            p.check_ip(ip("127.0.0.2"), false),
            Verdict::Deny(_)
        ));
        assert_eq!(p.check_ip(ip("10.1.9.9"), false), Verdict::Allow);
        assert!(matches!(
            p.check_ip(ip("10.1.2.3"), false),
            Verdict::Deny(_)
        ));
        assert!(matches!(p.check_ip(ip("1.1.1.1"), false), Verdict::Deny(_)));
        assert_eq!(p.check_name("DB.internal."), Some(Verdict::Allow));
        assert_eq!(p.check_name("x.corp.example"), Some(Verdict::Allow));
        assert!(matches!(
            p.check_name("bad.corp.example"),
            Some(Verdict::Deny(_))
        ));
        assert_eq!(p.check_name("corp.example"), None);
        assert_eq!(p.check_ip(ip("10.9.9.9"), true), Verdict::Allow);
        assert!(matches!(p.check_ip(ip("10.1.2.3"), true), Verdict::Deny(_)));
    }

    #[test]
    fn bad_rules_name_the_key() {
        for bad in ["10.0.0.0/33", "a b", "x/8", "", "*."] {
            let err = Policy::new(&[bad.into()], &[]).unwrap_err();
            assert!(err.to_string().contains("hako.network.allow"), "{err}");
        }
        assert!(Policy::new(&[], &["[::1]/128".into(), "fd00::/8".into()]).is_ok());
    }
}
