//! Named seeds: every random choice of a run derives its own stream from the pipeline's seed.

/// Derives an independent seed for one use of `seed`, so that e.g. the sample and the split do not share a
/// random stream. Stable across platforms and releases: changing it changes every published number.
pub fn derive_seed(seed: u64, purpose: &str) -> u64 {
    // FNV-1a over the purpose, mixed with the seed (splitmix64 finaliser).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in purpose.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = seed ^ h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_differ_by_purpose_and_are_stable() {
        assert_ne!(derive_seed(42, "split"), derive_seed(42, "sample"));
        assert_ne!(derive_seed(42, "split"), derive_seed(43, "split"));
        assert_eq!(derive_seed(42, "split"), derive_seed(42, "split"));
        // Pinned: published results depend on these values.
        assert_eq!(derive_seed(42, "split"), 0xd6d7_e740_301e_a8bc);
    }
}
