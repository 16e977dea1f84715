// The generated Kotlin bindings on the JVM (JNA): two tunnels, a full
// handshake, packets both ways, typed errors, a Kotlin HostClock driving the
// timers, and a Kotlin LogSink. Run by omni-ffi/tests/run-binding-tests.sh.
import net.omninervous.ffi.OmniNative
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
