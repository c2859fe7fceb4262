//! A `defmt` global logger that writes the encoded frames to the host file `defmt.bin`
//! (semihosting `SYS_OPEN`/`SYS_WRITE`, relative to QEMU's working directory), so the text
//! the firmware prints on the semihosting console stays separate. `targets/run-qemu.sh`
//! decodes the file with `defmt-print -e FIRMWARE.elf`.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cortex_m::{interrupt, register::primask};
use cortex_m_semihosting::{nr, syscall};

const NO_FILE: usize = usize::MAX;
static FD: AtomicUsize = AtomicUsize::new(NO_FILE);
static TAKEN: AtomicBool = AtomicBool::new(false);
static INTERRUPTS_WERE_ON: AtomicBool = AtomicBool::new(false);
static mut ENCODER: defmt::Encoder = defmt::Encoder::new();

/// Opens `defmt.bin` on the host; until then (or if it fails) log frames are dropped.
pub fn init() {
    let name = b"defmt.bin\0";
    // SAFETY: semihosting OPEN with a NUL-terminated name and its length without the NUL.
    let fd = unsafe {
        syscall!(
            OPEN,
            name.as_ptr(),
            nr::open::W_TRUNC_BINARY,
            name.len() - 1
        )
    };
    if fd as isize != -1 {
        FD.store(fd, Ordering::Relaxed);
    }
}

fn write_host(bytes: &[u8]) {
    let fd = FD.load(Ordering::Relaxed);
    if fd != NO_FILE && !bytes.is_empty() {
        // SAFETY: semihosting WRITE of a valid buffer to a file we opened.
        unsafe { syscall!(WRITE, fd, bytes.as_ptr(), bytes.len()) };
    }
}

#[defmt::global_logger]
struct Logger;

// SAFETY: `acquire` disables interrupts and refuses re-entry, so the encoder is used by one
// frame at a time; `release` restores the interrupt state.
unsafe impl defmt::Logger for Logger {
    fn acquire() {
        let was_on = primask::read().is_active();
        interrupt::disable();
        if TAKEN.swap(true, Ordering::Acquire) {
            panic!("defmt logger taken reentrantly");
        }
        INTERRUPTS_WERE_ON.store(was_on, Ordering::Relaxed);
        // SAFETY: exclusive access while TAKEN (interrupts off).
        unsafe { (*core::ptr::addr_of_mut!(ENCODER)).start_frame(write_host) };
    }

    unsafe fn flush() {}

    unsafe fn release() {
        // SAFETY: exclusive access while TAKEN (interrupts off).
        unsafe { (*core::ptr::addr_of_mut!(ENCODER)).end_frame(write_host) };
        TAKEN.store(false, Ordering::Release);
        if INTERRUPTS_WERE_ON.load(Ordering::Relaxed) {
            // SAFETY: restores the state `acquire` found.
            unsafe { interrupt::enable() };
        }
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: exclusive access while TAKEN (interrupts off).
        unsafe { (*core::ptr::addr_of_mut!(ENCODER)).write(bytes, write_host) };
    }
}
