package net.omninervous.android

import android.util.Log
import net.omninervous.ffi.OmniNative
import net.omninervous.uniffi.Tunnel
import net.omninervous.uniffi.TunnelEvent
import java.io.FileDescriptor
import java.io.FileInputStream
import java.io.FileOutputStream
import java.io.IOException
import java.net.InetSocketAddress
import java.nio.ByteBuffer
import java.nio.channels.ClosedChannelException
import java.nio.channels.DatagramChannel
import java.nio.channels.FileChannel
import java.util.concurrent.locks.ReentrantLock
import kotlin.concurrent.withLock

/** Receives what the tunnel reports (called on the runner's timer thread). */
fun interface TunnelListener {
    fun onEvent(event: TunnelEvent)
}

/**
 * Moves packets between the TUN device, the UDP socket and omni-core.
 *
 * Three threads, each with its own direct buffers (no per-packet allocation or copy):
 * - **tun**: reads an IP packet into `buf[IN_PLACE_OFFSET..]`, encrypts it in place
 *   (OmniNative.sendIp) and sends the datagram;
 * - **udp**: receives a datagram, decrypts it in place (OmniNative.handleDatagram)
 *   and writes the packet to the TUN device (or sends the handshake reply);
 * - **timer**: sleeps until the tunnel's next deadline (no periodic tick, so
 *   the phone sleeps), fires it, and reports events.
 *
 * The UDP socket is recreated (and protected by the [socketFactory]) when the
 * network changes; the udp thread picks the new one up.
 */
class TunnelRunner(
    private val tunnel: Tunnel,
    tunFd: FileDescriptor,
    mtu: Int,
    private val socketFactory: () -> DatagramChannel,
    private val listener: TunnelListener,
) {
    private val handle: Long = tunnel.packetHandle().toLong()
    private val tunIn: FileChannel = FileInputStream(tunFd).channel
    private val tunOut: FileChannel = FileOutputStream(tunFd).channel
    // Room for relay framing too, for tunnels in a cluster (whose transmits
    // need the datagram + 100 bytes: 1700 always suffice).
    private val packetBufferSize = maxOf(OmniNative.IN_PLACE_OFFSET + mtu + OmniNative.CLUSTER_OVERHEAD + 64, 2048)

    @Volatile private var socket: DatagramChannel = socketFactory()
    @Volatile private var running = false
    private val threads = mutableListOf<Thread>()

    /** Guards the timer's sleep; `sleepingUntil` is the deadline it waits for. */
    private val timerLock = ReentrantLock()
    private val timerWake = timerLock.newCondition()
    private var sleepingUntil = Long.MAX_VALUE

    fun start() {
        running = true
        threads += Thread(::tunLoop, "omni-tun")
        threads += Thread(::udpLoop, "omni-udp")
        threads += Thread(::timerLoop, "omni-timer")
        threads.forEach { it.isDaemon = true; it.start() }
    }

    fun stop() {
        running = false
        runCatching { socket.close() }
        runCatching { tunIn.close() }
        runCatching { tunOut.close() }
        timerLock.withLock { timerWake.signalAll() }
        threads.forEach { it.interrupt() }
        threads.forEach { runCatching { it.join(1000) } }
        threads.clear()
        OmniNative.release(handle)
    }

    /** The default network changed: new socket (protected again), fresh handshakes. */
    fun onNetworkChanged() {
        val old = socket
        socket = socketFactory()
        runCatching { old.close() } // wakes the udp thread, which picks up the new socket
        OmniNative.networkChanged(handle)
        // Host names may resolve differently on the new network; DNS blocks, so not here.
        Thread({ runCatching { tunnel.resolveEndpoints() } }, "omni-resolve").start()
        flushAndRearm(ByteBuffer.allocateDirect(packetBufferSize), ByteBuffer.allocateDirect(OmniNative.ENDPOINT_LEN))
    }

    /** The device left Doze or the screen came on: fire overdue timers, rehandshake. */
    fun onWake() {
        tunnel.onWake()
        flushAndRearm(ByteBuffer.allocateDirect(packetBufferSize), ByteBuffer.allocateDirect(OmniNative.ENDPOINT_LEN))
        timerLock.withLock { timerWake.signalAll() }
    }

    fun onSleep() = tunnel.onSleep()

    /**
     * A cluster tunnel's addresses on the new network (`ip:port` of our socket),
     * announced to the members through the Nucleus for direct paths on a shared LAN.
     */
    fun setLocalAddresses(addresses: List<java.net.InetAddress>) {
        if (tunnel.clusterStatus() == null) return
        val port = (socket.localAddress as? InetSocketAddress)?.port ?: return
        val endpoints = addresses.filter { !it.isLoopbackAddress && !it.isLinkLocalAddress }
            .take(4).map { if (it is java.net.Inet6Address) "[${it.hostAddress}]:$port" else "${it.hostAddress}:$port" }
        runCatching { tunnel.setLocalEndpoints(endpoints) }.onFailure { Log.w(TAG, "local endpoints not announced", it) }
        flushAndRearm(ByteBuffer.allocateDirect(packetBufferSize), ByteBuffer.allocateDirect(OmniNative.ENDPOINT_LEN))
    }

    /** Leaves the cluster (if the tunnel is in one) and sends the goodbye before [stop]. */
    fun leaveCluster() {
        if (tunnel.clusterStatus() == null) return
        tunnel.leaveCluster()
        flush(ByteBuffer.allocateDirect(packetBufferSize), ByteBuffer.allocateDirect(OmniNative.ENDPOINT_LEN))
    }

    private fun tunLoop() {
        val buf = ByteBuffer.allocateDirect(packetBufferSize)
        val ep = ByteBuffer.allocateDirect(OmniNative.ENDPOINT_LEN)
        while (running) {
            try {
                buf.clear().position(OmniNative.IN_PLACE_OFFSET)
                buf.limit(packetBufferSize - OmniNative.CLUSTER_OVERHEAD)
                val n = tunIn.read(buf)
                if (n <= 0) continue
                buf.limit(buf.capacity())
                val r = OmniNative.sendIp(handle, buf, n, ep)
                when {
                    OmniNative.kind(r) == OmniNative.KIND_NETWORK -> send(buf, OmniNative.length(r), ep)
                    r == 0L -> flushAndRearm(buf, ep) // queued behind a handshake: send the initiation
                    else -> Log.d(TAG, "packet from TUN dropped: error ${OmniNative.error(r)}")
                }
            } catch (e: ClosedChannelException) {
                break
            } catch (e: IOException) {
                if (running) Log.w(TAG, "TUN read failed", e)
            }
        }
    }

    private fun udpLoop() {
        val buf = ByteBuffer.allocateDirect(MAX_DATAGRAM)
        val ep = ByteBuffer.allocateDirect(OmniNative.ENDPOINT_LEN)
        while (running) {
            val s = socket
            try {
                buf.clear()
                val from = s.receive(buf) as InetSocketAddress? ?: continue
                val len = buf.position()
                OmniNative.putEndpoint(ep, from)
                val r = OmniNative.handleDatagram(handle, buf, len, ep)
                when (OmniNative.kind(r)) {
                    OmniNative.KIND_TUN -> {
                        buf.limit(OmniNative.IN_PLACE_OFFSET + OmniNative.length(r)).position(OmniNative.IN_PLACE_OFFSET)
                        tunOut.write(buf)
                    }
                    OmniNative.KIND_NETWORK -> {
                        send(buf, OmniNative.length(r), ep)
                        flushAndRearm(buf, ep)
                    }
                    else -> if (r == 0L) flushAndRearm(buf, ep) // a handshake completed: queued data may flow
                }
            } catch (e: ClosedChannelException) {
                // The socket was replaced after a network change (or we are stopping).
                if (running && s === socket) Thread.sleep(50)
            } catch (e: IOException) {
                if (running) Log.w(TAG, "UDP receive failed", e)
            }
        }
    }

    private fun timerLoop() {
        val buf = ByteBuffer.allocateDirect(packetBufferSize)
        val ep = ByteBuffer.allocateDirect(OmniNative.ENDPOINT_LEN)
        while (running) {
            val deadline = OmniNative.pollTimeout(handle)
            val now = OmniNative.now(handle)
            if (deadline in 0..now) {
                OmniNative.handleTimeout(handle)
                flush(buf, ep)
            } else {
                timerLock.withLock {
                    sleepingUntil = if (deadline < 0) Long.MAX_VALUE else deadline
                    try {
                        // Wakes at the deadline, or earlier when a packet moved it.
                        if (deadline < 0) timerWake.await() else timerWake.awaitNanos(deadline - now)
                    } catch (e: InterruptedException) {
                        return
                    } finally {
                        sleepingUntil = Long.MAX_VALUE
                    }
                }
            }
            while (true) {
                val event = tunnel.pollEvent() ?: break
                runCatching { listener.onEvent(event) }.onFailure { Log.w(TAG, "listener failed", it) }
            }
        }
    }

    /** Sends everything the tunnel wants to send, then wakes the timer if its deadline moved earlier. */
    private fun flushAndRearm(buf: ByteBuffer, ep: ByteBuffer) {
        flush(buf, ep)
        val deadline = OmniNative.pollTimeout(handle)
        timerLock.withLock {
            if (deadline >= 0 && deadline < sleepingUntil) timerWake.signalAll()
        }
    }

    private fun flush(buf: ByteBuffer, ep: ByteBuffer) {
        while (true) {
            buf.clear()
            val r = OmniNative.pollTransmit(handle, buf, ep)
            if (OmniNative.kind(r) != OmniNative.KIND_NETWORK) break
            send(buf, OmniNative.length(r), ep)
        }
    }

    private fun send(buf: ByteBuffer, len: Int, ep: ByteBuffer) {
        buf.limit(len).position(0)
        try {
            socket.send(buf, OmniNative.getEndpoint(ep))
        } catch (e: IOException) {
            // No route while the network switches: WireGuard retransmits on its own.
            Log.d(TAG, "UDP send failed: ${e.message}")
        }
    }

    companion object {
        private const val TAG = "OmniTunnel"
        private const val MAX_DATAGRAM = 65535
    }
}
