"""The uniffi Python bindings end to end: the same scenario as the Kotlin, C
and JNI tests (two tunnels, a handshake, packets both ways), plus typed
errors, a host clock driving the timers, and a log sink."""

import struct

import pytest

import omni_ffi as omni


def ipv4(src, dst, payload):
    total = 20 + len(payload)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 17, 0, bytes(src), bytes(dst))
    return header + payload


class VirtualClock(omni.HostClock):
    def __init__(self):
        self.nanos = 1_000_000_000

    def now_nanos(self):
        return self.nanos

    def advance(self, seconds):
        self.nanos += int(seconds * 1e9)


def pair(clock=None):
    ka, kb = omni.generate_private_key(), omni.generate_private_key()
    pa, pb = omni.public_key_from_private(ka), omni.public_key_from_private(kb)
    cfg_a = omni.TunnelConfig(
        private_key=ka, listen_port=None, addresses=["10.0.0.1/32"], dns=["10.0.0.53"], mtu=None,
        peers=[omni.PeerSpec(public_key=pb, preshared_key=None, allowed_ips=["10.0.0.2/32"],
                             endpoint="127.0.0.1:2000", persistent_keepalive=None)])
    text_b = f"[Interface]\nPrivateKey = {kb}\nAddress = 10.0.0.2/32\n\n[Peer]\nPublicKey = {pa}\nAllowedIPs = 10.0.0.1/32\n"
    if clock is None:
        a = omni.Tunnel(cfg_a)
        b = omni.Tunnel.from_wg_quick(text_b)
    else:
        a = omni.Tunnel.with_clock(cfg_a, clock)
        b = omni.Tunnel.with_clock(omni.parse_wg_quick(text_b), clock)
    return a, b, pa, pb


def handshake(a, b):
    packet = ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"queued before the handshake")
    assert a.send_ip(packet) is None
    [init] = a.drain_transmits()
    assert init.endpoint == "127.0.0.1:2000" and len(init.data) == 148
    reply = b.handle_datagram("127.0.0.1:1000", init.data)
    assert isinstance(reply, omni.DatagramOutcome.REPLY) and len(reply.datagram) == 92
    assert a.handle_datagram("127.0.0.1:2000", reply.datagram) == omni.DatagramOutcome.DONE()
    [data] = a.drain_transmits()
    got = b.handle_datagram("127.0.0.1:1000", data.data)
    assert isinstance(got, omni.DatagramOutcome.PACKET) and got.packet == packet
    return data


def test_handshake_and_packets_both_ways():
    a, b, pa, pb = pair()
    data = handshake(a, b)
    assert a.poll_event() == omni.TunnelEvent.PEER_UP(public_key=pb, initiator=True)
    events_b = [b.poll_event(), b.poll_event()]
    assert omni.TunnelEvent.PEER_UP(public_key=pa, initiator=False) in events_b
    assert omni.TunnelEvent.ENDPOINT_CHANGED(public_key=pa, endpoint="127.0.0.1:1000") in events_b

    back = ipv4([10, 0, 0, 2], [10, 0, 0, 1], bytes(range(256)) * 5)
    d = b.send_ip(back)
    assert d.endpoint == "127.0.0.1:1000"
    out = a.handle_datagram("127.0.0.1:2000", d.data)
    assert out == omni.DatagramOutcome.PACKET(packet=back)

    # A replay is dropped, not raised: network garbage is the sender's fault.
    assert b.handle_datagram("127.0.0.1:1000", data.data) == omni.DatagramOutcome.REJECTED(reason="replay")

    stats = a.stats()
    assert stats.peers[0].public_key == pb and stats.peers[0].has_session
    assert stats.rx_bytes > 0 and stats.tx_bytes > 0
    assert b.stats().datagrams_rejected == 1

    s = a.interface_settings()
    assert s.addresses == [omni.IpNetwork(address="10.0.0.1", prefix_length=32)]
    assert s.routes == [omni.IpNetwork(address="10.0.0.2", prefix_length=32)]
    assert s.dns_servers == ["10.0.0.53"] and s.mtu == 1420


def test_typed_errors():
    a, b, pa, pb = pair()
    with pytest.raises(omni.TunnelError.InvalidConfig) as e:
        omni.Tunnel.from_wg_quick("[Interface]\nPrivateKey = not-a-key\n")
    assert e.value.line == 2
    with pytest.raises(omni.TunnelError.InvalidKey):
        omni.public_key_from_private("AAAA")
    with pytest.raises(omni.TunnelError.NoRoute):
        a.send_ip(ipv4([10, 0, 0, 1], [192, 168, 1, 1], b"x"))
    with pytest.raises(omni.TunnelError.NotIp):
        a.send_ip(b"\x00" * 40)
    # B has no endpoint for A: its packet waits, and no initiation can go out.
    assert b.send_ip(ipv4([10, 0, 0, 2], [10, 0, 0, 1], b"x")) is None
    assert b.drain_transmits() == []
    assert b.unresolved_endpoints() == []
    with pytest.raises(omni.TunnelError.UnknownPeer):
        a.remove_peer(omni.public_key_from_private(omni.generate_private_key()))
    with pytest.raises(omni.TunnelError.InvalidAddress):
        a.handle_datagram("not an address", b"")
    with pytest.raises(omni.TunnelError.DuplicatePeer):
        a.add_peer(omni.PeerSpec(public_key=pb, preshared_key=None, allowed_ips=[], endpoint=None,
                                 persistent_keepalive=None))
    assert a.handle_datagram("127.0.0.1:9", b"\x01\x00") == omni.DatagramOutcome.REJECTED(reason="malformed")


def test_host_clock_drives_timers_and_failure_event():
    clock = VirtualClock()
    a, b, pa, pb = pair(clock)
    a.send_ip(ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"nobody answers"))
    assert len(a.drain_transmits()) == 1
    sent = 1
    # No tick: sleep exactly until each deadline on the virtual clock.
    for _ in range(100):
        wait = a.next_timeout_millis()
        if wait is None:
            break
        clock.advance(wait / 1000)
        a.handle_timeout()
        sent += len(a.drain_transmits())
        ev = a.poll_event()
        if ev is not None:
            assert ev == omni.TunnelEvent.HANDSHAKE_FAILED(public_key=pb)
            break
    else:
        pytest.fail("no HandshakeFailed")
    # Rekey-Attempt-Time (90 s) of retransmits every Rekey-Timeout (5 s + jitter).
    assert 90e9 <= clock.nanos - 1e9 <= 105e9, clock.nanos
    assert sent >= 18, sent


def test_wake_and_network_change_rehandshake():
    clock = VirtualClock()
    a, b, pa, pb = pair(clock)
    handshake(a, b)
    a.on_sleep()
    clock.advance(30)  # asleep (and past B's per-peer handshake rate limit)
    a.on_wake()
    [init] = a.drain_transmits()
    assert len(init.data) == 148
    # The rehandshake completes: a renewal, not a second PeerUp.
    reply = b.handle_datagram("127.0.0.1:1000", init.data)
    assert a.handle_datagram("127.0.0.1:2000", reply.datagram) == omni.DatagramOutcome.DONE()
    events_a = []
    while (e := a.poll_event()) is not None:
        events_a.append(e)
    assert events_a == [omni.TunnelEvent.PEER_UP(public_key=pb, initiator=True),
                        omni.TunnelEvent.SESSION_RENEWED(public_key=pb, initiator=True)]
    # The responder confirms the new session on the first packet that uses it.
    packet = ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"on the new session")
    d = a.send_ip(packet)
    assert b.handle_datagram("127.0.0.1:1000", d.data) == omni.DatagramOutcome.PACKET(packet=packet)
    events_b = []
    while (e := b.poll_event()) is not None:
        events_b.append(e)
    assert omni.TunnelEvent.SESSION_RENEWED(public_key=pa, initiator=False) in events_b
    assert [e for e in events_b if isinstance(e, omni.TunnelEvent.PEER_UP)] == \
        [omni.TunnelEvent.PEER_UP(public_key=pa, initiator=False)]
    a.on_network_changed()


def test_keys_and_wg_quick_round_trip():
    k = omni.generate_private_key()
    raw = omni.key_from_base64(k)
    assert len(raw) == 32 and omni.key_to_base64(raw) == k
    with pytest.raises(omni.TunnelError.InvalidKey):
        omni.key_to_base64(b"short")
    cfg = omni.parse_wg_quick(f"[Interface]\nPrivateKey = {k}\nAddress = 10.1.0.2/24\nDNS = 1.1.1.1, corp\nMTU = 1280\n"
                              f"[Peer]\nPublicKey = {omni.public_key_from_private(k)}\nAllowedIPs = 0.0.0.0/0, ::/0\n"
                              "Endpoint = vpn.example.invalid:51820\nPersistentKeepalive = 25\n")
    assert omni.parse_wg_quick(omni.to_wg_quick(cfg)) == cfg
    assert cfg.peers[0].allowed_ips == ["0.0.0.0/0", "::/0"]
    assert omni.omni_version()


def test_log_sink_receives_records():
    records = []

    class Sink(omni.LogSink):
        def log(self, level, target, message):
            records.append((level, target, message))

    omni.set_log_sink(Sink(), omni.LogLevel.DEBUG)
    try:
        a, b, pa, pb = pair()
        a.on_network_changed()
    finally:
        omni.set_log_sink(None, omni.LogLevel.ERROR)
    assert any("network changed" in m for _, _, m in records), records


def test_uniffi_tunnel_through_the_c_api():
    """A host configures through uniffi and moves packets through omni.h (as
    the iOS engine does): Tunnel.packet_handle() -> omni_tunnel_from_packet_handle."""
    import ctypes
    import os

    lib = ctypes.CDLL(os.path.join(os.path.dirname(omni.__file__), "libomni_ffi.so"))
    lib.omni_tunnel_from_packet_handle.argtypes = [ctypes.c_uint64, ctypes.POINTER(ctypes.c_void_p)]
    lib.omni_tunnel_public_key.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                           ctypes.POINTER(ctypes.c_size_t)]
    lib.omni_tunnel_free.argtypes = [ctypes.c_void_p]
    a, b, pa, pb = pair()
    handle = ctypes.c_void_p()
    assert lib.omni_tunnel_from_packet_handle(a.packet_handle(), ctypes.byref(handle)) == 0
    buf = ctypes.create_string_buffer(45)
    assert lib.omni_tunnel_public_key(handle, buf, 45, None) == 0
    assert buf.value.decode() == pa
    lib.omni_tunnel_free(handle)
    assert lib.omni_tunnel_from_packet_handle(0, ctypes.byref(handle)) == -1  # NULL_ARGUMENT
    assert a.public_key() == pa  # the uniffi object still owns its own reference


def test_endpoint_needed_event():
    """A packet queued for a peer with no endpoint: the host hears of it once
    (no handshake can start), and again only after the peer had one."""
    a, b, pa, pb = pair()
    assert b.send_ip(ipv4([10, 0, 0, 2], [10, 0, 0, 1], b"first")) is None
    assert b.poll_event() == omni.TunnelEvent.ENDPOINT_NEEDED(public_key=pa)
    assert b.send_ip(ipv4([10, 0, 0, 2], [10, 0, 0, 1], b"second")) is None
    assert b.poll_event() is None  # once per peer
    assert b.drain_transmits() == []
    # The host finds the endpoint: the handshake starts and the queued packets flow.
    b.set_peer_endpoint(pa, "127.0.0.1:1000")
    [init] = b.drain_transmits()
    assert init.endpoint == "127.0.0.1:1000" and len(init.data) == 148
    # A tunnel whose peer has an endpoint never reports it.
    assert a.send_ip(ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"x")) is None
    assert a.poll_event() is None


def test_batches():
    a, b, pa, pb = pair()
    handshake(a, b)
    packets = [ipv4([10, 0, 0, 1], [10, 0, 0, 2], bytes([i]) * (100 + i)) for i in range(10)]
    bad = ipv4([10, 0, 0, 1], [192, 168, 9, 9], b"no route")
    datagrams = a.send_ip_batch(packets[:5] + [bad] + packets[5:])
    assert len(datagrams) == 10 and all(d.endpoint == "127.0.0.1:2000" for d in datagrams)
    assert a.stats().packets_dropped == 1
    incoming = [omni.Datagram(endpoint="127.0.0.1:1000", data=d.data) for d in datagrams]
    incoming.append(omni.Datagram(endpoint="nowhere", data=b"x"))
    incoming.append(incoming[0])  # a replay
    out = b.handle_datagram_batch(incoming)
    assert out[:10] == [omni.DatagramOutcome.PACKET(packet=p) for p in packets]
    assert out[10:] == [omni.DatagramOutcome.REJECTED(reason="bad-endpoint"),
                        omni.DatagramOutcome.REJECTED(reason="replay")]


def test_network_change_restarts_a_handshake_in_flight():
    """A handshake in flight when the network changes starts over from the new
    socket at once, not at its retransmit timer (5 s later); a peer nobody
    talks to gets no unsolicited handshake."""
    clock = VirtualClock()
    a, b, pa, pb = pair(clock)
    a.send_ip(ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"nobody answers yet"))
    assert len(a.drain_transmits()) == 1
    clock.advance(1)
    assert a.drain_transmits() == []  # the retransmit is due at +5 s
    a.on_network_changed()
    [again] = a.drain_transmits()
    assert len(again.data) == 148 and again.endpoint == "127.0.0.1:2000"
    # Same config, no traffic: nothing in flight, nothing sent.
    idle, _, _, _ = pair(clock)
    idle.on_network_changed()
    assert idle.drain_transmits() == []
