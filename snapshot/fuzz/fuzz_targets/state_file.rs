//! Fuzzes `crvmm_snapshot::read`: whatever the bytes, reading them as a
//! state file must return `Ok` or `Err`, never panic, and never take more
//! heap than a budget set by the cap, however large the lengths the input
//! declares (in its header or in CBOR item headers).
//!
//! Each input is read twice per state type: as it is (magic, version,
//! flags, cap, truncation, CRC64, trailing bytes), and "resealed" with its
//! last 8 bytes replaced by the right CRC64, so mutations of the payload
//! reach the CBOR decoder instead of stopping at the checksum. The state
//! types are `Machine`, a typed state shaped like crvmm's snapshot state,
//! and `ciborium::Value`, which decodes any CBOR.

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crvmm_snapshot_fuzz::{reseal, Machine, CAP};
use libfuzzer_sys::fuzz_target;

/// Heap a read may hold at its peak: the payload buffer (at most the cap),
/// the decoded value (a CBOR item of one byte can become a 32-byte
/// `ciborium::Value` in a vector that doubles as it grows, so 64 bytes per
/// input byte, and more rounding in small strings), and serde's
/// preallocation for a sequence whose CBOR header declares its length
/// (at most 1 MiB for each sequence being decoded at once; `Machine` nests
/// at most 3, `Value` preallocates nothing).
const HEAP_BUDGET: usize = 128 * CAP as usize + 4 * (1 << 20);

/// Counts live heap bytes and their peak (the target is single-threaded).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let live = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(live, Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments and
// only updates counters, so `System`'s guarantees hold unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `ptr` came from this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as if the old and new blocks were both live for a
            // moment, as they are when the block moves.
            grew(new_size);
            LIVE.fetch_sub(layout.size(), Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Reads `bytes` as a state file holding a `T`; checks the heap it took.
fn read_as<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> bool {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let ok = crvmm_snapshot::read::<T, _>(&mut &bytes[..], CAP).is_ok();
    let peak = PEAK.load(Relaxed) - base;
    assert!(
        peak <= HEAP_BUDGET,
        "reading {} bytes as {what} took {peak} bytes of heap (budget {HEAP_BUDGET})",
        bytes.len()
    );
    if std::env::var_os("CRVMM_FUZZ_PEAK").is_some() {
        eprintln!(
            "peak {peak:>9} B  {what:<8} ok={ok:<5} input {} B",
            bytes.len()
        );
    }
    ok
}

fuzz_target!(|data: &[u8]| {
    read_as::<Machine>(data, "Machine");
    read_as::<ciborium::Value>(data, "Value");
    if let Some(fixed) = reseal(data) {
        read_as::<Machine>(&fixed, "Machine");
        read_as::<ciborium::Value>(&fixed, "Value");
    }
});
