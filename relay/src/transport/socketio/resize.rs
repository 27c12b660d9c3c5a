//! Answers to `vnc:resize`, for socket.io sessions only: the relay follows the VNC
//! server's messages with a [`ServerFramer`] and tells the socket what the server said
//! to each SetDesktopSize (`vnc:resized`), or that it said nothing in time.
//!
//! Pairing: a server answers SetDesktopSize requests in order, each with an
//! ExtendedDesktopSize rectangle whose x-position is 1, so every such answer settles
//! the oldest pending `vnc:resize`. Every answer is reported, also one to a
//! SetDesktopSize the browser sent itself in `vnc:data` and one that comes after its
//! request was given up: the payload carries the size, so the browser can tell them
//! apart. A request unanswered after [`ANSWER_TIMEOUT`] gets `{status: "no answer"}`:
//! the server ignores SetDesktopSize unless the browser listed ExtendedDesktopSize
//! (-308) in SetEncodings, some servers never answer, and once the server's stream
//! cannot be framed (an encoding the framer doesn't know) the relay stops following it
//! and every later request ends that way. The session itself is never affected:
//! following the stream only reads bytes that go to the browser unchanged.
//!
//! The raw WebSocket path reports no resize answers.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, sleep_until};
use vnc_shared::rfb::{PixelFormat, ResizeAnswer, ServerEvent};

use crate::metrics::{RESIZE_ANSWERS, SERVER_STREAM_UNFOLLOWED};
use crate::session::server_stream::Follower;

/// How long a `vnc:resize` waits for the server's answer before it gets "no answer".
/// Servers answer within a round trip plus the time to resize (tens of milliseconds
/// for Xvnc); 5 s leaves room for a busy one.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Most `vnc:resize` requests waiting for an answer at once; one more gives the oldest
/// up at once ("no answer"), so the queue stays bounded whatever the browser sends.
pub const MAX_PENDING: usize = 16;

/// Status word of a request the server did not answer.
const NO_ANSWER: &str = "no answer";

/// A `vnc:resize` written to the server and not answered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub width: u16,
    pub height: u16,
    deadline: Instant,
}

/// The session's pending `vnc:resize` requests, oldest first. Shared by the session's
/// pumps, which run in one task: the lock is never contended or held across an await.
#[derive(Debug, Default)]
pub struct PendingResizes {
    queue: Mutex<VecDeque<Request>>,
    /// Wakes [`PendingResizes::expired`] when a request joins an empty queue.
    added: Notify,
}

impl PendingResizes {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Request>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A SetDesktopSize for `width` × `height` was written to the server. Returns the
    /// oldest request if it had to give way ([`MAX_PENDING`]): it gets "no answer" now.
    pub fn sent(&self, width: u16, height: u16) -> Option<Request> {
        let mut queue = self.queue();
        let evicted = if queue.len() >= MAX_PENDING {
            queue.pop_front()
        } else {
            None
        };
        queue.push_back(Request {
            width,
            height,
            deadline: Instant::now() + ANSWER_TIMEOUT,
        });
        drop(queue);
        self.added.notify_one();
        evicted
    }

    /// The server answered: settles the oldest pending request, if any.
    pub fn answered(&self) -> Option<Request> {
        self.queue().pop_front()
    }

    /// Waits until the oldest request's deadline has passed, and removes it.
    pub async fn expired(&self) -> Request {
        loop {
            let front = self.queue().front().map(|r| r.deadline);
            match front {
                None => self.added.notified().await,
                Some(deadline) => {
                    sleep_until(deadline).await;
                    // It may have been answered meanwhile; deadlines grow from the
                    // front, so the front is always the next to expire.
                    let mut queue = self.queue();
                    if queue.front().is_some_and(|r| r.deadline <= Instant::now())
                        && let Some(request) = queue.pop_front()
                    {
                        return request;
                    }
                }
            }
        }
    }
}

/// `vnc:resized` for a server's answer: `{status, code, width, height}`, the status as
/// a word ("ok", "prohibited", "out of resources", "invalid layout", "unknown") and as
/// its number, and the desktop size now.
pub fn answered_payload(answer: &ResizeAnswer) -> Value {
    let status = answer.status.as_str();
    metrics::counter!(RESIZE_ANSWERS, "status" => status).increment(1);
    json!({
        "status": status,
        "code": answer.status.0,
        "width": answer.width,
        "height": answer.height,
    })
}

/// `vnc:resized` for a request the server did not answer in time:
/// `{status: "no answer", requested: {width, height}}`.
pub fn no_answer_payload(request: &Request) -> Value {
    metrics::counter!(RESIZE_ANSWERS, "status" => NO_ANSWER).increment(1);
    json!({
        "status": NO_ANSWER,
        "requested": { "width": request.width, "height": request.height },
    })
}

/// Follows the server's data-phase stream for resize answers.
#[derive(Debug)]
pub struct AnswerReader {
    /// `None` once the stream could not be framed: nothing is read any more.
    follower: Option<Follower>,
}

impl AnswerReader {
    /// A reader for a stream right after ServerInit, in the formats of
    /// [`crate::session::rfb::Filter::formats`].
    pub fn new(formats: watch::Receiver<PixelFormat>) -> AnswerReader {
        AnswerReader {
            follower: Some(Follower::new(formats)),
        }
    }

    /// The answers to this client's SetDesktopSize in `chunk` (bytes read from the
    /// server, in order), oldest first. Allocates only when there is one.
    pub fn read(&mut self, chunk: &[u8]) -> Vec<ResizeAnswer> {
        let mut answers = Vec::new();
        let Some(follower) = self.follower.as_mut() else {
            return answers;
        };
        for event in follower.framer().events(chunk) {
            match event {
                Ok(ServerEvent::ResizeAnswer(answer)) => answers.push(answer),
                Ok(_) => {}
                Err(e) => {
                    tracing::info!(error = %e, "the VNC server's stream can't be followed; vnc:resize answers stop for this session");
                    metrics::counter!(SERVER_STREAM_UNFOLLOWED).increment(1);
                    self.follower = None;
                    break;
                }
            }
        }
        answers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_request_expires_after_the_timeout() {
        let pending = PendingResizes::default();
        let start = Instant::now();
        assert_eq!(pending.sent(800, 600), None);
        let expired = pending.expired().await;
        assert_eq!((expired.width, expired.height), (800, 600));
        assert_eq!(start.elapsed(), ANSWER_TIMEOUT);
        assert_eq!(pending.answered(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_settle_the_oldest_request_first() {
        let pending = PendingResizes::default();
        pending.sent(1, 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        pending.sent(2, 2);
        assert_eq!(pending.answered().map(|r| r.width), Some(1));
        // The second expires on its own clock, not the first one's.
        let start = Instant::now();
        assert_eq!(pending.expired().await.width, 2);
        assert_eq!(start.elapsed(), ANSWER_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_queue_waits_for_a_request() {
        let pending = PendingResizes::default();
        let waiter = pending.expired();
        tokio::pin!(waiter);
        assert!(
            tokio::time::timeout(Duration::from_secs(60), &mut waiter)
                .await
                .is_err()
        );
        pending.sent(3, 3);
        let start = Instant::now();
        assert_eq!(waiter.await.width, 3);
        assert_eq!(start.elapsed(), ANSWER_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_is_bounded() {
        let pending = PendingResizes::default();
        for i in 0..MAX_PENDING as u16 {
            assert_eq!(pending.sent(i, i), None);
        }
        let evicted = pending.sent(99, 99).expect("the oldest gives way");
        assert_eq!(evicted.width, 0);
        assert_eq!(pending.queue().len(), MAX_PENDING);
    }

    #[test]
    fn payloads_name_the_status() {
        let answer = ResizeAnswer {
            status: vnc_shared::rfb::ResizeStatus::INVALID_LAYOUT,
            width: 640,
            height: 480,
        };
        assert_eq!(
            answered_payload(&answer),
            json!({"status": "invalid layout", "code": 3, "width": 640, "height": 480})
        );
        let request = Request {
            width: 1,
            height: 2,
            deadline: Instant::now(),
        };
        assert_eq!(
            no_answer_payload(&request),
            json!({"status": "no answer", "requested": {"width": 1, "height": 2}})
        );
    }

    #[test]
    fn the_reader_follows_format_changes_and_stops_after_an_error() {
        let rgb888 = [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0];
        let rgb565 = [16, 16, 0, 1, 0, 31, 0, 63, 0, 31, 11, 5, 0, 0, 0, 0];
        let (tx, rx) = watch::channel(PixelFormat::from_bytes(&rgb888));
        let mut reader = AnswerReader::new(rx);
        // A 1 × 1 Raw rectangle, then an ExtendedDesktopSize answer.
        let update = |pixel: &[u8]| {
            let mut m = vec![0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0];
            m.extend(pixel);
            m.extend([0, 1, 0, 0, 2, 128, 1, 224, 0xff, 0xff, 0xfe, 0xcc]);
            m.extend([0, 0, 0, 0]);
            m
        };
        let ok = ResizeAnswer {
            status: vnc_shared::rfb::ResizeStatus::OK,
            width: 640,
            height: 480,
        };
        assert_eq!(reader.read(&update(&[1, 2, 3, 4])), [ok]);
        tx.send_replace(PixelFormat::from_bytes(&rgb565));
        assert_eq!(reader.read(&update(&[1, 2])), [ok]);
        // An unknown message type: nothing more is reported, even valid answers.
        assert_eq!(reader.read(&[77]), []);
        assert!(reader.follower.is_none());
        assert_eq!(reader.read(&update(&[1, 2])), []);
    }
}
