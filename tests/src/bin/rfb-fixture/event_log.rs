//! The JSON-lines event log: one object per line, flushed at once, because tests read
//! the log while the server runs.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// A cheap-to-clone handle to the log sink. Writes are small and synchronous; the lock is
/// never held across an `.await`.
#[derive(Clone)]
pub struct EventLog {
    sink: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl EventLog {
    pub fn stderr() -> Self {
        Self::new(Box::new(io::stderr()))
    }

    /// Appends to `path`, creating it if needed.
    pub fn file(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self::new(Box::new(file)))
    }

    pub fn new(sink: Box<dyn Write + Send>) -> Self {
        EventLog {
            sink: Arc::new(Mutex::new(sink)),
        }
    }

    /// Logs a server-wide event (no `conn` field).
    pub fn server(&self, fields: Value) {
        self.write(None, fields);
    }

    /// Logs an event or client message of connection `conn`.
    pub fn conn(&self, conn: u64, fields: Value) {
        self.write(Some(conn), fields);
    }

    fn write(&self, conn: Option<u64>, fields: Value) {
        let mut line = Map::new();
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        line.insert("ts_ms".into(), Value::from(ts_ms as u64));
        if let Some(conn) = conn {
            line.insert("conn".into(), Value::from(conn));
        }
        match fields {
            Value::Object(map) => line.extend(map),
            other => {
                line.insert("event".into(), other);
            }
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        // A poisoned lock only means another writer panicked mid-line; keep logging.
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        // Losing a log line must not take the server down; there is nowhere to report it.
        let _ = sink.write_all(text.as_bytes()).and_then(|()| sink.flush());
    }
}

/// An in-memory sink for tests: clones share the buffer.
#[cfg(test)]
#[derive(Clone, Default)]
pub struct MemorySink(pub Arc<Mutex<Vec<u8>>>);

#[cfg(test)]
impl MemorySink {
    /// The parsed log lines written so far.
    pub fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| serde_json::from_str(l).expect("log line is JSON"))
            .collect()
    }
}

#[cfg(test)]
impl Write for MemorySink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_one_json_object_per_line() {
        let sink = MemorySink::default();
        let log = EventLog::new(Box::new(sink.clone()));
        log.conn(3, json!({"msg": "KeyEvent", "down": true, "keysym": 65}));
        log.server(json!({"event": "listening"}));
        let lines = sink.lines();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["conn"], 3);
        assert_eq!(lines[0]["msg"], "KeyEvent");
        assert_eq!(lines[0]["keysym"], 65);
        assert!(lines[0]["ts_ms"].as_u64().is_some());
        assert!(lines[1].get("conn").is_none());
    }
}
