"""Joining a cluster through the uniffi Python bindings, against the real
Nucleus (`omni-daemon --mode nucleus`) on 127.0.0.1: two tunnels join, find
each other, handshake directly and carry IP packets both ways; a wrong secret
lands in a cluster of its own (no peers, no route), a taken VIP is refused
with a clear reason, a member that leaves is dropped by the other.

The test is the host: it owns one UDP socket per tunnel on 127.0.0.1 and
does all I/O, as a phone's VpnService / NEPacketTunnelProvider would.
OMNI_DAEMON names the omni-daemon binary (run-binding-tests.sh builds it)."""

import ctypes
import os
import select
import socket
import struct
import subprocess
import tempfile
import time

import pytest

import omni_ffi as omni

SECRET = "correct horse battery staple"


def ipv4(src, dst, payload):
    total = 20 + len(payload)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 17, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    return header + payload


def ipv6(src, dst, payload):
    header = struct.pack("!IHBB16s16s", 6 << 28, len(payload), 17, 64,
                         socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst))
    return header + payload


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def nucleus():
    daemon = os.environ.get("OMNI_DAEMON")
    if not daemon or not os.access(daemon, os.X_OK):
        pytest.fail("OMNI_DAEMON must name the omni-daemon binary (cargo build -p omni-daemon)")
    with tempfile.TemporaryDirectory() as identity:
        proc, port, key = None, None, None
        for _ in range(5):  # the free port may be taken between probe and bind
            port = free_udp_port()
            proc = subprocess.Popen(
                [daemon, "--mode", "nucleus", "--port", str(port), "--identity-dir", identity],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                env={**os.environ, "RUST_LOG": "warn"})
            ready, _, _ = select.select([proc.stdout], [], [], 20)
            line = proc.stdout.readline() if ready else ""
            if line.startswith("nucleus public key: "):
                key = line.split(": ", 1)[1].strip()
                break
            proc.kill()
            proc.wait()
        assert key, "the Nucleus did not print its key"
        try:
            yield ("127.0.0.1", port, key)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Host:
    """One tunnel and its UDP socket: the I/O a phone's host does. With
    `only_via` set, it drops every datagram to or from anyone but that
    address (a NAT that lets nothing but the Nucleus through)."""

    def __init__(self, tunnel, only_via=None):
        self.tunnel = tunnel
        self.only_via = only_via
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.events = []
        self.packets = []

    def send(self, datagram):
        host, port = datagram.endpoint.rsplit(":", 1)
        to = (host.strip("[]"), int(port))
        if self.only_via is None or to == self.only_via:
            self.sock.sendto(datagram.data, to)

    def flush(self):
        for d in self.tunnel.drain_transmits():
            self.send(d)
        while (e := self.tunnel.poll_event()) is not None:
            self.events.append(e)

    def step(self):
        """Reads what arrived, fires due timers, sends what is due."""
        while True:
            try:
                data, (ip, port) = self.sock.recvfrom(65535)
            except BlockingIOError:
                break
            if self.only_via is not None and (ip, port) != self.only_via:
                continue
            out = self.tunnel.handle_datagram(f"{ip}:{port}", data)
            if isinstance(out, omni.DatagramOutcome.REPLY):
                self.sock.sendto(out.datagram, (ip, port))
            elif isinstance(out, omni.DatagramOutcome.PACKET):
                self.packets.append(out.packet)
            self.flush()
        wait = self.tunnel.next_timeout_millis()
        if wait is not None and wait == 0:
            self.tunnel.handle_timeout()
        self.flush()

    def close(self):
        self.sock.close()


class OmniEndpoint(ctypes.Structure):
    _fields_ = [("family", ctypes.c_uint8), ("port", ctypes.c_uint16), ("addr", ctypes.c_uint8 * 16)]


class OmniOutput(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("offset", ctypes.c_size_t), ("len", ctypes.c_size_t),
                ("endpoint", OmniEndpoint), ("needed", ctypes.c_size_t)]


OMNI_NOW = 2**64 - 1


class CHost(Host):
    """A host whose datagrams go through the C API in place
    (`omni_tunnel_handle_datagram_in_place` on the uniffi tunnel's packet
    handle), as the iOS engine receives them: signaling and relayed packets
    are unwrapped in the caller's one buffer."""

    def __init__(self, tunnel, only_via=None):
        super().__init__(tunnel, only_via)
        self.lib = ctypes.CDLL(os.path.join(os.path.dirname(omni.__file__), "libomni_ffi.so"))
        self.lib.omni_tunnel_from_packet_handle.argtypes = [ctypes.c_uint64, ctypes.POINTER(ctypes.c_void_p)]
        self.lib.omni_tunnel_handle_datagram_in_place.argtypes = [
            ctypes.c_void_p, ctypes.c_uint64, ctypes.POINTER(OmniEndpoint), ctypes.c_void_p, ctypes.c_size_t,
            ctypes.POINTER(OmniOutput)]
        self.lib.omni_tunnel_send_ip_in_place.argtypes = [
            ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
            ctypes.POINTER(OmniOutput)]
        self.lib.omni_tunnel_free.argtypes = [ctypes.c_void_p]
        self.handle = ctypes.c_void_p()
        assert self.lib.omni_tunnel_from_packet_handle(tunnel.packet_handle(), ctypes.byref(self.handle)) == 0
        self.buf = ctypes.create_string_buffer(65536)
        self.in_place = 0

    def step(self):
        while True:
            try:
                data, (ip, port) = self.sock.recvfrom(65535)
            except BlockingIOError:
                break
            if self.only_via is not None and (ip, port) != self.only_via:
                continue
            ctypes.memmove(self.buf, data, len(data))
            src = OmniEndpoint(family=4, port=port)
            for i, b in enumerate(socket.inet_aton(ip)):
                src.addr[i] = b
            out = OmniOutput()
            rc = self.lib.omni_tunnel_handle_datagram_in_place(
                self.handle, OMNI_NOW, ctypes.byref(src), self.buf, len(data), ctypes.byref(out))
            if rc == 0 and out.kind == 1:  # TUN
                self.packets.append(self.buf.raw[out.offset:out.offset + out.len])
                self.in_place += 1
            elif rc == 0 and out.kind == 2:  # NETWORK: a reply
                self.sock.sendto(self.buf.raw[:out.len], (ip, port))
            self.flush()
        if self.tunnel.next_timeout_millis() == 0:
            self.tunnel.handle_timeout()
        self.flush()

    def send_ip_in_place(self, packet):
        """Encrypts `packet` in place (OMNI_CLUSTER_OVERHEAD of room) and sends
        the datagram; returns its destination, or None if it was queued."""
        buf = ctypes.create_string_buffer(16 + len(packet) + 160)
        ctypes.memmove(ctypes.addressof(buf) + 16, packet, len(packet))
        out = OmniOutput()
        rc = self.lib.omni_tunnel_send_ip_in_place(self.handle, OMNI_NOW, buf, len(buf), len(packet), ctypes.byref(out))
        assert rc == 0, rc
        if out.kind != 2:
            return None
        to = (socket.inet_ntoa(bytes(out.endpoint.addr[:4])), out.endpoint.port)
        self.send(omni.Datagram(endpoint=f"{to[0]}:{to[1]}", data=buf.raw[:out.len]))
        return to

    def close(self):
        self.lib.omni_tunnel_free(self.handle)
        super().close()


def run_until(hosts, done, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for h in hosts:
            h.step()
        if done():
            return
        select.select([h.sock for h in hosts], [], [], 0.02)
    pytest.fail(f"timed out after {seconds} s waiting for {what}; events: "
                + "; ".join(f"{i}: {h.events}" for i, h in enumerate(hosts)))


def join(nucleus, vip, secret=SECRET, cluster="phones", blocked=False, host=Host, vip6=None):
    ip, port, key = nucleus
    cfg = omni.ClusterConfig(
        private_key=omni.generate_private_key(), nucleus_endpoint=f"{ip}:{port}", nucleus_public_key=key,
        cluster=cluster, secret=secret, vip=vip, vip6=vip6, listen_port=None, local_endpoints=[], dns=[],
        mtu=None, mesh_keepalive=None)
    host = host(omni.Tunnel.join_cluster(cfg), only_via=(ip, port) if blocked else None)
    host.flush()
    return host


def joined(h):
    return any(isinstance(e, omni.TunnelEvent.CLUSTER_JOINED) for e in h.events)


def members(h):
    return {e.public_key: e.vip for e in h.events if isinstance(e, omni.TunnelEvent.MEMBER_JOINED)}


def test_key_query_learns_the_printed_key(nucleus):
    ip, port, key = nucleus
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        query = omni.nucleus_key_query()
        s.sendto(query, (ip, port))
        reply, _ = s.recvfrom(2048)
    assert len(reply) < len(query)  # no amplification
    assert omni.parse_nucleus_key_reply(reply) == key
    assert omni.parse_nucleus_key_reply(query) is None


def test_two_phones_join_and_exchange_packets(nucleus):
    # Dual stack: an IPv4 and an IPv6 VIP each.
    a = join(nucleus, "10.77.0.1/24", vip6="fd77::1/64")
    b = join(nucleus, "10.77.0.2/24", vip6="fd77::2/64")
    ka, kb = a.tunnel.public_key(), b.tunnel.public_key()
    # Wrong secret: another cluster key, so another (open) cluster of its own.
    c = join(nucleus, "10.77.0.3/24", secret="wrong secret")
    hosts = [a, b, c]
    try:
        settings = a.tunnel.interface_settings()
        assert settings.addresses == [omni.IpNetwork(address="10.77.0.1", prefix_length=24),
                                      omni.IpNetwork(address="fd77::1", prefix_length=64)]
        assert settings.routes == [omni.IpNetwork(address="10.77.0.0", prefix_length=24),
                                   omni.IpNetwork(address="fd77::", prefix_length=64)]

        run_until(hosts, lambda: kb in members(a) and ka in members(b), 20, "A and B to see each other")
        assert joined(a) and joined(b)
        # Right secret, but B's VIP (now B's): refused with a clear reason.
        d = join(nucleus, "10.77.0.2/24")
        hosts.append(d)
        assert members(a) == {kb: "10.77.0.2"} and members(b) == {ka: "10.77.0.1"}

        def up(h, key):
            return omni.TunnelEvent.PEER_UP(public_key=key, initiator=True) in h.events or \
                omni.TunnelEvent.PEER_UP(public_key=key, initiator=False) in h.events

        run_until(hosts, lambda: up(a, kb) and up(b, ka), 15, "the member handshake")

        # IP packets both ways between the VIPs.
        ab = ipv4("10.77.0.1", "10.77.0.2", b"phone A to phone B")
        d_ab = a.tunnel.send_ip(ab)
        if d_ab is not None:
            a.send(d_ab)
        a.flush()
        run_until(hosts, lambda: ab in b.packets, 5, "A's packet at B")
        # On loopback the direct path works; wait for it (a slow machine may
        # have relayed first, after the client's relay delay).
        def direct(h):
            status = h.tunnel.cluster_status()
            return len(status.members) == 1 and status.members[0].path == omni.MemberPath.DIRECT

        run_until(hosts, lambda: direct(a) and direct(b), 15, "a direct path both ways")
        ba = ipv4("10.77.0.2", "10.77.0.1", bytes(range(256)) * 5)
        d_ba = b.tunnel.send_ip(ba)
        assert d_ba is not None and d_ba.endpoint == f"127.0.0.1:{a.sock.getsockname()[1]}"
        b.send(d_ba)
        run_until(hosts, lambda: ba in a.packets, 5, "B's packet at A")

        # And an IPv6 packet between the IPv6 VIPs.
        v6 = ipv6("fd77::1", "fd77::2", b"over the IPv6 VIPs")
        d_v6 = a.tunnel.send_ip(v6)
        assert d_v6 is not None
        a.send(d_v6)
        run_until(hosts, lambda: v6 in b.packets, 5, "A's IPv6 packet at B")

        status = a.tunnel.cluster_status()
        assert status.state == omni.ClusterState.REGISTERED
        assert (status.vip, status.vip6) == ("10.77.0.1/24", "fd77::1/64")
        assert status.members[0].vip6 == "fd77::2"
        assert status.reflexive_endpoint == f"127.0.0.1:{a.sock.getsockname()[1]}"
        [m] = status.members
        assert (m.public_key, m.vip, m.path) == (kb, "10.77.0.2", omni.MemberPath.DIRECT)
        assert m.rx_bytes > 0 and m.tx_bytes > 0
        assert omni.TunnelEvent.MEMBER_PATH_CHANGED(public_key=kb, relayed=False) in a.events
        assert status.relayed_out == 0 or omni.TunnelEvent.MEMBER_PATH_CHANGED(public_key=kb, relayed=True) in a.events
        assert [p.public_key for p in a.tunnel.stats().peers] == [kb]  # the Nucleus is no peer

        # The wrong secret: registered, alone, unreachable.
        assert joined(c) and members(c) == {}
        assert c.tunnel.cluster_status().members == []
        with pytest.raises(omni.TunnelError.NoRoute):
            a.tunnel.send_ip(ipv4("10.77.0.1", "10.77.0.3", b"to the wrong cluster"))
        # The taken VIP: refused, not registered, no members.
        run_until(hosts, lambda: omni.TunnelEvent.CLUSTER_REFUSED(reason="vip-in-use") in d.events, 10,
                  "the refusal of the taken VIP")
        assert d.tunnel.cluster_status().state != omni.ClusterState.REGISTERED
        assert d.tunnel.cluster_status().members == []

        # B leaves: A drops it (and its route) at once.
        b.tunnel.leave_cluster()
        b.flush()
        assert omni.TunnelEvent.CLUSTER_LEFT() in b.events
        run_until(hosts, lambda: omni.TunnelEvent.MEMBER_LEFT(public_key=kb) in a.events, 10, "B's departure at A")
        assert a.tunnel.cluster_status().members == []
        with pytest.raises(omni.TunnelError.NoRoute):
            a.tunnel.send_ip(ab)
    finally:
        for h in hosts:
            h.close()


def test_relay_when_no_direct_path(nucleus):
    """Two phones whose NATs let nothing through but the Nucleus: the client
    falls back to the Nucleus's relay and IP packets still flow both ways,
    end-to-end encrypted between the members."""
    e = join(nucleus, "10.78.0.1/24", cluster="relayed", blocked=True)
    # F receives through the C API in place (the iOS engine's path).
    f = join(nucleus, "10.78.0.2/24", cluster="relayed", blocked=True, host=CHost)
    ke, kf = e.tunnel.public_key(), f.tunnel.public_key()
    hosts = [e, f]
    try:
        relayed_e = omni.TunnelEvent.MEMBER_PATH_CHANGED(public_key=kf, relayed=True)
        relayed_f = omni.TunnelEvent.MEMBER_PATH_CHANGED(public_key=ke, relayed=True)
        run_until(hosts, lambda: relayed_e in e.events and relayed_f in f.events, 45, "the relay fallback")
        ef = ipv4("10.78.0.1", "10.78.0.2", b"through the Nucleus")
        d = e.tunnel.send_ip(ef)
        if d is not None:
            assert d.endpoint == f"{nucleus[0]}:{nucleus[1]}"  # wrapped for the relay
            e.send(d)
        e.flush()
        run_until(hosts, lambda: ef in f.packets, 10, "E's packet at F")
        assert f.in_place >= 1  # unwrapped from the relay in the caller's buffer
        fe = ipv4("10.78.0.2", "10.78.0.1", b"and back, wrapped for the relay in place")
        assert f.send_ip_in_place(fe) == (nucleus[0], nucleus[1])  # to the Nucleus, wrapped in place
        f.flush()
        run_until(hosts, lambda: fe in e.packets, 10, "F's packet at E")
        status = e.tunnel.cluster_status()
        assert status.members[0].path == omni.MemberPath.RELAYED
        assert status.members[0].endpoint == f"{nucleus[0]}:{nucleus[1]}"
        assert status.relayed_out > 0 and status.relayed_in > 0
    finally:
        for h in hosts:
            h.close()


def test_join_errors():
    key = omni.public_key_from_private(omni.generate_private_key())
    good = dict(private_key=omni.generate_private_key(), nucleus_endpoint="127.0.0.1:9", nucleus_public_key=key,
                cluster="c", secret="s", vip="10.1.0.1", vip6=None, listen_port=None, local_endpoints=[], dns=[],
                mtu=None, mesh_keepalive=None)
    omni.Tunnel.join_cluster(omni.ClusterConfig(**good))  # no I/O happens at creation
    with pytest.raises(omni.TunnelError.InvalidKey):
        omni.Tunnel.join_cluster(omni.ClusterConfig(**{**good, "nucleus_public_key": "nope"}))
    with pytest.raises(omni.TunnelError.InvalidAddress):
        omni.Tunnel.join_cluster(omni.ClusterConfig(**{**good, "vip": "10.1.0.1/33"}))
    with pytest.raises(omni.TunnelError.InvalidConfig):
        omni.Tunnel.join_cluster(omni.ClusterConfig(**{**good, "cluster": ""}))
    with pytest.raises(omni.TunnelError.InvalidConfig):  # vip6 must be IPv6 (dual stack)
        omni.Tunnel.join_cluster(omni.ClusterConfig(**{**good, "vip6": "10.2.0.1"}))
    # Our own key as the Nucleus's: refused.
    own = omni.public_key_from_private(good["private_key"])
    with pytest.raises(omni.TunnelError.InvalidKey):
        omni.Tunnel.join_cluster(omni.ClusterConfig(**{**good, "nucleus_public_key": own}))
    # A plain tunnel has no cluster side.
    assert omni.Tunnel(omni.TunnelConfig(private_key=omni.generate_private_key(), listen_port=None, addresses=[],
                                         dns=[], mtu=None, peers=[])).cluster_status() is None
