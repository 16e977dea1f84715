// The generated Kotlin bindings on the JVM (JNA): two tunnels, a full
// handshake, packets both ways, typed errors, a Kotlin HostClock driving the
// timers, and a Kotlin LogSink. Run by omni-ffi/tests/run-binding-tests.sh.
import net.omninervous.ffi.OmniNative
import net.omninervous.jna.PacketPath
import net.omninervous.uniffi.*
import java.nio.ByteBuffer

var checks = 0
var failures = 0

fun check(ok: Boolean, what: String) {
    checks++
    if (!ok) failures++
    println((if (ok) "ok - " else "FAIL - ") + what)
}

inline fun <reified E : Throwable> expectThrows(what: String, block: () -> Unit): E? {
    try {
        block()
    } catch (e: Throwable) {
        if (e is E) {
            check(true, "$what: ${e::class.simpleName}")
            return e
        }
        check(false, "$what: unexpected ${e::class.qualifiedName}: ${e.message}")
        return null
    }
    check(false, "$what: nothing thrown")
    return null
}

fun ipv4(src: ByteArray, dst: ByteArray, payload: ByteArray): ByteArray {
    val total = 20 + payload.size
    val p = ByteArray(total)
    p[0] = 0x45
    p[2] = (total shr 8).toByte()
    p[3] = total.toByte()
    p[8] = 64
    p[9] = 17
    src.copyInto(p, 12)
    dst.copyInto(p, 16)
    payload.copyInto(p, 20)
    return p
}

class VirtualClock : HostClock {
    @Volatile var nanos: ULong = 1_000_000_000uL
    override fun nowNanos(): ULong = nanos
}

val ipA = byteArrayOf(10, 0, 0, 1)
val ipB = byteArrayOf(10, 0, 0, 2)

fun configs(): Triple<TunnelConfig, String, Pair<String, String>> {
    val ka = generatePrivateKey()
    val kb = generatePrivateKey()
    val pa = publicKeyFromPrivate(ka)
    val pb = publicKeyFromPrivate(kb)
    val a = TunnelConfig(
        privateKey = ka, addresses = listOf("10.0.0.1/32"), dns = listOf("10.0.0.53", "corp.example"),
        peers = listOf(PeerSpec(publicKey = pb, allowedIps = listOf("10.0.0.2/32"), endpoint = "127.0.0.1:2000")),
    )
    val b = "[Interface]\nPrivateKey = $kb\nAddress = 10.0.0.2/32\n\n[Peer]\nPublicKey = $pa\nAllowedIPs = 10.0.0.1/32\n"
    return Triple(a, b, Pair(pa, pb))
}

fun scenario() {
    val (cfgA, textB, keys) = configs()
    val (pa, pb) = keys
    val a = Tunnel(cfgA)
    val b = Tunnel.fromWgQuick(textB)
    check(a.publicKey() == pa && b.publicKey() == pb, "two tunnels (record config and wg-quick text)")

    val first = ipv4(ipA, ipB, "hello from kotlin".toByteArray())
    check(a.sendIp(first) == null, "send before the handshake is queued")
    val init = a.drainTransmits().single()
    check(init.endpoint == "127.0.0.1:2000" && init.data.size == 148, "initiation: 148 bytes to ${init.endpoint}")
    val reply = b.handleDatagram("127.0.0.1:1000", init.data)
    check(reply is DatagramOutcome.Reply && reply.datagram.size == 92, "B replies with a 92-byte response")
    check(a.handleDatagram("127.0.0.1:2000", (reply as DatagramOutcome.Reply).datagram) == DatagramOutcome.Done,
        "A completes the handshake")
    check(a.pollEvent() == TunnelEvent.PeerUp(pb, true), "event on A: PeerUp(initiator)")
    val data = a.drainTransmits().single()
    val got = b.handleDatagram("127.0.0.1:1000", data.data)
    check(got is DatagramOutcome.Packet && got.packet.contentEquals(first), "B decrypts A's queued packet intact")
    val eventsB = listOfNotNull(b.pollEvent(), b.pollEvent())
    check(TunnelEvent.PeerUp(pa, false) in eventsB && TunnelEvent.EndpointChanged(pa, "127.0.0.1:1000") in eventsB,
        "events on B: PeerUp(responder), EndpointChanged")

    val big = ipv4(ipB, ipA, ByteArray(1400) { it.toByte() })
    val d = b.sendIp(big)!!
    check(d.endpoint == "127.0.0.1:1000", "B -> A: ${d.data.size}-byte datagram to the roamed endpoint")
    val back = a.handleDatagram("127.0.0.1:2000", d.data)
    check(back is DatagramOutcome.Packet && back.packet.contentEquals(big), "A decrypts B's 1420-byte packet intact")
    check(b.handleDatagram("127.0.0.1:1000", data.data) == DatagramOutcome.Rejected("replay"), "replay rejected, not thrown")

    val stats = a.stats()
    check(stats.peers.single().hasSession && stats.rxBytes > 0uL && stats.txBytes > 0uL,
        "stats: rx ${stats.rxBytes} B, tx ${stats.txBytes} B")
    val s = a.interfaceSettings()
    check(s.routes == listOf(IpNetwork("10.0.0.2", 32u)) && s.dnsServers == listOf("10.0.0.53") &&
        s.searchDomains == listOf("corp.example") && s.mtu.toInt() == 1420, "interface settings for the VPN builder")

    a.onSleep()
    a.onWake()
    check(a.drainTransmits().single().data.size == 148, "wake: A re-handshakes")
    jniPacketPath(a, b)
    jnaPacketPath(a, b)
    a.destroy()
    b.destroy()
}

// The Android split: configure through uniffi, move packets through JNI's
// direct buffers on the same tunnel (OmniNative, loaded with System.load).
fun jniPacketPath(a: Tunnel, b: Tunnel) {
    val handle = a.packetHandle().toLong()
    val buf = ByteBuffer.allocateDirect(2048)
    val ep = ByteBuffer.allocateDirect(OmniNative.ENDPOINT_LEN)
    val pkt = ipv4(ipA, ipB, "via JNI".toByteArray())
    for (i in pkt.indices) buf.put(OmniNative.IN_PLACE_OFFSET + i, pkt[i])
    val r = OmniNative.sendIp(handle, buf, pkt.size, ep)
    check(OmniNative.kind(r) == OmniNative.KIND_NETWORK && OmniNative.getEndpoint(ep).port == 2000,
        "uniffi tunnel + JNI packet path: ${OmniNative.length(r)}-byte datagram")
    val dg = ByteArray(OmniNative.length(r)) { buf.get(it) }
    val got = b.handleDatagram("127.0.0.1:1000", dg)
    check(got is DatagramOutcome.Packet && got.packet.contentEquals(pkt), "… which the peer decrypts through uniffi")
    OmniNative.release(handle)
}

// Kotlin on the JVM through JNA: the same split with PacketPath (the C API's
// in-place calls, JNA direct mapping), both directions, and its error results.
fun jnaPacketPath(a: Tunnel, b: Tunnel) {
    val lib = System.getProperty("omni.ffi.library")
    val pa = PacketPath.of(a, lib)
    val pb = PacketPath.of(b, lib)
    val buf = ByteBuffer.allocateDirect(PacketPath.IN_PLACE_OFFSET + 1420 + PacketPath.OVERHEAD)
    val fromA = PacketPath.endpointBuffer(java.net.InetSocketAddress("127.0.0.1", 1000))
    val fromB = PacketPath.endpointBuffer(java.net.InetSocketAddress("127.0.0.1", 2000))
    fun put(p: ByteArray) { for (i in p.indices) buf.put(PacketPath.IN_PLACE_OFFSET + i, p[i]) }
    fun packetAt(path: PacketPath) = ByteArray(path.length) { buf.get(path.offset + it) }

    val toB = ipv4(ipA, ipB, ByteArray(1400) { (it * 7).toByte() })
    put(toB)
    var r = pa.sendIp(buf, toB.size)
    check(r == PacketPath.OK && pa.kind == PacketPath.KIND_NETWORK && pa.offset == 0 &&
        pa.endpoint() == java.net.InetSocketAddress("127.0.0.1", 2000),
        "JNA PacketPath: A encrypts in place, ${pa.length}-byte datagram to ${pa.endpoint()}")
    r = pb.handleDatagram(fromA, buf, pa.length)
    check(r == PacketPath.OK && pb.kind == PacketPath.KIND_TUN && packetAt(pb).contentEquals(toB),
        "… B decrypts it in place through its PacketPath, intact")
    val toA = ipv4(ipB, ipA, "back via JNA".toByteArray())
    put(toA)
    r = pb.sendIp(buf, toA.size)
    check(r == PacketPath.OK && pb.kind == PacketPath.KIND_NETWORK, "JNA PacketPath: B -> A datagram")
    val replayed = ByteArray(pb.length) { buf.get(it) }
    r = pa.handleDatagram(fromB, buf, pb.length)
    check(r == PacketPath.OK && pa.kind == PacketPath.KIND_TUN && packetAt(pa).contentEquals(toA), "… A decrypts it intact")
    for (i in replayed.indices) buf.put(i, replayed[i])
    check(pa.handleDatagram(fromB, buf, replayed.size) == PacketPath.ERR_DROPPED, "JNA: a replayed datagram is dropped, not thrown")
    for (i in 0 until 64) buf.put(i, 0x33)
    check(pa.handleDatagram(fromB, buf, 64) == PacketPath.ERR_DROPPED, "JNA: a garbage datagram is dropped")
    check(pa.pollTransmit(buf) == PacketPath.OK && pa.kind == PacketPath.KIND_NONE, "JNA: nothing left to send")

    val noRoute = ipv4(ipA, byteArrayOf(10, 9, 9, 9), ByteArray(20))
    put(noRoute)
    check(pa.sendIp(buf, noRoute.size) == PacketPath.ERR_NO_ROUTE, "JNA: no peer routes 10.9.9.9")
    put(toB)
    val tight = ByteBuffer.allocateDirect(PacketPath.IN_PLACE_OFFSET + toB.size + 8)
    for (i in toB.indices) tight.put(PacketPath.IN_PLACE_OFFSET + i, toB[i])
    r = pa.sendIp(tight, toB.size)
    val needed = pa.needed
    check(r == PacketPath.ERR_BUFFER_TOO_SMALL && needed > tight.capacity() &&
        needed <= PacketPath.IN_PLACE_OFFSET + toB.size + PacketPath.OVERHEAD, "JNA: too small a buffer: need $needed B")
    val roomy = ByteBuffer.allocateDirect(needed.toInt())
    for (i in toB.indices) roomy.put(PacketPath.IN_PLACE_OFFSET + i, tight.get(PacketPath.IN_PLACE_OFFSET + i))
    r = pa.sendIp(roomy, toB.size)
    check(r == PacketPath.OK && pa.kind == PacketPath.KIND_NETWORK, "… the packet was left intact and goes out from a buffer of that size")
    val again = ByteArray(pa.length) { roomy.get(it) }
    for (i in again.indices) buf.put(i, again[i])
    check(pb.handleDatagram(fromA, buf, again.size) == PacketPath.OK && packetAt(pb).contentEquals(toB), "… and B decrypts it")
    tight.put(PacketPath.IN_PLACE_OFFSET, 0x00)
    check(pa.sendIp(tight, toB.size) == PacketPath.ERR_NOT_IP, "JNA: not an IP packet")
    expectThrows<IllegalArgumentException>("JNA: a heap buffer is refused before the call") { pa.sendIp(ByteBuffer.allocate(2048), 20) }
    // Batches: A encrypts 3 packets in one call (slot 1 is not IP), B decrypts them in one call.
    val stride = 1536
    val slots = ByteBuffer.allocateDirect(3 * stride)
    val sent = List(3) { i -> ipv4(ipA, ipB, ByteArray(300 * (i + 1)) { (it + i).toByte() }) }
    for ((i, p) in sent.withIndex()) {
        for (k in p.indices) slots.put(i * stride + PacketPath.IN_PLACE_OFFSET + k, p[k])
        pa.setBatchLength(i, p.size)
    }
    slots.put(stride + PacketPath.IN_PLACE_OFFSET, 0x00)
    check(pa.sendIpBatch(slots, stride, 3) == PacketPath.OK && pa.batchCode(0) == PacketPath.OK &&
        pa.batchCode(1) == PacketPath.ERR_NOT_IP && pa.batchKind(2) == PacketPath.KIND_NETWORK &&
        pa.batchEndpoint(2) == java.net.InetSocketAddress("127.0.0.1", 2000), "JNA batch: A encrypts 2 of 3 in one call, slot 1 is NOT_IP")
    val froms = PacketPath.endpointsBuffer(3)
    for (i in 0 until 3) {
        PacketPath.putEndpoint(froms, i, java.net.InetSocketAddress("127.0.0.1", 1000))
        pb.setBatchLength(i, pa.batchLength(i))
    }
    check(pb.handleDatagramBatch(froms, slots, stride, 3) == PacketPath.OK, "JNA batch: B takes 3 datagrams in one call")
    val decrypted = listOf(0, 2).all { i ->
        pb.batchCode(i) == PacketPath.OK && pb.batchKind(i) == PacketPath.KIND_TUN &&
            ByteArray(pb.batchLength(i)) { slots.get(i * stride + pb.batchOffset(i) + it) }.contentEquals(sent[i])
    }
    check(decrypted && pb.batchCode(1) == PacketPath.ERR_DROPPED, "… decrypts slots 0 and 2 intact; the empty slot 1 is dropped")
    expectThrows<IllegalArgumentException>("JNA batch: more slots than the buffer holds") { pa.sendIpBatch(slots, stride, 4) }
    check(pa.pollTimeout() != null, "JNA: a deadline is pending (keepalive/rekey timers)")
    pa.close()
    pb.close()
    pa.close()
    expectThrows<IllegalStateException>("JNA: a closed PacketPath refuses calls") { pa.sendIp(buf, toB.size) }
}

fun errors() {
    val (cfgA, _, keys) = configs()
    val a = Tunnel(cfgA)
    val e = expectThrows<TunnelException.InvalidConfig>("bad wg-quick text") {
        Tunnel.fromWgQuick("[Interface]\nPrivateKey = nope\n")
    }
    check(e?.line == 2u, "the error carries its line number (${e?.line})")
    expectThrows<TunnelException.InvalidKey>("bad key") { publicKeyFromPrivate("AAAA") }
    expectThrows<TunnelException.InvalidConfig>("MTU too small") { Tunnel(cfgA.copy(mtu = 100u)) }
    expectThrows<TunnelException.NoRoute>("no route") { a.sendIp(ipv4(ipA, byteArrayOf(8, 8, 8, 8), ByteArray(4))) }
    expectThrows<TunnelException.NotIp>("not IP") { a.sendIp(ByteArray(40)) }
    expectThrows<TunnelException.DuplicatePeer>("duplicate peer") {
        a.addPeer(PeerSpec(publicKey = keys.second, allowedIps = listOf()))
    }
    expectThrows<TunnelException.InvalidAddress>("bad source address") { a.handleDatagram("nowhere", ByteArray(4)) }
    check(a.handleDatagram("127.0.0.1:9", ByteArray(32)) is DatagramOutcome.Rejected, "garbage datagram rejected")
    a.destroy()
}

fun hostClockAndLogs() {
    val clock = VirtualClock()
    val logs = mutableListOf<String>()
    setLogSink(object : LogSink {
        override fun log(level: LogLevel, target: String, message: String) {
            synchronized(logs) { logs.add("$level $target: $message") }
        }
    }, LogLevel.DEBUG)
    val (cfgA, _, keys) = configs()
    val a = Tunnel.withClock(cfgA, clock)
    a.sendIp(ipv4(ipA, ipB, ByteArray(8)))
    var sent = a.drainTransmits().size
    var failed: TunnelEvent? = null
    while (failed == null) {
        val wait = a.nextTimeoutMillis() ?: break
        clock.nanos += wait * 1_000_000uL
        a.handleTimeout()
        sent += a.drainTransmits().size
        failed = a.pollEvent()
    }
    val secs = (clock.nanos - 1_000_000_000uL).toLong() / 1e9
    check(failed == TunnelEvent.HandshakeFailed(keys.second) && secs in 90.0..105.0 && sent >= 18,
        "virtual Kotlin clock: HandshakeFailed after %.1f s and %d initiations, no tick".format(secs, sent))
    a.onNetworkChanged()
    setLogSink(null, LogLevel.ERROR)
    check(synchronized(logs) { logs.any { "network changed" in it } }, "Kotlin LogSink received ${logs.size} records")
    a.destroy()
}

fun main() {
    System.load(System.getProperty("omni.ffi.library"))
    scenario()
    errors()
    hostClockAndLogs()
    println("$checks checks, $failures failed")
    if (failures != 0) kotlin.system.exitProcess(1)
}
