//! A lock-free, one-byte signal for futures of one task.
//!
//! tokio's `Notify` and `CancellationToken` take a mutex whenever a waiting future is
//! polled, and a session's task is polled once per relayed message; this flag costs
//! two atomic operations per poll instead. It keeps one waker: every future waiting on
//! a given signal must belong to the same task.

use std::future::poll_fn;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::Poll;

use futures_util::task::AtomicWaker;

#[derive(Default)]
pub struct Signal {
    /// 0 while unset.
    value: AtomicU8,
    waker: AtomicWaker,
}

impl Signal {
    /// Sets the value (non-zero) unless one is set already (the first wins), and wakes
    /// the waiter.
    pub fn set(&self, value: u8) {
        debug_assert_ne!(value, 0);
        let _ = self
            .value
            .compare_exchange(0, value, Ordering::AcqRel, Ordering::Acquire);
        self.waker.wake();
    }

    pub fn get(&self) -> Option<u8> {
        match self.value.load(Ordering::Acquire) {
            0 => None,
            v => Some(v),
        }
    }

    /// Clears the signal, returning what it held.
    pub fn take(&self) -> Option<u8> {
        match self.value.swap(0, Ordering::AcqRel) {
            0 => None,
            v => Some(v),
        }
    }

    /// Resolves once set; the value stays set.
    pub async fn wait(&self) -> u8 {
        self.wait_with(Self::get).await
    }

    /// Resolves once set, clearing it.
    pub async fn wait_take(&self) -> u8 {
        self.wait_with(Self::take).await
    }

    async fn wait_with(&self, read: fn(&Self) -> Option<u8>) -> u8 {
        poll_fn(|cx| {
            if let Some(v) = read(self) {
                return Poll::Ready(v);
            }
            self.waker.register(cx.waker());
            // Set between the first read and the registration: don't miss it.
            read(self).map_or(Poll::Pending, Poll::Ready)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn wakes_a_waiter_and_keeps_the_first_value() {
        let s = Arc::new(Signal::default());
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.wait().await }
        });
        tokio::task::yield_now().await;
        s.set(3);
        s.set(5);
        assert_eq!(waiter.await.unwrap(), 3);
        assert_eq!(s.get(), Some(3));
    }

    #[tokio::test]
    async fn take_clears_for_the_next_round() {
        let s = Signal::default();
        s.set(1);
        assert_eq!(s.wait_take().await, 1);
        assert_eq!(s.get(), None);
        s.set(2);
        assert_eq!(s.wait_take().await, 2);
    }
}
