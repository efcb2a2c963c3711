//! Keeping freed memory for the next training step.
//!
//! candle allocates every operation's output and frees it when the step ends; the same multi-megabyte
//! activations and gradients come back every step. glibc's malloc serves blocks above its mmap threshold
//! (dynamic, from 128 KB up to 32 MB) with `mmap` and returns them with `munmap`, and trims the heap's top
//! when more than 128 KB are free, so each step faulted the same pages in again and the kernel zeroed them: 23% of
//! a full fine-tuning epoch's CPU was kernel time (benches/README.md). Raising both thresholds keeps freed
//! blocks in the heap for reuse: a full epoch on 480 MR rows went from 32.0 s to 26.0 s, same weights.
//! The price is that the process keeps its peak heap until it exits; graft's processes are short-lived.

/// Asks glibc's malloc to keep freed memory for reuse (no `mmap` per large block, no trimming). Returns
/// whether the allocator took the settings (`false` on other C libraries, where nothing is changed).
pub(crate) fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's `mallopt` parameters (malloc.h).
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: `mallopt` is glibc's documented, thread-safe way to tune its allocator at any time; the
        // parameters are glibc's own constants and the values plain non-negative integers (a value glibc
        // does not accept is refused with 0, changing nothing).
        let mmap = unsafe { mallopt(M_MMAP_THRESHOLD, i32::MAX) };
        // SAFETY: as above.
        let trim = unsafe { mallopt(M_TRIM_THRESHOLD, i32::MAX) };
        mmap == 1 && trim == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_settings() {
        let expected = cfg!(all(target_os = "linux", target_env = "gnu"));
        assert_eq!(super::keep_freed_memory(), expected);
        // Taking them twice is fine (every fine-tuning run calls it).
        assert_eq!(super::keep_freed_memory(), expected);
    }
}
