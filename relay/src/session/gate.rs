//! Whether a session's input reaches the VNC server right now. A `view` session never
//! sends input (its RFB policy says so for good); a `control` session's
//! gate follows the driver lease (`node/driver.rs`): open while the session holds it,
//! or always with `input = "shared"`. The node sets it when the lease moves; the
//! session's pumps read it once per input message (one relaxed load).

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct InputGate(AtomicBool);

impl InputGate {
    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, open: bool) {
        self.0.store(open, Ordering::Relaxed);
    }
}
