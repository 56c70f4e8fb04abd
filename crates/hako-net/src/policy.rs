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
    pub(crate) fn check_name(&self, host: &str) -> Option<Verdict> {
        let host = normalize_name(host);
        if self.deny.iter().any(|r| name_matches(r, &host)) {
            return Some(Verdict::Deny(format!("{host} is on hako.network.deny")));
        }
        if self.allow.iter().any(|r| name_matches(r, &host)) {
            return Some(Verdict::Allow);
        }
        None
    }

    /// Decides on one address. `name_allowed`: the name was on the allow list. `local`: the
    /// addresses of this host's interfaces.
    ///
    /// Order: deny rule; allow address rule; cloud metadata (a name rule never admits it);
    /// allowed name; built-in internal ranges; this host's own addresses. An address that
    /// embeds an IPv4 address (mapped, NAT64, IPv4-translated, 6to4, IPv4-compatible; see
    /// [`embedded_v4`]) is judged as itself and as that IPv4 address by every step.
    pub(crate) fn check_ip(&self, ip: IpAddr, name_allowed: bool, local: &[IpAddr]) -> Verdict {
        let ip = canonical(ip);
        let forms = judged_forms(ip);
        let any = |f: &dyn Fn(IpAddr) -> bool| forms.iter().flatten().any(|a| f(*a));
        if any(&|a| self.deny.iter().any(|r| net_contains(r, a))) {
            return Verdict::Deny(format!("{ip} is on hako.network.deny"));
        }
        if any(&|a| self.allow.iter().any(|r| net_contains(r, a))) {
            return Verdict::Allow;
        }
        if let Some(what) = forms.iter().flatten().find_map(|a| metadata(*a)) {
            return Verdict::Deny(format!(
                "{ip} is {what}; a name on hako.network.allow does not admit it, only an address rule does"
            ));
        }
        if name_allowed {
            return Verdict::Allow;
        }
        if let Some(kind) = forms.iter().flatten().find_map(|a| forbidden(*a)) {
            return Verdict::Deny(format!("{ip} is {kind}; allow it with hako.network.allow"));
        }
        if any(&|a| local.iter().any(|l| canonical(*l) == a)) {
            return Verdict::Deny(format!(
                "{ip} is an address of this host; allow it with hako.network.allow"
            ));
        }
        Verdict::Allow
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

/// IPv4-mapped IPv6 addresses are the IPv4 address they carry.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// The IPv4 address an IPv6 address carries, by its prefix: NAT64's well-known prefix
/// (`64:ff9b::/96`, RFC 6052), IPv4-translated (`::ffff:0:0:0/96`, SIIT, RFC 2765),
/// IPv4-compatible (`::/96`, deprecated) and 6to4 (`2002::/16`). Mapped ones
/// (`::ffff:0:0/96`) are made IPv4 by [`canonical`]. The one place that knows these forms:
/// every step of [`Policy::check_ip`] and [`forbidden`] judges them by this address.
pub(crate) fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let o = v6.octets();
    let last32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let nat64 = [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0];
    let translated = [0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0];
    if o[..12] == nat64 || o[..12] == translated {
        return Some(last32);
    }
    if o[..12] == [0; 12] && !v6.is_loopback() && !v6.is_unspecified() {
        return Some(last32);
    }
    if o[0] == 0x20 && o[1] == 0x02 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// The address itself (canonical) and the IPv4 address it embeds, if any.
fn judged_forms(ip: IpAddr) -> [Option<IpAddr>; 2] {
    let ip = canonical(ip);
    [Some(ip), embedded_v4(ip).map(IpAddr::V4)]
}

/// Cloud metadata and platform endpoints: what they are, or `None`. These hand out
/// credentials, so an allowed name that resolves to one does not admit it.
pub fn metadata(ip: IpAddr) -> Option<&'static str> {
    const V4: &[([u8; 4], u8, &str)] = &[
        (
            [169, 254, 0, 0],
            16,
            "a link-local address (cloud metadata services live here, e.g. 169.254.169.254)",
        ),
        (
            [168, 63, 129, 16],
            32,
            "the Azure WireServer (platform metadata and extension channel)",
        ),
        (
            [100, 100, 100, 200],
            32,
            "the Alibaba Cloud metadata service",
        ),
        (
            [192, 0, 0, 192],
            32,
            "the Oracle Cloud legacy metadata service",
        ),
    ];
    const V6: &[(Ipv6Addr, &str)] = &[
        (
            Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
            "the AWS metadata service (IPv6)",
        ),
        (
            Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),
            "the AWS EKS pod identity agent (IPv6)",
        ),
    ];
    let v4_metadata = |v4: Ipv4Addr| {
        V4.iter()
            .find(|(net, prefix, _)| prefix_eq(net, &v4.octets(), *prefix))
            .map(|(_, _, what)| *what)
    };
    match canonical(ip) {
        IpAddr::V4(v4) => v4_metadata(v4),
        // An address that carries an IPv4 address is that address's endpoint too.
        IpAddr::V6(v6) => V6
            .iter()
            .find(|(a, _)| *a == v6)
            .map(|(_, what)| *what)
            .or_else(|| embedded_v4(IpAddr::V6(v6)).and_then(v4_metadata)),
    }
}

/// Why an address is never a public destination, or `None` when it is one.
pub(crate) fn forbidden(ip: IpAddr) -> Option<&'static str> {
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
    // IPv4-compatible addresses are deprecated: refused whatever they carry.
    if o[..12] == [0; 12] {
        return Some("an IPv4-compatible address");
    }
    // Other addresses that embed an IPv4 address (NAT64, IPv4-translated, 6to4) are judged
    // by it.
    if let Some(v4) = embedded_v4(IpAddr::V6(ip)) {
        return forbidden_v4(v4);
    }
    const RANGES: &[([u8; 4], u8, &str)] = &[
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
        assert_eq!(p.check_ip(ip("127.0.0.1"), false, &[]), Verdict::Allow);
        assert_eq!(
            p.check_ip(ip("::ffff:127.0.0.1"), false, &[]),
            Verdict::Allow
        );
        assert!(matches!(
            p.check_ip(ip("127.0.0.2"), false, &[]),
            Verdict::Deny(_)
        ));
        assert_eq!(p.check_ip(ip("10.1.9.9"), false, &[]), Verdict::Allow);
        assert!(matches!(
            p.check_ip(ip("10.1.2.3"), false, &[]),
            Verdict::Deny(_)
        ));
        assert!(matches!(
            p.check_ip(ip("1.1.1.1"), false, &[]),
            Verdict::Deny(_)
        ));
        assert_eq!(p.check_name("DB.internal."), Some(Verdict::Allow));
        assert_eq!(p.check_name("x.corp.example"), Some(Verdict::Allow));
        assert!(matches!(
            p.check_name("bad.corp.example"),
            Some(Verdict::Deny(_))
        ));
        assert_eq!(p.check_name("corp.example"), None);
        assert_eq!(p.check_ip(ip("10.9.9.9"), true, &[]), Verdict::Allow);
        assert!(matches!(
            p.check_ip(ip("10.1.2.3"), true, &[]),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn cloud_metadata_is_refused_even_for_an_allowed_name() {
        let by_name = Policy::new(&["meta.example".into()], &[]).unwrap();
        for s in [
            "169.254.169.254",
            "169.254.170.2",
            "168.63.129.16",
            "100.100.100.200",
            "192.0.0.192",
            "fd00:ec2::254",
            "fd00:ec2::23",
            "::ffff:168.63.129.16",
            "64:ff9b::a83f:8110",
            "2002:a83f:8110::1",
            "::a83f:8110",
        ] {
            let Verdict::Deny(why) = by_name.check_ip(ip(s), true, &[]) else {
                panic!("{s} must be refused for an allowed name");
            };
            assert!(why.contains("does not admit it"), "{s}: {why}");
        }
        // Loopback and private addresses of an allowed name are admitted (documented).
        assert_eq!(by_name.check_ip(ip("127.0.0.1"), true, &[]), Verdict::Allow);
        assert_eq!(by_name.check_ip(ip("10.0.0.1"), true, &[]), Verdict::Allow);
        // An address rule admits a metadata address.
        let by_addr = Policy::new(&["168.63.129.16".into()], &[]).unwrap();
        assert_eq!(
            by_addr.check_ip(ip("168.63.129.16"), false, &[]),
            Verdict::Allow
        );
        // The WireServer is refused without any rule (it is not in a private range).
        assert!(matches!(
            Policy::default().check_ip(ip("168.63.129.16"), false, &[]),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn embedded_ipv4_forms_are_judged_by_their_ipv4() {
        let p = Policy::new(&[], &["8.8.4.4".into()]).unwrap();
        for s in [
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "::127.0.0.1",
            "::ffff:10.1.2.3",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::8.8.4.4",
            "2002:808:404::1",
        ] {
            assert!(
                matches!(p.check_ip(ip(s), false, &[]), Verdict::Deny(_)),
                "{s} must be refused"
            );
        }
        assert_eq!(
            embedded_v4(ip("64:ff9b::102:304")),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert_eq!(embedded_v4(ip("::1")), None);
        assert_eq!(embedded_v4(ip("2606:4700::1111")), None);
        assert_eq!(
            p.check_ip(ip("64:ff9b::101:101"), false, &[]),
            Verdict::Allow
        );
    }

    /// IPv4-translated addresses (`::ffff:0:a.b.c.d`, SIIT) are judged by their IPv4 address
    /// at every step, exactly as the mapped (`::ffff:a.b.c.d`) and NAT64 (`64:ff9b::a.b.c.d`)
    /// forms are.
    #[test]
    fn ipv4_translated_forms_are_judged_by_their_ipv4() {
        assert_eq!(
            embedded_v4(ip("::ffff:0:127.0.0.1")),
            Some(Ipv4Addr::new(127, 0, 0, 1))
        );
        assert_eq!(
            embedded_v4(ip("::ffff:0:a9fe:a9fe")),
            Some(Ipv4Addr::new(169, 254, 169, 254))
        );
        let local = [ip("11.22.33.44")];
        let by_name = Policy::new(&["meta.example".into()], &["8.8.4.4".into()]).unwrap();
        for v4 in [
            "127.0.0.1",
            "10.1.2.3",
            "169.254.169.254",
            "168.63.129.16",
            "11.22.33.44",
            "8.8.4.4",
            "0.0.0.0",
        ] {
            let v4_addr: Ipv4Addr = v4.parse().unwrap();
            let [a, b, c, d] = v4_addr.octets();
            let hex = format!(
                "{:x}:{:x}",
                u16::from_be_bytes([a, b]),
                u16::from_be_bytes([c, d])
            );
            let judged =
                |s: &str, name_allowed: bool| by_name.check_ip(ip(s), name_allowed, &local);
            let expected = |name_allowed: bool| match by_name.check_ip(
                IpAddr::V4(v4_addr),
                name_allowed,
                &local,
            ) {
                Verdict::Allow => "allow",
                Verdict::Deny(_) => "deny",
            };
            for form in [
                format!("::ffff:{v4}"),
                format!("64:ff9b::{v4}"),
                format!("::ffff:0:{v4}"),
                format!("::ffff:0:{hex}"),
            ] {
                for name_allowed in [false, true] {
                    let got = match judged(&form, name_allowed) {
                        Verdict::Allow => "allow",
                        Verdict::Deny(_) => "deny",
                    };
                    assert_eq!(
                        got,
                        expected(name_allowed),
                        "{form} (name allowed: {name_allowed})"
                    );
                }
                assert_eq!(
                    forbidden(ip(&form)),
                    forbidden(IpAddr::V4(v4_addr)),
                    "{form}"
                );
            }
        }
        // The reasons are the IPv4 address's.
        let Verdict::Deny(why) = Policy::default().check_ip(ip("::ffff:0:127.0.0.1"), false, &[])
        else {
            panic!("::ffff:0:127.0.0.1 must be refused");
        };
        assert!(why.contains("a loopback address"), "{why}");
        let Verdict::Deny(why) = by_name.check_ip(ip("::ffff:0:169.254.169.254"), true, &[]) else {
            panic!("::ffff:0:169.254.169.254 must be refused for an allowed name");
        };
        assert!(why.contains("does not admit it"), "{why}");
        // A public IPv4 address stays reachable in every form; an address rule in IPv4 admits
        // its translated form too.
        assert_eq!(forbidden(ip("::ffff:0:1.1.1.1")), None);
        let allowed = Policy::new(&["127.0.0.1".into()], &[]).unwrap();
        assert_eq!(
            allowed.check_ip(ip("::ffff:0:127.0.0.1"), false, &[]),
            Verdict::Allow
        );
        // Each judging function sees the embedded address on its own too.
        for s in [
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::ffff:0:169.254.169.254",
            "2002:a9fe:a9fe::1",
        ] {
            assert_eq!(metadata(ip(s)), metadata(ip("169.254.169.254")), "{s}");
        }
        // Neighbours of the translated prefix that carry no IPv4 address are not read as one.
        assert_eq!(embedded_v4(ip("::ffff:1:7f00:1")), None);
        assert_eq!(embedded_v4(ip("0:0:0:1:ffff:0:7f00:1")), None);
    }

    #[test]
    fn this_hosts_own_addresses_are_refused() {
        let local = [ip("203.0.113.7"), ip("11.22.33.44"), ip("2606:4700::99")];
        let p = Policy::default();
        for s in [
            "11.22.33.44",
            "::ffff:11.22.33.44",
            "64:ff9b::b16:212c",
            "2606:4700::99",
        ] {
            let Verdict::Deny(why) = p.check_ip(ip(s), false, &local) else {
                panic!("{s} is this host");
            };
            assert!(why.contains("this host"), "{s}: {why}");
        }
        assert_eq!(p.check_ip(ip("11.22.33.45"), false, &local), Verdict::Allow);
        let allowed = Policy::new(&["11.22.33.44".into()], &[]).unwrap();
        assert_eq!(
            allowed.check_ip(ip("11.22.33.44"), false, &local),
            Verdict::Allow
        );
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
