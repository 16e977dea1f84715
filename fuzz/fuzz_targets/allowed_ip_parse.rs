//! `AllowedIp` parsing: never panics; an accepted prefix is normalized
//! (host bits zero) and survives Display -> parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omni_core::AllowedIp;
use std::net::IpAddr;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = core::str::from_utf8(data) else { return };
    let Ok(ip) = s.parse::<AllowedIp>() else {
        // Rejections must agree with the obvious reading of `addr[/digits]`.
        if let Some((addr, cidr)) = s.split_once('/') {
            if let (Ok(a), true, Ok(c)) = (
                addr.parse::<IpAddr>(),
                !cidr.is_empty() && cidr.bytes().all(|b| b.is_ascii_digit()),
                cidr.parse::<u8>(),
            ) {
                let max = if a.is_ipv4() { 32 } else { 128 };
                assert!(c > max, "rejected valid prefix {s:?}");
            }
        } else {
            assert!(s.parse::<IpAddr>().is_err(), "rejected bare address {s:?}");
        }
        return;
    };
    let max = if ip.addr().is_ipv4() { 32 } else { 128 };
    assert!(ip.cidr() <= max);
    // Normalized: rebuilding from its own parts is the identity, and the
    // network address lies inside the prefix.
    assert_eq!(AllowedIp::new(ip.addr(), ip.cidr()), Ok(ip));
    assert!(ip.contains(ip.addr()));
    // The same family as written, and the written address is inside.
    let written = s.split_once('/').map_or(s, |(a, _)| a);
    let written: IpAddr = written.parse().expect("accepted an unparseable address");
    assert_eq!(written.is_ipv4(), ip.addr().is_ipv4());
    assert!(ip.contains(written));
    // Display round-trip.
    let shown = ip.to_string();
    assert_eq!(shown.parse::<AllowedIp>(), Ok(ip), "{s:?} displayed as {shown:?}");
    assert_eq!(shown.parse::<AllowedIp>().unwrap().to_string(), shown);
});
