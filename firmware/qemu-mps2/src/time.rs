//! embassy-time driver: the clock is the CMSDK APB timer 0 (a 32-bit down
//! counter at 25 MHz, free-running with reload 0xffff_ffff) extended to 64
//! bits in software; a 1 kHz SysTick interrupt samples it (so no wrap, every
//! 171 s, is ever missed) and checks the alarm queue (1 ms granularity,
//! plenty for WireGuard's timers). Counting SysTick interrupts instead loses
//! time under QEMU, which delivers late ticks without catching up.
//! (With QEMU's `-icount`, virtual time advances with the instructions
//! executed, so `now()` also measures work done.)

use core::cell::{Cell, RefCell};
use core::task::Waker;

use cortex_m::peripheral::syst::SystClkSource;
use critical_section::{CriticalSection, Mutex};
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

use crate::SYSCLK_HZ;

const CYCLES_PER_MS: u32 = SYSCLK_HZ / 1000;
const CYCLES_PER_US: u64 = (SYSCLK_HZ / 1_000_000) as u64;

/// CMSDK APB timer 0 registers.
const TIMER0: usize = 0x4000_0000;
const TIMER_CTRL: usize = TIMER0;
const TIMER_VALUE: usize = TIMER0 + 0x04;
const TIMER_RELOAD: usize = TIMER0 + 0x08;

fn timer_value() -> u32 {
    // SAFETY: read of the timer's current value register (owned by this driver).
    unsafe { core::ptr::read_volatile(TIMER_VALUE as *const u32) }
}

struct SysTickDriver {
    /// (cycles since start, timer value at the last sample)
    clock: Mutex<Cell<(u64, u32)>>,
    next_alarm: Mutex<Cell<u64>>,
    queue: Mutex<RefCell<Queue>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    clock: Mutex::new(Cell::new((0, u32::MAX))),
    next_alarm: Mutex::new(Cell::new(u64::MAX)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

/// Starts the clock and SysTick. Call first thing in `main`.
pub fn init(mut syst: cortex_m::peripheral::SYST) {
    // SAFETY: the timer's registers, used only by this driver.
    unsafe {
        core::ptr::write_volatile(TIMER_CTRL as *mut u32, 0);
        core::ptr::write_volatile(TIMER_RELOAD as *mut u32, u32::MAX);
        core::ptr::write_volatile(TIMER_VALUE as *mut u32, u32::MAX);
        core::ptr::write_volatile(TIMER_CTRL as *mut u32, 1); // enable, no interrupt
    }
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CYCLES_PER_MS - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

impl SysTickDriver {
    fn now_cs(&self, cs: CriticalSection) -> u64 {
        let cell = self.clock.borrow(cs);
        let (cycles, last) = cell.get();
        let v = timer_value();
        // A down counter with a full 32-bit period: the difference is exact
        // modulo 2^32, and we sample far more often than every 171 s.
        let cycles = cycles + u64::from(last.wrapping_sub(v));
        cell.set((cycles, v));
        cycles / CYCLES_PER_US
    }

    fn set_alarm(&self, cs: CriticalSection, at: u64) -> bool {
        self.next_alarm.borrow(cs).set(at);
        at > self.now_cs(cs)
    }
}

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.now_cs(cs))
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut queue = self.queue.borrow(cs).borrow_mut();
            if queue.schedule_wake(at, waker) {
                let mut next = queue.next_expiration(self.now_cs(cs));
                while !self.set_alarm(cs, next) {
                    next = queue.next_expiration(self.now_cs(cs));
                }
            }
        })
    }
}

/// The SysTick exception handler's body.
pub fn on_systick() {
    critical_section::with(|cs| {
        let now = DRIVER.now_cs(cs);
        if now >= DRIVER.next_alarm.borrow(cs).get() {
            let mut queue = DRIVER.queue.borrow(cs).borrow_mut();
            let mut next = queue.next_expiration(now);
            while !DRIVER.set_alarm(cs, next) {
                next = queue.next_expiration(DRIVER.now_cs(cs));
            }
        }
    })
}
