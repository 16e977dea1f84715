use omni_core::crypto::RustCrypto;
use omni_core::node::{Received, Sent};
use omni_core::storage::Heap;
use omni_core::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

type N = Node<RustCrypto, ChaCha20Rng, Heap>;

fn ipv4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let len = 20 + payload.len();
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..].copy_from_slice(payload);
    p
}

#[test]
fn two_nodes_handshake_and_exchange() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let ka = StaticSecret::random(&mut rng);
    let kb = StaticSecret::random(&mut rng);
    let pa = ka.public_key::<RustCrypto>();
    let pb = kb.public_key::<RustCrypto>();
    let mut a: N = Node::new(NodeConfig { private_key: Some(ka), ..Default::default() }, ChaCha20Rng::seed_from_u64(2));
    let mut b: N = Node::new(NodeConfig { private_key: Some(kb), ..Default::default() }, ChaCha20Rng::seed_from_u64(3));
    let addr_a: std::net::SocketAddr = "127.0.0.1:1000".parse().unwrap();
    let addr_b: std::net::SocketAddr = "127.0.0.1:2000".parse().unwrap();
    let now = Instant::from_secs(1);
    let ida = a.add_peer(now, PeerConfig { endpoint: Some(addr_b), ..PeerConfig::new(pb) }).unwrap();
    let idb = b.add_peer(now, PeerConfig::new(pa)).unwrap();
    a.add_allowed_ip(ida, "10.0.0.2/32".parse().unwrap()).unwrap();
    b.add_allowed_ip(idb, "10.0.0.1/32".parse().unwrap()).unwrap();

    let pkt = ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"hello");
    let mut out = vec![0u8; 2048];
    assert!(matches!(a.send_ip(now, &pkt, &mut out), Ok(Sent::Queued { .. })));
    let t = a.poll_transmit(now, &mut out).unwrap().expect("initiation");
    assert_eq!(t.len, 148);
    let init = out[..t.len].to_vec();
    let mut out_b = vec![0u8; 2048];
    let r = b.handle_datagram(now, addr_a, &init, &mut out_b).unwrap();
    let Received::Reply { len } = r else { panic!("{r:?}") };
    assert_eq!(len, 92);
    let resp = out_b[..len].to_vec();
    assert_eq!(a.handle_datagram(now, addr_b, &resp, &mut out).unwrap(), Received::Done);
    let t = a.poll_transmit(now, &mut out).unwrap().expect("staged data");
    let data = out[..t.len].to_vec();
    assert!(a.poll_transmit(now, &mut out).unwrap().is_none());
    let r = b.handle_datagram(now, addr_a, &data, &mut out_b).unwrap();
    let Received::Packet { peer, len } = r else { panic!("{r:?}") };
    assert_eq!(peer, idb);
    assert_eq!(&out_b[..len], &pkt[..]);
    // Replay is refused.
    assert!(b.handle_datagram(now, addr_a, &data, &mut out_b).is_err());
    // b answers.
    let back = ipv4([10, 0, 0, 2], [10, 0, 0, 1], b"world!");
    let Ok(Sent::Transmit(t)) = b.send_ip(now, &back, &mut out_b) else { panic!() };
    let r = a.handle_datagram(now, addr_b, &out_b[..t.len].to_vec(), &mut out).unwrap();
    let Received::Packet { len, .. } = r else { panic!("{r:?}") };
    assert_eq!(&out[..len], &back[..]);
}
