/* The C API end to end: two tunnels, a full handshake, packets both ways
 * (copying and in-place calls), events, stats, and the error cases.
 * Built against bindings/c/omni.h and both libomni_ffi.a and libomni_ffi.so;
 * run under valgrind by omni-ffi/tests/run-binding-tests.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omni.h"

static int failures = 0;
static int checks = 0;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        checks++;                                          \
        if (cond) {                                        \
            printf("ok - ");                               \
        } else {                                           \
            failures++;                                    \
            printf("FAIL (%s:%d) - ", __FILE__, __LINE__); \
        }                                                  \
        printf(__VA_ARGS__);                               \
        printf("\n");                                      \
    } while (0)

#define ASSERT_OK(expr)                                                                          \
    do {                                                                                         \
        OmniResult r_ = (expr);                                                                  \
        if (r_ != OMNI_RESULT_OK) {                                                              \
            printf("FAIL (%s:%d) - %s returned %s\n", __FILE__, __LINE__, #expr,                  \
                   omni_result_name(r_));                                                        \
            exit(1);                                                                             \
        }                                                                                        \
    } while (0)

/* An IPv4/UDP packet of `len` bytes from src to dst with a recognizable payload. */
static size_t ipv4_packet(uint8_t *p, size_t len, const uint8_t src[4], const uint8_t dst[4], uint8_t fill) {
    memset(p, fill, len);
    p[0] = 0x45;
    p[1] = 0;
    p[2] = (uint8_t)(len >> 8);
    p[3] = (uint8_t)len;
    p[8] = 64;
    p[9] = 17;
    memcpy(p + 12, src, 4);
    memcpy(p + 16, dst, 4);
    return len;
}

static OmniEndpoint loopback(uint16_t port) {
    OmniEndpoint e;
    memset(&e, 0, sizeof e);
    e.family = 4;
    e.port = port;
    e.addr[0] = 127;
    e.addr[3] = 1;
    return e;
}

static OmniTunnel *make_tunnel(const char *priv, const char *peer_pub, const char *addr, const char *allowed,
                               const char *endpoint) {
    char cfg[1024];
    char err[256];
    snprintf(cfg, sizeof cfg,
             "[Interface]\nPrivateKey = %s\nAddress = %s/32\nMTU = 1420\n\n[Peer]\nPublicKey = %s\n"
             "AllowedIPs = %s/32\n%s%s\n",
             priv, addr, peer_pub, allowed, endpoint ? "Endpoint = " : "", endpoint ? endpoint : "");
    OmniTunnel *t = NULL;
    OmniResult r = omni_tunnel_new_from_wg_quick(cfg, &t, err, sizeof err);
    if (r != OMNI_RESULT_OK) {
        printf("FAIL - tunnel: %s: %s\n", omni_result_name(r), err);
        exit(1);
    }
    return t;
}

int main(void) {
    char priv_a[OMNI_KEY_BUF_LEN], priv_b[OMNI_KEY_BUF_LEN], pub_a[OMNI_KEY_BUF_LEN], pub_b[OMNI_KEY_BUF_LEN];
    size_t needed = 0;
    ASSERT_OK(omni_generate_private_key(priv_a, sizeof priv_a, &needed));
    ASSERT_OK(omni_generate_private_key(priv_b, sizeof priv_b, NULL));
    ASSERT_OK(omni_public_key_from_private(priv_a, pub_a, sizeof pub_a, NULL));
    ASSERT_OK(omni_public_key_from_private(priv_b, pub_b, sizeof pub_b, NULL));
    CHECK(needed == 45 && strlen(pub_a) == 44 && strcmp(priv_a, priv_b) != 0, "keys: generated and derived (%s)", pub_a);

    OmniTunnel *a = make_tunnel(priv_a, pub_b, "10.0.0.1", "10.0.0.2", "127.0.0.1:2000");
    OmniTunnel *b = make_tunnel(priv_b, pub_a, "10.0.0.2", "10.0.0.1", NULL);
    OmniEndpoint addr_a = loopback(1000), addr_b = loopback(2000);

    char key[OMNI_KEY_BUF_LEN];
    ASSERT_OK(omni_tunnel_public_key(a, key, sizeof key, NULL));
    CHECK(strcmp(key, pub_a) == 0, "tunnel A reports its public key");

    static uint8_t pkt[2048], out_a[2048], out_b[2048], buf[2048];
    const uint8_t ip_a[4] = {10, 0, 0, 1}, ip_b[4] = {10, 0, 0, 2}, elsewhere[4] = {192, 168, 7, 7};
    uint64_t now = omni_now();
    OmniOutput o;

    /* A sends before any session: the packet waits, the initiation goes out. */
    size_t n = ipv4_packet(pkt, 100, ip_a, ip_b, 0xa1);
    ASSERT_OK(omni_tunnel_send_ip(a, now, pkt, n, out_a, sizeof out_a, &o));
    CHECK(o.kind == OMNI_OUTPUT_KIND_NONE, "send before handshake is queued");
    ASSERT_OK(omni_tunnel_poll_transmit(a, now, out_a, sizeof out_a, &o));
    CHECK(o.kind == OMNI_OUTPUT_KIND_NETWORK && o.len == 148 && o.endpoint.port == 2000 && o.endpoint.family == 4,
          "initiation: %zu bytes to port %u", o.len, o.endpoint.port);
    uint64_t deadline = 0;
    ASSERT_OK(omni_tunnel_poll_timeout(a, &deadline));
    CHECK(deadline != UINT64_MAX && deadline > now, "a retransmit deadline is armed (+%.1f s)", (deadline - now) / 1e9);

    /* B answers the initiation. */
    ASSERT_OK(omni_tunnel_handle_datagram(b, now, &addr_a, out_a, o.len, out_b, sizeof out_b, &o));
    CHECK(o.kind == OMNI_OUTPUT_KIND_NETWORK && o.len == 92 && o.endpoint.port == 1000, "response: %zu bytes", o.len);

    /* A completes the handshake and flushes the queued packet. */
    ASSERT_OK(omni_tunnel_handle_datagram(a, now, &addr_b, out_b, o.len, out_a, sizeof out_a, &o));
    CHECK(o.kind == OMNI_OUTPUT_KIND_NONE, "response consumed");
    OmniEvent ev;
    ASSERT_OK(omni_tunnel_poll_event(a, &ev));
    CHECK(ev.kind == OMNI_EVENT_KIND_PEER_UP && ev.initiator && strcmp(ev.public_key, pub_b) == 0,
          "event on A: peer up (initiator)");
    ASSERT_OK(omni_tunnel_poll_transmit(a, now, out_a, sizeof out_a, &o));
    CHECK(o.kind == OMNI_OUTPUT_KIND_NETWORK && o.len == 100 + 32 + 12, "queued packet sent: %zu bytes", o.len);
    size_t data_len = o.len;
    memcpy(buf, out_a, data_len); /* kept for the replay check */
    OmniOutput none;
    ASSERT_OK(omni_tunnel_poll_transmit(a, now, out_a, sizeof out_a, &none));
    CHECK(none.kind == OMNI_OUTPUT_KIND_NONE, "nothing more to transmit");

    ASSERT_OK(omni_tunnel_handle_datagram(b, now, &addr_a, buf, data_len, out_b, sizeof out_b, &o));
    CHECK(o.kind == OMNI_OUTPUT_KIND_TUN && o.len == 100 && memcmp(out_b + o.offset, pkt, 100) == 0,
          "B decrypts A's packet intact");
    int up = 0, roamed = 0;
    for (;;) {
        ASSERT_OK(omni_tunnel_poll_event(b, &ev));
        if (ev.kind == OMNI_EVENT_KIND_NONE) break;
        if (ev.kind == OMNI_EVENT_KIND_PEER_UP && !ev.initiator) up = 1;
        if (ev.kind == OMNI_EVENT_KIND_ENDPOINT_CHANGED && ev.endpoint.port == 1000) roamed = 1;
    }
    CHECK(up && roamed, "events on B: peer up (responder), endpoint learned");

    /* B answers through the copying call, A receives in place. */
    n = ipv4_packet(pkt, 1420, ip_b, ip_a, 0xb2);
    ASSERT_OK(omni_tunnel_send_ip(b, now, pkt, n, out_b, sizeof out_b, &o));
    CHECK(o.kind == OMNI_OUTPUT_KIND_NETWORK && o.endpoint.port == 1000, "B -> A: %zu-byte datagram", o.len);
    memcpy(buf, out_b, o.len);
    ASSERT_OK(omni_tunnel_handle_datagram_in_place(a, now, &addr_b, buf, o.len, &o));
    CHECK(o.kind == OMNI_OUTPUT_KIND_TUN && o.offset == OMNI_IN_PLACE_OFFSET && o.len == 1420 &&
              memcmp(buf + o.offset, pkt, 1420) == 0,
          "A decrypts B's 1420-byte packet in place");

    /* A sends in place. */
    n = ipv4_packet(buf + OMNI_IN_PLACE_OFFSET, 600, ip_a, ip_b, 0xc3);
    memcpy(pkt, buf + OMNI_IN_PLACE_OFFSET, n);
    ASSERT_OK(omni_tunnel_send_ip_in_place(a, now, buf, sizeof buf, n, &o));
    CHECK(o.kind == OMNI_OUTPUT_KIND_NETWORK && o.len % 16 == 0, "A encrypts in place: %zu bytes", o.len);
    ASSERT_OK(omni_tunnel_handle_datagram(b, now, &addr_a, buf, o.len, out_b, sizeof out_b, &o));
    CHECK(o.kind == OMNI_OUTPUT_KIND_TUN && o.len == 600 && memcmp(out_b, pkt, 600) == 0, "B receives it");

    /* Batches: A encrypts 4 packets in one call (one bad: not IP), B decrypts them in one call. */
    {
        enum { SLOTS = 4, STRIDE = 1536 };
        static uint8_t slots[SLOTS * STRIDE], sent[SLOTS][1420];
        uint32_t lens[SLOTS];
        OmniOutput res[SLOTS];
        OmniResult codes[SLOTS];
        OmniEndpoint froms[SLOTS] = {addr_a, addr_a, addr_a, addr_a};
        for (int i = 0; i < SLOTS; i++) {
            lens[i] = (uint32_t)ipv4_packet(slots + i * STRIDE + OMNI_IN_PLACE_OFFSET, 200 + 400 * (size_t)i, ip_a, ip_b,
                                            (uint8_t)(0x40 + i));
            memcpy(sent[i], slots + i * STRIDE + OMNI_IN_PLACE_OFFSET, lens[i]);
        }
        slots[2 * STRIDE + OMNI_IN_PLACE_OFFSET] = 0x00; /* slot 2: not an IP packet */
        ASSERT_OK(omni_tunnel_send_ip_batch_in_place(a, now, slots, STRIDE, SLOTS, lens, res, codes));
        CHECK(codes[0] == OMNI_RESULT_OK && codes[1] == OMNI_RESULT_OK && codes[2] == OMNI_RESULT_NOT_IP &&
                  codes[3] == OMNI_RESULT_OK && res[3].kind == OMNI_OUTPUT_KIND_NETWORK && res[3].endpoint.port == 2000,
              "batch send: 3 datagrams, the bad slot reports NOT_IP");
        for (int i = 0; i < SLOTS; i++) lens[i] = (uint32_t)res[i].len;
        lens[2] = 0;
        ASSERT_OK(omni_tunnel_handle_datagram_batch_in_place(b, now, froms, slots, STRIDE, SLOTS, lens, res, codes));
        int intact = 1;
        for (int i = 0; i < SLOTS; i++) {
            if (i == 2) continue;
            intact &= codes[i] == OMNI_RESULT_OK && res[i].kind == OMNI_OUTPUT_KIND_TUN && res[i].len == 200 + 400 * (size_t)i &&
                      memcmp(slots + i * STRIDE + res[i].offset, sent[i], res[i].len) == 0;
        }
        CHECK(intact && codes[2] == OMNI_RESULT_DROPPED, "batch receive: B decrypts the 3 in place, the empty slot is dropped");
        CHECK(omni_tunnel_send_ip_batch_in_place(a, now, slots, 8, SLOTS, lens, res, codes) == OMNI_RESULT_INVALID_ARGUMENT &&
                  omni_tunnel_send_ip_batch_in_place(a, now, slots, STRIDE, SLOTS, NULL, res, codes) == OMNI_RESULT_NULL_ARGUMENT &&
                  omni_tunnel_send_ip_batch_in_place(a, now, NULL, STRIDE, 0, NULL, NULL, NULL) == OMNI_RESULT_OK,
              "batch: stride too small, NULL arrays refused; an empty batch is fine");
    }

    /* Stats. */
    size_t count = 0;
    OmniPeerStats st;
    ASSERT_OK(omni_tunnel_peer_count(a, &count));
    ASSERT_OK(omni_tunnel_peer_stats(a, 0, &st));
    CHECK(count == 1 && st.has_session && st.rx_bytes > 0 && st.tx_bytes > 0 && st.last_handshake_age_ns != UINT64_MAX &&
              strcmp(st.public_key, pub_b) == 0 && st.endpoint.port == 2000,
          "stats: rx %llu B, tx %llu B", (unsigned long long)st.rx_bytes, (unsigned long long)st.tx_bytes);
    CHECK(omni_tunnel_peer_stats(a, 1, &st) == OMNI_RESULT_UNKNOWN_PEER, "stats past the last peer: UNKNOWN_PEER");

    /* Timers and host notifications. */
    ASSERT_OK(omni_tunnel_handle_timeout(a, OMNI_NOW));
    ASSERT_OK(omni_tunnel_notify_network_changed(a, OMNI_NOW));
    ASSERT_OK(omni_tunnel_poll_transmit(a, OMNI_NOW, out_a, sizeof out_a, &o));
    CHECK(o.kind == OMNI_OUTPUT_KIND_NETWORK && o.len == 148, "network change: A re-handshakes at once");
    ASSERT_OK(omni_tunnel_notify_wake(b, OMNI_NOW));

    /* ----- error cases ----- */
    CHECK(omni_tunnel_send_ip(NULL, now, pkt, 100, out_a, sizeof out_a, &o) == OMNI_RESULT_NULL_ARGUMENT,
          "NULL tunnel: NULL_ARGUMENT");
    CHECK(omni_tunnel_send_ip(a, now, NULL, 100, out_a, sizeof out_a, &o) == OMNI_RESULT_NULL_ARGUMENT,
          "NULL packet: NULL_ARGUMENT");
    CHECK(omni_tunnel_poll_timeout(a, NULL) == OMNI_RESULT_NULL_ARGUMENT, "NULL out-pointer: NULL_ARGUMENT");
    omni_tunnel_free(NULL);
    CHECK(1, "omni_tunnel_free(NULL) is a no-op");

    n = ipv4_packet(pkt, 1000, ip_a, ip_b, 0xd4);
    OmniResult r = omni_tunnel_send_ip(a, now, pkt, n, out_a, 64, &o);
    CHECK(r == OMNI_RESULT_BUFFER_TOO_SMALL && o.needed >= 1032, "small output buffer: BUFFER_TOO_SMALL, need %zu",
          o.needed);
    ASSERT_OK(omni_tunnel_send_ip(a, now, pkt, n, out_a, o.needed, &o));
    CHECK(o.kind == OMNI_OUTPUT_KIND_NETWORK, "retry with the size needed succeeds");
    r = omni_tunnel_public_key(a, key, 10, &needed);
    CHECK(r == OMNI_RESULT_BUFFER_TOO_SMALL && needed == OMNI_KEY_BUF_LEN, "small key buffer: need %zu", needed);

    n = ipv4_packet(pkt, 60, ip_a, elsewhere, 0);
    CHECK(omni_tunnel_send_ip(a, now, pkt, n, out_a, sizeof out_a, &o) == OMNI_RESULT_NO_ROUTE, "no route: NO_ROUTE");
    memset(pkt, 0x00, 60);
    CHECK(omni_tunnel_send_ip(a, now, pkt, 60, out_a, sizeof out_a, &o) == OMNI_RESULT_NOT_IP, "not IP: NOT_IP");

    memset(pkt, 0x04, 64);
    CHECK(omni_tunnel_handle_datagram(b, now, &addr_a, pkt, 64, out_b, sizeof out_b, &o) == OMNI_RESULT_DROPPED,
          "garbage datagram: DROPPED");
    n = ipv4_packet(pkt, 80, ip_b, ip_a, 1);
    ASSERT_OK(omni_tunnel_send_ip(b, now, pkt, n, out_b, sizeof out_b, &o));
    size_t dl = o.len;
    ASSERT_OK(omni_tunnel_handle_datagram(a, now, &addr_b, out_b, dl, out_a, sizeof out_a, &o));
    CHECK(omni_tunnel_handle_datagram(a, now, &addr_b, out_b, dl, out_a, sizeof out_a, &o) == OMNI_RESULT_DROPPED,
          "replayed datagram: DROPPED");
    OmniEndpoint bad = addr_b;
    bad.family = 5;
    CHECK(omni_tunnel_handle_datagram(a, now, &bad, out_b, dl, out_a, sizeof out_a, &o) == OMNI_RESULT_INVALID_ARGUMENT,
          "bad address family: INVALID_ARGUMENT");

    char err[128] = {0};
    OmniTunnel *t = (OmniTunnel *)0x1;
    r = omni_tunnel_new_from_wg_quick("[Interface]\nPrivateKey = nope\n", &t, err, sizeof err);
    CHECK(r == OMNI_RESULT_INVALID_CONFIG && t == NULL && strstr(err, "line 2") != NULL,
          "bad config: INVALID_CONFIG, \"%s\"", err);
    char tiny[8];
    r = omni_tunnel_new_from_wg_quick("[Peer]\n", &t, tiny, sizeof tiny);
    CHECK(r == OMNI_RESULT_INVALID_CONFIG && strlen(tiny) == 7, "error message truncated to the buffer");
    CHECK(omni_tunnel_new_from_wg_quick(NULL, &t, NULL, 0) == OMNI_RESULT_NULL_ARGUMENT, "NULL config: NULL_ARGUMENT");
    CHECK(omni_public_key_from_private("short", key, sizeof key, NULL) == OMNI_RESULT_INVALID_KEY,
          "bad key: INVALID_KEY");
    CHECK(strcmp(omni_result_name(OMNI_RESULT_DROPPED), "DROPPED") == 0 && strcmp(omni_result_name(12345), "UNKNOWN") == 0,
          "result names");

    /* ----- cluster: the join path through the C API (no network: the
     * tests against a real Nucleus are the Python and Kotlin ones) ----- */
    OmniClusterConfig cc = {
        .private_key = priv_a,
        .nucleus_endpoint = "127.0.0.1:51999",
        .nucleus_public_key = pub_b, /* any key will do until someone answers */
        .cluster = "c-phones",
        .secret = "s3cret",
        .vip = "10.66.0.1/24",
        .listen_port = 0,
        .mtu = 0,
    };
    OmniTunnel *c = NULL;
    ASSERT_OK(omni_tunnel_join_cluster(&cc, &c, err, sizeof err));
    OmniClusterState cs;
    ASSERT_OK(omni_tunnel_cluster_state(c, &cs));
    ASSERT_OK(omni_tunnel_peer_count(c, &count));
    CHECK(cs == OMNI_CLUSTER_STATE_CONNECTING && count == 0, "join: connecting, no peers yet (the Nucleus is none)");
    ASSERT_OK(omni_tunnel_poll_transmit(c, OMNI_NOW, out_a, sizeof out_a, &o));
    CHECK(o.kind == OMNI_OUTPUT_KIND_NETWORK && o.len == 148 && o.endpoint.port == 51999,
          "join: a handshake initiation to the Nucleus (%zu bytes)", o.len);
    ASSERT_OK(omni_tunnel_poll_timeout(c, &deadline));
    CHECK(deadline != UINT64_MAX, "join: a retry deadline is armed");
    memset(pkt, 0x04, 64);
    CHECK(omni_tunnel_handle_datagram(c, OMNI_NOW, &addr_b, pkt, 64, out_b, sizeof out_b, &o) == OMNI_RESULT_DROPPED,
          "join: garbage datagram: DROPPED");
    ASSERT_OK(omni_tunnel_leave_cluster(c));
    ASSERT_OK(omni_tunnel_cluster_state(c, &cs));
    int left = 0;
    for (;;) {
        ASSERT_OK(omni_tunnel_poll_event(c, &ev));
        if (ev.kind == OMNI_EVENT_KIND_NONE) break;
        if (ev.kind == OMNI_EVENT_KIND_CLUSTER_LEFT) left = 1;
    }
    CHECK(cs == OMNI_CLUSTER_STATE_LEFT && left, "leave: state LEFT, event CLUSTER_LEFT");
    omni_tunnel_free(c);
    ASSERT_OK(omni_tunnel_cluster_state(a, &cs));
    CHECK(cs == OMNI_CLUSTER_STATE_NOT_IN_CLUSTER && omni_tunnel_leave_cluster(a) == OMNI_RESULT_INVALID_ARGUMENT,
          "a plain tunnel: NOT_IN_CLUSTER, leave is INVALID_ARGUMENT");
    cc.nucleus_public_key = "nope";
    r = omni_tunnel_join_cluster(&cc, &c, err, sizeof err);
    CHECK(r == OMNI_RESULT_INVALID_KEY && c == NULL, "join with a bad Nucleus key: INVALID_KEY, \"%s\"", err);
    cc.nucleus_public_key = pub_b;
    cc.vip = NULL;
    r = omni_tunnel_join_cluster(&cc, &c, err, sizeof err);
    CHECK(r == OMNI_RESULT_NULL_ARGUMENT && c == NULL && strstr(err, "vip") != NULL, "join without a VIP: \"%s\"", err);
    cc.vip = "10.66.0.1/33";
    CHECK(omni_tunnel_join_cluster(&cc, &c, err, sizeof err) == OMNI_RESULT_INVALID_ARGUMENT && c == NULL,
          "join with a bad VIP: INVALID_ARGUMENT, \"%s\"", err);
    cc.vip = "10.66.0.1/24";
    cc.vip6 = "fd66::1/64";
    ASSERT_OK(omni_tunnel_join_cluster(&cc, &c, err, sizeof err));
    CHECK(c != NULL, "dual-stack join (vip + vip6)");
    omni_tunnel_free(c);

    omni_tunnel_free(a);
    omni_tunnel_free(b);
    printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
