//! The device interrupt vectors, shared by the firmware and its examples (`#[path]` module).
//! cortex-m-rt's feature `device` (one entry instead of its generic table of 240, 960 bytes
//! of flash) makes every binary of this crate supply them.

extern "C" {
    /// cortex-m-rt's handler for unused vectors.
    fn DefaultHandler();
}

/// The device interrupt vectors (cortex-m-rt feature `device`): the firmware enables no
/// device interrupt (SysTick is an exception), so one entry, the fewest cortex-m-rt accepts,
/// instead of its generic table of 240 (960 bytes of flash). `device.x` (empty) is the
/// linker script a device crate would provide with it.
#[link_section = ".vector_table.interrupts"]
#[no_mangle]
static __INTERRUPTS: [unsafe extern "C" fn(); 1] = [DefaultHandler];
