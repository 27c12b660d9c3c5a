//! One echo round trip: send `size` bytes, wait until the same `size` bytes came back,
//! time it with `std::time::Instant`. The payload carries a sequence number, so a reply
//! to an older ping (or corrupted bytes) fails the check instead of being timed.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::client::Conn;
use crate::rfb;

/// Largest ping payload accepted on the command line; pings measure latency, not volume.
pub const MAX_SIZE: usize = 1 << 20;

pub struct Ping {
    payload: Vec<u8>,
    echo: Vec<u8>,
    seq: u64,
    /// Where the sequence number goes (after the RFB message header, if any).
    stamp_at: usize,
}

impl Ping {
    /// `rfb`: each ping is one RFB ClientCutText message (header + sequence number +
    /// filler), which an RFB-aware relay passes to the VNC server as it is.
    pub fn new(size: usize, rfb: bool) -> Result<Self> {
        let min = if rfb { rfb::CUT_TEXT_HEADER + 1 } else { 1 };
        if size < min || size > MAX_SIZE {
            bail!("--size must be between {min} and {MAX_SIZE} bytes");
        }
        let mut payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let stamp_at = if rfb {
            rfb::frame_cut_text(&mut payload);
            rfb::CUT_TEXT_HEADER
        } else {
            0
        };
        Ok(Self {
            payload,
            echo: vec![0; size],
            seq: 0,
            stamp_at,
        })
    }

    /// Sends one ping and waits for its echo. The caller bounds it in time.
    pub async fn round_trip(&mut self, conn: &mut Conn) -> Result<Duration> {
        self.seq += 1;
        let stamp = self.seq.to_le_bytes();
        let room = &mut self.payload[self.stamp_at..];
        let n = stamp.len().min(room.len());
        room[..n].copy_from_slice(&stamp[..n]);

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
