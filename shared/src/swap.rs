//! A value read often and replaced rarely as a whole (a reloaded key set, certificate
//! or configuration): readers take an `Arc` of what is in force and keep it as long as
//! they need; a replacement affects only the reads after it.

use std::sync::{Arc, RwLock};

pub struct Swap<T>(RwLock<Arc<T>>);

impl<T> Swap<T> {
    pub fn new(value: T) -> Swap<T> {
        Swap(RwLock::new(Arc::new(value)))
    }

    /// What is in force now.
    pub fn get(&self) -> Arc<T> {
        match self.0.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `value` in force for every later [`Swap::get`].
    pub fn set(&self, value: T) {
        match self.0.write() {
            Ok(mut slot) => *slot = Arc::new(value),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(value),
        }
    }
}
