package net.omninervous.android

import android.content.Intent
import android.net.Network
import android.net.VpnService
import android.os.ParcelFileDescriptor
import android.util.Log
import net.omninervous.uniffi.ClusterConfig
import net.omninervous.uniffi.LogLevel
import net.omninervous.uniffi.LogSink
import net.omninervous.uniffi.Tunnel
import net.omninervous.uniffi.TunnelEvent
import net.omninervous.uniffi.TunnelException
import net.omninervous.uniffi.setLogSink
import java.io.IOException
import java.net.InetSocketAddress
import java.nio.channels.DatagramChannel

/**
 * The VPN host: start it with [ACTION_CONNECT] and a wg-quick config in
 * [EXTRA_CONFIG], or with [ACTION_JOIN] and a cluster ([EXTRA_NUCLEUS],
 * [EXTRA_NUCLEUS_KEY], [EXTRA_CLUSTER], [EXTRA_SECRET], [EXTRA_VIP]: what
 * `omni-daemon --nucleus … --cluster … --secret … --vip …` takes), after
 * `VpnService.prepare()` granted the permission.
 *
 * - Cluster: the peers are the cluster's members, found through the Nucleus
 *   (hole punching, relay fallback) by the same omni-core client the daemon
 *   uses; the route is the cluster's subnet; the phone's addresses on each new
 *   network are announced to members; leaving the cluster on stop tells the
 *   others at once.
 * - Builder: addresses, routes (the peers' allowed IPs), DNS servers and
 *   search domains, MTU, all from the config through the Rust parser.
 * - The UDP socket is `protect()`ed so it bypasses the VPN, again each time it
 *   is recreated (network changes).
 * - Network changes (ConnectivityManager) recreate the socket and rehandshake;
 *   Doze exit and screen-on count as wake-ups.
 * - Packets move through JNI with direct buffers ([TunnelRunner]); control
 *   (config, events, stats) goes through the uniffi Kotlin bindings.
 */
class OmniVpnService : VpnService() {
    private var tunnel: Tunnel? = null
    private var tun: ParcelFileDescriptor? = null
    private var runner: TunnelRunner? = null
    private var network: NetworkMonitor? = null
    private var power: PowerMonitor? = null
    private var listenPort: Int = 0

    /** Events for the UI (peer up/down, roaming, failed handshakes). */
    var listener: TunnelListener = TunnelListener { Log.i(TAG, "event: $it") }

    override fun onStartCommand(intent: Intent?, flags: Int, startId: Int): Int {
        if (intent?.action == ACTION_DISCONNECT) {
            stopTunnel()
            stopSelf()
            return START_NOT_STICKY
        }
        if (intent?.action == ACTION_JOIN) {
            val cluster = clusterConfig(intent) ?: run {
                Log.e(TAG, "ACTION_JOIN needs $EXTRA_NUCLEUS, $EXTRA_NUCLEUS_KEY, $EXTRA_CLUSTER and $EXTRA_VIP")
                stopSelf()
                return START_NOT_STICKY
            }
            // Creating the tunnel resolves the Nucleus's name: not on the main thread.
            Thread({
                try {
                    joinCluster(cluster)
                } catch (e: TunnelException) {
                    Log.e(TAG, "invalid cluster configuration: ${e.message}")
                    stopSelf()
                } catch (e: IOException) {
                    Log.e(TAG, "could not join the cluster", e)
                    stopTunnel()
                    stopSelf()
                }
            }, "omni-join").start()
            return START_STICKY
        }
        val config = intent?.getStringExtra(EXTRA_CONFIG) ?: return START_NOT_STICKY
        return try {
            startTunnel(config)
            START_STICKY
        } catch (e: TunnelException) {
            Log.e(TAG, "invalid configuration: ${e.message}")
            stopSelf()
            START_NOT_STICKY
        } catch (e: IOException) {
            Log.e(TAG, "could not start the tunnel", e)
            stopTunnel()
            stopSelf()
            START_NOT_STICKY
        }
    }

    @Throws(TunnelException::class, IOException::class)
    fun startTunnel(wgQuick: String) {
        stopTunnel()
        establish(Tunnel.fromWgQuick(wgQuick))
    }

    /** Joins a cluster through its Nucleus (blocking DNS for a host name: call it off the main thread). */
    @Throws(TunnelException::class, IOException::class)
    fun joinCluster(config: ClusterConfig) {
        stopTunnel()
        establish(Tunnel.joinCluster(config))
    }

    private fun clusterConfig(intent: Intent): ClusterConfig? {
        val nucleus = intent.getStringExtra(EXTRA_NUCLEUS) ?: return null
        val key = intent.getStringExtra(EXTRA_NUCLEUS_KEY) ?: return null
        val cluster = intent.getStringExtra(EXTRA_CLUSTER) ?: return null
        val vip = intent.getStringExtra(EXTRA_VIP) ?: return null
        // The device key: generated here for the example; an app keeps one in its keystore.
        val privateKey = intent.getStringExtra(EXTRA_PRIVATE_KEY) ?: net.omninervous.uniffi.generatePrivateKey()
        return ClusterConfig(
            privateKey = privateKey, nucleusEndpoint = nucleus, nucleusPublicKey = key, cluster = cluster,
            secret = intent.getStringExtra(EXTRA_SECRET) ?: "", vip = vip, vip6 = intent.getStringExtra(EXTRA_VIP6),
        )
    }

    @Throws(IOException::class)
    private fun establish(t: Tunnel) {
        val settings = t.interfaceSettings()
        listenPort = settings.listenPort?.toInt() ?: 0

        val builder = Builder()
            .setSession("OmniNervous")
            .setMtu(settings.mtu.toInt())
            .setBlocking(true)
        settings.addresses.forEach { builder.addAddress(it.address, it.prefixLength.toInt()) }
        settings.routes.forEach { builder.addRoute(it.address, it.prefixLength.toInt()) }
        settings.dnsServers.forEach { builder.addDnsServer(it) }
        settings.searchDomains.forEach { builder.addSearchDomain(it) }
        val fd = builder.establish() ?: run {
            t.destroy()
            throw IOException("VPN permission not granted (call VpnService.prepare)")
        }

        tunnel = t
        tun = fd
        // Resolve host-name endpoints off the main thread before traffic flows.
        if (t.unresolvedEndpoints().isNotEmpty()) {
            Thread({ t.resolveEndpoints() }, "omni-resolve").start()
        }
        val r = TunnelRunner(t, fd.fileDescriptor, settings.mtu.toInt(), ::openProtectedSocket) { listener.onEvent(it) }
        runner = r
        r.start()

        network = NetworkMonitor(this, onChanged = { n -> onNetworkChanged(n) }, onLost = {
            setUnderlyingNetworks(null)
        }).also {
            it.start()
            if (t.clusterStatus() != null) r.setLocalAddresses(it.activeAddresses())
        }
        power = PowerMonitor(this, onSleep = { runner?.onSleep() }, onWake = { runner?.onWake() }).also { it.start() }
        Log.i(TAG, "tunnel up: ${settings.addresses.size} address(es), ${settings.routes.size} route(s)")
    }

    private fun onNetworkChanged(n: Network) {
        setUnderlyingNetworks(arrayOf(n))
        runner?.onNetworkChanged()
        network?.let { runner?.setLocalAddresses(it.addresses(n)) }
    }

    /** A UDP socket that bypasses the VPN. Called again for every new socket. */
    private fun openProtectedSocket(): DatagramChannel {
        val channel = DatagramChannel.open()
        try {
            channel.socket().reuseAddress = true
            channel.bind(InetSocketAddress(listenPort))
            if (!protect(channel.socket())) throw IOException("protect() refused the UDP socket")
            // Keep the port across recreations so peers' view of us changes as little as possible.
            if (listenPort == 0) listenPort = channel.socket().localPort
            return channel
        } catch (e: IOException) {
            channel.close()
            throw e
        }
    }

    fun stopTunnel() {
        power?.stop()
        network?.stop()
        // In a cluster: the others drop us at once instead of after a timeout.
        runner?.let { r -> runCatching { r.leaveCluster() }.onFailure { Log.w(TAG, "leave failed", it) } }
        runner?.stop()
        runCatching { tun?.close() }
        tunnel?.destroy()
        power = null
        network = null
        runner = null
        tun = null
        tunnel = null
    }

    override fun onRevoke() {
        // Another VPN took over or the user revoked the permission.
        stopTunnel()
        super.onRevoke()
    }

    override fun onDestroy() {
        stopTunnel()
        super.onDestroy()
    }

    companion object {
        const val ACTION_CONNECT = "net.omninervous.android.CONNECT"
        const val ACTION_DISCONNECT = "net.omninervous.android.DISCONNECT"
        const val EXTRA_CONFIG = "net.omninervous.android.CONFIG"
        const val ACTION_JOIN = "net.omninervous.android.JOIN"
        /** `host:port` of the Nucleus. */
        const val EXTRA_NUCLEUS = "net.omninervous.android.NUCLEUS"
        /** The Nucleus's public key (base64, printed by `omni-daemon --mode nucleus`). */
        const val EXTRA_NUCLEUS_KEY = "net.omninervous.android.NUCLEUS_KEY"
        const val EXTRA_CLUSTER = "net.omninervous.android.CLUSTER"
        const val EXTRA_SECRET = "net.omninervous.android.SECRET"
        /** Our VIP with the cluster's prefix, e.g. `10.200.0.7/24`. */
        const val EXTRA_VIP = "net.omninervous.android.VIP"
        /** Optional: an IPv6 VIP with its prefix for a dual-stack member (`EXTRA_VIP` is then IPv4). */
        const val EXTRA_VIP6 = "net.omninervous.android.VIP6"
        /** Optional: the device's private key (base64); a fresh one otherwise. */
        const val EXTRA_PRIVATE_KEY = "net.omninervous.android.PRIVATE_KEY"
        private const val TAG = "OmniVpnService"

        init {
            // One library for both paths: JNI (OmniNative) and JNA (uniffi) share it.
            System.loadLibrary("omni_ffi")
            setLogSink(object : LogSink {
                override fun log(level: LogLevel, target: String, message: String) {
                    when (level) {
                        LogLevel.ERROR -> Log.e(target, message)
                        LogLevel.WARN -> Log.w(target, message)
                        LogLevel.INFO -> Log.i(target, message)
                        else -> Log.d(target, message)
                    }
                }
            }, LogLevel.INFO)
        }
    }
}
