import Darwin
import Foundation
import OmniC

/// One non-blocking, dual-stack UDP socket for every peer, read through a
/// DispatchSource on the tunnel's queue. Sockets of a packet tunnel provider
/// bypass its own tunnel, so no "protect" step is needed on iOS.
final class UDPSocket {
    private let fd: Int32
    private var source: DispatchSourceRead?

    /// Binds `[::]:port` (0: any) with IPv4-mapped addresses allowed.
    init(port: UInt16) throws {
        fd = socket(AF_INET6, SOCK_DGRAM, IPPROTO_UDP)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var off: Int32 = 0
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, socklen_t(MemoryLayout<Int32>.size))
        var on: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        var addr = sockaddr_in6()
        addr.sin6_len = UInt8(MemoryLayout<sockaddr_in6>.size)
        addr.sin6_family = sa_family_t(AF_INET6)
        addr.sin6_port = port.bigEndian
        addr.sin6_addr = in6addr_any
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        }
        guard rc == 0 else {
            let err = errno
            Darwin.close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: err) ?? .EADDRINUSE)
        }
    }

    /// Calls `onReadable` on `queue` whenever datagrams are waiting.
    func start(queue: DispatchQueue, onReadable: @escaping () -> Void) {
        let s = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        s.setEventHandler(handler: onReadable)
        s.setCancelHandler { [fd] in _ = Darwin.close(fd) }
        source = s
        s.resume()
    }

    func close() {
        if let s = source {
            s.cancel() // closes the fd in the cancel handler
            source = nil
        } else {
            _ = Darwin.close(fd)
        }
    }

    /// Receives one datagram into `buf`; nil when none is waiting.
    func receive(into buf: UnsafeMutableRawBufferPointer, from endpoint: inout OmniEndpoint) -> Int? {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let n = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, buf.baseAddress, buf.count, 0, $0, &len) }
        }
        guard n >= 0 else { return nil }
        endpoint = OmniEndpoint(storage)
        return n
    }

    func send(_ bytes: UnsafeRawBufferPointer, to endpoint: OmniEndpoint) {
        var sa = endpoint.sockaddrIn6
        _ = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
            }
        }
        // A failed send (no route while the network switches) is not an error:
        // WireGuard retransmits handshakes on its own timers.
    }
}

extension OmniEndpoint {
    /// From a received address (IPv4-mapped IPv6 addresses become IPv4).
    init(_ storage: sockaddr_storage) {
        self.init()
        var s = storage
        if Int32(s.ss_family) == AF_INET6 {
            let a = withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee } }
            let bytes = withUnsafeBytes(of: a.sin6_addr) { Array($0) }
            port = UInt16(bigEndian: a.sin6_port)
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
                family = 4
                withUnsafeMutableBytes(of: &addr) { dst in for i in 0..<4 { dst[i] = bytes[12 + i] } }
            } else {
                family = 6
                withUnsafeMutableBytes(of: &addr) { dst in for i in 0..<16 { dst[i] = bytes[i] } }
            }
        } else if Int32(s.ss_family) == AF_INET {
            let a = withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee } }
            family = 4
            port = UInt16(bigEndian: a.sin_port)
            withUnsafeBytes(of: a.sin_addr) { src in withUnsafeMutableBytes(of: &addr) { dst in for i in 0..<4 { dst[i] = src[i] } } }
        }
    }

    /// As a dual-stack socket address (IPv4 as ::ffff:a.b.c.d).
    var sockaddrIn6: sockaddr_in6 {
        var sa = sockaddr_in6()
        sa.sin6_len = UInt8(MemoryLayout<sockaddr_in6>.size)
        sa.sin6_family = sa_family_t(AF_INET6)
        sa.sin6_port = port.bigEndian
        var a = addr
        withUnsafeMutableBytes(of: &sa.sin6_addr) { dst in
            withUnsafeBytes(of: &a) { src in
                if family == 4 {
                    for i in 0..<10 { dst[i] = 0 }
                    dst[10] = 0xff
                    dst[11] = 0xff
                    for i in 0..<4 { dst[12 + i] = src[i] }
                } else {
                    for i in 0..<16 { dst[i] = src[i] }
                }
            }
        }
        return sa
    }
}
