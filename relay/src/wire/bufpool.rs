//! Read buffers, lent per ready read and given back after the write.
//!
//! An idle session holds no buffer: a pump waits for readiness first and only then
//! takes one. Each worker thread keeps a small free list, so the hot path neither
//! allocates nor takes a lock; a buffer taken on one thread may come back on another.

use std::cell::RefCell;

/// Most buffers one thread keeps for reuse; beyond that they are freed. With the
/// default 64 KiB buffers that is at most 4 MiB per worker thread.
pub const MAX_POOLED_PER_THREAD: usize = 64;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of exactly `size` bytes, from this thread's free list when it has one.
pub fn take(size: usize) -> Vec<u8> {
    FREE.with(|free| {
        let mut free = free.borrow_mut();
        match free.iter().rposition(|b| b.len() == size) {
            Some(i) => free.swap_remove(i),
            None => vec![0; size],
        }
    })
}

/// Gives a buffer back for reuse.
pub fn give(buf: Vec<u8>) {
    FREE.with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < MAX_POOLED_PER_THREAD {
            free.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_buffers_of_the_asked_size() {
        let a = take(1024);
        let ptr = a.as_ptr();
        give(a);
        let b = take(1024);
        assert_eq!(b.as_ptr(), ptr, "the freed buffer comes back");
        assert_eq!(b.len(), 1024);
        let c = take(2048);
        assert_eq!(c.len(), 2048);
        give(b);
        give(c);
    }

    #[test]
    fn keeps_a_bounded_number() {
        let bufs: Vec<_> = (0..MAX_POOLED_PER_THREAD + 10).map(|_| take(16)).collect();
        for b in bufs {
            give(b);
        }
        FREE.with(|f| assert!(f.borrow().len() <= MAX_POOLED_PER_THREAD));
    }
}
