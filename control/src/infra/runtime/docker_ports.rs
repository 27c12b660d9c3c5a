//! Host ports of desktops in host networking: a free port of the configured range,
//! held from the pick until the created container carries it as a label, so two
//! concurrent starts never pick the same one.

use std::collections::BTreeSet;
use std::net::{IpAddr, TcpListener};
use std::sync::Mutex;

use rand::Rng as _;

use super::docker_engine::Engine;
use super::{LABEL_PORT, RuntimeError};

impl Engine {
    /// Picks a free host port in `range` (random start, wrapping), not used by another
    /// managed container nor reserved by a start in flight.
    pub(super) async fn reserve_host_port(
        &self,
        host_ip: IpAddr,
        range: (u16, u16),
    ) -> Result<PortReservation<'_>, RuntimeError> {
        let mut taken: BTreeSet<u16> = self
            .list(None)
            .await?
            .iter()
            .filter_map(|c| c.labels.as_ref()?.get(LABEL_PORT)?.parse().ok())
            .collect();
        let mut reserved = self
            .reserved_ports
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        taken.extend(reserved.iter().copied());
        let (lo, hi) = range;
        let span = u32::from(hi - lo) + 1;
        let offset = rand::thread_rng().gen_range(0..span);
        for i in 0..span {
            let port = lo + ((offset + i) % span) as u16;
            if taken.contains(&port) {
                continue;
            }
            // Free right now on the host; the container binds it moments later.
            if TcpListener::bind((host_ip, port)).is_ok() {
                reserved.insert(port);
                return Ok(PortReservation {
                    set: &self.reserved_ports,
                    port,
                });
            }
        }
        Err(RuntimeError::Failed(format!(
            "no free host port in {lo}-{hi} on {host_ip}"
        )))
    }
}

/// A host port held for a start in flight; released on drop.
pub(super) struct PortReservation<'a> {
    set: &'a Mutex<BTreeSet<u16>>,
    pub(super) port: u16,
}

impl Drop for PortReservation<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.port);
    }
}
