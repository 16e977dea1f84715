//! Just enough IPv4/ICMP/UDP to talk to the device through the tunnel
//! without a TUN device.

use std::net::Ipv4Addr;

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for c in chunks {
        let mut it = c.chunks(2);
        for w in &mut it {
            let v = if w.len() == 2 { u16::from_be_bytes([w[0], w[1]]) } else { u16::from(w[0]) << 8 };
            sum += u32::from(v);
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let len = 20 + payload.len();
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&[&p[..20]]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..].copy_from_slice(payload);
    p
}

pub fn icmp_echo_request(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut m = vec![8u8, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    let c = checksum(&[&m]);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, 1, &m)
}

pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, data: &[u8]) -> Vec<u8> {
    let len = 8 + data.len();
    let mut u = vec![0u8; len];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    u[8..].copy_from_slice(data);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(len as u16).to_be_bytes());
    let mut c = checksum(&[&pseudo, &u]);
    if c == 0 {
        c = 0xffff;
    }
    u[6..8].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, 17, &u)
}

/// What came back through the tunnel.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    EchoReply { src: Ipv4Addr, id: u16, seq: u16, data: &'a [u8] },
    Udp { src: Ipv4Addr, sport: u16, dport: u16, data: &'a [u8] },
    Other,
}

pub fn parse(p: &[u8]) -> Parsed<'_> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return Parsed::Other;
    }
    let ihl = usize::from(p[0] & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]])).min(p.len());
    if total < ihl || checksum(&[&p[..ihl]]) != 0 {
        return Parsed::Other;
    }
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let body = &p[ihl..total];
    match p[9] {
        1 if body.len() >= 8 && body[0] == 0 && checksum(&[body]) == 0 => Parsed::EchoReply {
            src,
            id: u16::from_be_bytes([body[4], body[5]]),
            seq: u16::from_be_bytes([body[6], body[7]]),
            data: &body[8..],
        },
        17 if body.len() >= 8 => Parsed::Udp {
            src,
            sport: u16::from_be_bytes([body[0], body[1]]),
            dport: u16::from_be_bytes([body[2], body[3]]),
            data: &body[8..usize::from(u16::from_be_bytes([body[4], body[5]])).clamp(8, body.len())],
        },
        _ => Parsed::Other,
    }
}
