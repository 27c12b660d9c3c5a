//! One echo round trip: send `size` bytes, wait until the same `size` bytes came back,
//! time it with `std::time::Instant`. The payload carries a sequence number, so a reply
//! to an older ping (or corrupted bytes) fails the check instead of being timed.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::client::Conn;

/// Largest ping payload accepted on the command line; pings measure latency, not volume.
pub const MAX_SIZE: usize = 1 << 20;

pub struct Ping {
    payload: Vec<u8>,
    echo: Vec<u8>,
    seq: u64,
}

impl Ping {
    pub fn new(size: usize) -> Result<Self> {
        if size == 0 || size > MAX_SIZE {
            bail!("--size must be between 1 and {MAX_SIZE} bytes");
        }
        let payload = (0..size).map(|i| (i % 251) as u8).collect();
        Ok(Self {
            payload,
            echo: vec![0; size],
            seq: 0,
        })
    }

    /// Sends one ping and waits for its echo. The caller bounds it in time.
    pub async fn round_trip(&mut self, conn: &mut Conn) -> Result<Duration> {
        self.seq += 1;
        let stamp = self.seq.to_le_bytes();
        let n = stamp.len().min(self.payload.len());
        self.payload[..n].copy_from_slice(&stamp[..n]);

        let start = Instant::now();
        conn.send(&self.payload).await?;
        conn.recv_exact(&mut self.echo).await?;
        let rtt = start.elapsed();

        if self.echo != self.payload {
            bail!("echo of ping {} does not match what was sent", self.seq);
        }
        Ok(rtt)
    }
}

/// Duration in whole microseconds, saturating (a u32 holds over an hour).
pub fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}
