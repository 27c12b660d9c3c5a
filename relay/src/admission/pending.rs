//! Connections before their upgrade (TLS handshake, HTTP request, admission): bounded
//! on their own, in total and per client address, apart from the session bound, so
//! sockets that never authenticate can't take the slots of sessions.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a connection was not let in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `max_pending_connections` are in their handshake already.
    Full,
    /// This client address has `max_pending_per_address` in their handshake already.
    AddressFull,
}

#[derive(Default)]
struct Inner {
    total: usize,
    /// Connections in their handshake per client address. At most `total` entries (an
    /// address leaves the map with its last connection), so at most the pending bound.
    by_address: HashMap<IpAddr, usize>,
}

/// The connections in their handshake.
#[derive(Default)]
pub struct Pending {
    inner: Arc<Mutex<Inner>>,
}

/// One connection's place among the pending ones, given back on drop.
pub struct PendingGuard {
    inner: Arc<Mutex<Inner>>,
    addr: IpAddr,
}

impl Pending {
    /// Counts a new connection from `addr` in, unless that makes more than `max` in
    /// total or `per_address` from `addr`.
    pub fn enter(
        &self,
        addr: IpAddr,
        max: usize,
        per_address: usize,
    ) -> Result<PendingGuard, Refused> {
        let mut inner = self.inner.lock().map_err(|_| Refused::Full)?;
        if inner.total >= max {
            return Err(Refused::Full);
        }
        let count = inner.by_address.entry(addr).or_insert(0);
        if *count >= per_address {
            return Err(Refused::AddressFull);
        }
        *count += 1;
        inner.total += 1;
        Ok(PendingGuard {
            inner: self.inner.clone(),
            addr,
        })
    }

    /// Connections in their handshake now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.total).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PendingGuard {
    /// Counts this connection against `addr` instead (the client a load balancer
    /// named), unless `addr` has `per_address` in their handshake already.
    pub fn rebind(&mut self, addr: IpAddr, per_address: usize) -> Result<(), Refused> {
        let mut inner = self.inner.lock().map_err(|_| Refused::Full)?;
        if addr == self.addr {
            return Ok(());
        }
        let count = inner.by_address.entry(addr).or_insert(0);
        if *count >= per_address {
            if *count == 0 {
                inner.by_address.remove(&addr);
            }
            return Err(Refused::AddressFull);
        }
        *count += 1;
        leave(&mut inner, self.addr);
        self.addr = addr;
        Ok(())
    }
}

/// One connection from `addr` left the count.
fn leave(inner: &mut Inner, addr: IpAddr) {
    if let Some(count) = inner.by_address.get_mut(&addr) {
        *count -= 1;
        if *count == 0 {
            inner.by_address.remove(&addr);
        }
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.total -= 1;
        leave(&mut inner, self.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_the_total_and_each_address() {
        let pending = Pending::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = pending.enter(a, 3, 2).unwrap();
        let _a2 = pending.enter(a, 3, 2).unwrap();
        assert_eq!(pending.enter(a, 3, 2).err(), Some(Refused::AddressFull));
        let _b1 = pending.enter(b, 3, 2).unwrap();
        assert_eq!(pending.enter(b, 3, 2).err(), Some(Refused::Full));
        drop(a1);
        assert_eq!(pending.len(), 2);
        let _a3 = pending.enter(a, 3, 2).unwrap();
    }

    #[test]
    fn an_address_leaves_the_map_with_its_last_connection() {
        let pending = Pending::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        drop(pending.enter(a, 3, 2).unwrap());
        assert!(pending.is_empty());
        assert!(pending.inner.lock().unwrap().by_address.is_empty());
    }

    #[test]
    fn rebinding_counts_the_named_client_instead_of_the_balancer() {
        let pending = Pending::default();
        let (balancer, client): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "203.0.113.9".parse().unwrap());
        let mut first = pending.enter(balancer, 10, usize::MAX).unwrap();
        first.rebind(client, 1).unwrap();
        let mut second = pending.enter(balancer, 10, usize::MAX).unwrap();
        assert_eq!(second.rebind(client, 1), Err(Refused::AddressFull));
        drop(first);
        second.rebind(client, 1).unwrap();
        drop(second);
        assert!(pending.is_empty());
        assert!(pending.inner.lock().unwrap().by_address.is_empty());
    }
}
