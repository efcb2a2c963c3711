//! How much memory a piece of code allocates at its peak, for tests that bound what a reader may allocate
//! for a file (a damaged length field must not make it reserve gigabytes).
//!
//! A test binary installs [`CountingAlloc`] as its global allocator; [`peak_during`] then reports the peak
//! bytes the current thread held above its starting level while running a closure. Counts are per thread,
//! so tests running side by side do not disturb each other.
//!
//! ```
//! #[global_allocator]
//! static ALLOC: graft_stdx::alloc_probe::CountingAlloc = graft_stdx::alloc_probe::CountingAlloc;
//!
//! let (_, peak) = graft_stdx::alloc_probe::peak_during(|| vec![0u8; 1 << 20]);
//! assert!(peak >= 1 << 20);
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Bytes this thread holds now (may go below zero when it frees what another thread allocated).
    static HELD: Cell<isize> = const { Cell::new(0) };
    /// The highest `HELD` since the last reset.
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator, counting each thread's bytes.
pub struct CountingAlloc;

fn track(delta: isize) {
    // `try_with`: the thread's counters may already be gone while it exits.
    let _ = HELD.try_with(|held| {
        let now = held.get() + delta;
        held.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

// SAFETY: every method forwards to `System` with the caller's own layout and pointer, so `System`'s
// guarantees carry over; the counting touches only const-initialised thread-locals without destructors,
// which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which is `System`'s.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            track(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            track(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        new
    }
}

/// Runs `work` and returns its result with the peak bytes this thread held above its level at the start
/// (0 unless [`CountingAlloc`] is the global allocator).
pub fn peak_during<T>(work: impl FnOnce() -> T) -> (T, usize) {
    let start = HELD.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = work();
    let peak = PEAK.with(Cell::get);
    (out, usize::try_from(peak - start).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_counting_allocator_nothing_is_counted() {
        let (v, peak) = peak_during(|| vec![1u8; 4096]);
        assert_eq!((v.len(), peak), (4096, 0));
    }
}
