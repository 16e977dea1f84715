// Per-packet cost of omni-ffi from the JVM, the workload of
// omni-ffi/examples/ffi_overhead.rs: one "packet" is a 1420-byte IPv4 packet
// encrypted by tunnel A and decrypted by tunnel B (both directions of the data
// path). Columns:
//
//   omni-core direct       : the anchor: omni-core's Node called from Rust with
//                            no omni-ffi layer (omni_ffi::bench_anchor, feature
//                            bench-anchor), in place; one JNA call per round of
//                            thousands of packets, so it runs in this process
//   JNI, direct ByteBuffer : OmniNative.sendIp + OmniNative.handleDatagram in place
//                            on one direct buffer (Android's packet path)
//   Kotlin/JNA PacketPath  : net.omninervous.jna.PacketPath (omni-ffi/kotlin), the
//                            C API's in-place calls bound with JNA direct mapping,
//                            on direct buffers (JVM hosts' packet path)
//   Kotlin/JNA, batches    : the same in batches of N (sendIpBatch / handleDatagramBatch:
//                            N slots of one buffer per call)
//   uniffi/JNA, per packet : a.sendIp(ByteArray) + b.handleDatagram(String, ByteArray),
//                            the generated Kotlin bindings as an app calls them
//   uniffi/JNA, batch of N : a.sendIpBatch(List) + b.handleDatagramBatch(List)
//
// plus where the uniffi time goes: the cost of a uniffi call that moves no
// bytes (Tunnel.nowNanos) and of each half alone.
//
// Every measured round (sample) is bracketed by two anchor rounds of the same
// length, and its ratio is taken against their mean: the anchor runs in the same process at the same
// moment, so CPU frequency, steal and cache state hit both alike. The ratio
// printed is the median over rounds (the best rounds are printed too). Run it
// through omni-ffi/bench/ffi-overhead.sh.
package net.omninervous.bench

import com.sun.jna.Native
import com.sun.jna.NativeLibrary
import com.sun.jna.Pointer
import net.omninervous.ffi.OmniNative
import net.omninervous.jna.PacketPath
import net.omninervous.uniffi.*
import java.net.InetSocketAddress
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

/** ns per packet over one round of [packets] packets. */
inline fun timed(packets: Int = PACKETS, body: () -> Unit): Double {
    val start = System.nanoTime()
    body()
    return (System.nanoTime() - start).toDouble() / packets
}

fun uniffiPerPacket(p: Pair2, pkt: ByteArray, packets: Int): Double = timed(packets) {
    for (i in 0 until packets) {
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

fun uniffiSendOnly(p: Pair2, pkt: ByteArray, packets: Int): Double = timed(packets) {
    for (i in 0 until packets) p.a.sendIp(pkt) ?: fail("sendIp queued")
}

fun uniffiEmptyCall(p: Pair2, calls: Int): Double {
    var sum = 0uL
    val ns = timed(calls) { for (i in 0 until calls) sum += p.a.nowNanos() }
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
    fun round(packets: Int = PACKETS): Double = timed(packets) {
        for (i in 0 until packets) {
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

    fun emptyCall(calls: Int): Double {
        var sum = 0L
        val ns = timed(calls) { for (i in 0 until calls) sum += OmniNative.pollTimeout(ha) }
        if (sum == 0L) fail("pollTimeout")
        return ns
    }

    fun release() {
        OmniNative.release(ha)
        OmniNative.release(hb)
    }
}

/** The anchor: omni-core direct, from omni_ffi::bench_anchor (JNA direct mapping). */
object Anchor {
    @JvmStatic external fun omni_bench_core_pair_new(): Pointer?
    @JvmStatic external fun omni_bench_core_pair_round_in_place(pair: Pointer, packets: Long): Double
    @JvmStatic external fun omni_bench_core_pair_free(pair: Pointer)

    private lateinit var pair: Pointer

    fun open(library: String) {
        Native.register(Anchor::class.java, NativeLibrary.getInstance(library))
        pair = omni_bench_core_pair_new()
            ?: fail("omni_bench_core_pair_new: no anchor (library built without the bench-anchor feature?)")
    }

    /** ns per packet of one in-place round of [packets] packets. */
    fun round(packets: Int = PACKETS): Double {
        val ns = omni_bench_core_pair_round_in_place(pair, packets.toLong())
        if (ns <= 0.0) fail("anchor round failed")
        return ns
    }

    fun close() = omni_bench_core_pair_free(pair)
}

/** The Kotlin/JNA packet path (PacketPath), ping-pong in place like the JNI column. */
class JnaPath(p: Pair2, library: String) {
    val a = PacketPath.of(p.a, library)
    val b = PacketPath.of(p.b, library)
    val buf: ByteBuffer = ByteBuffer.allocateDirect(PacketPath.IN_PLACE_OFFSET + PACKET + PacketPath.OVERHEAD + 64)
    // A's address as B sees it: 127.0.0.1:1000 (the endpoint B learnt in setup()).
    val fromA: ByteBuffer = PacketPath.endpointBuffer(InetSocketAddress("127.0.0.1", 1000))

    init {
        val pkt = ipv4(PACKET)
        for (i in pkt.indices) buf.put(PacketPath.IN_PLACE_OFFSET + i, pkt[i])
    }

    fun round(packets: Int = PACKETS): Double = timed(packets) {
        for (i in 0 until packets) {
            if (a.sendIp(buf, PACKET) != PacketPath.OK || a.kind != PacketPath.KIND_NETWORK) fail("JNA sendIp")
            if (b.handleDatagram(fromA, buf, a.length) != PacketPath.OK || b.kind != PacketPath.KIND_TUN ||
                b.length != PACKET) fail("JNA handleDatagram")
        }
    }

    fun intact(): Boolean {
        val pkt = ipv4(PACKET)
        return pkt.indices.all { buf.get(PacketPath.IN_PLACE_OFFSET + it) == pkt[it] }
    }

    /** ns per call of a PacketPath call that moves no bytes (the crossing alone). */
    fun emptyCall(calls: Int): Double {
        var sum = 0L
        val ns = timed(calls) { for (i in 0 until calls) sum += a.pollTimeout() ?: 0L }
        if (sum == 0L) fail("pollTimeout")
        return ns
    }

    fun release() {
        a.close()
        b.close()
    }
}

/** The Kotlin/JNA packet path in batches of [BATCH]: slots of one buffer, ping-pong in place. */
class JnaBatch(p: Pair2, library: String) {
    val a = PacketPath.of(p.a, library, BATCH)
    val b = PacketPath.of(p.b, library, BATCH)
    val stride = 1536
    val buf: ByteBuffer = ByteBuffer.allocateDirect(stride * BATCH)
    val from: ByteBuffer = PacketPath.endpointsBuffer(BATCH)

    init {
        val pkt = ipv4(PACKET)
        for (i in 0 until BATCH) {
            for (k in pkt.indices) buf.put(i * stride + PacketPath.IN_PLACE_OFFSET + k, pkt[k])
            a.setBatchLength(i, PACKET)
            PacketPath.putEndpoint(from, i, InetSocketAddress("127.0.0.1", 1000))
        }
    }

    fun round(packets: Int): Double {
        val batches = maxOf(packets / BATCH, 1)
        val ns = timed(batches * BATCH) {
            for (n in 0 until batches) {
                if (a.sendIpBatch(buf, stride, BATCH) != PacketPath.OK) fail("JNA sendIpBatch")
                for (i in 0 until BATCH) {
                    if (a.batchCode(i) != PacketPath.OK) fail("JNA batch send, slot $i: ${a.batchCode(i)}")
                    b.setBatchLength(i, a.batchLength(i))
                }
                if (b.handleDatagramBatch(from, buf, stride, BATCH) != PacketPath.OK) fail("JNA handleDatagramBatch")
                for (i in 0 until BATCH) {
                    if (b.batchCode(i) != PacketPath.OK || b.batchLength(i) != PACKET) fail("JNA batch receive, slot $i")
                }
            }
        }
        return ns
    }

    fun intact(): Boolean {
        val pkt = ipv4(PACKET)
        return (0 until BATCH).all { i -> pkt.indices.all { buf.get(i * stride + PacketPath.IN_PLACE_OFFSET + it) == pkt[it] } }
    }

    fun release() {
        a.close()
        b.close()
    }
}

/** One column: its rounds' ns per packet and their ratios to the bracketing anchor rounds. */
class Column(val name: String) {
    val ns = ArrayList<Double>()
    val ratios = ArrayList<Double>()
    val anchors = ArrayList<Double>()

    /** Runs [body] between two anchor rounds of the same length. */
    fun measure(anchorPackets: Int = PACKETS, body: () -> Double) {
        val before = Anchor.round(anchorPackets)
        val x = body()
        val after = Anchor.round(anchorPackets)
        val anchor = (before + after) / 2
        ns += x
        anchors += anchor
        ratios += x / anchor
    }

    fun best() = ns.minOrNull() ?: Double.NaN
    /** The [q] quantile of the ratios (0.5: the median). */
    fun quantile(q: Double): Double = ratios.sorted().let { if (it.isEmpty()) Double.NaN else it[((it.size - 1) * q).toInt()] }
    fun median() = quantile(0.5)
}

fun main() {
    val library = System.getProperty("omni.ffi.library") ?: fail("-Domni.ffi.library=PATH not set")
    System.load(library)
    Anchor.open(library)
    val p = setup()
    val pkt = ipv4(PACKET)
    val jni = Jni(p)
    val jna = JnaPath(p, library)
    val jnaBatch = JnaBatch(p, library)
    // The uniffi per-packet column is ~20x slower: fewer packets per round.
    val slowPackets = maxOf(PACKETS / 16, 1)
    // Warm-up (JIT), then alternate.
    Anchor.round(); jni.round(); jna.round(); jnaBatch.round(PACKETS); uniffiPerPacket(p, pkt, slowPackets); uniffiBatch(p, pkt)
    uniffiSendOnly(p, pkt, slowPackets); uniffiEmptyCall(p, slowPackets)
    // -Dbench.profile=per-packet|batch|jna|jni: only that column, for a profiler (JFR).
    when (System.getProperty("bench.profile")) {
        "per-packet" -> { repeat(ROUNDS) { uniffiPerPacket(p, pkt, PACKETS) }; return }
        "batch" -> { repeat(ROUNDS) { uniffiBatch(p, pkt) }; return }
        "jna" -> { repeat(ROUNDS) { jna.round() }; return }
        "jni" -> { repeat(ROUNDS) { jni.round() }; return }
    }
    val jniCol = Column("JNI, direct ByteBuffer in place")
    val jnaCol = Column("Kotlin/JNA PacketPath in place")
    val jnaBatchCol = Column("Kotlin/JNA PacketPath, batches of $BATCH")
    val uniCol = Column("uniffi/JNA, per packet")
    val batchCol = Column("uniffi/JNA, batches of $BATCH")
    var sendOnly = Double.MAX_VALUE
    var emptyCall = Double.MAX_VALUE
    var jnaEmpty = Double.MAX_VALUE
    var jniEmpty = Double.MAX_VALUE
    // The packet paths: many short samples (a tenth of a round each), each
    // between two anchor samples, so a burst of steal or a frequency change
    // spoils a few samples, which the median ignores, not a whole column.
    val fine = maxOf(PACKETS / 10, 1)
    repeat(ROUNDS * 10) {
        jniCol.measure(fine) { jni.round(fine) }
        jnaCol.measure(fine) { jna.round(fine) }
        jnaBatchCol.measure(fine) { jnaBatch.round(fine) }
    }
    repeat(ROUNDS) {
        uniCol.measure(slowPackets) { uniffiPerPacket(p, pkt, slowPackets) }
        batchCol.measure { uniffiBatch(p, pkt) }
        sendOnly = minOf(sendOnly, uniffiSendOnly(p, pkt, slowPackets))
        emptyCall = minOf(emptyCall, uniffiEmptyCall(p, slowPackets))
        jnaEmpty = minOf(jnaEmpty, jna.emptyCall(PACKETS))
        jniEmpty = minOf(jniEmpty, jni.emptyCall(PACKETS))
    }
    // B must have kept up with A's sends (its replay window only moves forward).
    if (!jni.intact()) fail("JNI: the packet did not survive the round trip")
    if (!jna.intact()) fail("JNA PacketPath: the packet did not survive the round trip")
    if (!jnaBatch.intact()) fail("JNA PacketPath batches: a packet did not survive the round trip")
    jnaBatch.release()
    jni.release()
    jna.release()
    p.a.destroy()
    p.b.destroy()
    val anchorBest = listOf(jniCol, jnaCol, jnaBatchCol).flatMap { it.anchors }.minOrNull() ?: Double.NaN
    Anchor.close()

    val mbps = { ns: Double -> PACKET * 8.0 / ns * 1000.0 }
    println("JVM ($PACKET-byte packets, encrypt + decrypt per packet; JNI and JNA: ${ROUNDS * 10} samples x $fine, uniffi: $ROUNDS rounds, " +
        "${System.getProperty("java.vm.name")} ${System.getProperty("java.version")})")
    println("  %-34s: %8.1f ns/packet (%5.0f Mbit/s)  the anchor, in this process".format("omni-core direct, in place", anchorBest, mbps(anchorBest)))
    for (c in listOf(jniCol, jnaCol, jnaBatchCol, batchCol, uniCol)) {
        val m = c.median()
        println("  %-34s: %8.1f ns/packet (%5.0f Mbit/s)  ratio %.3f (%+.1f %%) vs direct (median of %d; quartiles %.3f-%.3f)".format(
            c.name, c.best(), mbps(c.best()), m, (m - 1) * 100, c.ratios.size, c.quantile(0.25), c.quantile(0.75)))
    }
    println("figures: anchor_ns=%.1f jni_ratio=%.4f jna_ratio=%.4f jna_batch_ratio=%.4f uniffi_batch_ratio=%.4f uniffi_ratio=%.4f uniffi_call_ns=%.1f".format(
        anchorBest, jniCol.median(), jnaCol.median(), jnaBatchCol.median(), batchCol.median(), uniCol.median(), emptyCall))
    println("a call moving no bytes (poll timeout), best round: JNI %.0f ns, Kotlin/JNA PacketPath %.0f ns, uniffi/JNA %.0f ns".format(
        jniEmpty, jnaEmpty, emptyCall))
    println("where the uniffi time goes (per call):")
    println("  %-34s: %8.1f ns".format("uniffi call moving no bytes", emptyCall))
    println("  %-34s: %8.1f ns".format("sendIp alone (1420 B in, 1452 out)", sendOnly))
    println("  %-34s: %8.1f ns".format("handleDatagram alone (by difference)", uniCol.best() - sendOnly))
    println("  (a uniffi method call builds JNA Structures (call status, RustBuffers) by reflection; byte")
    println("  arguments and results add RustBuffer alloc/free calls: the Rust side of the same API costs")
    println("  only the 'uniffi methods from Rust, no FFI' overhead of the Rust example)")
}
