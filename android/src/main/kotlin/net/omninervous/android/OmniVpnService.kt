package net.omninervous.android

import android.content.Intent
import android.net.Network
import android.net.VpnService
import android.os.ParcelFileDescriptor
import android.util.Log
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
 * [EXTRA_CONFIG] (after `VpnService.prepare()` granted the permission).
 *
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
        val t = Tunnel.fromWgQuick(wgQuick)
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
        val fd = builder.establish() ?: throw IOException("VPN permission not granted (call VpnService.prepare)")

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
        }).also { it.start() }
        power = PowerMonitor(this, onSleep = { runner?.onSleep() }, onWake = { runner?.onWake() }).also { it.start() }
        Log.i(TAG, "tunnel up: ${settings.addresses.size} address(es), ${settings.routes.size} route(s)")
    }

    private fun onNetworkChanged(n: Network) {
        setUnderlyingNetworks(arrayOf(n))
        runner?.onNetworkChanged()
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
