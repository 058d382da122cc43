//! A stall guard for the dump: while the container is frozen, a thread
//! watches that kernel images keep flowing. A destination that stops
//! taking bytes without failing (a host that no longer reads but keeps the
//! connection open) would otherwise keep the container frozen for as long
//! as it likes; after the limit the guard thaws it, and the checkpoint
//! fails once the dump returns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::sink::SinkStatus;

/// How often the guard looks.
const TICK: Duration = Duration::from_millis(250);

/// Runs `work` while a guard calls `on_stall` (once) if `status` shows no
/// progress for `limit`; returns `work`'s result and whether it fired.
pub fn guard<T>(
    limit: Duration,
    status: &SinkStatus,
    on_stall: impl Fn() + Send,
    work: impl FnOnce() -> T,
) -> (T, bool) {
    let done = (Mutex::new(false), Condvar::new());
    let fired = AtomicBool::new(false);
    let result = thread::scope(|scope| {
        scope.spawn(|| watch(limit, status, &done, &fired, on_stall));
        let result = work();
        *done.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        done.1.notify_all();
        result
    });
    (result, fired.load(Ordering::SeqCst))
}

fn watch(
    limit: Duration,
    status: &SinkStatus,
    done: &(Mutex<bool>, Condvar),
    fired: &AtomicBool,
    on_stall: impl Fn(),
) {
    let mut seen = status.progress();
    let mut since = Instant::now();
    let mut finished = done.0.lock().unwrap_or_else(|e| e.into_inner());
    while !*finished {
        finished = done
            .1
            .wait_timeout(finished, TICK.min(limit))
            .unwrap_or_else(|e| e.into_inner())
            .0;
        let now = status.progress();
        if now != seen {
            seen = now;
            since = Instant::now();
        } else if !*finished && since.elapsed() >= limit {
            fired.store(true, Ordering::SeqCst);
            on_stall();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn a_stalled_dump_fires_once_a_moving_one_never() {
        let status = SinkStatus::default();
        let calls = AtomicU32::new(0);
        let on_stall = || {
            calls.fetch_add(1, Ordering::SeqCst);
        };
        let (value, fired) = guard(Duration::from_millis(50), &status, on_stall, || {
            thread::sleep(Duration::from_millis(400));
            7
        });
        assert_eq!((value, fired), (7, true));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let (_, fired) = guard(
            Duration::from_millis(300),
            &status,
            || panic!("fired"),
            || {
                for _ in 0..10 {
                    status.advance(1);
                    thread::sleep(Duration::from_millis(50));
                }
            },
        );
        assert!(!fired);
        // A quick dump ends the guard at once.
        let started = Instant::now();
        guard(Duration::from_secs(60), &status, || panic!("fired"), || ());
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
