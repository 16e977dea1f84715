import OmniFFI
import XCTest

/// The cross-language scenario through the Swift bindings (run with `swift test`
/// on a Mac after ./build-xcframework.sh; not runnable on Linux CI).
final class TunnelTests: XCTestCase {
    func ipv4(_ src: [UInt8], _ dst: [UInt8], _ payload: [UInt8]) -> Data {
        let total = 20 + payload.count
        var p = [UInt8](repeating: 0, count: total)
        p[0] = 0x45
        p[2] = UInt8(total >> 8)
        p[3] = UInt8(total & 0xff)
        p[8] = 64
        p[9] = 17
        p.replaceSubrange(12..<16, with: src)
        p.replaceSubrange(16..<20, with: dst)
        p.replaceSubrange(20..<total, with: payload)
        return Data(p)
    }

    func testHandshakeAndPacketsBothWays() throws {
        let ka = generatePrivateKey(), kb = generatePrivateKey()
        let pa = try publicKeyFromPrivate(privateKey: ka), pb = try publicKeyFromPrivate(privateKey: kb)
        let a = try Tunnel.fromWgQuick(text: "[Interface]\nPrivateKey = \(ka)\nAddress = 10.0.0.1/32\n[Peer]\nPublicKey = \(pb)\nAllowedIPs = 10.0.0.2/32\nEndpoint = 127.0.0.1:2000\n")
        let b = try Tunnel.fromWgQuick(text: "[Interface]\nPrivateKey = \(kb)\nAddress = 10.0.0.2/32\n[Peer]\nPublicKey = \(pa)\nAllowedIPs = 10.0.0.1/32\n")
        let first = ipv4([10, 0, 0, 1], [10, 0, 0, 2], Array("hello from swift".utf8))
        XCTAssertNil(try a.sendIp(packet: first))
        let initiation = try XCTUnwrap(try a.drainTransmits().first)
        guard case let .reply(response) = try b.handleDatagram(from: "127.0.0.1:1000", datagram: initiation.data) else {
            return XCTFail("no response")
        }
        XCTAssertEqual(try a.handleDatagram(from: "127.0.0.1:2000", datagram: response), .done)
        let data = try XCTUnwrap(try a.drainTransmits().first)
        XCTAssertEqual(try b.handleDatagram(from: "127.0.0.1:1000", datagram: data.data), .packet(packet: first))
        let back = ipv4([10, 0, 0, 2], [10, 0, 0, 1], [UInt8](repeating: 7, count: 1400))
        let d = try XCTUnwrap(try b.sendIp(packet: back))
        XCTAssertEqual(try a.handleDatagram(from: "127.0.0.1:2000", datagram: d.data), .packet(packet: back))
    }

    func testTypedErrors() {
        XCTAssertThrowsError(try Tunnel.fromWgQuick(text: "[Interface]\nPrivateKey = nope\n")) { error in
            guard case let TunnelError.InvalidConfig(line, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(line, 2)
        }
    }
}
