//! embassy-net driver for the SMSC LAN9118 Ethernet controller, as QEMU
//! emulates it on mps2-an385 (registers at 0x4020_0000, NVIC line 13).
//!
//! Programming model (LAN9118 datasheet; QEMU's model is a subset):
//! - RX: the RX status FIFO holds one word per frame (length incl. the 4-byte
//!   CRC in bits 29:16, error summary in bit 15); the frame's words follow in
//!   the RX data FIFO, little-endian.
//! - TX: write TX command A (first/last segment, buffer size), TX command B
//!   (tag, frame length), then the frame's words into the TX data FIFO.
//! - MAC registers are reached indirectly through MAC_CSR_CMD/MAC_CSR_DATA.
//! - Interrupts: RSFL (RX status FIFO level) raises the IRQ line when the
//!   FIFO holds more statuses than FIFO_INT's level (0). IRQ_CFG must select
//!   active-high push-pull, or QEMU drives the line active-low.

use core::ptr::{read_volatile, write_volatile};
use core::task::Context;

use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
use embassy_sync::waitqueue::AtomicWaker;

pub const BASE: usize = 0x4020_0000;

const RX_DATA_FIFO: usize = 0x00;
const TX_DATA_FIFO: usize = 0x20;
const RX_STATUS_FIFO: usize = 0x40;
const TX_STATUS_FIFO: usize = 0x48;
const ID_REV: usize = 0x50;
const IRQ_CFG: usize = 0x54;
const INT_STS: usize = 0x58;
const INT_EN: usize = 0x5c;
const BYTE_TEST: usize = 0x64;
const FIFO_INT: usize = 0x68;
const TX_CFG: usize = 0x70;
const HW_CFG: usize = 0x74;
const RX_FIFO_INF: usize = 0x7c;
const TX_FIFO_INF: usize = 0x80;
const PMT_CTRL: usize = 0x84;
const MAC_CSR_CMD: usize = 0xa4;
const MAC_CSR_DATA: usize = 0xa8;

const IRQ_EN: u32 = 1 << 8;
const IRQ_POL_HIGH: u32 = 1 << 4;
const IRQ_PUSH_PULL: u32 = 1 << 0;
const INT_RSFL: u32 = 1 << 3;
const HW_CFG_SRST: u32 = 1 << 0;
const PMT_READY: u32 = 1 << 0;
const TX_CFG_TX_ON: u32 = 1 << 1;
const MAC_CSR_BUSY: u32 = 1 << 31;
const MAC_CSR_READ: u32 = 1 << 30;
const MAC_CR: u32 = 1;
const MAC_ADDRH: u32 = 2;
const MAC_ADDRL: u32 = 3;
const MAC_CR_FDPX: u32 = 1 << 20;
const MAC_CR_TXEN: u32 = 1 << 3;
const MAC_CR_RXEN: u32 = 1 << 2;
const TX_CMD_A_FIRST: u32 = 1 << 13;
const TX_CMD_A_LAST: u32 = 1 << 12;
const RX_STS_ERROR: u32 = 1 << 15;

/// Ethernet frame without CRC.
pub const FRAME_MAX: usize = 1514;
const BUF: usize = 1536;

static RX_WAKER: AtomicWaker = AtomicWaker::new();

#[derive(Debug, defmt::Format)]
pub enum InitError {
    /// BYTE_TEST did not read 0x87654321: no LAN9118 here.
    NotFound,
    Timeout,
}

/// The register block.
#[derive(Clone, Copy)]
struct Regs {
    base: usize,
}

impl Regs {
    fn read(self, off: usize) -> u32 {
        // SAFETY: `Lan9118::new`'s contract: `base` is the device's register block.
        unsafe { read_volatile((self.base + off) as *const u32) }
    }

    fn write(self, off: usize, v: u32) {
        // SAFETY: as in `read`.
        unsafe { write_volatile((self.base + off) as *mut u32, v) }
    }
}

pub struct Lan9118 {
    regs: Regs,
    mac: [u8; 6],
    rx: [u8; BUF],
    rx_len: usize,
    frames_in: u32,
    tx: TxSide,
}

/// What the TX token needs, apart from the RX buffer the RX token lends out.
struct TxSide {
    regs: Regs,
    buf: [u8; BUF],
    frames_out: u32,
}

impl Lan9118 {
    /// Resets and starts the controller, unmasks its interrupt.
    ///
    /// # Safety
    /// `base` must be the controller's register block, used by nothing else.
    pub unsafe fn new(base: usize) -> Result<Self, InitError> {
        let regs = Regs { base };
        let tx = TxSide { regs, buf: [0; BUF], frames_out: 0 };
        let mut d = Lan9118 { regs, mac: [0; 6], rx: [0; BUF], rx_len: 0, frames_in: 0, tx };
        if d.read(BYTE_TEST) != 0x8765_4321 {
            return Err(InitError::NotFound);
        }
        d.write(HW_CFG, HW_CFG_SRST);
        d.wait(|d| d.read(HW_CFG) & HW_CFG_SRST == 0)?;
        d.wait(|d| d.read(PMT_CTRL) & PMT_READY != 0)?;
        let lo = d.mac_read(MAC_ADDRL)?;
        let hi = d.mac_read(MAC_ADDRH)?;
        let lo = lo.to_le_bytes();
        let hi = hi.to_le_bytes();
        d.mac = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]];
        defmt::info!("lan9118: id {=u32:#x}, mac {=[u8]:02x}", d.read(ID_REV), d.mac);
        // Interrupt line: active high, push-pull, enabled; RSFL only while a
        // receiver waits (see `receive`).
        d.write(INT_EN, 0);
        d.write(INT_STS, 0xffff_ffff);
        d.write(FIFO_INT, 0x4800_0000); // RX status level 0: any frame
        d.write(IRQ_CFG, IRQ_EN | IRQ_POL_HIGH | IRQ_PUSH_PULL);
        // Own address and broadcast only (the reset default is promiscuous).
        d.mac_write(MAC_CR, MAC_CR_FDPX | MAC_CR_TXEN | MAC_CR_RXEN)?;
        d.write(TX_CFG, TX_CFG_TX_ON);
        cortex_m::peripheral::NVIC::unpend(crate::Irq::Ethernet);
        cortex_m::peripheral::NVIC::unmask(crate::Irq::Ethernet);
        Ok(d)
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Frames received and sent so far.
    pub fn counters(&self) -> (u32, u32) {
        (self.frames_in, self.tx.frames_out)
    }

    fn read(&self, off: usize) -> u32 {
        self.regs.read(off)
    }

    fn write(&mut self, off: usize, v: u32) {
        self.regs.write(off, v)
    }

    fn wait(&mut self, done: impl Fn(&Self) -> bool) -> Result<(), InitError> {
        for _ in 0..100_000 {
            if done(self) {
                return Ok(());
            }
        }
        Err(InitError::Timeout)
    }

    fn mac_read(&mut self, reg: u32) -> Result<u32, InitError> {
        self.write(MAC_CSR_CMD, MAC_CSR_BUSY | MAC_CSR_READ | reg);
        self.wait(|d| d.read(MAC_CSR_CMD) & MAC_CSR_BUSY == 0)?;
        Ok(self.read(MAC_CSR_DATA))
    }

    fn mac_write(&mut self, reg: u32, v: u32) -> Result<(), InitError> {
        self.write(MAC_CSR_DATA, v);
        self.write(MAC_CSR_CMD, MAC_CSR_BUSY | reg);
        self.wait(|d| d.read(MAC_CSR_CMD) & MAC_CSR_BUSY == 0)
    }

    fn rx_frames_waiting(&self) -> u32 {
        (self.read(RX_FIFO_INF) >> 16) & 0xff
    }

    /// Moves the next good frame from the FIFOs into `self.rx`.
    fn pull_frame(&mut self) -> bool {
        while self.rx_frames_waiting() > 0 {
            let status = self.read(RX_STATUS_FIFO);
            let len = ((status >> 16) & 0x3fff) as usize; // includes the CRC
            let words = len.div_ceil(4);
            let keep = status & RX_STS_ERROR == 0 && (14 + 4..=BUF).contains(&len);
            for i in 0..words {
                let w = self.read(RX_DATA_FIFO).to_le_bytes();
                if keep {
                    let at = i * 4;
                    let n = (len - at).min(4);
                    self.rx[at..at + n].copy_from_slice(&w[..n]);
                }
            }
            if keep {
                self.rx_len = len - 4;
                self.frames_in = self.frames_in.wrapping_add(1);
                return true;
            }
        }
        false
    }

    fn disable_rx_interrupt(&mut self) {
        let en = self.read(INT_EN);
        self.write(INT_EN, en & !INT_RSFL);
    }
}

impl TxSide {
    fn space(&self) -> usize {
        (self.regs.read(TX_FIFO_INF) & 0xffff) as usize
    }

    fn send_frame(&mut self, len: usize) {
        let len = len.min(FRAME_MAX);
        self.regs.write(TX_DATA_FIFO, TX_CMD_A_FIRST | TX_CMD_A_LAST | len as u32);
        self.regs.write(TX_DATA_FIFO, ((self.frames_out & 0xffff) << 16) | len as u32);
        for i in 0..len.div_ceil(4) {
            let mut w = [0u8; 4];
            let at = i * 4;
            let n = (len - at).min(4);
            w[..n].copy_from_slice(&self.buf[at..at + n]);
            self.regs.write(TX_DATA_FIFO, u32::from_le_bytes(w));
        }
        self.frames_out = self.frames_out.wrapping_add(1);
        // Drain TX statuses so the status FIFO never fills.
        while (self.regs.read(TX_FIFO_INF) >> 16) & 0xff > 0 {
            let _ = self.regs.read(TX_STATUS_FIFO);
        }
    }
}

/// The Ethernet interrupt: mask RSFL (the line is level-triggered) and wake
/// the stack, which drains the FIFO and re-arms the interrupt when it is empty.
pub fn on_interrupt() {
    // SAFETY: single-word read-modify-write of INT_EN; the driver only
    // touches INT_EN with this interrupt masked or from this handler's priority.
    unsafe {
        let en = (BASE + INT_EN) as *mut u32;
        write_volatile(en, read_volatile(en) & !INT_RSFL);
        write_volatile((BASE + INT_STS) as *mut u32, INT_RSFL);
    }
    RX_WAKER.wake();
}

impl embassy_net_driver::Driver for Lan9118 {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, cx: &mut Context) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if self.tx.space() < BUF + 8 {
            cx.waker().wake_by_ref();
            return None;
        }
        if !self.pull_frame() {
            RX_WAKER.register(cx.waker());
            cortex_m::interrupt::free(|_| {
                self.write(INT_STS, INT_RSFL);
                let en = self.read(INT_EN);
                self.write(INT_EN, en | INT_RSFL);
            });
            // A frame may have arrived between the check and arming.
            if !self.pull_frame() {
                return None;
            }
        }
        self.disable_rx_interrupt();
        let len = self.rx_len;
        Some((RxToken { frame: &mut self.rx[..len] }, TxToken { tx: &mut self.tx }))
    }

    fn transmit(&mut self, cx: &mut Context) -> Option<Self::TxToken<'_>> {
        if self.tx.space() < BUF + 8 {
            cx.waker().wake_by_ref();
            return None;
        }
        Some(TxToken { tx: &mut self.tx })
    }

    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = FRAME_MAX;
        caps.max_burst_size = Some(1);
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}

pub struct RxToken<'a> {
    frame: &'a mut [u8],
}

impl embassy_net_driver::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

pub struct TxToken<'a> {
    tx: &'a mut TxSide,
}

impl embassy_net_driver::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(FRAME_MAX);
        let r = f(&mut self.tx.buf[..len]);
        self.tx.send_frame(len);
        r
    }
}
