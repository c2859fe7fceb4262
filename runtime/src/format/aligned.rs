//! 16-byte aligned byte buffers for `.frt` images: [`Aligned16`] + [`crate::include_frt!`]
//! for firmware (file embedded in flash), [`AlignedBytes`] (feature `alloc`) for hosts.

/// A value placed at a 16-byte aligned address. Used by [`crate::include_frt!`] to embed a
/// `.frt` file so that [`crate::Model::from_bytes`] can borrow its weights as `&[f32]`.
#[repr(C, align(16))]
#[derive(Debug)]
pub struct Aligned16<T: ?Sized>(pub T);

/// Embeds a `.frt` file (path relative to the current source file, as for
/// `include_bytes!`) 16-byte aligned and evaluates to a `&'static [u8]`.
///
/// ```ignore
/// static MODEL: &[u8] = flowrt::include_frt!("../model.frt");
/// let model = flowrt::Model::from_bytes(MODEL)?;
/// ```
#[macro_export]
macro_rules! include_frt {
    ($path:expr) => {{
        static FRT_ALIGNED: &$crate::format::Aligned16<[u8]> =
            &$crate::format::Aligned16(*::core::include_bytes!($path));
        &FRT_ALIGNED.0
    }};
}

#[cfg(feature = "alloc")]
pub use self::heap::AlignedBytes;

#[cfg(feature = "alloc")]
mod heap {
    use alloc::vec::Vec;

    /// 16 bytes at a 16-byte aligned address.
    #[repr(C, align(16))]
    #[derive(Clone, Copy, Default)]
    struct Block([u8; 16]);

    // SAFETY: `Block` is `repr(C)` around a `[u8; 16]`: size 16 = alignment 16, so it has no
    // padding; every bit pattern is a valid value, and all-zero is a valid value.
    unsafe impl bytemuck::Zeroable for Block {}
    // SAFETY: see above (no padding, any bit pattern valid, `Copy`, `'static`).
    unsafe impl bytemuck::Pod for Block {}

    /// A heap byte buffer whose first byte is 16-byte aligned (feature `alloc`).
    ///
    /// `Vec<u8>` (e.g. from `std::fs::read`) gives no alignment guarantee; copy it into an
    /// `AlignedBytes` before [`crate::Model::from_bytes`].
    #[derive(Clone, Default)]
    pub struct AlignedBytes {
        blocks: Vec<Block>,
        len: usize,
    }

    impl AlignedBytes {
        /// Copies `bytes` into a new aligned buffer.
        pub fn copy_from(bytes: &[u8]) -> AlignedBytes {
            let mut blocks = alloc::vec![Block::default(); bytes.len().div_ceil(16)];
            let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut blocks);
            for (d, s) in dst.iter_mut().zip(bytes) {
                *d = *s;
            }
            AlignedBytes {
                blocks,
                len: bytes.len(),
            }
        }

        /// A zero-filled aligned buffer of `len` bytes (e.g. an arena).
        pub fn zeroed(len: usize) -> AlignedBytes {
            AlignedBytes {
                blocks: alloc::vec![Block::default(); len.div_ceil(16)],
                len,
            }
        }

        /// Like [`AlignedBytes::zeroed`], but `None` instead of aborting the process when
        /// the memory cannot be allocated (e.g. an arena for a huge, user-given batch size).
        pub fn try_zeroed(len: usize) -> Option<AlignedBytes> {
            let n = len.div_ceil(16);
            let mut blocks = Vec::new();
            blocks.try_reserve_exact(n).ok()?;
            blocks.resize(n, Block::default());
            Some(AlignedBytes { blocks, len })
        }

        /// The bytes.
        pub fn as_slice(&self) -> &[u8] {
            let all: &[u8] = bytemuck::cast_slice(&self.blocks);
            all.get(..self.len).unwrap_or(&[])
        }

        /// The bytes, mutably.
        pub fn as_mut_slice(&mut self) -> &mut [u8] {
            let len = self.len;
            let all: &mut [u8] = bytemuck::cast_slice_mut(&mut self.blocks);
            all.get_mut(..len).unwrap_or(&mut [])
        }

        /// Number of bytes.
        pub fn len(&self) -> usize {
            self.len
        }

        /// `true` when empty.
        pub fn is_empty(&self) -> bool {
            self.len == 0
        }
    }

    impl From<&[u8]> for AlignedBytes {
        fn from(bytes: &[u8]) -> AlignedBytes {
            AlignedBytes::copy_from(bytes)
        }
    }

    impl From<Vec<u8>> for AlignedBytes {
        fn from(bytes: Vec<u8>) -> AlignedBytes {
            AlignedBytes::copy_from(&bytes)
        }
    }

    impl core::ops::Deref for AlignedBytes {
        type Target = [u8];
        fn deref(&self) -> &[u8] {
            self.as_slice()
        }
    }

    impl core::ops::DerefMut for AlignedBytes {
        fn deref_mut(&mut self) -> &mut [u8] {
            self.as_mut_slice()
        }
    }

    impl core::fmt::Debug for AlignedBytes {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "AlignedBytes({} bytes)", self.len)
        }
    }
}
