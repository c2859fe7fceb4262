//! flowrt on riscv32imac (QEMU `virt`): samples the `.frt` model and noise embedded at build
//! time (see `build.rs`, `targets/run-qemu.sh`) with the arena in a static sized by the
//! export-time memory plan, prints the samples as hex f32 words on the 16550 UART, reports
//! instructions (`minstret`, exact under `-icount`) and the stack high-water mark (painting),
//! and exits QEMU through the virt test device.
#![no_std]
#![no_main]

#[path = "../../embedded.rs"]
mod embedded;
use embedded::*;

/// The virt machine's 16550 UART (transmit holding register), QEMU needs no setup.
const UART_THR: *mut u8 = 0x1000_0000 as *mut u8;
/// The virt machine's SiFive test device: 0x5555 = pass, (code << 16) | 0x3333 = fail.
const TEST_DEV: *mut u32 = 0x0010_0000 as *mut u32;

/// Writes to the UART (the output of `embedded::Text`, which avoids `core::fmt`).
fn uart(bytes: &[u8]) {
    for b in bytes {
        // SAFETY: MMIO register of the virt machine's UART.
        unsafe { core::ptr::write_volatile(UART_THR, *b) };
    }
}

fn exit(code: u32) -> ! {
    let v = if code == 0 {
        0x5555
    } else {
        (code << 16) | 0x3333
    };
    // SAFETY: MMIO register of the virt machine's test device; QEMU exits.
    unsafe { core::ptr::write_volatile(TEST_DEV, v) };
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    Text::new(&mut uart).str("FLOWRT-PANIC").line();
    exit(1)
}

/// Retired instructions (exact under QEMU `-icount`).
fn instret() -> u64 {
    loop {
        let (hi, lo, hi2): (u32, u32, u32);
        // SAFETY: reading machine-mode counter CSRs.
        unsafe {
            core::arch::asm!("csrr {0}, minstreth", "csrr {1}, minstret", "csrr {2}, minstreth",
                out(reg) hi, out(reg) lo, out(reg) hi2, options(nomem, nostack));
        }
        if hi == hi2 {
            return (u64::from(hi) << 32) | u64::from(lo);
        }
    }
}

extern "C" {
    static __estack: u8;
    static _stack_start: u8;
}

/// Fills the unused stack below the current frame (down to the end of .bss) with a pattern.
#[inline(never)]
fn paint_stack() -> (usize, usize) {
    let lo = (core::ptr::addr_of!(__estack) as usize + 15) & !15;
    let sp: usize;
    // SAFETY: reads the stack pointer.
    unsafe { core::arch::asm!("mv {0}, sp", out(reg) sp, options(nomem, nostack)) };
    let hi = (sp - 512) & !15;
    // SAFETY: [lo, hi) is RAM between the end of .bss and the live stack frames.
    unsafe { paint(lo, hi) }
}

fn fail(what: &str, e: flowrt::Error) -> ! {
    print_error(&mut Text::new(&mut uart), what, &e);
    exit(1)
}

#[riscv_rt::entry]
fn main() -> ! {
    let mut bufs = buffers();
    let Measured {
        counted: instructions,
        touched,
    } = run_embedded(&mut bufs, paint_stack, instret, fail);
    let stack_top = core::ptr::addr_of!(_stack_start) as usize;

    let mut sink = uart;
    let mut out = Text::new(&mut sink);
    print_samples(&mut out, samples(&bufs));
    print_stats(&mut out, stack_top - touched);
    out.str(" instructions=").dec(instructions);
    out.line();
    exit(0)
}
