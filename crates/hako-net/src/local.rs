//! The addresses of this host's own interfaces, which runs may not reach through the guard
//! (services bound to `0.0.0.0` answer on them). Read with `getifaddrs` when first needed
//! and again once the last reading is older than [`REFRESH`], so an address added later
//! (DHCP, a new interface) is refused within that time.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How old a reading may be before the next decision reads the interfaces again.
pub const REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct LocalAddrs {
    cached: Mutex<Option<(Instant, Arc<Vec<IpAddr>>)>>,
}

impl LocalAddrs {
    /// The current addresses (at most [`REFRESH`] old). Empty if they cannot be read, which
    /// is logged: the built-in ranges still refuse loopback and private addresses.
    pub fn get(&self) -> Arc<Vec<IpAddr>> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, addrs)) = cached.as_ref() {
            if at.elapsed() < REFRESH {
                return Arc::clone(addrs);
            }
        }
        let addrs = Arc::new(read());
        *cached = Some((Instant::now(), Arc::clone(&addrs)));
        addrs
    }
}

fn read() -> Vec<IpAddr> {
    let list = match nix::ifaddrs::getifaddrs() {
        Ok(list) => list,
        Err(err) => {
            tracing::warn!(error = %err, "egress guard: cannot list this host's addresses");
            return Vec::new();
        }
    };
    let mut addrs: Vec<IpAddr> = list
        .filter_map(|ifa| {
            let a = ifa.address?;
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_among_the_local_addresses() {
        let local = LocalAddrs::default();
        let addrs = local.get();
        assert!(addrs.contains(&IpAddr::from([127, 0, 0, 1])), "{addrs:?}");
    }
}
