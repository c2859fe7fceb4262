//! The CRC-32 of `.frt` files (IEEE 802.3, reflected, as zlib and `crc32fast` compute it).
//!
//! [`Hasher`] is `crc32fast`'s (slice-by-16: fast, 16 KB of tables) unless the
//! `compact-checksum` feature selects [`Compact`] (a 64-byte table, half a byte per step: the
//! same values in a 256th of the flash, for firmware, which checks a model once at boot).

#[cfg(not(feature = "compact-checksum"))]
pub use crc32fast::Hasher;

#[cfg(feature = "compact-checksum")]
pub use Compact as Hasher;

/// The nibble-at-a-time table of the reflected polynomial 0xEDB88320: entry `i` is the CRC
/// register after shifting `i` through four steps.
// Indexing in a const initializer: an out-of-bounds index fails the build, never a run.
#[allow(clippy::indexing_slicing)]
const TABLE: [u32; 16] = {
    let mut t = [0u32; 16];
    let mut i = 0;
    while i < 16 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 4 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-32 with one 16-entry table (what `compact-checksum` makes [`Hasher`]); the same API
/// and values as `crc32fast::Hasher`.
#[derive(Debug, Clone, Copy)]
pub struct Compact(u32);

impl Default for Compact {
    fn default() -> Self {
        Self::new()
    }
}

impl Compact {
    /// A hasher over no bytes yet.
    pub const fn new() -> Self {
        Compact(!0)
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut c = self.0;
        // The index is below 16, so `get` never misses.
        let step = |c: u32| TABLE.get((c & 0xF) as usize).copied().unwrap_or(0) ^ (c >> 4);
        for &b in bytes {
            c = step(step(c ^ u32::from(b)));
        }
        self.0 = c;
    }

    /// The CRC of everything added.
    pub fn finalize(self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn compact_matches_crc32fast() {
        // 300 bytes under Miri (scripts/miri.sh, ~10^5 times slower).
        let len = if cfg!(miri) { 300 } else { 5000 };
        let data: std::vec::Vec<u8> = (0..len).map(|i| (i * 7 + i / 13) as u8).collect();
        for split in [0, 1, 15, 16, 17, len as usize - 1, len as usize] {
            let (a, b) = data.split_at(split);
            let mut fast = crc32fast::Hasher::new();
            let mut compact = super::Compact::new();
            fast.update(a);
            fast.update(b);
            compact.update(a);
            compact.update(b);
            assert_eq!(fast.finalize(), compact.finalize());
        }
        assert_eq!(super::Compact::new().finalize(), 0);
        let mut c = super::Compact::new();
        c.update(b"123456789");
        assert_eq!(c.finalize(), 0xCBF4_3926);
    }
}
