//! flowrt on a Cortex-M4F (QEMU `mps2-an386`): samples the `.frt` model and noise embedded at
//! build time (see `build.rs`, `targets/run-qemu.sh`) with the arena in a static sized by the
//! export-time memory plan, prints the samples as hex f32 words over semihosting, and reports
//! instructions (SysTick under `-icount shift=0`) and the stack high-water mark (painting).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::{debug, hio};

mod logger;

#[path = "../../embedded.rs"]
mod embedded;
use embedded::*;

#[path = "vectors.rs"]
mod vectors;

/// SysTick wrap-arounds (24-bit counter).
static WRAPS: AtomicU32 = AtomicU32::new(0);
const RELOAD: u32 = 0x00FF_FFFF;

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// SysTick ticks since it was started (wrap-safe).
///
/// A wrap whose exception is still pending (QEMU can deliver it a few instructions late) is
/// counted here: the counter has just reloaded (`cvr` in the upper half) but `WRAPS` has not
/// moved yet. Without that, a reading just after a wrap went back by 2^24 ticks.
fn ticks() -> u64 {
    loop {
        let w = WRAPS.load(Ordering::Relaxed);
        let cvr = cortex_m::peripheral::SYST::get_current();
        let pending = cortex_m::peripheral::SCB::is_pendst_pending();
        if WRAPS.load(Ordering::Relaxed) == w {
            let late = u32::from(pending && cvr > RELOAD / 2);
            return u64::from(w + late) * u64::from(RELOAD + 1) + u64::from(RELOAD - cvr);
        }
    }
}

/// Runs exactly `2 * n` instructions (`subs` + `bne` per iteration).
#[inline(never)]
fn spin(n: u32) {
    // SAFETY: a register-only countdown loop.
    unsafe {
        core::arch::asm!("1:", "subs {0}, {0}, #1", "bne 1b", inout(reg) n => _, options(nomem, nostack));
    }
}

extern "C" {
    static __sheap: u8;
    static _stack_start: u8;
}

/// Fills the unused stack below the current frame (down to the end of .bss) with a pattern.
#[inline(never)]
fn paint_stack() -> (usize, usize) {
    // End of .bss/.uninit (a linker symbol; only its address is used).
    let lo = (core::ptr::addr_of!(__sheap) as usize + 15) & !15;
    let hi = (cortex_m::register::msp::read() as usize - 512) & !15;
    // SAFETY: [lo, hi) is RAM between the end of .bss and the live stack frames.
    unsafe { paint(lo, hi) }
}

/// Writes to the semihosting console (the output of `embedded::Text`, which avoids
/// `core::fmt`).
fn console(bytes: &[u8]) {
    if let Ok(mut out) = hio::hstdout() {
        let _ = out.write_all(bytes);
    }
}

fn exit(status: debug::ExitStatus) -> ! {
    debug::exit(status);
    loop {
        core::hint::spin_loop();
    }
}

fn fail(what: &str, e: flowrt::Error) -> ! {
    defmt::error!("{=str} failed: {}", what, e);
    print_error(&mut Text::new(&mut console), what, &e);
    exit(debug::EXIT_FAILURE)
}

/// Panics cannot come from the runtime (it returns errors); this one reports without
/// formatting the message.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    Text::new(&mut console).str("FLOWRT-PANIC").line();
    exit(debug::EXIT_FAILURE)
}

#[entry]
fn main() -> ! {
    let mut cp = cortex_m::Peripherals::take().expect("core peripherals");
    cp.SYST.set_clock_source(SystClkSource::Core);
    cp.SYST.set_reload(RELOAD);
    cp.SYST.clear_current();
    cp.SYST.enable_interrupt();
    cp.SYST.enable_counter();
    // The cleared counter reads 0 until its first reload: a reading then would count the
    // whole 2^24-tick period as elapsed (the calibration of a firmware that reached it
    // quickly came out negative).
    while cortex_m::peripheral::SYST::get_current() == 0 {}

    let mut bufs = buffers();

    // Calibrate instructions per SysTick tick with a loop of known length.
    let cal_n = 1_000_000u32;
    let t0 = ticks();
    spin(cal_n);
    let cal_ticks = ticks() - t0;

    logger::init();
    defmt::info!(
        "flowrt firmware: {=usize} rows x {=usize}, {=str} x {=usize} steps, arena {=usize} bytes",
        BATCH,
        DIM,
        METHOD,
        STEPS,
        ARENA_BYTES
    );
    let Measured {
        counted: sample_ticks,
        touched,
    } = run_embedded(&mut bufs, paint_stack, ticks, fail);
    let stack_top = core::ptr::addr_of!(_stack_start) as usize;

    let mut sink = console;
    let mut out = Text::new(&mut sink);
    print_samples(&mut out, samples(&bufs));
    print_stats(&mut out, stack_top - touched);
    out.str(" ticks=").dec(sample_ticks);
    out.str(" cal_ticks=").dec(cal_ticks);
    out.str(" cal_instructions=").dec(2 * u64::from(cal_n));
    out.line();
    defmt::info!("flowrt firmware: done, {=u64} SysTick ticks", sample_ticks);
    exit(debug::EXIT_SUCCESS)
}
