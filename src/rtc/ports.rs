//! UDP ports for media sockets from the configured range. The `webrtc` crate binds one socket
//! per peer connection and has no port-range allocator of its own, so leases come from here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct PortPool {
    free: Arc<Mutex<VecDeque<u16>>>,
}

/// A port in use; back in the pool when dropped.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    pool: PortPool,
}

impl PortPool {
    pub fn new(first: u16, last: u16) -> Self {
        Self {
            free: Arc::new(Mutex::new((first..=last).collect())),
        }
    }

    pub fn lease(&self) -> Option<PortLease> {
        let port = self
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()?;
        Some(PortLease {
            port,
            pool: self.clone(),
        })
    }

    /// A port of the pool that `ip` can bind now. A port that another program holds (the range
    /// is shared with the host) is passed over, back in the pool behind the others, instead of
    /// failing the participant's connection; `None` when no port is free.
    pub fn lease_bindable(&self, ip: std::net::IpAddr) -> Option<PortLease> {
        let mut busy = Vec::new();
        loop {
            let lease = self.lease()?;
            match std::net::UdpSocket::bind((ip, lease.port())) {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    tracing::warn!(
                        port = lease.port(),
                        "a media port of the range is in use by another program; passed over"
                    );
                    busy.push(lease);
                }
                // Bindable (the probe closes at once), or failing for another reason that the
                // connection's own bind reports.
                _ => return Some(lease),
            }
        }
    }
}

impl PortLease {
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        // Back of the queue: a just-closed port is reused last, after its stray packets die out.
        self.pool
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(self.port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_exclusive_and_return() {
        let pool = PortPool::new(5000, 5001);
        let a = pool.lease().unwrap();
        let b = pool.lease().unwrap();
        assert_ne!(a.port(), b.port());
        assert!(pool.lease().is_none());
        let freed = a.port();
        drop(a);
        assert_eq!(pool.lease().unwrap().port(), freed);
    }

    #[test]
    fn a_port_another_program_holds_is_passed_over() {
        let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        // A port held here, with a free one after it.
        let (held, port) = loop {
            let s = std::net::UdpSocket::bind((ip, 0)).unwrap();
            let p = s.local_addr().unwrap().port();
            if p < u16::MAX && std::net::UdpSocket::bind((ip, p + 1)).is_ok() {
                break (s, p);
            }
        };
        let pool = PortPool::new(port, port + 1);
        let lease = pool.lease_bindable(ip).expect("the free port");
        assert_eq!(lease.port(), port + 1);
        // The held one went back to the pool, and with both out nothing is left.
        assert!(
            pool.lease_bindable(ip).is_none(),
            "only the held port is left"
        );
        drop(held);
        assert_eq!(pool.lease_bindable(ip).unwrap().port(), port);
    }
}
