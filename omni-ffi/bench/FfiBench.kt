// Per-packet cost of omni-ffi from the JVM, the workload of
// omni-ffi/examples/ffi_overhead.rs: one "packet" is a 1420-byte IPv4 packet
// encrypted by tunnel A and decrypted by tunnel B (both directions of the data
// path). Columns:
//
//   uniffi/JNA, per packet : a.sendIp(ByteArray) + b.handleDatagram(String, ByteArray),
//                            the generated Kotlin bindings as an app calls them
//   uniffi/JNA, batch of N : a.sendIpBatch(List) + b.handleDatagramBatch(List),
//                            N packets per call (what iOS' readPackets hands over)
//   JNI, direct ByteBuffer : OmniNative.sendIp + OmniNative.handleDatagram in place
//                            on one direct buffer (Android's packet path)
//   JNA direct mapping     : the C API (omni_tunnel_send_ip_in_place +
//                            omni_tunnel_handle_datagram_in_place) bound from
//                            Kotlin with JNA's direct mapping (Native.register),
//                            in place on native memory: Kotlin/JNA without
//                            uniffi's generated (interface-mapped) glue
//
// plus where the uniffi time goes: the cost of a uniffi call that moves no
// bytes (Tunnel.nowNanos) and of each half alone.
//
// Rounds alternate between the columns; the best round of each is reported
// (as in the Rust example). The direct omni-core figures come from the Rust
// example run by omni-ffi/bench/ffi-overhead.sh just before, passed as
// -Dbench.direct.ns / -Dbench.direct.inplace.ns, and the ratios are printed
// against them. Run it through that script.
package net.omninervous.bench

import com.sun.jna.Memory
import com.sun.jna.Native
import com.sun.jna.NativeLibrary
import com.sun.jna.Pointer
import com.sun.jna.ptr.PointerByReference
import net.omninervous.ffi.OmniNative
import net.omninervous.uniffi.*
import java.nio.ByteBuffer

const val PACKET = 1420
val PACKETS = System.getProperty("bench.packets", "20000").toInt()
val ROUNDS = System.getProperty("bench.rounds", "7").toInt()
val BATCH = System.getProperty("bench.batch", "32").toInt()

fun ipv4(len: Int): ByteArray {
    val p = ByteArray(len) { 0x5a }
    p[0] = 0x45
    p[1] = 0
    p[2] = (len shr 8).toByte()
    p[3] = len.toByte()
    p[8] = 64
    p[9] = 17
    byteArrayOf(10, 0, 0, 1).copyInto(p, 12)
    byteArrayOf(10, 0, 0, 2).copyInto(p, 16)
    return p
}

fun fail(what: String): Nothing {
    System.err.println("bench failed: $what")
    kotlin.system.exitProcess(1)
}

class Pair2(val a: Tunnel, val b: Tunnel, val fromA: String)

fun setup(): Pair2 {
    val ka = generatePrivateKey()
    val kb = generatePrivateKey()
    val pa = publicKeyFromPrivate(ka)
    val pb = publicKeyFromPrivate(kb)
    val a = Tunnel.fromWgQuick(
        "[Interface]\nPrivateKey = $ka\n[Peer]\nPublicKey = $pb\nAllowedIPs = 10.0.0.2/32\nEndpoint = 127.0.0.1:2000\n")
    val b = Tunnel.fromWgQuick("[Interface]\nPrivateKey = $kb\n[Peer]\nPublicKey = $pa\nAllowedIPs = 10.0.0.1/32\n")
    val fromA = "127.0.0.1:1000"
    if (a.sendIp(ipv4(PACKET)) != null) fail("first packet not queued")
    val init = a.drainTransmits().single()
    val reply = b.handleDatagram(fromA, init.data) as? DatagramOutcome.Reply ?: fail("no handshake response")
    a.handleDatagram("127.0.0.1:2000", reply.datagram)
    for (d in a.drainTransmits()) b.handleDatagram(fromA, d.data)
    return Pair2(a, b, fromA)
}

/** ns per packet over one round of [PACKETS] packets. */
inline fun timed(body: () -> Unit): Double {
    val start = System.nanoTime()
    body()
    return (System.nanoTime() - start).toDouble() / PACKETS
}

fun uniffiPerPacket(p: Pair2, pkt: ByteArray): Double = timed {
    for (i in 0 until PACKETS) {
        val d = p.a.sendIp(pkt) ?: fail("sendIp queued")
        val r = p.b.handleDatagram(p.fromA, d.data)
        if (r !is DatagramOutcome.Packet || r.packet.size != PACKET) fail("uniffi: not decrypted: $r")
    }
}

fun uniffiBatch(p: Pair2, pkt: ByteArray): Double {
    val batch = List(BATCH) { pkt }
    val rounds = PACKETS / BATCH
    val ns = timed {
        for (i in 0 until rounds) {
            val ds = p.a.sendIpBatch(batch)
            if (ds.size != BATCH) fail("sendIpBatch gave ${ds.size} datagrams")
            val rs = p.b.handleDatagramBatch(ds.map { Datagram(p.fromA, it.data) })
            for (r in rs) if (r !is DatagramOutcome.Packet || r.packet.size != PACKET) fail("batch: not decrypted: $r")
        }
    }
    return ns * PACKETS / (rounds * BATCH)
}

fun uniffiSendOnly(p: Pair2, pkt: ByteArray): Double = timed {
    for (i in 0 until PACKETS) p.a.sendIp(pkt) ?: fail("sendIp queued")
}

fun uniffiEmptyCall(p: Pair2): Double {
    var sum = 0uL
    val ns = timed { for (i in 0 until PACKETS) sum += p.a.nowNanos() }
    if (sum == 0uL) fail("clock")
    return ns
}

class Jni(p: Pair2) {
    val ha = p.a.packetHandle().toLong()
    val hb = p.b.packetHandle().toLong()
    val buf: ByteBuffer = ByteBuffer.allocateDirect(OmniNative.IN_PLACE_OFFSET + PACKET + OmniNative.OVERHEAD + 64)
    val epA: ByteBuffer = ByteBuffer.allocateDirect(OmniNative.ENDPOINT_LEN)
    val epB: ByteBuffer = ByteBuffer.allocateDirect(OmniNative.ENDPOINT_LEN)

    init {
        val pkt = ipv4(PACKET)
        for (i in pkt.indices) buf.put(OmniNative.IN_PLACE_OFFSET + i, pkt[i])
        OmniNative.putEndpoint(epB, java.net.InetSocketAddress("127.0.0.1", 1000))
    }

    // One buffer, ping-pong in place: A encrypts buf[16..] into buf[0..], B
    // decrypts it back to buf[16..], which is A's next input. No copies, as on
    // a phone where the TUN read and the UDP receive fill the buffer.
    fun round(): Double = timed {
        for (i in 0 until PACKETS) {
            val r = OmniNative.sendIp(ha, buf, PACKET, epA)
            if (OmniNative.kind(r) != OmniNative.KIND_NETWORK) fail("JNI sendIp: $r")
            val q = OmniNative.handleDatagram(hb, buf, OmniNative.length(r), epB)
            if (OmniNative.kind(q) != OmniNative.KIND_TUN || OmniNative.length(q) != PACKET) fail("JNI handleDatagram: $q")
        }
    }

    fun intact(): Boolean {
        val pkt = ipv4(PACKET)
        return pkt.indices.all { buf.get(OmniNative.IN_PLACE_OFFSET + it) == pkt[it] }
    }

    fun release() {
        OmniNative.release(ha)
        OmniNative.release(hb)
    }
}

/**
 * The packet calls of the C API (bindings/c/omni.h) bound with JNA's direct
 * mapping: `Native.register` binds these `external` functions to the library's
 * symbols, so a call is one JNI transition with primitive and pointer
 * arguments (no reflection, no Structure objects). Enums are C ints, size_t
 * and uint64_t are Java longs (64-bit Linux).
 */
object OmniC {
    const val RESULT_OK = 0
    const val KIND_TUN = 1
    const val KIND_NETWORK = 2
    const val IN_PLACE_OFFSET = 16 // OMNI_IN_PLACE_OFFSET
    const val OVERHEAD = 47 // OMNI_OVERHEAD

    // struct OmniOutput { int kind; size_t offset; size_t len; OmniEndpoint endpoint; size_t needed; }
    const val OUTPUT_SIZE = 56
    const val OUTPUT_KIND = 0L
    const val OUTPUT_LEN = 16L

    // struct OmniEndpoint { uint8_t family; uint16_t port; uint8_t addr[16]; }
    const val ENDPOINT_SIZE = 20

    fun bind(path: String) = Native.register(OmniC::class.java, NativeLibrary.getInstance(path))

    @JvmStatic external fun omni_tunnel_from_packet_handle(handle: Long, out: PointerByReference): Int
    @JvmStatic external fun omni_tunnel_free(t: Pointer)
    @JvmStatic external fun omni_tunnel_send_ip_in_place(t: Pointer, nowNs: Long, buf: Pointer, cap: Long, len: Long, result: Pointer): Int
    @JvmStatic external fun omni_tunnel_handle_datagram_in_place(
        t: Pointer, nowNs: Long, from: Pointer, buf: Pointer, len: Long, result: Pointer): Int
}

class JnaDirect(p: Pair2, library: String) {
    val ta: Pointer
    val tb: Pointer
    val cap = OmniC.IN_PLACE_OFFSET + PACKET + OmniC.OVERHEAD + 64
    val buf = Memory(cap.toLong())
    val out = Memory(OmniC.OUTPUT_SIZE.toLong())
    val from = Memory(OmniC.ENDPOINT_SIZE.toLong())

    init {
        OmniC.bind(library)
        ta = tunnel(p.a)
        tb = tunnel(p.b)
        buf.write(OmniC.IN_PLACE_OFFSET.toLong(), ipv4(PACKET), 0, PACKET)
        // A's address as B sees it: 127.0.0.1:1000 (the endpoint B learnt in setup()).
        from.clear(OmniC.ENDPOINT_SIZE.toLong())
        from.setByte(0, 4)
        from.setShort(2, 1000)
        from.write(4, byteArrayOf(127, 0, 0, 1), 0, 4)
    }

    private fun tunnel(t: Tunnel): Pointer {
        val ref = PointerByReference()
        val r = OmniC.omni_tunnel_from_packet_handle(t.packetHandle().toLong(), ref)
        if (r != OmniC.RESULT_OK) fail("omni_tunnel_from_packet_handle: $r")
        return ref.value
    }

    // Same ping-pong as the JNI column: A encrypts buf[16..] into buf[0..],
    // B decrypts it back to buf[16..].
    fun round(): Double = timed {
        for (i in 0 until PACKETS) {
            var r = OmniC.omni_tunnel_send_ip_in_place(ta, 0, buf, cap.toLong(), PACKET.toLong(), out)
            if (r != OmniC.RESULT_OK || out.getInt(OmniC.OUTPUT_KIND) != OmniC.KIND_NETWORK) fail("JNA sendIp: $r")
            val len = out.getLong(OmniC.OUTPUT_LEN)
            r = OmniC.omni_tunnel_handle_datagram_in_place(tb, 0, from, buf, len, out)
            if (r != OmniC.RESULT_OK || out.getInt(OmniC.OUTPUT_KIND) != OmniC.KIND_TUN ||
                out.getLong(OmniC.OUTPUT_LEN) != PACKET.toLong()) fail("JNA handleDatagram: $r")
        }
    }

    fun intact(): Boolean {
        val pkt = ipv4(PACKET)
        return buf.getByteArray(OmniC.IN_PLACE_OFFSET.toLong(), PACKET).contentEquals(pkt)
    }

    fun release() {
        OmniC.omni_tunnel_free(ta)
        OmniC.omni_tunnel_free(tb)
    }
}

fun main() {
    val library = System.getProperty("omni.ffi.library") ?: fail("-Domni.ffi.library=PATH not set")
    System.load(library)
    val direct = System.getProperty("bench.direct.ns")?.toDouble()
    val directInPlace = System.getProperty("bench.direct.inplace.ns")?.toDouble()
    val p = setup()
    val pkt = ipv4(PACKET)
    val jni = Jni(p)
    val jna = JnaDirect(p, library)
    val best = DoubleArray(6) { Double.MAX_VALUE }
    // Warm-up (JIT), then alternate.
    uniffiPerPacket(p, pkt); uniffiBatch(p, pkt); jni.round(); jna.round(); uniffiSendOnly(p, pkt); uniffiEmptyCall(p)
    // -Dbench.profile=per-packet|batch: only that column, for a profiler (JFR).
    when (System.getProperty("bench.profile")) {
        "per-packet" -> { repeat(ROUNDS) { uniffiPerPacket(p, pkt) }; return }
        "batch" -> { repeat(ROUNDS) { uniffiBatch(p, pkt) }; return }
    }
    repeat(ROUNDS) {
        best[0] = minOf(best[0], uniffiPerPacket(p, pkt))
        best[1] = minOf(best[1], uniffiBatch(p, pkt))
        best[2] = minOf(best[2], jni.round())
        best[3] = minOf(best[3], uniffiSendOnly(p, pkt))
        best[4] = minOf(best[4], uniffiEmptyCall(p))
        best[5] = minOf(best[5], jna.round())
    }
    // B must have kept up with A's sends (its replay window only moves forward).
    if (!jni.intact()) fail("JNI: the packet did not survive the round trip")
    if (!jna.intact()) fail("JNA direct mapping: the packet did not survive the round trip")
    jni.release()
    jna.release()
    p.a.destroy()
    p.b.destroy()

    val mbps = { ns: Double -> PACKET * 8.0 / ns * 1000.0 }
    fun row(name: String, ns: Double, anchor: Double?, anchorName: String) {
        val ratio = if (anchor != null) "  ratio %.3f (%+.1f %%) vs %s".format(ns / anchor, (ns / anchor - 1) * 100, anchorName) else ""
        println("  %-34s: %8.1f ns/packet (%5.0f Mbit/s)%s".format(name, ns, mbps(ns), ratio))
    }
    println("JVM ($PACKET-byte packets, encrypt + decrypt per packet, best of $ROUNDS rounds x $PACKETS, ${System.getProperty("java.vm.name")} ${System.getProperty("java.version")})")
    row("uniffi/JNA, per packet", best[0], direct, "direct")
    row("uniffi/JNA, batches of $BATCH", best[1], direct, "direct")
    row("JNI, direct ByteBuffer in place", best[2], directInPlace ?: direct, if (directInPlace != null) "direct in place" else "direct")
    row("JNA direct mapping, C API in place", best[5], directInPlace ?: direct, if (directInPlace != null) "direct in place" else "direct")
    println("figures: uniffi_ns=%.1f uniffi_batch_ns=%.1f jni_ns=%.1f uniffi_call_ns=%.1f jna_direct_ns=%.1f".format(best[0], best[1], best[2], best[4], best[5]))
    println("where the uniffi time goes (per call):")
    println("  %-34s: %8.1f ns".format("uniffi call moving no bytes", best[4]))
    println("  %-34s: %8.1f ns".format("sendIp alone (1420 B in, 1452 out)", best[3]))
    println("  %-34s: %8.1f ns".format("handleDatagram alone (by difference)", best[0] - best[3]))
    if (direct != null) {
        val over = best[0] - direct
        println("  uniffi/JNA adds %.0f ns per packet over direct omni-core; each uniffi call costs at least %.0f ns".format(over, best[4]))
        println("  (a method call is 2 JNA calls, clone + call, each building JNA Structures by reflection; byte")
        println("  arguments and results add RustBuffer alloc/free calls: the Rust side of the same API costs")
        println("  only the 'uniffi methods from Rust, no FFI' overhead of the Rust example)")
    }
}
