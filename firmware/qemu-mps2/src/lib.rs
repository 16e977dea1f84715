//! Board support for QEMU's `mps2-an385` (Cortex-M3, 25 MHz): an embassy time
//! driver on SysTick, an embassy-net driver for the LAN9118 Ethernet
//! controller, and semihosting for everything a real board keeps in flash or
//! gets from hardware (the command line as configuration, a host file as the
//! persisted wall-clock ceiling, the host's entropy, exit codes).
#![no_std]

pub mod hostfs;
pub mod lan9118;
pub mod time;

/// Core clock of the board (QEMU's SYSCLK for mps2).
pub const SYSCLK_HZ: u32 = 25_000_000;

/// NVIC interrupt numbers of the board.
#[derive(Clone, Copy, Debug)]
#[repr(u16)]
pub enum Irq {
    Ethernet = 13,
}

// SAFETY: the numbers are the board's valid external interrupt lines.
unsafe impl cortex_m::interrupt::InterruptNumber for Irq {
    fn number(self) -> u16 {
        self as u16
    }
}

/// Ends the emulation with `code` (semihosting SYS_EXIT_EXTENDED): QEMU's exit status.
pub fn exit(code: i32) -> ! {
    semihosting::process::exit(code)
}

defmt::timestamp!("{=u64:us}", embassy_time::Instant::now().as_micros());

/// Defines the exception handlers the board needs (SysTick for time, the
/// external interrupts for the Ethernet controller, faults as exit codes)
/// and the panic handler. Call once in each binary.
#[macro_export]
macro_rules! board_handlers {
    () => {
        #[cortex_m_rt::exception]
        fn SysTick() {
            $crate::time::on_systick();
        }

        #[cortex_m_rt::exception]
        unsafe fn DefaultHandler(irqn: i16) {
            if irqn == $crate::Irq::Ethernet as i16 {
                $crate::lan9118::on_interrupt();
            }
        }

        #[cortex_m_rt::exception]
        unsafe fn HardFault(frame: &cortex_m_rt::ExceptionFrame) -> ! {
            defmt::error!("hard fault at pc={=u32:#x}", frame.pc());
            $crate::exit(102)
        }

        #[panic_handler]
        fn panic(info: &core::panic::PanicInfo) -> ! {
            defmt::error!("panic: {}", defmt::Display2Format(info));
            $crate::exit(101)
        }
    };
}
