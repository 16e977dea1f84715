import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.util.Arrays;

import net.omninervous.ffi.OmniNative;

/**
 * The JNI packet path end to end, run under {@code java -Xcheck:jni}: two tunnels,
 * a handshake, packets both ways through direct buffers, and the error cases.
 * Usage: java -Xcheck:jni -cp ... JniScenario /path/to/libomni_ffi.so
 */
public final class JniScenario {
    static int checks = 0;
    static int failures = 0;

    static void check(boolean ok, String what) {
        checks++;
        if (!ok) {
            failures++;
        }
        System.out.println((ok ? "ok - " : "FAIL - ") + what);
    }

    static byte[] ipv4(int len, byte[] src, byte[] dst, byte fill) {
        byte[] p = new byte[len];
        Arrays.fill(p, fill);
        p[0] = 0x45;
        p[1] = 0;
        p[2] = (byte) (len >> 8);
        p[3] = (byte) len;
        p[8] = 64;
        p[9] = 17;
        System.arraycopy(src, 0, p, 12, 4);
        System.arraycopy(dst, 0, p, 16, 4);
        return p;
    }

    static String config(String priv, String peerPub, String addr, String allowed, String endpoint) {
        return "[Interface]\nPrivateKey = " + priv + "\nAddress = " + addr + "/32\n\n[Peer]\nPublicKey = " + peerPub
                + "\nAllowedIPs = " + allowed + "/32\n" + (endpoint == null ? "" : "Endpoint = " + endpoint + "\n");
    }

    static byte[] bytes(ByteBuffer b, int off, int len) {
        byte[] out = new byte[len];
        for (int i = 0; i < len; i++) {
            out[i] = b.get(off + i);
        }
        return out;
    }

    static void put(ByteBuffer b, int off, byte[] data) {
        for (int i = 0; i < data.length; i++) {
            b.put(off + i, data[i]);
        }
    }

    public static void main(String[] args) throws Exception {
        System.load(args[0]);
        check(OmniNative.inPlaceOffset() == OmniNative.IN_PLACE_OFFSET, "IN_PLACE_OFFSET matches the library");
        String privA = OmniNative.generatePrivateKey(), privB = OmniNative.generatePrivateKey();
        String pubA = OmniNative.publicKeyFromPrivate(privA), pubB = OmniNative.publicKeyFromPrivate(privB);
        check(pubA.length() == 44 && !pubA.equals(pubB), "keys generated: " + pubA);

        long a = OmniNative.create(config(privA, pubB, "10.0.0.1", "10.0.0.2", "127.0.0.1:2000"));
        long b = OmniNative.create(config(privB, pubA, "10.0.0.2", "10.0.0.1", null));
        check(a != 0 && b != 0 && OmniNative.publicKey(a).equals(pubA), "two tunnels created");

        byte[] ipA = {10, 0, 0, 1}, ipB = {10, 0, 0, 2};
        InetSocketAddress addrA = new InetSocketAddress("127.0.0.1", 1000);
        InetSocketAddress addrB = new InetSocketAddress("127.0.0.1", 2000);
        ByteBuffer bufA = ByteBuffer.allocateDirect(2048), bufB = ByteBuffer.allocateDirect(2048);
        ByteBuffer epA = ByteBuffer.allocateDirect(OmniNative.ENDPOINT_LEN);
        ByteBuffer epB = ByteBuffer.allocateDirect(OmniNative.ENDPOINT_LEN);

        // A sends first: queued behind the handshake.
        byte[] p1 = ipv4(200, ipA, ipB, (byte) 0x11);
        put(bufA, OmniNative.IN_PLACE_OFFSET, p1);
        long r = OmniNative.sendIp(a, bufA, p1.length, epA);
        check(r == 0, "send before the handshake is queued");
        r = OmniNative.pollTransmit(a, bufA, epA);
        check(OmniNative.kind(r) == OmniNative.KIND_NETWORK && OmniNative.length(r) == 148
                && OmniNative.getEndpoint(epA).equals(addrB), "initiation to " + OmniNative.getEndpoint(epA));
        check(OmniNative.pollTimeout(a) > OmniNative.now(a), "retransmit deadline armed");

        // Deliver to B (copy between the two "sockets").
        int n = OmniNative.length(r);
        put(bufB, 0, bytes(bufA, 0, n));
        OmniNative.putEndpoint(epB, addrA);
        r = OmniNative.handleDatagram(b, bufB, n, epB);
        check(OmniNative.kind(r) == OmniNative.KIND_NETWORK && OmniNative.length(r) == 92, "B replies (92 bytes)");

        n = OmniNative.length(r);
        put(bufA, 0, bytes(bufB, 0, n));
        OmniNative.putEndpoint(epA, addrB);
        r = OmniNative.handleDatagram(a, bufA, n, epA);
        check(r == 0, "A consumes the response");
        r = OmniNative.pollTransmit(a, bufA, epA);
        check(OmniNative.kind(r) == OmniNative.KIND_NETWORK, "A flushes the queued packet");
        n = OmniNative.length(r);
        byte[] datagram = bytes(bufA, 0, n);
        check(OmniNative.pollTransmit(a, bufA, epA) == 0, "nothing more to transmit");
        put(bufB, 0, datagram);
        OmniNative.putEndpoint(epB, addrA);
        r = OmniNative.handleDatagram(b, bufB, n, epB);
        check(OmniNative.kind(r) == OmniNative.KIND_TUN
                && Arrays.equals(bytes(bufB, OmniNative.IN_PLACE_OFFSET, OmniNative.length(r)), p1),
                "B decrypts A's packet intact");

        // B -> A, 1420 bytes.
        byte[] p2 = ipv4(1420, ipB, ipA, (byte) 0x22);
        put(bufB, OmniNative.IN_PLACE_OFFSET, p2);
        r = OmniNative.sendIp(b, bufB, p2.length, epB);
        check(OmniNative.kind(r) == OmniNative.KIND_NETWORK && OmniNative.getEndpoint(epB).equals(addrA),
                "B -> A datagram of " + OmniNative.length(r) + " bytes to the roamed endpoint");
        n = OmniNative.length(r);
        put(bufA, 0, bytes(bufB, 0, n));
        r = OmniNative.handleDatagram(a, bufA, n, epA);
        check(OmniNative.kind(r) == OmniNative.KIND_TUN
                && Arrays.equals(bytes(bufA, OmniNative.IN_PLACE_OFFSET, OmniNative.length(r)), p2),
                "A decrypts B's 1420-byte packet intact");

        // ----- error cases -----
        put(bufB, 0, datagram);
        r = OmniNative.handleDatagram(b, bufB, datagram.length, epB);
        check(OmniNative.error(r) == OmniNative.ERR_DROPPED, "replayed datagram: DROPPED, no exception");
        byte[] lost = ipv4(60, ipA, new byte[] {(byte) 192, (byte) 168, 1, 1}, (byte) 0);
        put(bufA, OmniNative.IN_PLACE_OFFSET, lost);
        check(OmniNative.error(OmniNative.sendIp(a, bufA, lost.length, epA)) == OmniNative.ERR_NO_ROUTE, "no route: NO_ROUTE");
        r = OmniNative.sendIp(a, bufA, 4000, epA);
        check(OmniNative.error(r) == OmniNative.ERR_BUFFER_TOO_SMALL && OmniNative.needed(r) == 4016,
                "packet larger than the buffer: BUFFER_TOO_SMALL, need " + OmniNative.needed(r));
        ByteBuffer heap = ByteBuffer.allocate(2048);
        check(OmniNative.error(OmniNative.sendIp(a, heap, 40, epA)) == OmniNative.ERR_INVALID_ARGUMENT,
                "heap (non-direct) buffer: INVALID_ARGUMENT");
        check(OmniNative.error(OmniNative.pollTransmit(0, bufA, epA)) == OmniNative.ERR_NULL_ARGUMENT,
                "null handle: NULL_ARGUMENT");
        try {
            OmniNative.create("[Interface]\nPrivateKey = broken\n");
            check(false, "bad config throws");
        } catch (IllegalArgumentException e) {
            check(e.getMessage().contains("line 2"), "bad config throws IllegalArgumentException: " + e.getMessage());
        }
        try {
            OmniNative.publicKeyFromPrivate("xyz");
            check(false, "bad key throws");
        } catch (IllegalArgumentException e) {
            check(true, "bad key throws IllegalArgumentException");
        }

        OmniNative.release(a);
        OmniNative.release(b);
        OmniNative.release(0);
        check(true, "handles released");
        System.out.println(checks + " checks, " + failures + " failed");
        System.exit(failures == 0 ? 0 : 1);
    }
}
