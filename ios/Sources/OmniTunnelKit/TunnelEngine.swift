import Foundation
import OmniC
import OmniFFI

/// `OMNI_NOW` of omni.h: read the tunnel's own clock (CLOCK_MONOTONIC, counting sleep).
private let omniNow = UInt64.max

/// Drives one tunnel on one serial queue: packets from the TUN side
/// (`handleOutgoing`), datagrams from the UDP socket, and a one-shot timer
/// armed at the core's next deadline (no periodic tick: the phone sleeps).
///
/// Configuration, events and stats use the uniffi bindings (`Tunnel`); the
/// packet path uses the C API (`omni.h`) on the same tunnel, in place, into
/// two buffers allocated once: nothing is allocated per packet except the
/// `Data` values `NEPacketTunnelFlow` itself takes.
public final class TunnelEngine {
    public let tunnel: Tunnel
    private let handle: OpaquePointer
    private let queue = DispatchQueue(label: "net.omninervous.tunnel")
    private var socket: UDPSocket?
    private var timer: DispatchSourceTimer?
    private var armedDeadline = UInt64.max
    private let port: UInt16
    /// Packet buffer: room for the MTU, WireGuard's header and tag, and relay
    /// framing for a tunnel in a cluster (OMNI_CLUSTER_OVERHEAD covers OMNI_OVERHEAD).
    private let sendBuffer: UnsafeMutableRawBufferPointer
    /// Datagram buffer: the largest UDP payload.
    private let recvBuffer: UnsafeMutableRawBufferPointer
    /// Delivers decrypted packets to the TUN side (packetFlow.writePackets).
    private let deliver: ([Data], [NSNumber]) -> Void
    public var onEvent: (TunnelEvent) -> Void = { _ in }

    public init(tunnel: Tunnel, listenPort: UInt16, mtu: Int, deliver: @escaping ([Data], [NSNumber]) -> Void) throws {
        self.tunnel = tunnel
        var h: OpaquePointer?
        let rc = omni_tunnel_from_packet_handle(tunnel.packetHandle(), &h)
        guard rc == OMNI_RESULT_OK, let h else { throw POSIXError(.EINVAL) }
        handle = h
        port = listenPort
        // Cluster transmits need the datagram + 100 bytes of relay framing: 1700 always suffice.
        sendBuffer = .allocate(
            byteCount: max(Int(OMNI_IN_PLACE_OFFSET) + mtu + Int(OMNI_CLUSTER_OVERHEAD) + 64, 2048), alignment: 16)
        recvBuffer = .allocate(byteCount: 65536, alignment: 16)
        self.deliver = deliver
    }

    deinit {
        omni_tunnel_free(handle)
        sendBuffer.deallocate()
        recvBuffer.deallocate()
    }

    public func start() throws {
        try queue.sync { try openSocket() }
    }

    public func stop() {
        queue.sync {
            timer?.cancel()
            timer = nil
            socket?.close()
            socket = nil
        }
    }

    private func openSocket() throws {
        socket?.close()
        let s = try UDPSocket(port: port)
        s.start(queue: queue) { [weak self] in self?.drainSocket() }
        socket = s
    }

    // MARK: host notifications

    /// The path changed (NWPathMonitor): new socket, fresh handshakes, re-resolve names.
    public func networkChanged() {
        queue.async {
            do { try self.openSocket() } catch { NSLog("omni: could not reopen the UDP socket: \(error)") }
            _ = omni_tunnel_notify_network_changed(self.handle, omniNow)
            self.flush()
            DispatchQueue.global(qos: .utility).async {
                if self.tunnel.resolveEndpoints() > 0 { self.queue.async { self.flush() } }
            }
        }
    }

    /// Leaves the cluster (if the tunnel joined one) and sends the goodbye to
    /// the Nucleus, so the members drop us at once. Call before `stop`.
    public func leaveCluster() {
        queue.sync {
            guard self.tunnel.clusterStatus() != nil else { return }
            self.tunnel.leaveCluster()
            self.flush()
        }
    }

    public func sleep() {
        queue.async { self.tunnel.onSleep() }
    }

    public func wake() {
        queue.async {
            _ = omni_tunnel_notify_wake(self.handle, omniNow)
            self.flush()
        }
    }

    // MARK: packet path

    /// IP packets read from packetFlow.
    public func handleOutgoing(_ packets: [Data]) {
        queue.async {
            var result = OmniOutput()
            for packet in packets {
                let off = Int(OMNI_IN_PLACE_OFFSET)
                guard packet.count + off + Int(OMNI_CLUSTER_OVERHEAD) <= self.sendBuffer.count else { continue }
                packet.copyBytes(to: UnsafeMutableRawBufferPointer(rebasing: self.sendBuffer[off...]))
                let rc = omni_tunnel_send_ip_in_place(
                    self.handle, omniNow, self.sendBuffer.baseAddress?.assumingMemoryBound(to: UInt8.self),
                    self.sendBuffer.count, packet.count, &result)
                if rc == OMNI_RESULT_OK && result.kind == OMNI_OUTPUT_KIND_NETWORK {
                    self.socket?.send(UnsafeRawBufferPointer(rebasing: self.sendBuffer[0..<result.len]), to: result.endpoint)
                }
                // NONE: queued behind a handshake; errors (no route, not IP) drop the packet.
            }
            self.flush()
        }
    }

    /// On the queue: reads every waiting datagram, writes packets to the TUN side in one batch.
    private func drainSocket() {
        guard let socket else { return }
        var packets: [Data] = []
        var protocols: [NSNumber] = []
        var from = OmniEndpoint()
        var result = OmniOutput()
        while let n = socket.receive(into: recvBuffer, from: &from) {
            let rc = omni_tunnel_handle_datagram_in_place(
                handle, omniNow, &from, recvBuffer.baseAddress?.assumingMemoryBound(to: UInt8.self), n, &result)
            guard rc == OMNI_RESULT_OK else { continue } // DROPPED: invalid or replayed, nothing to do
            switch result.kind {
            case OMNI_OUTPUT_KIND_TUN:
                let packet = Data(UnsafeRawBufferPointer(rebasing: recvBuffer[result.offset..<(result.offset + result.len)]))
                packets.append(packet)
                protocols.append(NSNumber(value: (packet.first ?? 0) >> 4 == 6 ? AF_INET6 : AF_INET))
            case OMNI_OUTPUT_KIND_NETWORK:
                socket.send(UnsafeRawBufferPointer(rebasing: recvBuffer[0..<result.len]), to: from)
            default:
                break
            }
            if packets.count >= 64 {
                deliver(packets, protocols)
                packets.removeAll(keepingCapacity: true)
                protocols.removeAll(keepingCapacity: true)
            }
        }
        if !packets.isEmpty { deliver(packets, protocols) }
        flush()
    }

    /// On the queue: sends what the core wants to send, reports events, re-arms the timer.
    private func flush() {
        var result = OmniOutput()
        while omni_tunnel_poll_transmit(handle, omniNow, sendBuffer.baseAddress?.assumingMemoryBound(to: UInt8.self),
                                        sendBuffer.count, &result) == OMNI_RESULT_OK,
              result.kind == OMNI_OUTPUT_KIND_NETWORK {
            socket?.send(UnsafeRawBufferPointer(rebasing: sendBuffer[0..<result.len]), to: result.endpoint)
        }
        while let event = tunnel.pollEvent() { onEvent(event) }
        rearm()
    }

    private func rearm() {
        var deadline = UInt64.max
        _ = omni_tunnel_poll_timeout(handle, &deadline)
        guard deadline != armedDeadline else { return }
        armedDeadline = deadline
        timer?.cancel()
        timer = nil
        guard deadline != UInt64.max else { return }
        let now = omni_now()
        let delay = deadline > now ? deadline - now : 0
        let t = DispatchSource.makeTimerSource(queue: queue)
        // Leeway lets iOS coalesce wake-ups; WireGuard's timers tolerate it.
        t.schedule(deadline: .now() + .nanoseconds(Int(min(delay, UInt64(Int.max)))), leeway: .milliseconds(50))
        t.setEventHandler { [weak self] in
            guard let self else { return }
            self.armedDeadline = .max
            _ = omni_tunnel_handle_timeout(self.handle, omniNow)
            self.flush()
        }
        timer = t
        t.resume()
    }
}
