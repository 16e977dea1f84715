//! Deterministic network simulations of omni-core nodes (see `sim/mod.rs`):
//! long lossy runs with rekeying, simultaneous initiation, restarts, replays,
//! Reject-After-Time, roaming, a handshake flood, keepalive behaviour.
//!
//! Every run is seeded: a failure reproduces exactly.

mod sim;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use omni_core::constants::{KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX};
use omni_core::cookie::{CookieChecker, CookieJar};
use omni_core::node::{Received, RecvError};
use omni_core::wire::{Initiation, Response};
use omni_core::{Event, Instant, WallTime};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sim::*;

const ADDR_A: &str = "192.0.2.1:51820";
const ADDR_B: &str = "198.51.100.2:51820";
const ATTACKER: &str = "203.0.113.66:4444";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn t(s: f64) -> Instant {
    Instant::from_nanos((s * 1e9) as u64)
}

/// A test's seed, shifted by `SIM_SEED` (default 0) to explore other runs:
/// `SIM_SEED=5 cargo test --test simulation`.
fn seed(base: u64) -> u64 {
    let shift: u64 = std::env::var("SIM_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    base.wrapping_add(shift.wrapping_mul(1_000_003))
}

/// Two nodes peered with each other (both know the other's endpoint).
fn pair(seed: u64, link: Link) -> (Sim, usize, usize) {
    let mut sim = Sim::new(self::seed(seed));
    let a = sim.add_node("A", addr(ADDR_A));
    let b = sim.add_node("B", addr(ADDR_B));
    sim.connect(a, b);
    sim.set_links_both(a, b, link);
    (sim, a, b)
}

/// Invariant of every run: no node ever seals a transport message with a
/// session older than Reject-After-Time (or one the simulator never saw made).
fn assert_no_stale_sessions(sim: &Sim) {
    for n in &sim.nodes {
        for r in n.tx.iter().filter(|r| r.kind == MSG_TRANSPORT) {
            let age = r
                .session_age
                .unwrap_or_else(|| panic!("{}: transport at {} on an unknown session", n.name, fmt_t(r.at)));
            assert!(age < REJECT_AFTER_TIME, "{}: sent at {} with a session {:?} old", n.name, fmt_t(r.at), age);
        }
    }
}

fn first_arrival_after(r: &FlowReport, after: Instant) -> Option<Instant> {
    r.arrivals.iter().map(|a| a.0).filter(|&x| x >= after).min()
}

fn initiations(n: &SimNode, from: Instant, until: Instant) -> usize {
    n.count_tx(|r| r.kind == MSG_INITIATION && r.at >= from && r.at < until)
}

// ----- the simulator itself -------------------------------------------------

/// Same seed ⇒ same run; another seed ⇒ another run.
#[test]
fn simulator_is_deterministic() {
    let run = |seed: u64| {
        let (mut sim, a, b) = pair(seed, Link::lossy(10, 50, 0.05, 0.05));
        let mut fa = Flow::new(1, a, b, Instant::ZERO, 50, 300, seed).with_bursts(3);
        let mut fb = Flow::new(2, b, a, t(0.5), 50, 300, seed).with_bursts(3);
        run_flows(&mut sim, &mut [&mut fa, &mut fb], t(20.0));
        sim.run_for(secs(15.0));
        assert!(sim.nodes[a].inbox.len() > 50 && sim.nodes[b].inbox.len() > 50);
        sim.trace_digest()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

// ----- 1. a long lossy run ---------------------------------------------------

/// 30 simulated minutes of traffic both ways over lossy, duplicating,
/// reordering links: sessions rekey every ~2 minutes without any gap in the
/// traffic, and every lost packet is one the network dropped.
#[test]
fn thirty_minutes_of_lossy_traffic_rekeys_without_gaps() {
    let (mut sim, a, b) = pair(1, Link::lossy(10, 50, 0.015, 0.01));
    let start = Instant::ZERO;
    let end = Instant::from_secs(30 * 60);
    // A speaks first (as a client would); B answers from t = 1 s.
    let mut fa = Flow::new(1, a, b, start, 100, 700, 11).with_bursts(2);
    let mut fb = Flow::new(2, b, a, t(1.0), 100, 700, 12).with_bursts(2);
    run_flows(&mut sim, &mut [&mut fa, &mut fb], end);
    sim.run_for(secs(2.0)); // let the last packets land

    // Rekeying: Rekey-After-Time is 120 s, so ~15 handshakes in 30 min; the
    // initiator completes each, the responder on the initiator's first packet.
    let hs_a = sim.nodes[a].handshakes_completed();
    let hs_b = sim.nodes[b].handshakes_completed();
    let first = sim.nodes[a]
        .events
        .iter()
        .find(|(_, e)| matches!(e, Event::HandshakeCompleted { .. }))
        .expect("no handshake")
        .0;
    assert!(first < t(6.0), "first handshake at {}", fmt_t(first));
    assert!((12..=18).contains(&hs_a), "A completed {hs_a} handshakes");
    assert!((12..=18).contains(&hs_b), "B completed {hs_b} handshakes");
    assert!(!sim.nodes[a].has_event(|e| matches!(e, Event::HandshakeFailed { .. } | Event::KeysExpired { .. })));
    assert!(!sim.nodes[b].has_event(|e| matches!(e, Event::HandshakeFailed { .. } | Event::KeysExpired { .. })));
    assert_no_stale_sessions(&sim);

    for (f, src, dst) in [(&fa, ADDR_A, ADDR_B), (&fb, ADDR_B, ADDR_A)] {
        // From t = 10 s on: the first handshake may need a retransmission.
        let r = flow_report(&sim, f, t(10.0), end);
        let net_drops = sim.count_dropped(|d| {
            d.from == addr(src) && d.to == addr(dst) && d.kind == MSG_TRANSPORT && d.len > KEEPALIVE_LEN
        });
        eprintln!(
            "flow {}: sent {} delivered {} lost {} (network dropped {net_drops}) reordered {} max gap {:?} at {}",
            f.id,
            r.sent,
            r.delivered,
            r.lost,
            r.reordered,
            r.max_gap,
            fmt_t(r.max_gap_at)
        );
        assert!(r.sent > 2000);
        assert!(r.ratio() > 0.95, "delivery ratio {}", r.ratio());
        assert!(r.lost <= net_drops, "{} packets lost but the network dropped only {net_drops}", r.lost);
        assert_eq!(r.duplicates, 0, "duplicated datagrams must not be delivered twice");
        assert!(r.reordered > 0, "the links reorder: the receiver must accept out-of-order packets");
        assert!(r.max_gap < secs(2.0), "gap of {:?} at {}", r.max_gap, fmt_t(r.max_gap_at));
        // Rekeying never holds packets back: the old session carries them
        // until the new one is confirmed.
        assert!(r.max_latency < secs(0.5), "packet {} took {:?}", r.max_latency_seq, r.max_latency);
    }
    // The only errors are the network's duplicates being refused.
    for n in &sim.nodes {
        let errors: Vec<_> = n.rx.iter().filter(|r| r.result.is_err()).collect();
        assert!(errors.len() <= sim.duplicated, "{}: {} errors, {} duplicates", n.name, errors.len(), sim.duplicated);
        for e in errors {
            assert!(
                matches!(e.result, Err(RecvError::Replay | RecvError::StaleTimestamp | RecvError::UnknownIndex)),
                "{}: unexpected {:?} at {}",
                n.name,
                e.result,
                fmt_t(e.at)
            );
        }
    }
}

// ----- 2. simultaneous initiation -------------------------------------------

fn simultaneous_start(seed: u64, lose_first_response_to_a: bool) -> (Sim, usize, usize, Flow, Flow) {
    let (mut sim, a, b) = pair(seed, Link::lossy(15, 40, 0.0, 0.0));
    if lose_first_response_to_a {
        // The response to A's initiation is lost: only B's handshake completes.
        let mut done = false;
        sim.set_filter(move |_, d| {
            if !done && d.kind() == MSG_RESPONSE && d.to == addr(ADDR_A) {
                done = true;
                return false;
            }
            true
        });
    }
    // Both have data (and endpoints) at t = 0.
    let mut fa = Flow::new(1, a, b, Instant::ZERO, 100, 200, seed);
    let mut fb = Flow::new(2, b, a, Instant::ZERO, 100, 200, seed);
    run_flows(&mut sim, &mut [&mut fa, &mut fb], Instant::from_secs(10));
    sim.run_for(secs(1.0));
    (sim, a, b, fa, fb)
}

/// Both sides initiate at t = 0: both handshakes complete, data flows both
/// ways at once, and the two do not keep replacing each other's handshakes.
#[test]
fn simultaneous_initiation_completes_both_handshakes() {
    let (sim, a, b, fa, fb) = simultaneous_start(2, false);
    for n in [a, b] {
        assert!(
            sim.nodes[n].has_event(|e| matches!(e, Event::HandshakeCompleted { initiator: true, .. })),
            "{}: its own handshake did not complete: {:?}",
            sim.nodes[n].name,
            sim.nodes[n].events
        );
    }
    let (ia, ib) =
        (initiations(&sim.nodes[a], Instant::ZERO, t(10.0)), initiations(&sim.nodes[b], Instant::ZERO, t(10.0)));
    assert!(ia + ib <= 4, "{ia} + {ib} initiations in 10 s: a handshake fight");
    assert_eq!((ia, ib), (1, 1), "lossless: one initiation each, nothing retried or replaced");
    for f in [&fa, &fb] {
        let r = flow_report(&sim, f, Instant::ZERO, t(10.0));
        let first = first_arrival_after(&r, Instant::ZERO).expect("nothing arrived");
        assert!(first < t(1.0), "flow {}: first packet at {}", f.id, fmt_t(first));
        assert_eq!(r.lost, 0, "flow {}: lossless links, yet {} lost", f.id, r.lost);
        assert!(r.max_latency < secs(1.0), "flow {}: packet {} took {:?}", f.id, r.max_latency_seq, r.max_latency);
        assert!(r.max_gap < secs(1.0));
    }
    assert_no_stale_sessions(&sim);
}

/// The same, but the response to A's initiation is lost. B's handshake
/// completes, and A (its responder) must use it at once for the packets it
/// queued rather than hold them until its own retransmission 5 s later.
#[test]
fn simultaneous_initiation_with_one_response_lost() {
    let (sim, a, b, fa, fb) = simultaneous_start(3, true);
    assert!(sim.nodes[b].has_event(|e| matches!(e, Event::HandshakeCompleted { initiator: true, .. })));
    for f in [&fa, &fb] {
        let r = flow_report(&sim, f, Instant::ZERO, t(10.0));
        let first = first_arrival_after(&r, Instant::ZERO).expect("nothing arrived");
        assert!(first < t(1.0), "flow {}: first packet at {}", f.id, fmt_t(first));
        assert_eq!(r.lost, 0, "flow {}: {} lost", f.id, r.lost);
        // Including the packets queued before a session existed.
        assert!(r.max_latency < secs(1.0), "flow {}: packet {} took {:?}", f.id, r.max_latency_seq, r.max_latency);
        assert!(r.max_gap < secs(1.0), "flow {}: gap {:?} at {}", f.id, r.max_gap, fmt_t(r.max_gap_at));
    }
    // B's handshake completing (A confirms it on B's first packet) ends A's
    // attempt too: A does not retransmit its unanswered initiation 5 s later.
    let (ia, ib) =
        (initiations(&sim.nodes[a], Instant::ZERO, t(10.0)), initiations(&sim.nodes[b], Instant::ZERO, t(10.0)));
    assert_eq!((ia, ib), (1, 1), "initiations in 10 s (A, B)");
    assert!(!sim.nodes[a].has_event(|e| matches!(e, Event::HandshakeFailed { .. })));
    assert_no_stale_sessions(&sim);
}

// ----- 3. peer restart and the TAI64N rule -----------------------------------

/// B reboots mid-traffic (a fresh `Node`, same key, all state lost, wall
/// clock moved forward). B's next packet makes it initiate; A accepts since
/// the TAI64N is newer than any it saw; traffic resumes within a second.
#[test]
fn restarted_peer_with_newer_clock_reconnects() {
    let (mut sim, a, b) = pair(4, Link::lossy(10, 40, 0.0, 0.0));
    let mut fa = Flow::new(1, a, b, Instant::ZERO, 100, 500, 4);
    let mut fb = Flow::new(2, b, a, t(0.5), 100, 500, 4);
    let restart = t(60.0);
    run_flows(&mut sim, &mut [&mut fa, &mut fb], restart);
    let wall = sim.true_wall();
    sim.restart(b, WallTime::new(wall.secs + 1, wall.nanos));
    run_flows(&mut sim, &mut [&mut fa, &mut fb], t(120.0));

    for f in [&fa, &fb] {
        let r = flow_report(&sim, f, t(1.0), t(120.0));
        let resumed = first_arrival_after(&r, restart).unwrap();
        eprintln!(
            "flow {}: resumed {:.3} s after the restart, max gap {:?}",
            f.id,
            elapsed(restart, resumed),
            r.max_gap
        );
        assert!(resumed < restart + secs(2.0), "flow {} resumed at {}", f.id, fmt_t(resumed));
        assert!(r.max_gap < secs(2.0));
    }
    // A refused packets for the lost session only until B's new initiation.
    assert!(
        sim.nodes[a].count_rx(|r| r.at > restart
            && r.kind == MSG_INITIATION
            && matches!(r.result, Ok(Received::Reply { len: 92 })))
            >= 1
    );
    assert!(
        sim.nodes[b].count_rx(|r| r.result == Err(RecvError::UnknownIndex)) >= 1,
        "B got packets for the sessions it forgot"
    );
    assert!(sim.nodes[b].has_event(|e| matches!(e, Event::HandshakeCompleted { initiator: true, .. })));
    assert_no_stale_sessions(&sim);
}

/// Only A sends (B never has data to trigger a handshake): A notices the
/// silence on its own. Having sent data and heard nothing back for
/// Keepalive-Timeout + Rekey-Timeout (15 s + jitter) it initiates, and the
/// fresh B answers.
#[test]
fn restarted_silent_peer_is_recovered_by_the_sender() {
    let (mut sim, a, b) = pair(5, Link::lossy(10, 40, 0.0, 0.0));
    let mut fa = Flow::new(1, a, b, Instant::ZERO, 100, 500, 5);
    let restart = t(60.0);
    run_flows(&mut sim, &mut [&mut fa], restart);
    let wall = sim.true_wall();
    sim.restart(b, WallTime::new(wall.secs + 1, wall.nanos));
    run_flows(&mut sim, &mut [&mut fa], t(120.0));

    let r = flow_report(&sim, &fa, t(1.0), t(120.0));
    let resumed = first_arrival_after(&r, restart).unwrap();
    let bound = KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX + secs(1.0);
    eprintln!("resumed {:.3} s after the restart", elapsed(restart, resumed));
    assert!(resumed > restart + secs(1.0), "nothing can arrive before A notices");
    assert!(resumed < restart + bound, "resumed at {}", fmt_t(resumed));
    assert!(initiations(&sim.nodes[a], restart, resumed) >= 1, "A must have initiated");
    assert_eq!(initiations(&sim.nodes[b], restart, t(120.0)), 0, "B had nothing to send");
    assert!(sim.nodes[b].has_event(|e| matches!(e, Event::HandshakeCompleted { initiator: false, .. })));
    assert_no_stale_sessions(&sim);
}

/// The TAI64N rule: a responder accepts an initiation only if its timestamp
/// is strictly newer than every one it accepted from that peer. The
/// initiator does not persist its last timestamp; a rebooted node relies on
/// its wall clock having moved forward. Here B reboots with its clock an hour
/// BEHIND: all of B's initiations are refused (`StaleTimestamp`), exactly like
/// replays. B can still *answer* A's initiation, so the connection comes back
/// once A initiates (after 15 s of silence), and B's packets flow again.
#[test]
fn restarted_peer_with_clock_behind_is_refused_as_replay() {
    let (mut sim, a, b) = pair(6, Link::lossy(10, 40, 0.0, 0.0));
    // B speaks first: A has accepted B's TAI64N before the reboot.
    let mut fb = Flow::new(2, b, a, Instant::ZERO, 100, 500, 6);
    let mut fa = Flow::new(1, a, b, t(0.5), 100, 500, 6);
    let restart = t(60.0);
    run_flows(&mut sim, &mut [&mut fa, &mut fb], restart);
    let wall = sim.true_wall();
    sim.restart(b, WallTime::new(wall.secs - 3600, wall.nanos));
    run_flows(&mut sim, &mut [&mut fa, &mut fb], t(200.0));
    sim.run_for(secs(1.0));

    let a_node = &sim.nodes[a];
    let from_b: Vec<_> = a_node.rx.iter().filter(|r| r.at > restart && r.kind == MSG_INITIATION).collect();
    assert!(!from_b.is_empty(), "B must have tried to initiate");
    for r in &from_b {
        assert_eq!(r.result, Err(RecvError::StaleTimestamp), "B's initiation at {} with a clock behind", fmt_t(r.at));
    }
    // A's own initiation recovers the connection.
    let bound = KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX + secs(1.0);
    assert!(sim.nodes[a].has_event(|e| matches!(e, Event::HandshakeCompleted { initiator: true, .. })));
    for f in [&fa, &fb] {
        let r = flow_report(&sim, f, restart, t(200.0));
        let resumed = first_arrival_after(&r, restart).unwrap();
        eprintln!("flow {}: resumed {:.3} s after the restart", f.id, elapsed(restart, resumed));
        assert!(resumed < restart + bound, "flow {} resumed at {}", f.id, fmt_t(resumed));
        // Once resumed, no further gap.
        let after = flow_report(&sim, f, resumed, t(200.0));
        assert!(after.max_gap < secs(2.0), "flow {}: gap {:?} at {}", f.id, after.max_gap, fmt_t(after.max_gap_at));
    }
    // Once B has a working session it stops sending (doomed) initiations
    // and does not report a failed handshake.
    let resumed_b = first_arrival_after(&flow_report(&sim, &fb, restart, t(200.0)), restart).unwrap();
    assert!(
        initiations(&sim.nodes[b], resumed_b + secs(1.0), t(200.0)) == 0,
        "B keeps initiating after the session is up: {:?}",
        sim.nodes[b].tx.iter().filter(|r| r.kind == MSG_INITIATION).map(|r| fmt_t(r.at)).collect::<Vec<_>>()
    );
    assert!(!sim.nodes[b].has_event(|e| matches!(e, Event::HandshakeFailed { .. })), "{:?}", sim.nodes[b].events);
    assert_no_stale_sessions(&sim);
}

// ----- 4. replays ------------------------------------------------------------

/// Captured datagrams re-injected: a transport message is a `Replay`, an
/// initiation has a stale TAI64N; neither moves the endpoint, creates a
/// session or disturbs the traffic.
#[test]
fn replayed_datagrams_are_refused_without_side_effects() {
    let (mut sim, a, b) = pair(7, Link::lossy(10, 30, 0.0, 0.0));
    sim.capture = true;
    let mut fa = Flow::new(1, a, b, Instant::ZERO, 100, 300, 7);
    let mut fb = Flow::new(2, b, a, t(0.5), 100, 300, 7);
    run_flows(&mut sim, &mut [&mut fa, &mut fb], t(5.0));
    sim.capture = false;
    let grab = |sim: &Sim, kind: u32, to: &str| {
        sim.captured
            .iter()
            .find(|(_, d)| d.kind() == kind && d.to == addr(to) && d.data.len() > KEEPALIVE_LEN)
            .unwrap()
            .clone()
    };
    let (init_at, init) = grab(&sim, MSG_INITIATION, ADDR_B);
    let (_, data) = grab(&sim, MSG_TRANSPORT, ADDR_B);
    let (_, resp) = grab(&sim, MSG_RESPONSE, ADDR_A);
    let attacker = addr(ATTACKER);
    let pa = sim.peer_id(b, a);
    let before = sim.nodes[b].node.peer_stats(pa).unwrap();
    let (events_before, tx_before) = (sim.nodes[b].events.len(), sim.nodes[b].tx.len());

    // Right after the original (within the 50 ms initiation rate limit).
    assert!(init_at < t(1.0));
    let r = sim.deliver_now(b, addr(ADDR_A), &init.data);
    assert!(matches!(r, Err(RecvError::StaleTimestamp | RecvError::RateLimited)), "{r:?}");
    // Later, from the real and from another address.
    for from in [addr(ADDR_A), attacker] {
        assert_eq!(sim.deliver_now(b, from, &data.data), Err(RecvError::Replay));
        assert_eq!(sim.deliver_now(b, from, &init.data), Err(RecvError::StaleTimestamp));
    }
    // The response replayed to A: its handshake is over.
    assert_eq!(sim.deliver_now(a, attacker, &resp.data), Err(RecvError::UnknownIndex));

    let after = sim.nodes[b].node.peer_stats(pa).unwrap();
    assert_eq!(after.endpoint, Some(addr(ADDR_A)));
    assert_eq!(after.last_handshake, before.last_handshake, "a replay must not create a session");
    assert_eq!(after.rx_bytes, before.rx_bytes, "replays are not authenticated traffic");
    assert_eq!(sim.nodes[b].events.len(), events_before);
    assert_eq!(sim.nodes[b].tx.len(), tx_before, "B must not answer a replay");
    assert_eq!(sim.endpoint_of(a, b), Some(addr(ADDR_B)));

    // Traffic is undisturbed.
    let mark = sim.now;
    run_flows(&mut sim, &mut [&mut fa, &mut fb], t(20.0));
    sim.run_for(secs(1.0));
    for f in [&fa, &fb] {
        let r = flow_report(&sim, f, mark, t(20.0));
        assert_eq!(r.lost, 0);
        assert!(r.max_gap < secs(1.0));
    }
    assert!(sim.count_dropped(|d| d.to == attacker) == 0, "nothing was sent to the attacker");
    assert_no_stale_sessions(&sim);
}

// ----- 5. Reject-After-Time --------------------------------------------------

/// Transport messages an on-path attacker held back: one delivered while the
/// session is younger than Reject-After-Time (180 s) is accepted, one
/// delivered after is `Expired`, and once the keys are erased
/// (3 × Reject-After-Time without a handshake) it names no session at all.
#[test]
fn held_back_transport_is_rejected_after_reject_after_time() {
    let (mut sim, a, b) = pair(8, Link::ideal(20));
    let stash = sim.steal(|t_, d| {
        d.kind() == MSG_TRANSPORT && d.to == addr(ADDR_B) && d.data.len() > KEEPALIVE_LEN && t_ >= t(2.0) && t_ < t(3.0)
    });
    let mut fa = Flow::new(1, a, b, Instant::ZERO, 150, 200, 8);
    run_flows(&mut sim, &mut [&mut fa], t(5.0));
    sim.clear_filter();
    let held: Vec<Datagram> = stash.borrow().clone();
    assert!(held.len() >= 3);
    // B's session began when it answered A's initiation.
    let born = sim.nodes[b].rx.iter().find(|r| r.kind == MSG_INITIATION && r.result.is_ok()).unwrap().at;

    sim.run_until(born + secs(179.0));
    let r = sim.deliver_now(b, addr(ADDR_A), &held[0].data);
    assert!(matches!(r, Ok(Received::Packet { .. })), "179 s old session: {r:?}");
    sim.run_until(born + REJECT_AFTER_TIME + secs(0.5));
    assert_eq!(sim.deliver_now(b, addr(ADDR_A), &held[1].data), Err(RecvError::Expired));

    // Let all keys age out: 3 × Reject-After-Time after the last handshake.
    sim.run_for(secs(3.0 * 180.0 + 60.0));
    assert!(sim.nodes[b].has_event(|e| matches!(e, Event::KeysExpired { .. })));
    assert!(!sim.nodes[b].node.peer_stats(sim.peer_id(b, a)).unwrap().has_session);
    assert_eq!(sim.deliver_now(b, addr(ADDR_A), &held[2].data), Err(RecvError::UnknownIndex));
    assert_no_stale_sessions(&sim);
}

/// A keeps sending while hearing nothing (B → A is cut): A never seals with a
/// session older than Reject-After-Time. After that its packets wait for a
/// handshake; once the path heals, the handshake completes and traffic flows.
#[test]
fn deaf_sender_never_uses_an_expired_session() {
    let (mut sim, a, b) = pair(9, Link::ideal(20));
    let mut fa = Flow::new(1, a, b, Instant::ZERO, 400, 600, 9);
    run_flows(&mut sim, &mut [&mut fa], t(10.0));
    sim.set_link(b, a, Link::down());
    let heal = t(400.0);
    run_flows(&mut sim, &mut [&mut fa], heal);

    let born = sim.nodes[a].events.iter().find(|(_, e)| matches!(e, Event::HandshakeCompleted { .. })).unwrap().0;
    let deadline = born + REJECT_AFTER_TIME;
    assert_no_stale_sessions(&sim);
    eprintln!(
        "session born {}, last transport {}, {} initiations while deaf",
        fmt_t(born),
        fmt_t(sim.nodes[a].tx.iter().filter(|r| r.kind == MSG_TRANSPORT && r.at < heal).map(|r| r.at).max().unwrap()),
        initiations(&sim.nodes[a], t(10.0), heal)
    );
    let last_transport =
        sim.nodes[a].tx.iter().filter(|r| r.kind == MSG_TRANSPORT && r.at < heal).map(|r| r.at).max().unwrap();
    assert!(last_transport < deadline, "A sent transport at {} (session born {})", fmt_t(last_transport), fmt_t(born));
    assert!(last_transport > deadline.saturating_sub(secs(2.0)), "A should use the session until it expires");
    assert!(initiations(&sim.nodes[a], deadline, heal) >= 10, "A keeps trying to handshake");
    assert!(sim.nodes[a].has_event(|e| matches!(e, Event::HandshakeFailed { .. })));
    // On B's side: accepted until 180 s, at most a boundary straggler refused.
    let b_node = &sim.nodes[b];
    let expired = b_node.count_rx(|r| r.result == Err(RecvError::Expired));
    assert!(expired <= 1, "{expired} packets arrived on an expired session");
    let accepted_late =
        b_node.count_rx(|r| r.kind == MSG_TRANSPORT && r.result.is_ok() && r.at > deadline + secs(1.0) && r.at < heal);
    assert_eq!(accepted_late, 0);

    // The path heals: the next handshake attempt gets through.
    sim.set_link(b, a, Link::ideal(20));
    run_flows(&mut sim, &mut [&mut fa], heal + secs(30.0));
    let r = flow_report(&sim, &fa, heal, heal + secs(30.0));
    let resumed = first_arrival_after(&r, heal).unwrap();
    assert!(resumed < heal + REKEY_TIMEOUT + secs(2.0), "resumed at {}", fmt_t(resumed));
    assert_no_stale_sessions(&sim);
}

// ----- 6. roaming ------------------------------------------------------------

/// A moves to a new address mid-traffic. B learns it from A's first
/// authenticated packet and keeps the traffic going. Then an attacker
/// tries to redirect B with unauthenticated datagrams from its own address
/// (a replay, a forgery, and a perfectly valid cookie reply): B's endpoint
/// must not move.
#[test]
fn roaming_follows_authenticated_packets_only() {
    let (mut sim, a, b) = pair(10, Link::lossy(10, 30, 0.0, 0.0));
    sim.capture = true;
    let mut fa = Flow::new(1, a, b, Instant::ZERO, 100, 300, 10).with_bursts(2);
    let mut fb = Flow::new(2, b, a, t(0.5), 100, 300, 10).with_bursts(2);
    let roam = t(30.0);
    run_flows(&mut sim, &mut [&mut fa, &mut fb], roam);
    let new_a = addr("192.0.2.77:40000");
    sim.set_addr(a, new_a);
    run_flows(&mut sim, &mut [&mut fa, &mut fb], t(60.0));

    let pa = sim.peer_id(b, a);
    let changed: Vec<(Instant, Event)> =
        sim.nodes[b].events.iter().filter(|(_, e)| matches!(e, Event::EndpointChanged { .. })).copied().collect();
    // Normally one change; a packet from the old address overtaken by one
    // from the new address would (legitimately) flip it back and forth.
    assert!((1..=3).contains(&changed.len()), "{changed:?}");
    assert_eq!(changed[0].1, Event::EndpointChanged { peer: pa, endpoint: new_a });
    assert_eq!(changed.last().unwrap().1, Event::EndpointChanged { peer: pa, endpoint: new_a });
    assert!(changed.iter().all(|c| c.0 > roam && c.0 < roam + secs(1.0)), "{changed:?}");
    assert_eq!(sim.endpoint_of(b, a), Some(new_a));
    assert_eq!(sim.nodes[b].node.peer_stats(pa).unwrap().endpoint, Some(new_a));
    for f in [&fa, &fb] {
        let r = flow_report(&sim, f, t(1.0), t(60.0));
        assert!(r.max_gap < secs(1.0), "flow {}: gap {:?} at {}", f.id, r.max_gap, fmt_t(r.max_gap_at));
    }
    // B's packets are no longer sent to the old address.
    let settled = changed.last().unwrap().0;
    let stale = sim.nodes[b].count_tx(|r| r.at > settled && r.to == addr(ADDR_A));
    assert_eq!(stale, 0);

    // --- the attacker ---
    let attacker = addr(ATTACKER);
    let data =
        sim.captured.iter().rev().find(|(_, d)| d.to == addr(ADDR_B) && d.kind() == MSG_TRANSPORT).unwrap().1.clone();
    // 1. A replayed authentic packet from the attacker's address.
    assert_eq!(sim.deliver_now(b, attacker, &data.data), Err(RecvError::Replay));
    // 2. A forged one with a fresh counter.
    let mut forged = data.data.clone();
    forged[8..16].copy_from_slice(&(counter(&data.data) + 1000).to_le_bytes());
    forged[20] ^= 0x55;
    assert_eq!(sim.deliver_now(b, attacker, &forged), Err(RecvError::Decrypt));
    // 3. A valid cookie reply: its key derives from A's public key, and its
    //    AAD is the MAC1 of B's last handshake message (B's response), both
    //    visible to anyone on path. It is accepted (the cookie is absorbed) -
    //    and still must not be taken as proof of A's address.
    let resp = sim.captured.iter().rev().find(|(_, d)| d.kind() == MSG_RESPONSE).expect("B's response").1.clone();
    let b_index = le32(&resp.data, 4);
    let mac1: [u8; 16] = resp.data[Response::MAC1_OFFSET..Response::MAC1_OFFSET + 16].try_into().unwrap();
    let mut checker = CookieChecker::new(&sim.nodes[a].public.0);
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let reply = checker.reply(sim.now, attacker, b_index, &mac1, &mut rng);
    let mut bytes = [0u8; 64];
    reply.emit(&mut bytes);
    assert_eq!(sim.deliver_now(b, attacker, &bytes), Ok(Received::Done), "the forged cookie reply is valid");

    assert_eq!(sim.endpoint_of(b, a), Some(new_a), "unauthenticated datagrams moved the endpoint");
    assert_eq!(
        sim.nodes[b].events.iter().filter(|(_, e)| matches!(e, Event::EndpointChanged { .. })).count(),
        changed.len(),
        "no EndpointChanged from the attacker's datagrams"
    );
    let mark = sim.now;
    run_flows(&mut sim, &mut [&mut fa, &mut fb], t(80.0));
    sim.run_for(secs(1.0));
    let r = flow_report(&sim, &fb, mark, t(80.0));
    assert_eq!(r.lost, 0, "B's packets still reach A");
    assert_eq!(sim.count_dropped(|d| d.to == attacker), 0, "nothing went to the attacker");
    assert_no_stale_sessions(&sim);
}

// ----- 7. a handshake flood --------------------------------------------------

/// An attacker floods B with 2000 initiations per second from spoofed
/// addresses, each with a valid MAC1 for B's key. Past the under-load
/// threshold B answers with 64-byte cookie replies only; no attacker
/// datagram ever gets a handshake response. A, a real peer, receives a
/// cookie too, proves its address with MAC2 on its retry and completes the
/// handshake within 15 s.
#[test]
fn handshake_flood_switches_to_cookies_and_the_real_peer_gets_through() {
    let mut sim = Sim::new(seed(11));
    let a = sim.add_node("A", addr(ADDR_A));
    let b = sim.add_node("B", addr(ADDR_B)); // default under_load_threshold
    sim.add_peer(a, b, true, None);
    sim.add_peer(b, a, false, None);
    let b_addr = sim.nodes[b].addr;
    let mut jar = CookieJar::new(&sim.nodes[b].public.0);
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let (rate, flood_start, flood_end) = (2000u64, t(0.5), t(7.5));
    let n_flood = rate * 7;
    for k in 0..n_flood {
        let at = flood_start.as_nanos() + k * 1_000_000_000 / rate;
        let mut msg = [0u8; 148];
        rng.fill_bytes(&mut msg);
        msg[..4].copy_from_slice(&MSG_INITIATION.to_le_bytes());
        jar.stamp(Instant::ZERO, &mut msg, Initiation::MAC1_OFFSET);
        let r = rng.next_u32();
        let from = SocketAddr::new(
            Ipv4Addr::new(100, 64 | (r as u8 & 63), (r >> 8) as u8, (r >> 16) as u8).into(),
            1024 + (r >> 22) as u16,
        );
        sim.inject(from, b_addr, msg.to_vec(), Duration::from_nanos(at));
    }
    let is_attacker = |s: SocketAddr| s.ip() != addr(ADDR_A).ip();

    sim.run_until(t(2.0));
    assert!(sim.nodes[b].node.is_under_load(sim.now));
    let a_starts = sim.now;
    sim.send_udp(a, b, b"let me in").unwrap();
    sim.run_until(t(5.0));
    assert!(sim.nodes[b].node.is_under_load(sim.now));
    sim.run_until(flood_end + secs(0.1));
    sim.send_udp(a, b, b"still here").unwrap();
    sim.run_until(t(20.0));
    assert!(!sim.nodes[b].node.is_under_load(sim.now), "the load ends with the flood");

    // The attacker's datagrams.
    let b_node = &sim.nodes[b];
    let attack: Vec<&RxRecord> = b_node.rx.iter().filter(|r| is_attacker(r.from)).collect();
    assert_eq!(attack.len() as u64, n_flood);
    let mut cookies = 0;
    let mut refused_before_load = 0;
    let first_cookie = attack.iter().position(|r| r.result == Ok(Received::Reply { len: 64 })).unwrap();
    for (i, r) in attack.iter().enumerate() {
        match r.result {
            Ok(Received::Reply { len: 64 }) => cookies += 1,
            Err(e) => {
                assert!(i < first_cookie, "attacker datagram {i} reached the handshake ({e:?}) under load");
                refused_before_load += 1;
            }
            other => panic!("attacker datagram {i}: {other:?}"),
        }
    }
    // The load meter counts handshake messages per one-second window: the
    // flood needs to exceed the threshold (1024) within one window before
    // cookies are demanded, so at most two windows' worth get examined.
    eprintln!("{refused_before_load} attacker initiations examined before cookie mode, {cookies} cookie replies");
    assert!(refused_before_load > 0 && refused_before_load <= 2 * 1024, "{refused_before_load} examined");
    assert_eq!(cookies + refused_before_load, n_flood as usize);
    assert_eq!(b_node.count_tx(|r| r.kind == MSG_RESPONSE && is_attacker(r.to)), 0);

    // The real peer.
    let a_node = &sim.nodes[a];
    assert!(a_node.count_rx(|r| r.kind == MSG_COOKIE_REPLY && r.result == Ok(Received::Done)) >= 1, "A got a cookie");
    let done =
        a_node.events.iter().find(|(_, e)| matches!(e, Event::HandshakeCompleted { .. })).expect("A's handshake").0;
    eprintln!("A's handshake completed {:.3} s after it started", elapsed(a_starts, done));
    assert!(done < a_starts + secs(15.0));
    assert!(done < flood_end, "completed while the flood was on");
    assert_eq!(sim.nodes[b].inbox.len(), 2, "both of A's packets arrived");
    assert_no_stale_sessions(&sim);
}

// ----- 8. keepalives ---------------------------------------------------------

/// Without persistent keepalive, idle peers fall silent: after the last data
/// packet at most one passive keepalive per side, then nothing, even after
/// the keys expire.
#[test]
fn idle_peers_fall_silent() {
    let (mut sim, a, b) = pair(12, Link::lossy(10, 40, 0.0, 0.0));
    let mut fa = Flow::new(1, a, b, Instant::ZERO, 100, 500, 12);
    let mut fb = Flow::new(2, b, a, t(0.5), 100, 500, 12);
    run_flows(&mut sim, &mut [&mut fa, &mut fb], t(20.0));
    let last_data = sim.nodes.iter().flat_map(|n| n.tx.iter()).filter(|r| r.is_data()).map(|r| r.at).max().unwrap();
    sim.run_until(last_data + secs(60.0));
    let after = |sim: &Sim| -> Vec<(String, String, usize)> {
        sim.nodes
            .iter()
            .flat_map(|n| n.tx.iter().filter(|r| r.at > last_data).map(|r| (n.name.clone(), fmt_t(r.at), r.len)))
            .collect()
    };
    let quiet = after(&sim);
    eprintln!("after the last data packet: {quiet:?}");
    assert!(quiet.len() <= 2, "keepalive ping-pong: {quiet:?}");
    assert!(quiet.iter().all(|q| q.2 == KEEPALIVE_LEN));
    sim.run_for(secs(600.0));
    assert_eq!(after(&sim), quiet, "idle peers keep talking");
    for n in [a, b] {
        assert!(
            sim.nodes[n].has_event(|e| matches!(e, Event::KeysExpired { .. })),
            "{}: keys not erased",
            sim.nodes[n].name
        );
    }
    assert_no_stale_sessions(&sim);
}

/// With persistent keepalive 25 s on A only: A sends exactly one keepalive
/// per 25 s of silence (rekeying its session on the way when it ages), B
/// sends nothing but handshake responses and, after the last data, one
/// passive keepalive.
#[test]
fn persistent_keepalive_every_25_seconds_from_one_side() {
    let mut sim = Sim::new(seed(13));
    let a = sim.add_node("A", addr(ADDR_A));
    let b = sim.add_node("B", addr(ADDR_B));
    sim.add_peer(a, b, true, Some(25));
    sim.add_peer(b, a, true, None);
    sim.set_links_both(a, b, Link::lossy(10, 40, 0.0, 0.0));
    let mut fa = Flow::new(1, a, b, t(1.0), 100, 500, 13);
    let mut fb = Flow::new(2, b, a, t(1.5), 100, 500, 13);
    run_flows(&mut sim, &mut [&mut fa, &mut fb], t(30.0));
    let last_data = sim.nodes.iter().flat_map(|n| n.tx.iter()).filter(|r| r.is_data()).map(|r| r.at).max().unwrap();
    let end = last_data + secs(600.0);
    sim.run_until(end);

    let a_node = &sim.nodes[a];
    let sends: Vec<&TxRecord> = a_node.tx.iter().filter(|r| r.at > last_data).collect();
    // Persistent keepalives: A's keepalives other than the confirmation it
    // sends right after completing a (re)handshake.
    let handshakes: Vec<Instant> =
        a_node.events.iter().filter(|(_, e)| matches!(e, Event::HandshakeCompleted { .. })).map(|x| x.0).collect();
    let persistent: Vec<Instant> =
        sends.iter().filter(|r| r.is_keepalive() && !handshakes.contains(&r.at)).map(|r| r.at).collect();
    let rekeys = sends.iter().filter(|r| r.kind == MSG_INITIATION).count();
    eprintln!("{} persistent keepalives and {rekeys} rekeys in 600 s idle", persistent.len());
    assert!((23..=24).contains(&persistent.len()), "{} keepalives in 600 s", persistent.len());
    assert!((4..=5).contains(&rekeys), "the session is refreshed every ~2 min by the keepalives");
    // Each comes exactly 25 s after A's previous send, whatever it was
    // (the first may be the passive keepalive answering B's last data).
    for (i, &k) in persistent.iter().enumerate() {
        let prev = a_node.tx.iter().filter(|r| r.at < k).map(|r| r.at).max().unwrap();
        let gap = elapsed(prev, k);
        let ok = if i == 0 { gap <= 25.0 + 0.001 } else { (gap - 25.0).abs() < 0.001 };
        assert!(ok, "keepalive at {} came {gap} s after A's previous send", fmt_t(k));
    }
    // Every gap in A's sending is at most 25 s: the NAT mapping stays open.
    let mut times: Vec<Instant> = sends.iter().map(|r| r.at).collect();
    times.insert(0, last_data);
    assert!(times.windows(2).all(|w| elapsed(w[0], w[1]) <= 25.0 + 1e-6));
    // B: no keepalives of its own beyond the one passive keepalive after data.
    let b_keepalives = sim.nodes[b].count_tx(|r| r.at > last_data && r.is_keepalive());
    assert!(b_keepalives <= 1, "B sent {b_keepalives} keepalives");
    assert_eq!(sim.nodes[b].count_tx(|r| r.at > last_data && r.is_data()), 0);
    assert!(!sim.nodes[a].has_event(|e| matches!(e, Event::KeysExpired { .. } | Event::HandshakeFailed { .. })));
    assert_no_stale_sessions(&sim);
}
