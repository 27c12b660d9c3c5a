//! Session recording (docs/recording.md): what the browser received, with
//! timestamps, to one file per session under the configured directory.
//!
//! A session hands its [`Recorder`] the very buffers it wrote to the browser: the
//! raw pump's pooled read buffer, socket.io's `Bytes`. The recorder queues them on a
//! bounded channel to the recording's writer task, which writes batches on a blocking
//! thread and gives the buffers back. Nothing in the session waits for the disk: when
//! the queue is full the recording stops (marked truncated), the session goes on.
//! A recording also stops at the per-recording maximum; the directory's total cap is
//! kept by deleting the oldest recordings when one starts and when one ends.

pub mod dir;
pub mod format;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use vnc_shared::token::Scope;

use crate::config::RecordingConfig;
use crate::metrics::{RECORDING_BYTES, RECORDINGS_DELETED, RECORDINGS_TOTAL};
use crate::session::record::SessionRecord;
use crate::wire::bufpool;
use dir::Cap;
use format::{END_RESERVE, Ending, Metadata, RECORD_HEADER, Truncation};

/// Chunks a recorder queues for its writer before it gives the recording up as
/// behind. Bounds a recorded session's extra memory: this many read buffers waiting,
/// and as many more being written.
pub const QUEUE: usize = 16;
/// The writer's file buffer; a chunk at least this big is written past it directly.
const FILE_BUFFER: usize = 64 * 1024;

/// The recording directory of one relay, and the recordings being written to it.
pub struct Recordings {
    config: RecordingConfig,
    node_id: String,
    /// Part names of the recordings being written (never deleted by the cap). The
    /// lock also takes cap checks one at a time; it is held on blocking threads only,
    /// when a recording starts or ends.
    writing: Mutex<HashSet<String>>,
}

impl Recordings {
    /// Creates the directory (mode 0700) if it is missing.
    pub fn open(config: RecordingConfig, node_id: &str) -> io::Result<Recordings> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.dir)?;
        Ok(Recordings {
            config,
            node_id: node_id.to_owned(),
            writing: Mutex::default(),
        })
    }

    /// Whether a session is recorded: its container's record says so, or its token's
    /// scope is one the relay always records.
    pub fn wants(&self, container_says: bool, scope: Scope) -> bool {
        container_says || self.config.scopes.contains(&scope)
    }

    fn cap(&self) -> Cap {
        Cap {
            total: self.config.total_bytes,
            per_recording: self.config.max_bytes,
        }
    }

    /// Starts recording `session`: returns its recorder at once; the file is made
    /// (room made first) by the writer task, tracked by `tracker` so a draining relay
    /// finishes its recordings.
    pub fn start(self: &Arc<Self>, session: &SessionRecord, tracker: &TaskTracker) -> Recorder {
        let started_at_ms = vnc_shared::schema::now_ms();
        let started_at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(started_at_ms);
        let meta = Metadata {
            session_id: session.sid.clone(),
            container_id: session.cid.clone(),
            user_id: session.sub.clone(),
            tenant: session.tenant.clone(),
            scope: session.scope.as_str().to_owned(),
            transport: session.transport.to_owned(),
            node_id: self.node_id.clone(),
            client_addr: session.client_addr.to_string(),
            started_at_ms,
            started_at: humantime::format_rfc3339_millis(started_at).to_string(),
        };
        let header = format::header(&meta);
        let (recorder, queue) = Recorder::new(header.len() as u64, self.config.max_bytes);
        let name = dir::file_name(started_at_ms, &session.sid);
        let writer = write(self.clone(), name, header, queue);
        tracker.spawn(writer.instrument(tracing::Span::current()));
        recorder
    }

    /// Makes room for one more recording and creates its part file with the header.
    /// `None` when the cap can't hold it.
    fn create(&self, name: &str, header: &[u8]) -> io::Result<Option<BufWriter<File>>> {
        let part = dir::part_name(name);
        let mut writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        writing.insert(part.clone());
        let opened = dir::make_room(&self.config.dir, self.cap(), &writing).and_then(|room| {
            count_deleted(&room.deleted);
            if !room.fits {
                return Ok(None);
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(self.config.dir.join(&part))?;
            let mut file = BufWriter::with_capacity(FILE_BUFFER, file);
            file.write_all(header)?;
            Ok(Some(file))
        });
        if !matches!(opened, Ok(Some(_))) {
            writing.remove(&part);
        }
        opened
    }

    /// Writes the end record (unless writing failed), and renames the part to its
    /// final name; then keeps the cap with the finished size instead of the
    /// reservation.
    fn finish(
        &self,
        name: &str,
        mut file: BufWriter<File>,
        end: Option<Vec<u8>>,
    ) -> io::Result<()> {
        let part = dir::part_name(name);
        let written = match end {
            Some(end) => file.write_all(&end).and_then(|()| file.flush()),
            None => file.flush(),
        };
        let synced = written.and_then(|()| file.get_ref().sync_data());
        drop(file);
        let dir = &self.config.dir;
        // A file that failed to write is still kept: it holds whole records up to the
        // failure, and counts toward the cap.
        let renamed = std::fs::rename(dir.join(&part), dir.join(name));
        let mut writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        writing.remove(&part);
        let room = dir::make_room(dir, self.cap(), &writing);
        drop(writing);
        if let Ok(room) = &room {
            count_deleted(&room.deleted);
        }
        synced.and(renamed).and(room.map(drop))
    }
}

fn count_deleted(deleted: &[String]) {
    if !deleted.is_empty() {
        tracing::info!(files = ?deleted, "recordings deleted to stay within record_total_bytes");
        metrics::counter!(RECORDINGS_DELETED).increment(deleted.len() as u64);
    }
}

/// Bytes of one chunk, as the session had them.
enum Data {
    /// A pooled read buffer and the bytes of it that were read.
    Pooled(Vec<u8>, usize),
    Shared(Bytes),
}

impl Data {
    fn as_slice(&self) -> &[u8] {
        match self {
            Data::Pooled(buf, n) => &buf[..*n],
            Data::Shared(b) => b,
        }
    }

    /// Gives a pooled buffer back.
    fn recycle(self) {
        if let Data::Pooled(buf, _) = self {
            bufpool::give(buf);
        }
    }
}

/// Bytes the browser received, `ms` after the recording started.
struct Chunk {
    ms: u32,
    data: Data,
}

/// How the recording ended and when (milliseconds); the first to set it wins.
type EndSlot = Arc<OnceLock<(Ending, u32)>>;

/// The session's end of a recording. Never blocks and never fails the session: when
/// the recording can't take bytes it stops and its buffers go back to the pool.
pub struct Recorder {
    /// `None` once the recording stopped taking bytes.
    queue: Option<mpsc::Sender<Chunk>>,
    started: Instant,
    /// Bytes the file holds once everything queued is written.
    size: u64,
    max_bytes: u64,
    end: EndSlot,
}

/// What the writer task takes from the recorder.
struct Queue {
    chunks: mpsc::Receiver<Chunk>,
    started: Instant,
    end: EndSlot,
}

impl Recorder {
    fn new(header_len: u64, max_bytes: u64) -> (Recorder, Queue) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let started = Instant::now();
        let end = EndSlot::default();
        let recorder = Recorder {
            queue: Some(tx),
            started,
            size: header_len,
            max_bytes,
            end: end.clone(),
        };
        let queue = Queue {
            chunks: rx,
            started,
            end,
        };
        (recorder, queue)
    }

    /// Records the first `n` bytes of a [`bufpool`] buffer, which the recorder now
    /// owns (it goes back to the pool once written, or at once if not recorded).
    pub fn record_pooled(&mut self, buf: Vec<u8>, n: usize) {
        self.offer(Data::Pooled(buf, n));
    }

    /// Records bytes the session shares with the recorder (no copy).
    pub fn record_bytes(&mut self, data: Bytes) {
        self.offer(Data::Shared(data));
    }

    /// Records a copy of `data` (for the few handshake bytes).
    pub fn record_slice(&mut self, data: &[u8]) {
        if self.queue.is_some() {
            self.offer(Data::Shared(Bytes::copy_from_slice(data)));
        }
    }

    /// Whether the recording still takes bytes.
    pub fn is_recording(&self) -> bool {
        self.queue.is_some()
    }

    fn ms(&self) -> u32 {
        self.started.elapsed().as_millis().min(u128::from(u32::MAX)) as u32
    }

    fn offer(&mut self, data: Data) {
        let Some(queue) = self.queue.as_ref().filter(|_| !data.as_slice().is_empty()) else {
            return data.recycle();
        };
        let ms = self.ms();
        let size = self.size + (RECORD_HEADER + data.as_slice().len()) as u64;
        if size + END_RESERVE > self.max_bytes {
            self.stop(Ending::Truncated(Truncation::MaxBytes), ms);
            return data.recycle();
        }
        match queue.try_send(Chunk { ms, data }) {
            Ok(()) => self.size = size,
            Err(TrySendError::Full(chunk)) => {
                self.stop(Ending::Truncated(Truncation::Behind), ms);
                chunk.data.recycle();
            }
            // The writer failed and gave up.
            Err(TrySendError::Closed(chunk)) => {
                self.queue = None;
                chunk.data.recycle();
            }
        }
    }

    fn stop(&mut self, ending: Ending, ms: u32) {
        let _ = self.end.set((ending, ms));
        self.queue = None;
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // Set before the queue closes (fields drop after this), for the writer to read.
        let _ = self.end.set((Ending::Complete, self.ms()));
    }
}

/// Runs `f` on a blocking thread; a panic there is an error here.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// One recording's writer task: creates the file, writes what the recorder queues in
/// batches on a blocking thread, then ends the file.
async fn write(recordings: Arc<Recordings>, name: String, header: Vec<u8>, mut queue: Queue) {
    let created = {
        let (recordings, name) = (recordings.clone(), name.clone());
        blocking(move || recordings.create(&name, &header)).await
    };
    let mut file = match created {
        Ok(Some(file)) => file,
        Ok(None) => {
            tracing::warn!(file = %name, "not recorded: record_total_bytes can't hold one more recording");
            return give_up(queue, "over_cap");
        }
        Err(e) => {
            tracing::warn!(file = %name, error = %e, "not recorded: creating the file failed");
            return give_up(queue, "failed");
        }
    };
    tracing::debug!(file = %name, "recording");
    let bytes = metrics::counter!(RECORDING_BYTES);
    let mut batch = Vec::with_capacity(QUEUE);
    let mut failed = None;
    while queue.chunks.recv_many(&mut batch, QUEUE).await > 0 {
        let written = blocking(move || {
            let mut n = 0;
            let mut result = Ok(());
            for chunk in &batch {
                let data = chunk.data.as_slice();
                result = file
                    .write_all(&format::record_header(chunk.ms, data.len()))
                    .and_then(|()| file.write_all(data));
                if result.is_err() {
                    break;
                }
                n += (RECORD_HEADER + data.len()) as u64;
            }
            Ok((file, batch, n, result))
        })
        .await;
        // Only a panic on the blocking thread loses the file (and its buffers).
        let Ok((f, mut done, n, result)) = written else {
            tracing::warn!(file = %name, "recording lost: its writer panicked");
            return give_up(queue, "failed");
        };
        for chunk in done.drain(..) {
            chunk.data.recycle();
        }
        (file, batch) = (f, done);
        bytes.increment(n);
        if let Err(e) = result {
            failed = Some(e);
            break;
        }
    }
    let (ending, ms) = match &failed {
        Some(_) => {
            drain(&mut queue);
            (None, 0)
        }
        None => {
            let (ending, ms) = queue
                .end
                .get()
                .copied()
                .unwrap_or((Ending::Complete, queue.started.elapsed().as_millis() as u32));
            (Some(ending), ms)
        }
    };
    let end = ending.map(|e| format::end_record(ms, e));
    let finished = {
        let (recordings, name) = (recordings.clone(), name.clone());
        blocking(move || recordings.finish(&name, file, end)).await
    };
    let result = match (failed.or(finished.err()), ending) {
        (Some(e), _) => {
            tracing::warn!(file = %name, error = %e, "recording failed; the file keeps what was written");
            "failed"
        }
        (None, Some(ending)) => ending.as_str(),
        (None, None) => "failed",
    };
    tracing::info!(file = %name, result, "recording ended");
    metrics::counter!(RECORDINGS_TOTAL, "result" => result).increment(1);
}

/// Stops taking chunks and gives back the queued ones.
fn drain(queue: &mut Queue) {
    queue.chunks.close();
    while let Ok(chunk) = queue.chunks.try_recv() {
        chunk.data.recycle();
    }
}

fn give_up(mut queue: Queue, result: &'static str) {
    drain(&mut queue);
    metrics::counter!(RECORDINGS_TOTAL, "result" => result).increment(1);
}
