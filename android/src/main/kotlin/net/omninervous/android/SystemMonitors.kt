package net.omninervous.android

import android.content.BroadcastReceiver
import android.content.Context
import android.content.Intent
import android.content.IntentFilter
import android.net.ConnectivityManager
import android.net.Network
import android.os.PowerManager
import android.util.Log

/**
 * Follows the default network (Wi-Fi ↔ cellular, reconnects). A change calls
 * [onChanged] with the new network, once it is usable; [onLost] when none is left.
 */
class NetworkMonitor(
    context: Context,
    private val onChanged: (Network) -> Unit,
    private val onLost: () -> Unit,
) {
    private val connectivity = context.getSystemService(Context.CONNECTIVITY_SERVICE) as ConnectivityManager
    @Volatile private var current: Network? = null

    private val callback = object : ConnectivityManager.NetworkCallback() {
        override fun onAvailable(network: Network) {
            val previous = current
            current = network
            // The first callback reports the network the tunnel started on.
            if (previous != null && previous != network) {
                Log.i(TAG, "default network changed")
                onChanged(network)
            }
        }

        override fun onLost(network: Network) {
            if (network == current) {
                current = null
                onLost()
            }
        }
    }

    fun start() = connectivity.registerDefaultNetworkCallback(callback)

    /** The addresses of a network's interface (announced to cluster members as LAN candidates). */
    fun addresses(network: Network): List<java.net.InetAddress> =
        connectivity.getLinkProperties(network)?.linkAddresses?.map { it.address } ?: emptyList()

    fun activeAddresses(): List<java.net.InetAddress> = connectivity.activeNetwork?.let(::addresses) ?: emptyList()

    fun stop() = runCatching { connectivity.unregisterNetworkCallback(callback) }

    companion object {
        private const val TAG = "OmniNetwork"
    }
}

/**
 * Doze and screen state. Leaving Doze (or the screen turning on) is a wake-up:
 * timers that were due while the CPU slept fire at once, and NAT mappings are
 * refreshed with a handshake. No wake lock, no alarm: the tunnel sleeps with the phone.
 */
class PowerMonitor(
    private val context: Context,
    private val onSleep: () -> Unit,
    private val onWake: () -> Unit,
) {
    private val power = context.getSystemService(Context.POWER_SERVICE) as PowerManager

    private val receiver = object : BroadcastReceiver() {
        override fun onReceive(context: Context, intent: Intent) {
            when (intent.action) {
                PowerManager.ACTION_DEVICE_IDLE_MODE_CHANGED ->
                    if (power.isDeviceIdleMode) onSleep() else onWake()
                Intent.ACTION_SCREEN_ON -> onWake()
                Intent.ACTION_SCREEN_OFF -> onSleep()
            }
        }
    }

    fun start() {
        val filter = IntentFilter(PowerManager.ACTION_DEVICE_IDLE_MODE_CHANGED)
        filter.addAction(Intent.ACTION_SCREEN_ON)
        filter.addAction(Intent.ACTION_SCREEN_OFF)
        context.registerReceiver(receiver, filter)
    }

    fun stop() = runCatching { context.unregisterReceiver(receiver) }
}
