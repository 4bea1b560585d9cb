//! Locks that outlive a panicking holder. A job that panics ends in a receipt, never in a
//! wedged gateway: the state a lock guards is kept consistent by its users between statements,
//! so the next user takes it as it is rather than failing on the poison.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// [`Mutex::lock`] that takes over the lock of a holder that panicked.
pub trait Recover<T: ?Sized> {
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> Recover<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_poisoned_by_a_panic_is_taken_over() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("holder dies");
        })
        .join();
        assert!(m.is_poisoned());
        *m.locked() += 1;
        assert_eq!(*m.locked(), 2);
    }
}
