//! A fixed set of worker threads pulling work items by index.
//!
//! Runs are independent and single-threaded, so the simplest scheduler is
//! best: each worker takes the next index from an atomic counter until none
//! are left. Results come back in index order whatever order they finished
//! in, which keeps every report deterministic.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

/// Runs `work(i)` for every `i` in `0..count` on `jobs` threads (at least
/// one) and returns the results in index order. `finished(i, &result)` is
/// called as each item completes, one call at a time.
pub fn run_indexed<R, W, F>(count: usize, jobs: usize, work: W, finished: F) -> Vec<R>
where
    R: Send,
    W: Fn(usize) -> R + Sync,
    F: FnMut(usize, &R) + Send,
{
    let next = AtomicUsize::new(0);
    let finished = Mutex::new(finished);
    let workers = jobs.clamp(1, count.max(1));
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            break mine;
                        }
                        let result = work(i);
                        // A poisoned lock only means another callback panicked;
                        // the callback's state is still usable for reporting.
                        let mut callback = finished.lock().unwrap_or_else(|e| e.into_inner());
                        callback(i, &result);
                        drop(callback);
                        mine.push((i, result));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|payload| panic::resume_unwind(payload)))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

thread_local! {
    /// Whether this thread is inside `catch_panic`, whose panics the hook keeps quiet.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// The last caught panic on this thread, as the hook saw it (message and location).
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f`, turning a panic into `Err(message (at location))`: one seed that
/// crashes the engine is a failure to report with its replay command, not a
/// reason to lose the rest of the sweep. Such panics print nothing (the caller
/// reports the message); panics elsewhere print as usual.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    LAST_PANIC.with(|p| p.borrow_mut().take());
    let was_catching = CATCHING.with(|c| c.replace(true));
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(was_catching));
    outcome.map_err(|payload| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| payload_message(payload.as_ref()))
    })
}

/// Wraps the process's panic hook, once: inside `catch_panic` it records the
/// panic for the caller; everywhere else it defers to the previous hook.
fn install_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) {
                let location = info.location().map(|l| format!(" (at {l})")).unwrap_or_default();
                let message = format!("{}{location}", payload_message(info.payload()));
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(message));
            } else {
                previous(info);
            }
        }));
    });
}

fn payload_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that panics on a surprise is doing its job
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_index_order_from_any_number_of_workers() {
        for jobs in [0, 1, 2, 3, 16] {
            let mut seen = Vec::new();
            let out = run_indexed(50, jobs, |i| i * i, |i, r: &usize| seen.push((i, *r)));
            assert_eq!(out, (0..50).map(|i| i * i).collect::<Vec<_>>());
            seen.sort_unstable();
            assert_eq!(seen, (0..50).map(|i| (i, i * i)).collect::<Vec<_>>());
        }
    }

    #[test]
    fn no_work_is_no_results() {
        let out: Vec<u8> = run_indexed(0, 4, |_| 1, |_, _| {});
        assert!(out.is_empty());
    }

    #[test]
    fn a_panic_becomes_its_message_with_a_location() {
        let caught = catch_panic(|| -> u8 { panic!("engine fell over at step {}", 7) });
        let message = caught.unwrap_err();
        assert!(message.starts_with("engine fell over at step 7 (at "), "{message}");
        assert!(message.contains("pool.rs"), "{message}");
        assert_eq!(catch_panic(|| 5), Ok(5));
    }
}
