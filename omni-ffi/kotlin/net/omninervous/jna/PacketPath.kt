// The packet path of omni-ffi for Kotlin on the JVM through JNA, hand-written
// (not generated): the C API's in-place packet calls (bindings/c/omni.h) bound
// with JNA's direct mapping.
//
// Why not the generated uniffi Kotlin for packets: uniffi's Kotlin glue builds
// JNA Structures (call status, RustBuffers) by reflection on every call, tens of
// microseconds each on a server JVM, several times the cost of encrypting a
// packet. Direct mapping (`Native.register`) makes a call one JNI transition
// with primitive and buffer arguments, and the buffers here are direct
// ByteBuffers, so nothing is copied or allocated per packet. Configuration,
// events and stats stay on the uniffi `Tunnel`; `Tunnel.packetHandle()` hands
// the same tunnel to this class. (Android's packet path is JNI:
// net.omninervous.ffi.OmniNative; this class is for JVM hosts that use JNA.)
package net.omninervous.jna

import com.sun.jna.Native
import com.sun.jna.NativeLibrary
import com.sun.jna.Pointer
import net.omninervous.uniffi.Tunnel
import java.lang.ref.Reference
import java.net.InetAddress
import java.net.InetSocketAddress
import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * The C API's packet functions, bound by [PacketPath.bind] with JNA direct
 * mapping. Every argument is a Java primitive: pointers travel as their
 * addresses in a `long` (64-bit hosts), which keeps JNA on its fastest path
 * (no per-call Pointer or Buffer conversion). size_t and uint64_t are longs,
 * enums are C ints.
 */
internal object OmniC {
    @JvmStatic external fun omni_tunnel_from_packet_handle(handle: Long, out: Long): Int
    @JvmStatic external fun omni_tunnel_free(t: Long)
    @JvmStatic external fun omni_tunnel_send_ip_in_place(t: Long, nowNs: Long, buf: Long, cap: Long, len: Long, result: Long): Int
    @JvmStatic external fun omni_tunnel_handle_datagram_in_place(
        t: Long, nowNs: Long, from: Long, buf: Long, len: Long, result: Long): Int
    @JvmStatic external fun omni_tunnel_send_ip_batch_in_place(
        t: Long, nowNs: Long, buf: Long, stride: Long, count: Long, lens: Long, results: Long, codes: Long): Int
    @JvmStatic external fun omni_tunnel_handle_datagram_batch_in_place(
        t: Long, nowNs: Long, from: Long, buf: Long, stride: Long, count: Long, lens: Long, results: Long, codes: Long): Int
    @JvmStatic external fun omni_tunnel_poll_transmit(t: Long, nowNs: Long, out: Long, cap: Long, result: Long): Int
    @JvmStatic external fun omni_tunnel_poll_timeout(t: Long, deadlineNs: Long): Int
    @JvmStatic external fun omni_tunnel_handle_timeout(t: Long, nowNs: Long): Int
}

/** The native address of a direct buffer (it never moves while the buffer lives). */
internal fun addressOf(b: ByteBuffer): Long {
    require(b.isDirect) { "a direct ByteBuffer is needed" }
    return Pointer.nativeValue(Native.getDirectBufferPointer(b))
}

/**
 * Moves packets through a tunnel created with the uniffi bindings, in place on
 * direct ByteBuffers (their position and limit are ignored: data starts at
 * index 0).
 *
 * - Outgoing: put the IP packet at [IN_PLACE_OFFSET] of a buffer with room for
 *   `IN_PLACE_OFFSET + len + OVERHEAD` bytes (in a cluster: `CLUSTER_OVERHEAD`),
 *   call [sendIp]; the datagram is at `0 until length` for [endpoint].
 * - Incoming: receive the datagram at index 0, call [handleDatagram] with the
 *   sender's address (an [endpointBuffer]); a packet ends up at
 *   `offset until offset + length` ([KIND_TUN]) or a reply at `0 until length`
 *   ([KIND_NETWORK]).
 * - After every call, drain [pollTransmit] until it gives [KIND_NONE].
 *
 * Each call returns [OK] or a negative result code (the C API's `OmniResult`);
 * [kind], [offset], [length], [endpoint] and [needed] describe its outcome
 * until the next call on this object.
 *
 * Batches ([sendIpBatch], [handleDatagramBatch]) move up to `maxBatch`
 * packets per call: a JNA call costs ~0.1 µs plus ~45 ns per argument here,
 * several percent of a 1420-byte packet's crypto when paid per packet, and
 * next to nothing when paid per batch. Slot `i` of a batch buffer is
 * `[i * stride, (i + 1) * stride)`, laid out like a single call's buffer. One thread per `PacketPath`: make one
 * per thread (each from its own `packetHandle()`); the tunnel itself may be
 * shared, its calls serialize inside.
 */
class PacketPath private constructor(private var handle: Long, val maxBatch: Int) : AutoCloseable {
    // struct OmniOutput { int kind; size_t offset; size_t len; OmniEndpoint endpoint; size_t needed; }
    private val out: ByteBuffer = ByteBuffer.allocateDirect(OUTPUT_SIZE).order(ByteOrder.nativeOrder())
    private val outAddress = addressOf(out)
    private val deadline: ByteBuffer = ByteBuffer.allocateDirect(8).order(ByteOrder.nativeOrder())
    private val deadlineAddress = addressOf(deadline)

    // A batch's lengths (uint32), outcomes (OmniOutput) and result codes (int).
    private val lens: ByteBuffer = ByteBuffer.allocateDirect(4 * maxBatch).order(ByteOrder.nativeOrder())
    private val lensAddress = addressOf(lens)
    private val results: ByteBuffer = ByteBuffer.allocateDirect(OUTPUT_SIZE * maxBatch).order(ByteOrder.nativeOrder())
    private val resultsAddress = addressOf(results)
    private val codes: ByteBuffer = ByteBuffer.allocateDirect(4 * maxBatch).order(ByteOrder.nativeOrder())
    private val codesAddress = addressOf(codes)

    // The addresses of the last buffers used: a host reuses the same few
    // buffers, so the lookup (a JNI call) happens once per buffer, not per packet.
    private var lastBuf: ByteBuffer? = null
    private var lastBufAddress = 0L
    private var lastFrom: ByteBuffer? = null
    private var lastFromAddress = 0L

    private fun bufAddress(b: ByteBuffer): Long {
        if (b !== lastBuf) {
            lastBufAddress = addressOf(b)
            lastBuf = b
        }
        return lastBufAddress
    }

    private fun fromAddress(b: ByteBuffer): Long {
        if (b !== lastFrom) {
            require(b.capacity() >= ENDPOINT_SIZE) { "from must hold $ENDPOINT_SIZE bytes" }
            lastFromAddress = addressOf(b)
            lastFrom = b
        }
        return lastFromAddress
    }

    /** What the last call produced: [KIND_NONE], [KIND_TUN] or [KIND_NETWORK]. */
    val kind: Int get() = out.getInt(0)
    /** Where the output starts in the buffer ([IN_PLACE_OFFSET] for a packet, 0 for a datagram). */
    val offset: Int get() = out.getLong(8).toInt()
    /** The output's length in bytes. */
    val length: Int get() = out.getLong(16).toInt()
    /** With [ERR_BUFFER_TOO_SMALL]: the buffer size the call needs. */
    val needed: Long get() = out.getLong(48)

    /** With [KIND_NETWORK]: where to send the datagram. */
    fun endpoint(): InetSocketAddress? = readEndpoint(out, 24)

    private fun live(): Long = if (handle != 0L) handle else throw IllegalStateException("PacketPath is closed")

    // reachabilityFence: a buffer the caller drops right after the call must
    // not be collected (and its memory freed) while native code works in it.

    /** Encrypts the IP packet at `buf[IN_PLACE_OFFSET until IN_PLACE_OFFSET + len]` in place. */
    fun sendIp(buf: ByteBuffer, len: Int, nowNs: Long = NOW): Int {
        require(len >= 0) { "negative length" }
        val r = OmniC.omni_tunnel_send_ip_in_place(live(), nowNs, bufAddress(buf), buf.capacity().toLong(), len.toLong(), outAddress)
        Reference.reachabilityFence(buf)
        return r
    }

    /**
     * Processes the datagram at `buf[0 until len]` received from [from] (an
     * [endpointBuffer]). Invalid datagrams give [ERR_DROPPED], never an exception.
     */
    fun handleDatagram(from: ByteBuffer, buf: ByteBuffer, len: Int, nowNs: Long = NOW): Int {
        require(len in 0..buf.capacity()) { "len $len outside the buffer (${buf.capacity()} bytes)" }
        val r = OmniC.omni_tunnel_handle_datagram_in_place(live(), nowNs, fromAddress(from), bufAddress(buf), len.toLong(), outAddress)
        Reference.reachabilityFence(buf)
        Reference.reachabilityFence(from)
        return r
    }

    /** The next datagram the tunnel wants sent (handshakes, keepalives, queued packets) into `buf`. */
    fun pollTransmit(buf: ByteBuffer, nowNs: Long = NOW): Int {
        val r = OmniC.omni_tunnel_poll_transmit(live(), nowNs, bufAddress(buf), buf.capacity().toLong(), outAddress)
        Reference.reachabilityFence(buf)
        return r
    }

    /** Sets the length of slot [i] of the next batch call (packet length, or datagram length). */
    fun setBatchLength(i: Int, len: Int) {
        require(len >= 0) { "negative length" }
        lens.putInt(4 * i, len)
    }

    /** Slot [i]'s result code in the last batch call ([OK] or an error for that packet only). */
    fun batchCode(i: Int): Int = codes.getInt(4 * i)
    /** Slot [i]'s outcome in the last batch call: [KIND_NONE], [KIND_TUN] or [KIND_NETWORK]. */
    fun batchKind(i: Int): Int = results.getInt(OUTPUT_SIZE * i)
    /** Where slot [i]'s output starts, relative to the slot. */
    fun batchOffset(i: Int): Int = results.getLong(OUTPUT_SIZE * i + 8).toInt()
    /** Slot [i]'s output length. */
    fun batchLength(i: Int): Int = results.getLong(OUTPUT_SIZE * i + 16).toInt()
    /** With [KIND_NETWORK]: where slot [i]'s datagram goes. */
    fun batchEndpoint(i: Int): InetSocketAddress? = readEndpoint(results, OUTPUT_SIZE * i + 24)

    private fun checkBatch(buf: ByteBuffer, stride: Int, count: Int) {
        require(count in 0..maxBatch) { "count $count outside 0..$maxBatch" }
        require(stride.toLong() * count <= buf.capacity()) { "$count slots of $stride bytes exceed the buffer" }
    }

    /**
     * Encrypts [count] packets in one call: slot `i` holds its packet at
     * [IN_PLACE_OFFSET], [setBatchLength] bytes; its datagram is written to the
     * slot's start. Returns [OK] once the arguments are valid; each slot's own
     * outcome is in [batchCode], [batchKind], [batchLength], [batchEndpoint].
     */
    fun sendIpBatch(buf: ByteBuffer, stride: Int, count: Int, nowNs: Long = NOW): Int {
        checkBatch(buf, stride, count)
        val r = OmniC.omni_tunnel_send_ip_batch_in_place(
            live(), nowNs, bufAddress(buf), stride.toLong(), count.toLong(), lensAddress, resultsAddress, codesAddress)
        Reference.reachabilityFence(buf)
        return r
    }

    /**
     * Processes [count] datagrams in one call: slot `i` holds [setBatchLength]
     * bytes received from the `i`-th endpoint of [from] (an [endpointsBuffer]).
     * A packet ends up at the slot's [batchOffset] ([KIND_TUN]), a reply at
     * its start ([KIND_NETWORK]).
     */
    fun handleDatagramBatch(from: ByteBuffer, buf: ByteBuffer, stride: Int, count: Int, nowNs: Long = NOW): Int {
        checkBatch(buf, stride, count)
        require(from.capacity() >= ENDPOINT_SIZE * count) { "from holds fewer than $count endpoints" }
        val r = OmniC.omni_tunnel_handle_datagram_batch_in_place(
            live(), nowNs, fromAddress(from), bufAddress(buf), stride.toLong(), count.toLong(), lensAddress, resultsAddress, codesAddress)
        Reference.reachabilityFence(buf)
        Reference.reachabilityFence(from)
        return r
    }

    /** Nanoseconds (tunnel clock) of the next deadline, `null` if none: sleep until then. */
    fun pollTimeout(): Long? {
        val r = OmniC.omni_tunnel_poll_timeout(live(), deadlineAddress)
        check(r == OK) { "omni_tunnel_poll_timeout: $r" }
        return deadline.getLong(0).takeIf { it != -1L }
    }

    /** Timers are due: run them, then drain [pollTransmit]. */
    fun handleTimeout(nowNs: Long = NOW): Int = OmniC.omni_tunnel_handle_timeout(live(), nowNs)

    /** Drops this path's reference to the tunnel (the uniffi object keeps its own). */
    override fun close() {
        if (handle != 0L) OmniC.omni_tunnel_free(handle)
        handle = 0L
        lastBuf = null
        lastFrom = null
    }

    companion object {
        const val OK = 0
        const val ERR_NULL_ARGUMENT = -1
        const val ERR_INVALID_ARGUMENT = -2
        const val ERR_BUFFER_TOO_SMALL = -4
        const val ERR_NO_ROUTE = -5
        const val ERR_NOT_IP = -6
        const val ERR_NO_ENDPOINT = -7
        const val ERR_QUEUE_FULL = -8
        const val ERR_DROPPED = -10

        const val KIND_NONE = 0
        const val KIND_TUN = 1
        const val KIND_NETWORK = 2

        /** `OMNI_IN_PLACE_OFFSET`: where the IP packet sits in packet buffers. */
        const val IN_PLACE_OFFSET = 16
        /** `OMNI_OVERHEAD`: room a buffer needs after the packet (padding and tag). */
        const val OVERHEAD = 47
        /** The same for a tunnel in a cluster (relay framing); covers [OVERHEAD]. */
        const val CLUSTER_OVERHEAD = 160
        /** `OMNI_NOW`: use the tunnel's clock (monotonic, counting sleep). */
        const val NOW = -1L // u64::MAX
        /** `sizeof(OmniEndpoint)`. */
        const val ENDPOINT_SIZE = 20
        private const val OUTPUT_SIZE = 56

        @Volatile private var bound: String? = null

        /**
         * Binds the C functions to the library at [library] (a path, or a name
         * on `jna.library.path`) once per process. The uniffi bindings load
         * the same library; both must be the same file.
         */
        @Synchronized
        fun bind(library: String = "omni_ffi") {
            val was = bound
            if (was != null) {
                require(was == library) { "PacketPath is bound to $was, not $library" }
                return
            }
            Native.register(OmniC::class.java, NativeLibrary.getInstance(library))
            bound = library
        }

        /** A packet path for [tunnel] (binding the library first if needed), batches of up to [maxBatch]. */
        fun of(tunnel: Tunnel, library: String = "omni_ffi", maxBatch: Int = 64): PacketPath {
            require(maxBatch >= 1) { "maxBatch must be at least 1" }
            bind(library)
            val ref = ByteBuffer.allocateDirect(8).order(ByteOrder.nativeOrder())
            val r = OmniC.omni_tunnel_from_packet_handle(tunnel.packetHandle().toLong(), addressOf(ref))
            val t = ref.getLong(0)
            check(r == OK && t != 0L) { "omni_tunnel_from_packet_handle: $r" }
            return PacketPath(t, maxBatch)
        }

        /** A direct buffer holding [address] as a C `OmniEndpoint`, for [handleDatagram]. */
        fun endpointBuffer(address: InetSocketAddress): ByteBuffer = endpointsBuffer(1).also { putEndpoint(it, 0, address) }

        /** A direct buffer for [count] endpoints (a batch's senders), filled with [putEndpoint]. */
        fun endpointsBuffer(count: Int): ByteBuffer =
            ByteBuffer.allocateDirect(ENDPOINT_SIZE * count).order(ByteOrder.nativeOrder())

        /** Writes [address] as endpoint [i] of [b]. */
        fun putEndpoint(b: ByteBuffer, i: Int, address: InetSocketAddress) {
            val at = ENDPOINT_SIZE * i
            val ip = address.address.address
            for (k in 0 until ENDPOINT_SIZE) b.put(at + k, 0)
            b.put(at, if (ip.size == 4) 4 else 6)
            b.putShort(at + 2, address.port.toShort())
            for (k in ip.indices) b.put(at + 4 + k, ip[k])
        }

        private fun readEndpoint(b: ByteBuffer, at: Int): InetSocketAddress? {
            val n = when (b.get(at).toInt()) { 4 -> 4; 6 -> 16; else -> return null }
            val ip = ByteArray(n) { b.get(at + 4 + it) }
            val port = b.getShort(at + 2).toInt() and 0xffff
            return InetSocketAddress(InetAddress.getByAddress(ip), port)
        }
    }
}
