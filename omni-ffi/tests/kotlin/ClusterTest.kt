// Joining a cluster through the generated Kotlin bindings (JNA), against the
// real Nucleus (`omni-daemon --mode nucleus`, started here on 127.0.0.1):
// two tunnels join, find each other and exchange IP packets both ways; a
// wrong secret lands alone in a cluster of its own (no peers, no route); a
// taken VIP is refused with a clear reason. This program is the host: one
// UDP socket per tunnel on 127.0.0.1, all I/O here, as in a VpnService.
// Run by omni-ffi/tests/run-binding-tests.sh with -Domni.daemon=PATH.
package net.omninervous.tests.cluster

import net.omninervous.uniffi.*
import java.net.InetSocketAddress
import java.nio.ByteBuffer
import java.nio.channels.DatagramChannel
import java.nio.channels.SelectionKey
import java.nio.channels.Selector
import java.nio.file.Files
import java.util.concurrent.TimeUnit

var checks = 0
var failures = 0

fun check(ok: Boolean, what: String) {
    checks++
    if (!ok) failures++
    println((if (ok) "ok - " else "FAIL - ") + what)
}

fun ipv4(src: String, dst: String, payload: ByteArray): ByteArray {
    val total = 20 + payload.size
    val p = ByteArray(total)
    p[0] = 0x45
    p[2] = (total shr 8).toByte()
    p[3] = total.toByte()
    p[8] = 64
    p[9] = 17
    java.net.InetAddress.getByName(src).address.copyInto(p, 12)
    java.net.InetAddress.getByName(dst).address.copyInto(p, 16)
    payload.copyInto(p, 20)
    return p
}

class Host(val tunnel: Tunnel, selector: Selector) {
    val channel: DatagramChannel = DatagramChannel.open().apply {
        bind(InetSocketAddress("127.0.0.1", 0))
        configureBlocking(false)
        register(selector, SelectionKey.OP_READ)
    }
    val events = mutableListOf<TunnelEvent>()
    val packets = mutableListOf<ByteArray>()
    private val buf = ByteBuffer.allocate(65535)

    fun port() = (channel.localAddress as InetSocketAddress).port

    fun send(d: Datagram) {
        val i = d.endpoint.lastIndexOf(':')
        channel.send(ByteBuffer.wrap(d.data), InetSocketAddress(d.endpoint.substring(0, i).trim('[', ']'), d.endpoint.substring(i + 1).toInt()))
    }

    fun flush() {
        tunnel.drainTransmits().forEach(::send)
        while (true) events += tunnel.pollEvent() ?: break
    }

    fun step() {
        while (true) {
            buf.clear()
            val from = channel.receive(buf) as InetSocketAddress? ?: break
            val data = ByteArray(buf.position()).also { buf.flip(); buf.get(it) }
            when (val out = tunnel.handleDatagram("${from.address.hostAddress}:${from.port}", data)) {
                is DatagramOutcome.Reply -> channel.send(ByteBuffer.wrap(out.datagram), from)
                is DatagramOutcome.Packet -> packets += out.packet
                else -> {}
            }
            flush()
        }
        if (tunnel.nextTimeoutMillis() == 0uL) tunnel.handleTimeout()
        flush()
    }

    fun members() = events.filterIsInstance<TunnelEvent.MemberJoined>().associate { it.publicKey to it.vip }
    fun joined() = events.any { it is TunnelEvent.ClusterJoined }
    fun up(key: String) = events.any { it is TunnelEvent.PeerUp && it.publicKey == key }
}

fun runUntil(hosts: List<Host>, selector: Selector, seconds: Int, what: String, done: () -> Boolean): Boolean {
    val deadline = System.nanoTime() + seconds * 1_000_000_000L
    while (System.nanoTime() < deadline) {
        hosts.forEach { it.step() }
        if (done()) return true
        selector.select(20)
        selector.selectedKeys().clear()
    }
    println("timed out after $seconds s waiting for $what; events: " + hosts.mapIndexed { i, h -> "$i: ${h.events}" })
    return false
}

fun startNucleus(daemon: String, identity: java.nio.file.Path): Triple<Process, Int, String> {
    repeat(5) {
        // A free port now; it may be taken before the Nucleus binds it (then retry).
        val port = DatagramChannel.open().use { it.bind(InetSocketAddress("127.0.0.1", 0)); (it.localAddress as InetSocketAddress).port }
        val pb = ProcessBuilder(daemon, "--mode", "nucleus", "--port", port.toString(), "--identity-dir", identity.toString())
            .redirectError(ProcessBuilder.Redirect.DISCARD)
        pb.environment()["RUST_LOG"] = "warn"
        val p = pb.start()
        val line = p.inputStream.bufferedReader().readLine() // null if it exited
        if (line != null && line.startsWith("nucleus public key: ")) return Triple(p, port, line.substringAfter(": ").trim())
        p.destroyForcibly().waitFor()
    }
    throw IllegalStateException("the Nucleus did not start")
}

fun join(nucleusPort: Int, key: String, vip: String, selector: Selector, secret: String = "correct horse battery staple"): Host {
    val cfg = ClusterConfig(
        privateKey = generatePrivateKey(), nucleusEndpoint = "127.0.0.1:$nucleusPort", nucleusPublicKey = key,
        cluster = "kotlin-phones", secret = secret, vip = vip,
    )
    return Host(Tunnel.joinCluster(cfg), selector).also { it.flush() }
}

fun scenario(nucleusPort: Int, key: String) {
    val selector = Selector.open()
    val a = join(nucleusPort, key, "10.88.0.1/24", selector)
    val b = join(nucleusPort, key, "10.88.0.2/24", selector)
    val c = join(nucleusPort, key, "10.88.0.3/24", selector, secret = "not the secret")
    val hosts = mutableListOf(a, b, c)
    try {
        val ka = a.tunnel.publicKey()
        val kb = b.tunnel.publicKey()
        check(a.tunnel.interfaceSettings().routes == listOf(IpNetwork("10.88.0.0", 24u)), "VPN builder route: the cluster subnet")
        check(runUntil(hosts, selector, 20, "A and B to see each other") { kb in a.members() && ka in b.members() } &&
            a.members() == mapOf(kb to "10.88.0.2") && b.members() == mapOf(ka to "10.88.0.1"),
            "A and B joined the cluster and see each other (MemberJoined with the VIPs)")
        check(runUntil(hosts, selector, 15, "the member handshake") { a.up(kb) && b.up(ka) }, "A and B completed a WireGuard handshake")
        // Right secret, but B's VIP (B holds it now): refused with a clear reason.
        val d = join(nucleusPort, key, "10.88.0.2/24", selector)
        hosts += d

        val ab = ipv4("10.88.0.1", "10.88.0.2", "phone A to phone B".toByteArray())
        a.tunnel.sendIp(ab)?.let(a::send)
        a.flush()
        check(runUntil(hosts, selector, 5, "A's packet at B") { b.packets.any { it.contentEquals(ab) } }, "A -> B: IP packet delivered intact")
        // On loopback the direct path works (a slow machine may relay first, for a while).
        check(runUntil(hosts, selector, 15, "a direct path") {
            a.tunnel.clusterStatus()?.members?.singleOrNull()?.path == MemberPath.DIRECT &&
                b.tunnel.clusterStatus()?.members?.singleOrNull()?.path == MemberPath.DIRECT
        }, "cluster status: A and B reach each other directly")
        val ba = ipv4("10.88.0.2", "10.88.0.1", ByteArray(1300) { it.toByte() })
        val dba = b.tunnel.sendIp(ba)
        check(dba?.endpoint == "127.0.0.1:${a.port()}", "B sends straight to A's socket (${dba?.endpoint})")
        dba?.let(b::send)
        check(runUntil(hosts, selector, 5, "B's packet at A") { a.packets.any { it.contentEquals(ba) } }, "B -> A: IP packet delivered intact")
        val status = a.tunnel.clusterStatus()!!
        check(status.state == ClusterState.REGISTERED && status.vip == "10.88.0.1/24" &&
            status.reflexiveEndpoint == "127.0.0.1:${a.port()}", "cluster status: registered, VIP, reflexive endpoint")

        // Wrong secret: registered in an (open) cluster of its own, no one else there.
        check(c.joined() && c.members().isEmpty() && c.tunnel.clusterStatus()!!.members.isEmpty(),
            "wrong secret: no peers")
        try {
            a.tunnel.sendIp(ipv4("10.88.0.1", "10.88.0.3", ByteArray(8)))
            check(false, "wrong secret: unreachable (nothing thrown)")
        } catch (e: TunnelException.NoRoute) {
            check(true, "wrong secret: unreachable (NoRoute)")
        }
        check(runUntil(hosts, selector, 10, "the refusal") { TunnelEvent.ClusterRefused("vip-in-use") in d.events } &&
            d.tunnel.clusterStatus()!!.state != ClusterState.REGISTERED && d.members().isEmpty(),
            "a taken VIP: ClusterRefused(vip-in-use), not registered, no members")

        b.tunnel.leaveCluster()
        b.flush()
        check(runUntil(hosts, selector, 10, "B's departure") { TunnelEvent.MemberLeft(kb) in a.events } &&
            a.tunnel.clusterStatus()!!.members.isEmpty(), "B left: A dropped it")
    } finally {
        hosts.forEach { it.channel.close(); it.tunnel.destroy() }
        selector.close()
    }
}

fun main() {
    System.load(System.getProperty("omni.ffi.library"))
    val daemon = System.getProperty("omni.daemon") ?: throw IllegalArgumentException("-Domni.daemon=PATH")
    val identity = Files.createTempDirectory("omni-nucleus")
    val (nucleus, port, key) = startNucleus(daemon, identity)
    val cleanup = Thread { nucleus.destroyForcibly(); identity.toFile().deleteRecursively() }
    Runtime.getRuntime().addShutdownHook(cleanup)
    try {
        try {
            Tunnel.joinCluster(ClusterConfig(generatePrivateKey(), "127.0.0.1:$port", "not a key", "c", "s", "10.1.0.1"))
            check(false, "bad Nucleus key: nothing thrown")
        } catch (e: TunnelException.InvalidKey) {
            check(true, "bad Nucleus key: TunnelException.InvalidKey")
        }
        scenario(port, key)
    } finally {
        nucleus.destroy()
        if (!nucleus.waitFor(5, TimeUnit.SECONDS)) nucleus.destroyForcibly()
        identity.toFile().deleteRecursively()
        Runtime.getRuntime().removeShutdownHook(cleanup)
    }
    println("$checks checks, $failures failed")
    if (failures != 0) kotlin.system.exitProcess(1)
}
