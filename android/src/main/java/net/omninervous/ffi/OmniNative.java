package net.omninervous.ffi;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.UnknownHostException;
import java.nio.ByteBuffer;

/**
 * The packet path of omni-ffi over JNI: direct {@link ByteBuffer}s, in place, no
 * per-packet copies or allocations. Configuration, events and stats go through the
 * uniffi Kotlin bindings ({@code net.omninervous.uniffi.Tunnel}); its
 * {@code packetHandle()} gives a handle usable here.
 *
 * <p>The library must be loaded first: {@code System.loadLibrary("omni_ffi")} on
 * Android, or {@code System.load(path)}.
 *
 * <p>Packet calls return a {@code long}: {@code >= 0} packs {@link #kind(long)} and
 * {@link #length(long)}; {@code < 0} is an error, see {@link #error(long)} and
 * {@link #needed(long)}. Invalid datagrams from the network never throw.
 *
 * <p>Endpoint buffers are direct and at least {@link #ENDPOINT_LEN} bytes:
 * {@code [0]} family 4 or 6, {@code [2..4]} port big-endian, then the address.
 */
public final class OmniNative {
    private OmniNative() {}

    /** Where the IP packet sits in packet buffers: room for WireGuard's header. */
    public static final int IN_PLACE_OFFSET = 16;
    /** Extra room a packet buffer needs after the packet (padding and tag). */
    public static final int OVERHEAD = 47;
    /**
     * The same for a tunnel in a cluster ({@code Tunnel.joinCluster}): a datagram to a
     * member relayed by the Nucleus is wrapped again. Covers {@link #OVERHEAD}.
     */
    public static final int CLUSTER_OVERHEAD = 160;
    public static final int ENDPOINT_LEN = 20;

    public static final int KIND_NONE = 0;
    /** A decrypted IP packet for the TUN device, at {@link #IN_PLACE_OFFSET}. */
    public static final int KIND_TUN = 1;
    /** A datagram at offset 0 for the address in the endpoint buffer. */
    public static final int KIND_NETWORK = 2;

    // Error codes (the C API's OmniResult values).
    public static final int ERR_NULL_ARGUMENT = -1;
    public static final int ERR_INVALID_ARGUMENT = -2;
    public static final int ERR_BUFFER_TOO_SMALL = -4;
    public static final int ERR_NO_ROUTE = -5;
    public static final int ERR_NOT_IP = -6;
    public static final int ERR_NO_ENDPOINT = -7;
    public static final int ERR_QUEUE_FULL = -8;
    public static final int ERR_DROPPED = -10;
    public static final int ERR_PANIC = -99;

    /** A tunnel from wg-quick text. Release the handle with {@link #release(long)}. */
    public static native long create(String wgQuick);

    /** Drops a handle's reference to its tunnel. 0 is a no-op. */
    public static native void release(long handle);

    /** Encrypts {@code buf[IN_PLACE_OFFSET..][..len]}; a datagram comes back at {@code buf[0..]}. */
    public static native long sendIp(long handle, ByteBuffer buf, int len, ByteBuffer endpoint);

    /** {@code buf[0..len]} came from {@code endpoint}; a packet or a reply comes back in {@code buf}. */
    public static native long handleDatagram(long handle, ByteBuffer buf, int len, ByteBuffer endpoint);

    /** The next datagram to send into {@code buf[0..]}, its destination into {@code endpoint}. */
    public static native long pollTransmit(long handle, ByteBuffer buf, ByteBuffer endpoint);

    /** The next deadline on the tunnel's clock (nanoseconds), or -1 if none. */
    public static native long pollTimeout(long handle);

    public static native void handleTimeout(long handle);

    /** The tunnel's clock (nanoseconds; {@code SystemClock.elapsedRealtimeNanos()} on Android). */
    public static native long now(long handle);

    /** Call after the network changed and the UDP socket was recreated. */
    public static native void networkChanged(long handle);

    public static native String publicKey(long handle);

    public static native String generatePrivateKey();

    public static native String publicKeyFromPrivate(String privateKey);

    /** The offset compiled into the library (equals {@link #IN_PLACE_OFFSET}). */
    public static native int inPlaceOffset();

    public static int kind(long result) {
        return result < 0 ? KIND_NONE : (int) (result >>> 32);
    }

    public static int length(long result) {
        return result < 0 ? 0 : (int) (result & 0xffffffffL);
    }

    /** The error code of a negative result, or 0. */
    public static int error(long result) {
        return result < 0 ? -(int) ((-result) & 0xff) : 0;
    }

    /** With {@link #ERR_BUFFER_TOO_SMALL}: the buffer size needed. */
    public static long needed(long result) {
        return result < 0 ? (-result) >>> 8 : 0;
    }

    /** Writes {@code address} into an endpoint buffer. */
    public static void putEndpoint(ByteBuffer endpoint, InetSocketAddress address) {
        byte[] ip = address.getAddress().getAddress();
        for (int i = 0; i < ENDPOINT_LEN; i++) {
            endpoint.put(i, (byte) 0);
        }
        endpoint.put(0, (byte) (ip.length == 4 ? 4 : 6));
        endpoint.put(2, (byte) (address.getPort() >> 8));
        endpoint.put(3, (byte) address.getPort());
        for (int i = 0; i < ip.length; i++) {
            endpoint.put(4 + i, ip[i]);
        }
    }

    /** Reads an endpoint buffer. */
    public static InetSocketAddress getEndpoint(ByteBuffer endpoint) {
        int family = endpoint.get(0);
        int port = ((endpoint.get(2) & 0xff) << 8) | (endpoint.get(3) & 0xff);
        byte[] ip = new byte[family == 4 ? 4 : 16];
        for (int i = 0; i < ip.length; i++) {
            ip[i] = endpoint.get(4 + i);
        }
        try {
            InetAddress a = InetAddress.getByAddress(ip);
            return new InetSocketAddress(a, port);
        } catch (UnknownHostException e) {
            throw new IllegalStateException(e); // unreachable: the length is right
        }
    }
}
