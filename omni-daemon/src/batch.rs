//! Batched, zero-copy packet I/O, shared by both data planes: wg mode's
//! ([`crate::event_loop`]) and the edge's ([`crate::edge`]).
//!
//! Outgoing: a TUN read lands [`IN_PLACE_OFFSET`] bytes into the transmit
//! buffer and is sealed (encrypted) there; a GSO super-packet is cut into
//! segments laid out right after it, each sealed where it was written. The
//! datagrams of a batch sit back to back and go out as UDP GSO sends.
//!
//! Incoming: a (GRO) run of datagrams is decrypted where it landed by the
//! data plane, which hands the packets to the [`RxQueue`]'s coalescer; they
//! are written with `writev`, TCP segments merged into super-packets (see
//! [`crate::offload`]).
//!
//! How a packet is sealed is the data plane's business ([`Sealer`]): wg mode
//! takes its device lock per read, the edge also routes through the Nucleus
//! relay where a member is not reachable directly.

use std::io::{self, IoSlice};
use std::net::SocketAddr;

use omni_core::node::{SendError, Sent, Transmit, IN_PLACE_OFFSET};
use tracing::{debug, trace, warn};

use crate::offload::{self, Gro, Segmenter, VnetHdr, VNET_HDR_LEN};
use crate::tun::{self, Tun};
use crate::udp::{self, Sockets};

/// Reads from one source before looking at the others.
pub const BATCH: usize = 64;
/// Largest TUN read: a 64 KiB (super-)packet behind its vnet header.
const TUN_READ_MAX: usize = 65535 + VNET_HDR_LEN;
/// Datagrams (or decrypted packets) are sent (written) once this many bytes
/// have collected, and at the end of a batch.
pub const SEND_AT: usize = 65536;
/// The transmit buffer: datagrams of several small reads wait there back to
/// back. Past `SEND_AT` comes one more read: a 64 KiB super-packet and the
/// segments cut from it (MTU-sized ones take ~70 KiB; smaller ones more).
const TX_BUF: usize = SEND_AT + 4 * 65536;
/// The receive buffer: GRO reads, decrypted in place, wait there to be
/// merged and written to the TUN device.
const RX_BUF: usize = SEND_AT + 2 * udp::GRO_BUF;
/// Room a sealed segment may take beyond its packet: WireGuard's header,
/// padding and tag, and the relay framing around that (see
/// `NucleusClient::route_transmit`).
const SEAL_SLACK: usize = 256;

/// How a data plane encrypts the packets of one TUN read.
pub trait Sealer {
    /// A read's packets are about to be sealed (wg mode takes its lock).
    fn begin(&mut self);
    /// The interface MTU the node works with (valid after `begin`).
    fn mtu(&self) -> u16;
    /// Seals the IP packet at `buf[IN_PLACE_OFFSET..][..len]` in place; the
    /// datagram starts at `buf[0]`. `buf` runs to the end of the transmit
    /// buffer, so the datagram may grow (relay framing). `None`: nothing to
    /// send now (queued for a handshake, no route, dropped).
    fn seal(&mut self, buf: &mut [u8], len: usize) -> Option<Transmit>;
    /// The read is done (wg mode releases its lock).
    fn end(&mut self);
}

/// What `send_ip_in_place` made of a packet, as a [`Sealer`] returns it;
/// drops are logged.
pub fn transmit_of(sent: Result<Sent, SendError>) -> Option<Transmit> {
    match sent {
        Ok(Sent::Transmit(t)) => Some(t),
        Ok(Sent::Queued { .. }) => None,
        Err(SendError::NoRoute) => {
            trace!("no peer for packet");
            None
        }
        Err(e) => {
            debug!("packet dropped: {e:?}");
            None
        }
    }
}

/// Encrypted datagrams waiting to be sent, back to back in `buf`.
pub struct TxQueue {
    buf: Vec<u8>,
    batch: TxBatch,
}

/// The sends the datagrams in a [`TxQueue`] make up: a run of equal-sized
/// datagrams to one destination (the last may be shorter) is one UDP GSO send.
#[derive(Default)]
struct TxBatch {
    sends: Vec<TxSend>,
    /// Where the next datagram may go.
    end: usize,
}

struct TxSend {
    to: SocketAddr,
    start: usize,
    len: usize,
    seg: usize,
    count: usize,
}

impl TxBatch {
    /// Records the datagram at `buf[start..start + len]`.
    fn push(&mut self, start: usize, len: usize, to: SocketAddr) {
        self.end = start + len;
        if let Some(s) = self.sends.last_mut() {
            let joins = s.to == to
                && s.start + s.len == start
                && s.len % s.seg == 0 // no shorter datagram ended the run
                && len <= s.seg
                && s.count < udp::GSO_MAX_SEGMENTS
                && s.len + len <= udp::GSO_MAX_BYTES;
            if joins {
                s.len += len;
                s.count += 1;
                return;
            }
        }
        self.sends.push(TxSend { to, start, len, seg: len, count: 1 });
    }

    /// Queues what the sealer made of the slot at `start`; returns the bytes it took.
    fn queue(&mut self, sealed: Option<Transmit>, start: usize) -> usize {
        match sealed {
            Some(t) => {
                self.push(start, t.len, t.to);
                t.len
            }
            None => 0,
        }
    }
}

/// What [`TxQueue::read_tun`] saw.
pub struct TunRead {
    /// The interface is gone.
    pub gone: bool,
    /// A packet was larger than the node's MTU (the MTU was raised without
    /// a notification reaching us).
    pub oversized: bool,
}

impl TxQueue {
    pub fn new() -> Self {
        TxQueue { buf: vec![0; TX_BUF], batch: TxBatch::default() }
    }

    /// Sends the queued datagrams.
    pub fn flush(&mut self, sockets: &Sockets) {
        for s in self.batch.sends.drain(..) {
            if let Err(e) = sockets.send_segments(&self.buf[s.start..s.start + s.len], s.seg, s.to) {
                debug!(to = %s.to, "send failed: {e}");
            }
        }
        self.batch.end = 0;
    }

    /// Reads a batch of packets from the TUN device, has `sealer` encrypt
    /// them where they landed and sends the datagrams (during the batch
    /// whenever `SEND_AT` bytes have collected, and at its end).
    pub fn read_tun(&mut self, tun: &Tun, sockets: &Sockets, sealer: &mut impl Sealer) -> TunRead {
        let vnet = tun.vnet();
        // The IP packet must land at IN_PLACE_OFFSET, the vnet header before it.
        let lead = IN_PLACE_OFFSET - if vnet { VNET_HDR_LEN } else { 0 };
        let mut seen = TunRead { gone: false, oversized: false };
        for _ in 0..BATCH {
            // Send what a super-packet (or many small packets) gave, so the
            // peer gets a steady stream rather than bursts.
            if self.batch.end >= SEND_AT {
                self.flush(sockets);
            }
            let TxQueue { buf, batch } = self;
            let base = batch.end;
            let n = match tun.recv(&mut buf[base + lead..base + lead + TUN_READ_MAX]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if tun::is_gone(&e) => {
                    seen.gone = true;
                    break;
                }
                Err(e) => {
                    warn!("TUN read: {e}");
                    break;
                }
            };
            let Some(len) = n.checked_sub(IN_PLACE_OFFSET - lead) else { continue };
            let hdr = match vnet {
                true => VnetHdr::parse(buf[base + lead..][..VNET_HDR_LEN].try_into().unwrap_or(&[0; VNET_HDR_LEN])),
                false => VnetHdr::default(),
            };
            if !hdr.is_gso() {
                // One packet, sealed where it is: the datagram ends up at `base`.
                if !offload::complete_checksum(&mut buf[base + IN_PLACE_OFFSET..][..len], &hdr) {
                    debug!("TUN packet with bad checksum offsets dropped");
                    continue;
                }
                sealer.begin();
                seen.oversized |= len > usize::from(sealer.mtu());
                let sealed = sealer.seal(&mut buf[base..], len);
                sealer.end();
                batch.queue(sealed, base);
                continue;
            }
            // A super-packet: cut it into segments laid out after it, each
            // sealed in place; runs of them go out as one GSO send.
            let seg_base = base + IN_PLACE_OFFSET + len;
            let (src, dst) = buf.split_at_mut(seg_base);
            let Some(mut segments) = Segmenter::new(&hdr, &src[base + IN_PLACE_OFFSET..]) else {
                debug!(?hdr, "TUN super-packet not understood; dropped");
                continue;
            };
            sealer.begin();
            seen.oversized |= segments.max_segment() > usize::from(sealer.mtu());
            let mut pos = 0;
            loop {
                if pos + IN_PLACE_OFFSET + segments.max_segment() + SEAL_SLACK > dst.len() {
                    debug!("super-packet cut short: too many segments");
                    break;
                }
                let Some(seg_len) = segments.next_into(&mut dst[pos + IN_PLACE_OFFSET..]) else { break };
                let sealed = sealer.seal(&mut dst[pos..], seg_len);
                pos += batch.queue(sealed, seg_base + pos);
            }
            sealer.end();
        }
        self.flush(sockets);
        seen
    }
}

/// Decrypted packets waiting to be written to the TUN device.
pub struct RxQueue {
    /// Where datagrams are read and decrypted in place.
    pub buf: Vec<u8>,
    pub gro: Gro,
}

impl RxQueue {
    pub fn new() -> Self {
        RxQueue { buf: vec![0; RX_BUF], gro: Gro::default() }
    }

    /// The slice a UDP read at `end` (bytes already queued) lands in.
    pub fn read_slot(&mut self, end: usize) -> &mut [u8] {
        &mut self.buf[end..end + udp::GRO_BUF]
    }

    /// Queues the decrypted packet at `buf[start..start + len]`.
    pub fn push(&mut self, start: usize, len: usize, merge: bool) {
        self.gro.push(&self.buf, start, len, merge);
    }

    /// Writes the packets queued so far to the TUN device; `Err` when the
    /// interface is gone (other write errors drop the packet).
    pub fn write_tun(&mut self, tun: &Tun) -> io::Result<()> {
        let RxQueue { buf, gro } = self;
        gro.flush(buf, tun.vnet(), |pieces| match tun.send_vectored(pieces) {
            Err(e) if tun::is_gone(&e) => Err(e),
            Err(e) => {
                trace!("TUN write: {e}");
                Ok(())
            }
            Ok(_) => Ok(()),
        })
    }
}

/// Writes one packet that did not come through an [`RxQueue`] (behind an
/// empty vnet header when the device has them).
pub fn write_tun_one(tun: &Tun, packet: &[u8]) {
    let hdr = VnetHdr::default().to_bytes();
    let r = match tun.vnet() {
        true => tun.send_vectored(&[IoSlice::new(&hdr), IoSlice::new(packet)]),
        false => tun.send_vectored(&[IoSlice::new(packet)]),
    };
    if let Err(e) = r {
        trace!("TUN write: {e}");
    }
}
