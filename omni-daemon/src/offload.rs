//! Segmentation offloads between the TUN device and the tunnel, done in
//! userspace as wireguard-go does (its `tun/offload_linux.go`).
//!
//! With `IFF_VNET_HDR` and `TUNSETOFFLOAD` the kernel hands the TUN reader
//! TCP (and UDP) super-packets of up to 64 KiB, each behind a
//! `virtio_net_hdr`, instead of MTU-sized packets: the sending TCP stack does
//! its work once per 64 KiB. [`Segmenter`] cuts such a packet into the
//! MTU-sized IP packets that go into the tunnel, completing their checksums.
//!
//! The other way, [`Gro`] merges consecutive decrypted TCP segments of one
//! flow into a super-packet written to the TUN device in one `writev`
//! (`virtio_net_hdr` with `GSO_TCPV4/6` and a partial checksum), so the
//! receiving TCP stack also works once per 64 KiB.
//!
//! Inner checksums are not verified on the way in: every byte of a decrypted
//! packet was authenticated by the AEAD, so, as the kernel's WireGuard does
//! (it marks them `CHECKSUM_UNNECESSARY`), packets are handed over as
//! checked (`VIRTIO_NET_HDR_F_DATA_VALID`, or a partial checksum when merged).

use std::io::IoSlice;

/// `sizeof(struct virtio_net_hdr)`, the default `TUNSETVNETHDRSZ`.
pub const VNET_HDR_LEN: usize = 10;

const F_NEEDS_CSUM: u8 = 1;
const F_DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;

/// `struct virtio_net_hdr` (fields in host byte order: the TUN device is
/// not in virtio 1.0 little-endian mode, so it uses the native order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8; VNET_HDR_LEN]) -> Self {
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }

    pub fn to_bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// A single packet (no segmentation) whose checksum is left to us.
    pub fn is_gso(&self) -> bool {
        self.gso_type != GSO_NONE
    }
}

// ----- the Internet checksum (RFC 1071) ------------------------------------
//
// Summed over native-endian 32-bit words into a u64 (no carries to handle
// below 2^32 words) and folded at the end. The one's-complement sum commutes
// with byte swapping, so a result stored with `to_ne_bytes` lands in network
// order without ever swapping.

fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc + u64::from(u32::from_ne_bytes(tail))
}

fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The pseudo-header sum of a TCP/UDP packet: addresses, protocol, length.
fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u64 {
    sum(&(len as u32).to_be_bytes(), sum(&[0, 0, 0, proto], sum(dst, sum(src, 0))))
}

/// Writes a complemented checksum at `at` (native order = network order here).
fn store(buf: &mut [u8], at: usize, csum: u16) {
    buf[at..at + 2].copy_from_slice(&csum.to_ne_bytes());
}

/// Where an IP packet's addresses are, and its header length.
struct Ip {
    v6: bool,
    hdr_len: usize,
}

impl Ip {
    fn addrs(&self) -> std::ops::Range<usize> {
        if self.v6 {
            8..40
        } else {
            12..20
        }
    }
    fn addr_len(&self) -> usize {
        if self.v6 {
            16
        } else {
            4
        }
    }
    fn pseudo(&self, pkt: &[u8], proto: u8, len: usize) -> u64 {
        let a = self.addrs();
        let mid = a.start + self.addr_len();
        pseudo(&pkt[a.start..mid], &pkt[mid..a.end], proto, len)
    }
}

/// Completes a checksum the kernel left partial (`VIRTIO_NET_HDR_F_NEEDS_CSUM`
/// on a single packet): the field holds the pseudo-header sum; the sum of
/// everything from `csum_start` goes on top. `false` if the offsets are bad.
pub fn complete_checksum(pkt: &mut [u8], hdr: &VnetHdr) -> bool {
    if hdr.flags & F_NEEDS_CSUM == 0 {
        return true;
    }
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > pkt.len() {
        return false;
    }
    let initial = u64::from(u16::from_ne_bytes([pkt[at], pkt[at + 1]]));
    pkt[at..at + 2].fill(0);
    let csum = !fold(sum(&pkt[start..], initial));
    store(pkt, at, csum);
    true
}

// ----- segmentation (TUN -> tunnel) ----------------------------------------

/// Cuts a GSO super-packet into MTU-sized IP packets, one per call of
/// [`next_into`](Self::next_into).
#[derive(Debug)]
pub struct Segmenter<'a> {
    pkt: &'a [u8],
    v6: bool,
    tcp: bool,
    /// IP header length (= `csum_start`).
    iph: usize,
    /// IP + transport header length.
    hdr: usize,
    gso: usize,
    /// Payload offset of the next segment.
    next: usize,
    index: usize,
}

impl<'a> Segmenter<'a> {
    /// `None` for a header this code does not handle (the packet is dropped).
    /// The header lengths are taken from the packet itself, not `hdr_len`
    /// (which may cover the whole first segment on the forwarding path).
    pub fn new(hdr: &VnetHdr, pkt: &'a [u8]) -> Option<Self> {
        let v6 = match pkt.first()? >> 4 {
            4 => false,
            6 => true,
            _ => return None,
        };
        let tcp = match hdr.gso_type {
            GSO_TCPV4 if !v6 => true,
            GSO_TCPV6 if v6 => true,
            GSO_UDP_L4 => false,
            _ => return None,
        };
        let iph = usize::from(hdr.csum_start);
        let csum_offset = usize::from(hdr.csum_offset);
        let proto_ok = if v6 {
            // Extension headers would sit between: not produced for GSO by
            // the stack toward a TUN device; refuse rather than guess.
            iph == 40 && pkt.get(6) == Some(if tcp { &PROTO_TCP } else { &PROTO_UDP })
        } else {
            iph == usize::from(pkt[0] & 0x0f) * 4
                && iph >= 20
                && pkt.get(9) == Some(if tcp { &PROTO_TCP } else { &PROTO_UDP })
        };
        if !proto_ok || csum_offset != if tcp { 16 } else { 6 } {
            return None;
        }
        let th = if tcp { usize::from(*pkt.get(iph + 12)? >> 4) * 4 } else { 8 };
        let gso = usize::from(hdr.gso_size);
        if th < if tcp { 20 } else { 8 } || pkt.len() <= iph + th || gso == 0 {
            return None;
        }
        Some(Segmenter { pkt, v6, tcp, iph, hdr: iph + th, gso, next: iph + th, index: 0 })
    }

    /// Length of the largest segment (header + `gso_size`).
    pub fn max_segment(&self) -> usize {
        self.hdr + self.gso
    }

    /// Writes the next segment at the start of `out`; returns its length,
    /// or `None` when done (or when `out` is too small for it).
    pub fn next_into(&mut self, out: &mut [u8]) -> Option<usize> {
        let (pkt, iph, hdr) = (self.pkt, self.iph, self.hdr);
        if self.next >= pkt.len() {
            return None;
        }
        let end = (self.next + self.gso).min(pkt.len());
        let data = end - self.next;
        let len = hdr + data;
        let out = out.get_mut(..len)?;
        out[..hdr].copy_from_slice(&pkt[..hdr]);
        out[hdr..].copy_from_slice(&pkt[self.next..end]);
        let ip = Ip { v6: self.v6, hdr_len: iph };
        if self.v6 {
            out[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        } else {
            // Consecutive IDs, as the kernel's own segmentation does.
            let id = u16::from_be_bytes([out[4], out[5]]).wrapping_add(self.index as u16);
            out[4..6].copy_from_slice(&id.to_be_bytes());
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            out[10..12].fill(0);
            let c = !fold(sum(&out[..ip.hdr_len], 0));
            store(out, 10, c);
        }
        let th = &mut out[iph..hdr];
        let csum_at = if self.tcp {
            let seq = u32::from_be_bytes([th[4], th[5], th[6], th[7]]).wrapping_add((self.next - hdr) as u32);
            th[4..8].copy_from_slice(&seq.to_be_bytes());
            if end != pkt.len() {
                // FIN and PSH belong to the last segment only,
                th[13] &= !(TCP_FIN | TCP_PSH);
            }
            if self.index > 0 {
                // CWR to the first (as the kernel's tcp_gso_segment does).
                th[13] &= !TCP_CWR;
            }
            iph + 16
        } else {
            th[4..6].copy_from_slice(&((len - iph) as u16).to_be_bytes());
            iph + 6
        };
        out[csum_at..csum_at + 2].fill(0);
        let proto = if self.tcp { PROTO_TCP } else { PROTO_UDP };
        let mut c = !fold(sum(&out[iph..], ip.pseudo(out, proto, len - iph)));
        if !self.tcp && c == 0 {
            c = 0xffff; // UDP: zero means "no checksum"
        }
        store(out, csum_at, c);
        self.next = end;
        self.index += 1;
        Some(len)
    }
}

// ----- coalescing (tunnel -> TUN) ------------------------------------------

/// Segments merged into one super-packet at most (the kernel's GRO limit).
const MAX_MERGE: usize = 64;
/// Open groups searched for a match (flows interleaved in one batch).
const OPEN_GROUPS: usize = 8;

/// A decrypted packet kept for writing: `buf[start..start + len]`.
#[derive(Debug, Clone, Copy)]
struct Part {
    start: usize,
    len: usize,
    /// Next part of the same group (index into `parts`), or `usize::MAX`.
    next: usize,
}

/// One packet to write, possibly with more TCP segments merged into it.
#[derive(Debug, Clone, Copy)]
struct Group {
    first: usize,
    last: usize,
    count: usize,
    v6: bool,
    iph: usize,
    /// IP + TCP header length.
    hdr: usize,
    /// Payload size of the first segment; later ones may not be larger.
    gso: usize,
    /// Total length of the merged packet.
    total: usize,
    next_seq: u32,
    /// No segment may follow: PSH seen, or a short segment ended the run.
    closed: bool,
    psh: bool,
}

/// Merges TCP segments of a flow into super-packets for the TUN device.
/// Packets are added in arrival order ([`push`](Self::push)) as offsets into
/// one buffer, then written out ([`flush`](Self::flush)) in the same order.
#[derive(Debug, Default)]
pub struct Gro {
    parts: Vec<Part>,
    groups: Vec<Group>,
}

/// What [`Gro::push`] needs to know about a TCP segment.
struct TcpSeg {
    v6: bool,
    iph: usize,
    hdr: usize,
    seq: u32,
    psh: bool,
}

fn parse_tcp(pkt: &[u8]) -> Option<TcpSeg> {
    let (v6, iph) = match pkt.first()? >> 4 {
        4 => {
            // No options, not a fragment, TCP, length as received.
            let ok = pkt[0] == 0x45
                && pkt.len() >= 40
                && pkt[9] == PROTO_TCP
                && u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff == 0
                && usize::from(u16::from_be_bytes([pkt[2], pkt[3]])) == pkt.len();
            if !ok {
                return None;
            }
            (false, 20)
        }
        6 => {
            let ok = pkt.len() >= 60
                && pkt[6] == PROTO_TCP
                && usize::from(u16::from_be_bytes([pkt[4], pkt[5]])) + 40 == pkt.len();
            if !ok {
                return None;
            }
            (true, 40)
        }
        _ => return None,
    };
    let th = usize::from(pkt[iph + 12] >> 4) * 4;
    let hdr = iph + th;
    // Only plain data segments: ACK, optionally PSH; some payload.
    let flags = pkt[iph + 13];
    if th < 20 || pkt.len() <= hdr || (flags != TCP_ACK && flags != TCP_ACK | TCP_PSH) {
        return None;
    }
    let seq = u32::from_be_bytes([pkt[iph + 4], pkt[iph + 5], pkt[iph + 6], pkt[iph + 7]]);
    Some(TcpSeg { v6, iph, hdr, seq, psh: flags & TCP_PSH != 0 })
}

/// Whether two segments belong to one merge: same addresses, ports, ack,
/// window-independent header fields and TCP options (as the kernel's GRO).
fn same_flow(a: &[u8], b: &[u8], s: &TcpSeg) -> bool {
    let (iph, hdr) = (s.iph, s.hdr);
    if b.len() < hdr || usize::from(b[iph + 12] >> 4) * 4 != hdr - iph {
        return false;
    }
    let ip_same = if s.v6 {
        // Version, traffic class, flow label; hop limit; addresses.
        a[..4] == b[..4] && a[7] == b[7] && a[8..40] == b[8..40]
    } else {
        // TOS, DF, TTL, protocol, addresses.
        a[1] == b[1] && a[6] & 0xe0 == b[6] & 0xe0 && a[8..10] == b[8..10] && a[12..20] == b[12..20]
    };
    // Ports, then ack number, then options.
    ip_same
        && a[iph..iph + 4] == b[iph..iph + 4]
        && a[iph + 8..iph + 12] == b[iph + 8..iph + 12]
        && a[iph + 20..hdr] == b[iph + 20..hdr]
}

impl Gro {
    /// Adds the packet `buf[start..start + len]`. With `merge` false (no
    /// vnet header on the TUN device) every packet stays on its own.
    pub fn push(&mut self, buf: &[u8], start: usize, len: usize, merge: bool) {
        let index = self.parts.len();
        self.parts.push(Part { start, len, next: usize::MAX });
        let pkt = &buf[start..start + len];
        let seg = if merge { parse_tcp(pkt) } else { None };
        if let Some(s) = &seg {
            let payload = len - s.hdr;
            let open = self.groups.len().saturating_sub(OPEN_GROUPS);
            for g in self.groups[open..].iter_mut().rev() {
                if g.closed || g.v6 != s.v6 || g.hdr != s.hdr || g.count >= MAX_MERGE {
                    continue;
                }
                let first = self.parts[g.first];
                let head = &buf[first.start..first.start + first.len];
                if !same_flow(head, pkt, s) {
                    continue;
                }
                // A flow found: merge if the segment follows on, else start
                // a new group for it (the older one stays as it is).
                let fits = s.seq == g.next_seq
                    && payload <= g.gso
                    && g.total + payload <= usize::from(u16::MAX) + if s.v6 { 40 } else { 0 };
                if !fits {
                    g.closed = true;
                    break;
                }
                self.parts[g.last].next = index;
                g.last = index;
                g.count += 1;
                g.total += payload;
                g.next_seq = s.seq.wrapping_add(payload as u32);
                g.psh = s.psh;
                g.closed = s.psh || payload < g.gso;
                return;
            }
        }
        let g = match seg {
            Some(s) => Group {
                first: index,
                last: index,
                count: 1,
                v6: s.v6,
                iph: s.iph,
                hdr: s.hdr,
                gso: len - s.hdr,
                total: len,
                next_seq: s.seq.wrapping_add((len - s.hdr) as u32),
                closed: s.psh,
                psh: s.psh,
            },
            None => Group {
                first: index,
                last: index,
                count: 1,
                v6: false,
                iph: 0,
                hdr: 0,
                gso: 0,
                total: len,
                next_seq: 0,
                closed: true,
                psh: false,
            },
        };
        self.groups.push(g);
    }

    /// Writes every packet out through `write` (the vnet header first when
    /// `vnet`, then the packet's pieces), in arrival order, and empties the
    /// coalescer. Merged groups get their headers rewritten in `buf`.
    pub fn flush<E>(
        &mut self,
        buf: &mut [u8],
        vnet: bool,
        mut write: impl FnMut(&[IoSlice<'_>]) -> Result<(), E>,
    ) -> Result<(), E> {
        // Headers first (the only writes to `buf`), then the writes.
        let mut vnet_hdrs = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            let first = self.parts[g.first];
            let hdr = match g.count {
                1 => VnetHdr { flags: F_DATA_VALID, ..VnetHdr::default() },
                _ => merged_header(&mut buf[first.start..first.start + first.len], g),
            };
            vnet_hdrs.push(hdr.to_bytes());
        }
        let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(MAX_MERGE + 1);
        let mut result = Ok(());
        for (g, hdr) in self.groups.iter().zip(&vnet_hdrs) {
            let first = self.parts[g.first];
            iov.clear();
            if vnet {
                iov.push(IoSlice::new(hdr));
            }
            iov.push(IoSlice::new(&buf[first.start..first.start + first.len]));
            let mut p = first.next;
            while p != usize::MAX {
                let part = self.parts[p];
                iov.push(IoSlice::new(&buf[part.start + g.hdr..part.start + part.len]));
                p = part.next;
            }
            if let Err(e) = write(&iov) {
                result = Err(e);
                break;
            }
        }
        self.groups.clear();
        self.parts.clear();
        result
    }
}

/// Rewrites the head segment's headers for the merged packet (lengths, IPv4
/// header checksum, PSH, the pseudo-header sum the kernel completes) and
/// returns the vnet header describing it.
fn merged_header(pkt: &mut [u8], g: &Group) -> VnetHdr {
    let iph = g.iph;
    if g.v6 {
        pkt[4..6].copy_from_slice(&((g.total - 40) as u16).to_be_bytes());
    } else {
        pkt[2..4].copy_from_slice(&(g.total as u16).to_be_bytes());
        pkt[10..12].fill(0);
        let c = !fold(sum(&pkt[..iph], 0));
        store(pkt, 10, c);
    }
    if g.psh {
        pkt[iph + 13] |= TCP_PSH;
    }
    let ip = Ip { v6: g.v6, hdr_len: iph };
    let partial = fold(ip.pseudo(pkt, PROTO_TCP, g.total - iph));
    store(pkt, iph + 16, partial);
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if g.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
        hdr_len: g.hdr as u16,
        gso_size: g.gso as u16,
        csum_start: iph as u16,
        csum_offset: 16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward RFC 1071 over big-endian 16-bit words.
    fn reference(data: &[u8], initial: u32) -> u16 {
        let mut acc = initial;
        for pair in data.chunks(2) {
            acc += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect()
    }

    #[test]
    fn checksum_matches_the_reference() {
        for n in [0, 1, 2, 3, 5, 20, 63, 64, 1419, 1420, 65535] {
            let data = bytes(n, n as u32);
            let ours = !fold(sum(&data, 0));
            assert_eq!(u16::from_be_bytes(ours.to_ne_bytes()), reference(&data, 0), "length {n}");
        }
    }

    /// A TCP/IP packet with valid checksums.
    fn tcp_packet(v6: bool, seq: u32, payload: &[u8], flags: u8) -> Vec<u8> {
        let iph = if v6 { 40 } else { 20 };
        let th = 32; // with 12 bytes of options (timestamps)
        let len = iph + th + payload.len();
        let mut p = vec![0u8; len];
        if v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            p[6] = PROTO_TCP;
            p[7] = 64;
            p[8..24].copy_from_slice(&[0xfd, 0, 0xaa, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            p[24..40].copy_from_slice(&[0xfd, 0, 0xaa, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
            p[6] = 0x40; // DF
            p[8] = 64;
            p[9] = PROTO_TCP;
            p[12..16].copy_from_slice(&[10, 241, 0, 1]);
            p[16..20].copy_from_slice(&[10, 241, 0, 2]);
            let c = !fold(sum(&p[..20], 0));
            store(&mut p, 10, c);
        }
        let t = &mut p[iph..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&777u32.to_be_bytes());
        t[12] = ((th / 4) as u8) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&512u16.to_be_bytes());
        t[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        t[th..].copy_from_slice(payload);
        let ip = Ip { v6, hdr_len: iph };
        let c = !fold(sum(&p[iph..], ip.pseudo(&p, PROTO_TCP, len - iph)));
        store(&mut p, iph + 16, c);
        p
    }

    /// The super-packet the kernel would hand us for `payload` in `gso`-byte
    /// segments: headers of the first, partial checksum.
    fn super_packet(v6: bool, payload: &[u8], gso: u16) -> (VnetHdr, Vec<u8>) {
        let mut p = tcp_packet(v6, 1000, payload, TCP_ACK | TCP_PSH);
        let iph = if v6 { 40 } else { 20 };
        let ip = Ip { v6, hdr_len: iph };
        let partial = fold(ip.pseudo(&p, PROTO_TCP, p.len() - iph));
        store(&mut p, iph + 16, partial);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: (iph + 32) as u16,
            gso_size: gso,
            csum_start: iph as u16,
            csum_offset: 16,
        };
        (hdr, p)
    }

    #[test]
    fn segments_then_merges_back() {
        for v6 in [false, true] {
            let payload = bytes(10_000, 7);
            let (hdr, sp) = super_packet(v6, &payload, 1368);
            assert_eq!(VnetHdr::parse(&hdr.to_bytes()), hdr);
            let mut seg = Segmenter::new(&hdr, &sp).unwrap();
            let mut buf = vec![0u8; 20_000];
            let mut at = 0;
            let mut gro = Gro::default();
            let mut got = Vec::new();
            while let Some(len) = seg.next_into(&mut buf[at..]) {
                let pkt = &buf[at..at + len];
                let i = (seq_index(pkt, v6) - 1000) as usize;
                // Each segment equals what a sender without TSO would produce.
                let last = i + 1368 >= payload.len();
                let want = tcp_packet(
                    v6,
                    1000 + i as u32,
                    &payload[i..(i + 1368).min(payload.len())],
                    if last { TCP_ACK | TCP_PSH } else { TCP_ACK },
                );
                if !v6 {
                    // Only the IPv4 ID differs (consecutive).
                    assert_eq!(u16::from_be_bytes([pkt[4], pkt[5]]), 0x1234 + (i / 1368) as u16);
                    assert_eq!(pkt[..4], want[..4]);
                    assert_eq!(pkt[6..10], want[6..10]);
                    assert_eq!(pkt[12..], want[12..]);
                    assert_eq!(reference(&pkt[..20], 0), 0, "IPv4 header checksum");
                } else {
                    assert_eq!(pkt, &want[..]);
                }
                gro.push(&buf, at, len, true);
                got.push(len);
                at += len + 7; // gaps between packets, as in the daemon's buffers
            }
            assert_eq!(got.len(), 8);
            assert_eq!(gro.groups.len(), 1, "all segments merge");
            let mut written = Vec::new();
            gro.flush(&mut buf, true, |iov| {
                written.push(iov.iter().flat_map(|s| s.iter().copied()).collect::<Vec<u8>>());
                Ok::<(), ()>(())
            })
            .unwrap();
            assert_eq!(written.len(), 1);
            let w = &written[0];
            let vh = VnetHdr::parse(w[..VNET_HDR_LEN].try_into().unwrap());
            let pkt = &w[VNET_HDR_LEN..];
            assert_eq!(vh.gso_type, hdr.gso_type);
            assert_eq!(vh.gso_size, 1368);
            assert_eq!(vh.hdr_len, hdr.hdr_len);
            // Same as the original super-packet, partial checksum included.
            assert_eq!(pkt, &sp[..]);
        }
    }

    fn seq_index(pkt: &[u8], v6: bool) -> u32 {
        let i = if v6 { 40 } else { 20 };
        u32::from_be_bytes([pkt[i + 4], pkt[i + 5], pkt[i + 6], pkt[i + 7]])
    }

    #[test]
    fn completes_a_partial_checksum() {
        let (mut hdr, mut p) = super_packet(false, &bytes(100, 3), 1368);
        hdr.gso_type = GSO_NONE;
        assert!(complete_checksum(&mut p, &hdr));
        assert_eq!(p, tcp_packet(false, 1000, &bytes(100, 3), TCP_ACK | TCP_PSH));
        hdr.csum_offset = 200;
        assert!(!complete_checksum(&mut p, &hdr));
    }

    #[test]
    fn segments_udp() {
        // A UDP GSO packet: 3000 bytes in 1000-byte datagrams.
        let payload = bytes(3000, 9);
        let mut p = vec![0u8; 28 + 3000];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(3028u16).to_be_bytes());
        p[8] = 64;
        p[9] = PROTO_UDP;
        p[12..20].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        p[20..22].copy_from_slice(&1u16.to_be_bytes());
        p[22..24].copy_from_slice(&2u16.to_be_bytes());
        p[28..].copy_from_slice(&payload);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: 28,
            gso_size: 1000,
            csum_start: 20,
            csum_offset: 6,
        };
        let mut seg = Segmenter::new(&hdr, &p).unwrap();
        let mut out = vec![0u8; 2000];
        for i in 0..3 {
            let len = seg.next_into(&mut out).unwrap();
            assert_eq!(len, 1028);
            assert_eq!(reference(&out[..20], 0), 0);
            assert_eq!(u16::from_be_bytes([out[24], out[25]]), 1008);
            let ip = Ip { v6: false, hdr_len: 20 };
            assert_eq!(fold(sum(&out[20..len], ip.pseudo(&out, PROTO_UDP, len - 20))), 0xffff);
            assert_eq!(out[28..len], payload[i * 1000..(i + 1) * 1000]);
        }
        assert_eq!(seg.next_into(&mut out), None);
    }

    #[test]
    fn does_not_merge_what_it_must_not() {
        let mut buf = Vec::new();
        let mut at = Vec::new();
        let mut add = |p: Vec<u8>| {
            at.push((buf.len(), p.len()));
            buf.extend_from_slice(&p);
        };
        add(tcp_packet(false, 0, &[1; 100], TCP_ACK)); // group 1
        add(tcp_packet(false, 100, &[2; 100], TCP_ACK)); // merges
        add(tcp_packet(false, 300, &[3; 100], TCP_ACK)); // gap: new group
        let mut other_ack = tcp_packet(false, 400, &[4; 100], TCP_ACK);
        other_ack[28..32].copy_from_slice(&778u32.to_be_bytes());
        add(other_ack); // another ack number: new group
        add(tcp_packet(false, 400, &[5; 50], TCP_ACK | TCP_PSH)); // merges with the one at 300
        add(tcp_packet(false, 450, &[6; 50], TCP_ACK)); // after PSH: new group
        add(tcp_packet(false, 600, &[], TCP_ACK | 0x02)); // SYN: alone
        add(tcp_packet(true, 0, &[7; 100], TCP_ACK)); // other family
        let mut gro = Gro::default();
        for &(s, l) in &at {
            gro.push(&buf, s, l, true);
        }
        let counts: Vec<usize> = gro.groups.iter().map(|g| g.count).collect();
        assert_eq!(counts, vec![2, 2, 1, 1, 1, 1]);
        let mut pieces = Vec::new();
        gro.flush(&mut buf, true, |iov| {
            pieces.push(iov.len());
            Ok::<(), ()>(())
        })
        .unwrap();
        // vnet header + head (+ the merged payload).
        assert_eq!(pieces, vec![3, 3, 2, 2, 2, 2]);
        assert!(gro.groups.is_empty() && gro.parts.is_empty());
        // Without vnet headers nothing merges.
        for &(s, l) in &at[..2] {
            gro.push(&buf, s, l, false);
        }
        assert_eq!(gro.groups.len(), 2);
    }
}
