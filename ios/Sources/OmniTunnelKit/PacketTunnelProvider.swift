import Foundation
import Network
import NetworkExtension
import OmniFFI

/// The Network Extension's principal class. The app stores a wg-quick config
/// in `NETunnelProviderProtocol.providerConfiguration["wgQuickConfig"]`, or a
/// cluster to join in `providerConfiguration["cluster"]`: a dictionary with
/// `nucleus` (host:port), `nucleusKey` (base64, printed by `omni-daemon --mode
/// nucleus`), `cluster`, `secret`, `vip` (e.g. `10.200.0.7/24`), optionally
/// `vip6` (dual stack) and `privateKey` (base64). (An app would keep `secret` and `privateKey` in the
/// keychain and pass a reference; they are plain here to keep the host short.)
///
/// - Cluster: the members are the peers (found through the Nucleus, hole
///   punched, relayed when no direct path works), the cluster's subnet is the
///   route, and stopping leaves the cluster so the others drop us at once.
/// - Tunnel settings (addresses, routes, DNS, MTU) come from the config
///   through the Rust parser (`Tunnel.interfaceSettings()`).
/// - `packetFlow` is read in a loop; packets are encrypted in place.
/// - `NWPathMonitor` reports path changes: the UDP socket is recreated and
///   every peer re-handshakes.
/// - `sleep`/`wake` are forwarded: no timer runs while asleep, and overdue
///   timers fire at wake (the core's clock counts time asleep).
/// - Memory: one tunnel, two fixed buffers (~70 KiB), at most 128 queued
///   packets per peer during a handshake; well under the 50 MiB extension limit.
open class PacketTunnelProvider: NEPacketTunnelProvider {
    private var engine: TunnelEngine?
    private var pathMonitor: NWPathMonitor?
    private var lastPath: NWPath?

    open override func startTunnel(options: [String: NSObject]?, completionHandler: @escaping (Error?) -> Void) {
        guard let proto = protocolConfiguration as? NETunnelProviderProtocol,
              let conf = proto.providerConfiguration else {
            completionHandler(NEVPNError(.configurationInvalid))
            return
        }
        let tunnel: Tunnel
        do {
            if let cluster = conf["cluster"] as? [String: Any] {
                // Resolves the Nucleus's name (blocking): fine here, before any traffic.
                tunnel = try Tunnel.joinCluster(config: try Self.clusterConfig(cluster))
            } else if let text = conf["wgQuickConfig"] as? String {
                tunnel = try Tunnel.fromWgQuick(text: text)
            } else {
                throw NEVPNError(.configurationInvalid)
            }
        } catch {
            NSLog("omni: invalid configuration: \(error)")
            completionHandler(error)
            return
        }
        let iface = tunnel.interfaceSettings()
        setTunnelNetworkSettings(Self.networkSettings(iface, remote: proto.serverAddress)) { [weak self] error in
            guard let self else { return }
            if let error {
                completionHandler(error)
                return
            }
            do {
                let engine = try TunnelEngine(tunnel: tunnel, listenPort: iface.listenPort ?? 0, mtu: Int(iface.mtu)) {
                    [weak self] packets, protocols in
                    self?.packetFlow.writePackets(packets, withProtocols: protocols)
                }
                engine.onEvent = { NSLog("omni: \($0)") }
                try engine.start()
                self.engine = engine
                if !tunnel.unresolvedEndpoints().isEmpty { engine.networkChanged() } // resolves host names
                self.readPackets()
                self.startPathMonitor()
                completionHandler(nil)
            } catch {
                completionHandler(error)
            }
        }
    }

    open override func stopTunnel(with reason: NEProviderStopReason, completionHandler: @escaping () -> Void) {
        pathMonitor?.cancel()
        pathMonitor = nil
        engine?.leaveCluster()
        engine?.stop()
        engine = nil
        completionHandler()
    }

    open override func sleep(completionHandler: @escaping () -> Void) {
        engine?.sleep()
        completionHandler()
    }

    open override func wake() {
        engine?.wake()
    }

    private func readPackets() {
        packetFlow.readPackets { [weak self] packets, _ in
            guard let self, let engine = self.engine else { return }
            engine.handleOutgoing(packets)
            self.readPackets()
        }
    }

    private func startPathMonitor() {
        let monitor = NWPathMonitor()
        monitor.pathUpdateHandler = { [weak self] path in
            guard let self else { return }
            defer { self.lastPath = path }
            guard path.status == .satisfied, let last = self.lastPath else { return }
            // Wi-Fi <-> cellular, a new network, or coming back from no network.
            let changed = last.status != .satisfied
                || last.availableInterfaces.map(\.name) != path.availableInterfaces.map(\.name)
                || last.gateways != path.gateways
            if changed { self.engine?.networkChanged() }
        }
        monitor.start(queue: DispatchQueue(label: "net.omninervous.path"))
        pathMonitor = monitor
    }

    /// A `ClusterConfig` from `providerConfiguration["cluster"]`.
    static func clusterConfig(_ c: [String: Any]) throws -> ClusterConfig {
        guard let nucleus = c["nucleus"] as? String, let key = c["nucleusKey"] as? String,
              let name = c["cluster"] as? String, let vip = c["vip"] as? String,
              let privateKey = c["privateKey"] as? String else {
            throw NEVPNError(.configurationInvalid)
        }
        return ClusterConfig(
            privateKey: privateKey, nucleusEndpoint: nucleus, nucleusPublicKey: key, cluster: name,
            secret: c["secret"] as? String ?? "", vip: vip, vip6: c["vip6"] as? String)
    }

    /// NEPacketTunnelNetworkSettings from the tunnel's interface settings.
    public static func networkSettings(_ s: InterfaceSettings, remote: String?) -> NEPacketTunnelNetworkSettings {
        let settings = NEPacketTunnelNetworkSettings(tunnelRemoteAddress: remote ?? "127.0.0.1")
        let v4 = s.addresses.filter { !$0.address.contains(":") }
        let v6 = s.addresses.filter { $0.address.contains(":") }
        let routes4 = s.routes.filter { !$0.address.contains(":") }
        let routes6 = s.routes.filter { $0.address.contains(":") }
        if !v4.isEmpty {
            let ipv4 = NEIPv4Settings(addresses: v4.map(\.address), subnetMasks: v4.map { mask4($0.prefixLength) })
            ipv4.includedRoutes = routes4.map { NEIPv4Route(destinationAddress: $0.address, subnetMask: mask4($0.prefixLength)) }
            settings.ipv4Settings = ipv4
        }
        if !v6.isEmpty {
            let ipv6 = NEIPv6Settings(addresses: v6.map(\.address), networkPrefixLengths: v6.map { NSNumber(value: $0.prefixLength) })
            ipv6.includedRoutes = routes6.map {
                NEIPv6Route(destinationAddress: $0.address, networkPrefixLength: NSNumber(value: $0.prefixLength))
            }
            settings.ipv6Settings = ipv6
        }
        if !s.dnsServers.isEmpty {
            let dns = NEDNSSettings(servers: s.dnsServers)
            dns.searchDomains = s.searchDomains
            dns.matchDomains = [""] // all queries go to the tunnel's resolvers
            settings.dnsSettings = dns
        }
        settings.mtu = NSNumber(value: s.mtu)
        return settings
    }

    static func mask4(_ prefix: UInt8) -> String {
        let bits: UInt32 = prefix == 0 ? 0 : ~UInt32(0) << (32 - UInt32(min(prefix, 32)))
        return [24, 16, 8, 0].map { String((bits >> $0) & 0xff) }.joined(separator: ".")
    }
}
