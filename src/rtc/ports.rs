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
}
