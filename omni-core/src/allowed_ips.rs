//! Cryptokey routing: IP prefixes ("allowed IPs") and longest-prefix-match
//! tables mapping them to peers.
//!
//! WireGuard uses the same table in both directions: outbound packets pick
//! the peer owning the longest prefix containing the destination, and
//! inbound packets are dropped unless their source maps back to the peer
//! that sent them. The value type is generic so this module stays ignorant
//! of how the node identifies peers.
//!
//! Two implementations are provided: [`FixedRoutes`] (no allocation, linear
//! scan; for firmware with a handful of routes) and, with the `alloc`
//! feature, [`TrieRoutes`] (path-compressed binary trie in an arena; for
//! hosts with large route sets).

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

#[cfg(feature = "alloc")]
use alloc::vec::Vec;

/// Bits in an IPv4 address.
const V4_BITS: u8 = 32;
/// Bits in an IPv6 address.
const V6_BITS: u8 = 128;

/// A normalized IP prefix: host bits are always zero, so two prefixes that
/// cover the same addresses compare equal. Ordered by `(addr, cidr)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllowedIp {
    addr: IpAddr,
    cidr: u8,
}

impl AllowedIp {
    /// Builds a prefix, zeroing host bits (`10.1.2.3/8` becomes `10.0.0.0/8`).
    ///
    /// Errors if `cidr` exceeds the address family's width (32 or 128).
    pub fn new(addr: IpAddr, cidr: u8) -> Result<Self, InvalidPrefix> {
        if cidr > family_bits(addr) {
            return Err(InvalidPrefix);
        }
        let (key, v6) = key_of(addr);
        Ok(Self::from_key(key & mask(cidr), cidr, v6))
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn cidr(&self) -> u8 {
        self.cidr
    }

    /// Whether `ip` lies inside this prefix. Families never mix: an IPv4
    /// prefix (even `0.0.0.0/0`) contains no IPv6 address and vice versa.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, net_v6) = key_of(self.addr);
        let (key, v6) = key_of(ip);
        net_v6 == v6 && (key ^ net) & mask(self.cidr) == 0
    }

    /// Rebuilds a prefix from a left-aligned key. Callers guarantee `key` is
    /// already masked to `cidr` and `cidr` fits the family.
    fn from_key(key: u128, cidr: u8, v6: bool) -> Self {
        let addr = if v6 {
            IpAddr::V6(Ipv6Addr::from(key))
        } else {
            // The v4 address sits in the top 32 bits; the low 96 are zero.
            let bits = u32::try_from(key.checked_shr(96).unwrap_or(0)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits))
        };
        Self { addr, cidr }
    }
}

impl FromStr for AllowedIp {
    type Err = InvalidPrefix;

    /// Parses `addr/cidr`, or a bare address meaning a single host
    /// (`/32` or `/128`). No surrounding whitespace is accepted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, cidr) = match s.split_once('/') {
            Some((addr, cidr)) => (addr, Some(cidr)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| InvalidPrefix)?;
        let cidr = match cidr {
            // `u8::from_str` would accept a leading '+'; prefix lengths are digits only.
            Some(c) if !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) => {
                c.parse().map_err(|_| InvalidPrefix)?
            }
            Some(_) => return Err(InvalidPrefix),
            None => family_bits(addr),
        };
        Self::new(addr, cidr)
    }
}

impl fmt::Display for AllowedIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.cidr)
    }
}

/// A prefix string or length that is not a valid IP prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvalidPrefix;

impl fmt::Display for InvalidPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid IP prefix")
    }
}

impl core::error::Error for InvalidPrefix {}

/// A route table has no room for another prefix (fixed capacity reached, or
/// the allocator refused to grow it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

impl fmt::Display for TableFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("route table full")
    }
}

impl core::error::Error for TableFull {}

/// Cryptokey routing table: maps prefixes to a value (a peer id) with
/// longest-prefix match.
///
/// Inserting a prefix that already exists reassigns it to the new value: as
/// in WireGuard, the latest peer configured with a given prefix "steals" it.
pub trait RouteTable<V: Copy + Eq> {
    /// Maps `net` to `value`, replacing any previous owner of exactly `net`.
    /// Reassigning an existing prefix never fails.
    fn insert(&mut self, net: AllowedIp, value: V) -> Result<(), TableFull>;
    /// Removes the exact prefix if it maps to `value`; returns whether
    /// something was removed.
    fn remove(&mut self, net: AllowedIp, value: V) -> bool;
    /// Removes every prefix mapped to `value`.
    fn remove_value(&mut self, value: V);
    /// Longest-prefix match.
    fn lookup(&self, ip: IpAddr) -> Option<V>;
    /// Calls `f` for every prefix mapped to `value`, in a deterministic order.
    fn for_each_of(&self, value: V, f: &mut dyn FnMut(AllowedIp));
    /// Number of prefixes stored.
    fn len(&self) -> usize;
    /// Whether no prefix is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Removes every prefix.
    fn clear(&mut self);
}

/// Fixed-capacity table for builds without an allocator.
///
/// Lookup is a linear scan, which beats a trie for the few dozen routes a
/// microcontroller holds and needs no pointers. Entries keep insertion
/// order, so `for_each_of` reports prefixes in the order they were added.
#[derive(Clone)]
pub struct FixedRoutes<V, const N: usize> {
    entries: heapless::Vec<(AllowedIp, V), N>,
}

impl<V, const N: usize> FixedRoutes<V, N> {
    /// An empty table; `const` so it can live in a `static`.
    pub const fn new() -> Self {
        Self { entries: heapless::Vec::new() }
    }

    /// Maximum number of prefixes.
    pub const fn capacity(&self) -> usize {
        N
    }
}

impl<V, const N: usize> Default for FixedRoutes<V, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V, const N: usize> fmt::Debug for FixedRoutes<V, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedRoutes").field("len", &self.entries.len()).field("capacity", &N).finish_non_exhaustive()
    }
}

impl<V: Copy + Eq, const N: usize> RouteTable<V> for FixedRoutes<V, N> {
    fn insert(&mut self, net: AllowedIp, value: V) -> Result<(), TableFull> {
        if let Some((_, v)) = self.entries.iter_mut().find(|(n, _)| *n == net) {
            *v = value;
            return Ok(());
        }
        self.entries.push((net, value)).map_err(|_| TableFull)
    }

    fn remove(&mut self, net: AllowedIp, value: V) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(n, v)| !(*n == net && *v == value));
        self.entries.len() != before
    }

    fn remove_value(&mut self, value: V) {
        self.entries.retain(|(_, v)| *v != value);
    }

    fn lookup(&self, ip: IpAddr) -> Option<V> {
        // Prefixes are unique, so two matches never share a length: the
        // longest match is unambiguous.
        self.entries.iter().filter(|(n, _)| n.contains(ip)).max_by_key(|(n, _)| n.cidr).map(|(_, v)| *v)
    }

    fn for_each_of(&self, value: V, f: &mut dyn FnMut(AllowedIp)) {
        self.entries.iter().filter(|(_, v)| *v == value).for_each(|(n, _)| f(*n));
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Arena index of a trie node.
#[cfg(feature = "alloc")]
type Idx = u32;
/// "No node": an index the arena never reaches (see [`TrieRoutes::alloc`]).
#[cfg(feature = "alloc")]
const NIL: Idx = Idx::MAX;

/// One trie node: the prefix `key/cidr`, optionally owned by a value.
///
/// Nodes without a value exist only to branch, so they always have two
/// children; this keeps the node count below twice the prefix count. Every
/// child has a strictly longer prefix than its parent, bounding the depth by
/// 129 and so every walk below.
#[cfg(feature = "alloc")]
#[derive(Clone)]
struct Node<V> {
    /// Address bits left-aligned in a `u128` (IPv4 in the top 32), masked.
    key: u128,
    cidr: u8,
    value: Option<V>,
    /// Subtree whose bit at position `cidr` is 0. Also links the free list.
    left: Idx,
    /// Subtree whose bit at position `cidr` is 1.
    right: Idx,
}

#[cfg(feature = "alloc")]
impl<V> Node<V> {
    fn new(key: u128, cidr: u8, value: Option<V>) -> Self {
        Self { key, cidr, value, left: NIL, right: NIL }
    }

    fn child(&self, bit: bool) -> Idx {
        if bit {
            self.right
        } else {
            self.left
        }
    }

    fn set_child(&mut self, bit: bool, idx: Idx) {
        if bit {
            self.right = idx;
        } else {
            self.left = idx;
        }
    }

    /// Whether `key` falls inside this node's prefix.
    fn covers(&self, key: u128) -> bool {
        (self.key ^ key) & mask(self.cidr) == 0
    }
}

/// A place that holds a node index: a family's root or a node's child link.
/// Inserting and pruning rewrite these in place.
#[cfg(feature = "alloc")]
#[derive(Clone, Copy)]
enum Slot {
    /// Root of the IPv6 (`true`) or IPv4 (`false`) trie.
    Root(bool),
    /// Child `bit` of node `Idx`.
    Child(Idx, bool),
}

/// Route table for `alloc` builds: one path-compressed binary trie per
/// address family, stored in a `Vec` arena linked by indices.
///
/// Inserts, removals and lookups touch at most one node per prefix length on
/// the path (O(address bits)), with no recursion. Freed nodes go on a free
/// list and are reused first, so churn does not grow memory.
#[cfg(feature = "alloc")]
#[derive(Clone)]
pub struct TrieRoutes<V> {
    nodes: Vec<Node<V>>,
    v4_root: Idx,
    v6_root: Idx,
    /// Head of the free list, chained through `Node::left`.
    free: Idx,
    /// Number of nodes that carry a value.
    len: usize,
}

#[cfg(feature = "alloc")]
impl<V> TrieRoutes<V> {
    /// An empty table; allocates nothing until the first insert.
    pub const fn new() -> Self {
        Self { nodes: Vec::new(), v4_root: NIL, v6_root: NIL, free: NIL, len: 0 }
    }

    fn node(&self, idx: Idx) -> Option<&Node<V>> {
        self.nodes.get(usize::try_from(idx).ok()?)
    }

    fn node_mut(&mut self, idx: Idx) -> Option<&mut Node<V>> {
        self.nodes.get_mut(usize::try_from(idx).ok()?)
    }

    fn get_slot(&self, slot: Slot) -> Idx {
        match slot {
            Slot::Root(true) => self.v6_root,
            Slot::Root(false) => self.v4_root,
            Slot::Child(parent, bit) => self.node(parent).map_or(NIL, |n| n.child(bit)),
        }
    }

    fn set_slot(&mut self, slot: Slot, idx: Idx) {
        match slot {
            Slot::Root(true) => self.v6_root = idx,
            Slot::Root(false) => self.v4_root = idx,
            Slot::Child(parent, bit) => {
                if let Some(n) = self.node_mut(parent) {
                    n.set_child(bit, idx);
                }
            }
        }
    }

    /// Stores `node`, reusing a freed slot when there is one. Fails instead
    /// of aborting when the allocator refuses, and never hands out `NIL`.
    fn alloc(&mut self, node: Node<V>) -> Result<Idx, TableFull> {
        let head = self.free;
        if let Some(slot) = self.node_mut(head) {
            let next = slot.left;
            *slot = node;
            self.free = next;
            return Ok(head);
        }
        let idx = Idx::try_from(self.nodes.len()).ok().filter(|&i| i != NIL).ok_or(TableFull)?;
        self.nodes.try_reserve(1).map_err(|_| TableFull)?;
        self.nodes.push(node);
        Ok(idx)
    }

    /// Puts a node on the free list, dropping its value.
    fn release(&mut self, idx: Idx) {
        let next = self.free;
        if let Some(n) = self.node_mut(idx) {
            *n = Node::new(0, 0, None);
            n.left = next;
            self.free = idx;
        }
    }

    /// Restores the invariant at `slot` after its node may have lost its
    /// value or a child: a valueless node with fewer than two children is
    /// replaced by its only child (or nothing) and freed. Returns whether it
    /// was removed.
    fn prune(&mut self, slot: Slot) -> bool {
        let idx = self.get_slot(slot);
        let Some(n) = self.node(idx) else {
            return false;
        };
        if n.value.is_some() || (n.left != NIL && n.right != NIL) {
            return false;
        }
        let heir = if n.left != NIL { n.left } else { n.right };
        self.set_slot(slot, heir);
        self.release(idx);
        true
    }
}

#[cfg(feature = "alloc")]
impl<V> Default for TrieRoutes<V> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "alloc")]
impl<V> fmt::Debug for TrieRoutes<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrieRoutes").field("len", &self.len).field("nodes", &self.nodes.len()).finish_non_exhaustive()
    }
}

#[cfg(feature = "alloc")]
impl<V: Copy + Eq> RouteTable<V> for TrieRoutes<V> {
    fn insert(&mut self, net: AllowedIp, value: V) -> Result<(), TableFull> {
        let (key, v6) = key_of(net.addr);
        let cidr = net.cidr;
        let mut slot = Slot::Root(v6);
        loop {
            let cur = self.get_slot(slot);
            let Some(node) = self.node(cur) else {
                // Empty spot on the path: hang a new leaf here.
                let leaf = self.alloc(Node::new(key, cidr, Some(value)))?;
                self.set_slot(slot, leaf);
                self.len = self.len.saturating_add(1);
                return Ok(());
            };
            let (node_key, node_cidr) = (node.key, node.cidr);
            let common = common_len(node_key, key).min(node_cidr).min(cidr);

            if common == node_cidr && node_cidr == cidr {
                // Same prefix: (re)assign it.
                if let Some(n) = self.node_mut(cur) {
                    if n.value.replace(value).is_none() {
                        self.len = self.len.saturating_add(1);
                    }
                }
                return Ok(());
            }
            if common == node_cidr {
                // `cur` covers the new prefix: go down.
                slot = Slot::Child(cur, bit(key, node_cidr));
                continue;
            }

            if common == cidr {
                // The new prefix covers `cur`: splice it in above.
                let mut above = Node::new(key, cidr, Some(value));
                above.set_child(bit(node_key, cidr), cur);
                let above = self.alloc(above)?;
                self.set_slot(slot, above);
            } else {
                // They diverge below `common`: add a branch node holding both.
                let leaf = self.alloc(Node::new(key, cidr, Some(value)))?;
                let mut fork = Node::new(key & mask(common), common, None);
                fork.set_child(bit(key, common), leaf);
                fork.set_child(bit(node_key, common), cur);
                let fork = match self.alloc(fork) {
                    Ok(fork) => fork,
                    Err(e) => {
                        self.release(leaf);
                        return Err(e);
                    }
                };
                self.set_slot(slot, fork);
            }
            self.len = self.len.saturating_add(1);
            return Ok(());
        }
    }

    fn remove(&mut self, net: AllowedIp, value: V) -> bool {
        let (key, v6) = key_of(net.addr);
        let cidr = net.cidr;
        let mut parent = None;
        let mut slot = Slot::Root(v6);
        loop {
            let cur = self.get_slot(slot);
            let Some(node) = self.node_mut(cur) else {
                return false;
            };
            if node.cidr > cidr || !node.covers(key) {
                return false;
            }
            if node.cidr < cidr {
                parent = Some(slot);
                slot = Slot::Child(cur, bit(key, node.cidr));
                continue;
            }
            // Same length and covering: this is exactly `net`.
            if node.value != Some(value) {
                return false;
            }
            node.value = None;
            self.len = self.len.saturating_sub(1);
            // A removed leaf may leave its branch parent with one child.
            if self.prune(slot) {
                if let Some(parent) = parent {
                    self.prune(parent);
                }
            }
            return true;
        }
    }

    fn remove_value(&mut self, value: V) {
        // Post-order walk over slots so children are pruned before their
        // parents decide whether they are still needed.
        let mut stack: Vec<(Slot, bool)> = Vec::new();
        for root in [Slot::Root(false), Slot::Root(true)] {
            stack.push((root, false));
            while let Some((slot, children_done)) = stack.pop() {
                let cur = self.get_slot(slot);
                if children_done {
                    if let Some(n) = self.node_mut(cur) {
                        if n.value == Some(value) {
                            n.value = None;
                            self.len = self.len.saturating_sub(1);
                        }
                    }
                    self.prune(slot);
                } else if let Some(n) = self.node(cur) {
                    let (left, right) = (n.left, n.right);
                    stack.push((slot, true));
                    if right != NIL {
                        stack.push((Slot::Child(cur, true), false));
                    }
                    if left != NIL {
                        stack.push((Slot::Child(cur, false), false));
                    }
                }
            }
        }
    }

    fn lookup(&self, ip: IpAddr) -> Option<V> {
        let (key, v6) = key_of(ip);
        let mut cur = self.get_slot(Slot::Root(v6));
        let mut best = None;
        while let Some(n) = self.node(cur) {
            if !n.covers(key) {
                break;
            }
            if n.value.is_some() {
                best = n.value;
            }
            cur = n.child(bit(key, n.cidr));
        }
        best
    }

    /// Reports prefixes in ascending `(addr, cidr)` order, IPv4 first.
    fn for_each_of(&self, value: V, f: &mut dyn FnMut(AllowedIp)) {
        // Pre-order, left before right, yields prefixes sorted by address
        // with a covering prefix before the prefixes it covers.
        let mut stack: Vec<Idx> = Vec::new();
        for v6 in [false, true] {
            stack.push(self.get_slot(Slot::Root(v6)));
            while let Some(cur) = stack.pop() {
                let Some(n) = self.node(cur) else {
                    continue;
                };
                if n.value == Some(value) {
                    f(AllowedIp::from_key(n.key, n.cidr, v6));
                }
                stack.push(n.right);
                stack.push(n.left);
            }
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        self.nodes.clear();
        self.v4_root = NIL;
        self.v6_root = NIL;
        self.free = NIL;
        self.len = 0;
    }
}

/// Address width of `addr`'s family.
fn family_bits(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => V4_BITS,
        IpAddr::V6(_) => V6_BITS,
    }
}

/// The address as left-aligned bits plus an "is IPv6" flag. Left-aligning
/// IPv4 lets both families share the same mask and bit helpers.
fn key_of(addr: IpAddr) -> (u128, bool) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)).checked_shl(96).unwrap_or(0), false),
        IpAddr::V6(a) => (u128::from(a), true),
    }
}

/// Mask keeping the top `cidr` bits (all of them for `cidr >= 128`).
fn mask(cidr: u8) -> u128 {
    u128::MAX.checked_shl(u32::from(V6_BITS.saturating_sub(cidr))).unwrap_or(0)
}

/// Bit `pos` of `key`, counting from the most significant; `false` past the end.
#[cfg(feature = "alloc")]
fn bit(key: u128, pos: u8) -> bool {
    let shift = u32::from(127u8.wrapping_sub(pos));
    key.checked_shr(shift).unwrap_or(0) & 1 == 1
}

/// Number of leading bits `a` and `b` share.
#[cfg(feature = "alloc")]
fn common_len(a: u128, b: u128) -> u8 {
    u8::try_from((a ^ b).leading_zeros()).unwrap_or(V6_BITS)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::collections::BTreeSet;
    use std::string::ToString;
    use std::vec::Vec;

    fn p(s: &str) -> AllowedIp {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn prefixes_of<T: RouteTable<u8>>(t: &T, v: u8) -> Vec<AllowedIp> {
        let mut out = Vec::new();
        t.for_each_of(v, &mut |n| out.push(n));
        out
    }

    /// Tiny xorshift64 so tests are deterministic without a dev-dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn parse_display_round_trip() {
        for s in ["10.0.0.0/8", "0.0.0.0/0", "192.168.1.7/32", "fd00::/64", "::/0", "2001:db8::1/128"] {
            assert_eq!(p(s).to_string(), s);
            assert_eq!(p(&p(s).to_string()), p(s));
        }
        assert_eq!(p("1.2.3.4"), p("1.2.3.4/32"));
        assert_eq!(p("fd00::1"), p("fd00::1/128"));
        assert_eq!(p("fd00::1").cidr(), 128);
        assert_eq!(p("1.2.3.4").addr(), ip("1.2.3.4"));
    }

    #[test]
    fn host_bits_masked() {
        assert_eq!(p("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(p("10.255.255.255/9").to_string(), "10.128.0.0/9");
        assert_eq!(p("1.2.3.4/0").to_string(), "0.0.0.0/0");
        assert_eq!(p("fd00:1:2:3:4:5:6:7/64").to_string(), "fd00:1:2:3::/64");
        assert_eq!(p("fd00::ffff/127").to_string(), "fd00::fffe/127");
        assert_eq!(AllowedIp::new(ip("172.16.5.4"), 12), Ok(p("172.16.0.0/12")));
    }

    #[test]
    fn bad_input_errors() {
        for s in [
            "10.0.0.0/33",
            "::/129",
            "abc",
            "1.2.3.4/",
            "/8",
            "",
            "/",
            "1.2.3.4/+8",
            "1.2.3.4/-1",
            "1.2.3.4/256",
            "1.2.3.4/8/8",
            " 1.2.3.4/8",
            "1.2.3.4 /8",
            "1.2.3/8",
            "fe80::1%eth0/64",
        ] {
            assert_eq!(s.parse::<AllowedIp>(), Err(InvalidPrefix), "{s:?}");
        }
        assert_eq!(AllowedIp::new(ip("1.2.3.4"), 33), Err(InvalidPrefix));
        assert_eq!(AllowedIp::new(ip("::"), 129), Err(InvalidPrefix));
        assert_eq!(AllowedIp::new(ip("::"), 255), Err(InvalidPrefix));
        assert!(AllowedIp::new(ip("::"), 128).is_ok());
    }

    #[test]
    fn contains_respects_family() {
        assert!(p("0.0.0.0/0").contains(ip("255.255.255.255")));
        assert!(!p("0.0.0.0/0").contains(ip("::")));
        assert!(!p("::/0").contains(ip("0.0.0.0")));
        assert!(!p("::ffff:0:0/96").contains(ip("1.2.3.4")));
        assert!(p("10.0.0.0/8").contains(ip("10.255.0.1")));
        assert!(!p("10.0.0.0/8").contains(ip("11.0.0.0")));
        assert!(p("fd00::/8").contains(ip("fdff::1")));
        assert!(p("1.2.3.4/32").contains(ip("1.2.3.4")));
        assert!(!p("1.2.3.4/32").contains(ip("1.2.3.5")));
    }

    /// Shared behavioural checks, run against every implementation.
    fn lpm_suite<T: RouteTable<u8> + Default>() {
        let mut t = T::default();
        assert!(t.is_empty());
        assert_eq!(t.lookup(ip("10.0.0.1")), None);

        t.insert(p("0.0.0.0/0"), 0).unwrap();
        t.insert(p("10.0.0.0/8"), 1).unwrap();
        t.insert(p("10.1.0.0/16"), 2).unwrap();
        t.insert(p("10.1.2.3/32"), 3).unwrap();
        t.insert(p("10.1.2.0/24"), 1).unwrap();
        t.insert(p("::/0"), 4).unwrap();
        t.insert(p("fd00::/8"), 1).unwrap();
        t.insert(p("fd00:1::/32"), 2).unwrap();
        t.insert(p("fd00:1::1/128"), 3).unwrap();
        assert_eq!(t.len(), 9);

        assert_eq!(t.lookup(ip("8.8.8.8")), Some(0));
        assert_eq!(t.lookup(ip("10.9.9.9")), Some(1));
        assert_eq!(t.lookup(ip("10.1.9.9")), Some(2));
        assert_eq!(t.lookup(ip("10.1.2.4")), Some(1));
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(3));
        assert_eq!(t.lookup(ip("2001:db8::1")), Some(4));
        assert_eq!(t.lookup(ip("fdaa::1")), Some(1));
        assert_eq!(t.lookup(ip("fd00:1::2")), Some(2));
        assert_eq!(t.lookup(ip("fd00:1::1")), Some(3));
        // IPv4-mapped IPv6 is v6; it must not hit v4 routes.
        assert_eq!(t.lookup(ip("::ffff:10.1.2.3")), Some(4));

        let mut of1 = prefixes_of(&t, 1);
        of1.sort();
        assert_eq!(of1, [p("10.0.0.0/8"), p("10.1.2.0/24"), p("fd00::/8")]);
        assert_eq!(prefixes_of(&t, 9), []);

        // Stealing: the same prefix for another value moves it.
        t.insert(p("10.1.0.0/16"), 5).unwrap();
        assert_eq!(t.len(), 9);
        assert_eq!(t.lookup(ip("10.1.9.9")), Some(5));
        assert_eq!(prefixes_of(&t, 2), [p("fd00:1::/32")]);
        // Reinserting with the same value is a no-op.
        t.insert(p("10.1.0.0/16"), 5).unwrap();
        assert_eq!(t.len(), 9);

        // remove needs both prefix and owner to match.
        assert!(!t.remove(p("10.1.0.0/16"), 2));
        assert!(!t.remove(p("10.2.0.0/16"), 5));
        assert!(!t.remove(p("10.1.0.0/15"), 5));
        assert!(t.remove(p("10.1.0.0/16"), 5));
        assert!(!t.remove(p("10.1.0.0/16"), 5));
        assert_eq!(t.len(), 8);
        assert_eq!(t.lookup(ip("10.1.9.9")), Some(1));
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(3));

        t.remove_value(1);
        assert_eq!(t.len(), 5);
        assert_eq!(prefixes_of(&t, 1), []);
        assert_eq!(t.lookup(ip("10.9.9.9")), Some(0));
        assert_eq!(t.lookup(ip("10.1.2.4")), Some(0));
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(3));
        assert_eq!(t.lookup(ip("fdaa::1")), Some(4));
        assert_eq!(t.lookup(ip("fd00:1::2")), Some(2));

        assert!(t.remove(p("0.0.0.0/0"), 0));
        assert_eq!(t.lookup(ip("8.8.8.8")), None);
        assert!(t.remove(p("::/0"), 4));
        assert_eq!(t.lookup(ip("2001:db8::1")), None);

        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.lookup(ip("10.1.2.3")), None);
        t.insert(p("1.2.3.4/32"), 7).unwrap();
        assert_eq!(t.lookup(ip("1.2.3.4")), Some(7));
        assert_eq!(t.lookup(ip("1.2.3.5")), None);
    }

    /// Shared property: for_each_of reports exactly what was inserted.
    fn for_each_suite<T: RouteTable<u8> + Default>() {
        let mut t = T::default();
        let nets = [
            "10.0.0.0/8",
            "10.0.0.0/9",
            "10.128.0.0/9",
            "0.0.0.0/0",
            "255.255.255.255/32",
            "::/0",
            "::/1",
            "8000::/1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
            "::/128",
        ];
        for (i, n) in nets.iter().enumerate() {
            t.insert(p(n), (i % 2) as u8).unwrap();
        }
        for v in 0..2u8 {
            let got: BTreeSet<_> = prefixes_of(&t, v).into_iter().collect();
            let want: BTreeSet<_> =
                nets.iter().enumerate().filter(|(i, _)| (i % 2) as u8 == v).map(|(_, n)| p(n)).collect();
            assert_eq!(got, want);
        }
    }

    /// Random operations on `T`, checked against a naive list.
    fn differential<T: RouteTable<u8> + Default>(seed: u64, ops: usize, check: impl Fn(&T)) {
        let mut rng = Rng(seed);
        let mut t = T::default();
        let mut reference: Vec<(AllowedIp, u8)> = Vec::new();

        // Few distinct high bits so prefixes overlap and collide often.
        let random_addr = |rng: &mut Rng| -> IpAddr {
            let r = rng.next();
            let hi = [0x0a00_0000u32, 0xc0a8_0000, 0x0000_0000, 0xffff_ff00][(r % 4) as usize];
            let lo = (rng.next() as u32) & [0xff, 0xffff, 0xff_ffff, 0xffff_ffff][(r >> 8) as usize % 4];
            if (r >> 16) % 3 == 0 {
                let hi6 = [0xfd00u128 << 112, 0x2001_0db8u128 << 96, 0][(r >> 20) as usize % 3];
                let lo6 = (u128::from(lo) << 96) | u128::from(rng.next() & 0xff);
                IpAddr::V6(Ipv6Addr::from(hi6 ^ lo6))
            } else {
                IpAddr::V4(Ipv4Addr::from(hi ^ lo))
            }
        };
        let random_net = |rng: &mut Rng, addr: IpAddr| -> AllowedIp {
            let cidr = rng.below(u64::from(family_bits(addr)) + 1) as u8;
            AllowedIp::new(addr, cidr).unwrap()
        };
        let naive_lookup = |r: &[(AllowedIp, u8)], a: IpAddr| {
            r.iter().filter(|(n, _)| n.contains(a)).max_by_key(|(n, _)| n.cidr()).map(|(_, v)| *v)
        };

        for step in 0..ops {
            let op = rng.below(100);
            let value = rng.below(6) as u8;
            let addr = random_addr(&mut rng);
            if op < 45 {
                let net = random_net(&mut rng, addr);
                let existing = reference.iter_mut().find(|(n, _)| *n == net);
                match t.insert(net, value) {
                    Ok(()) => match existing {
                        Some(e) => e.1 = value,
                        None => reference.push((net, value)),
                    },
                    Err(TableFull) => assert!(existing.is_none(), "reassign failed"),
                }
            } else if op < 70 {
                // Remove something that exists half of the time.
                let (net, value) = match reference.get(rng.below(reference.len() as u64 + 1) as usize) {
                    Some(&(n, v)) if rng.below(2) == 0 => (n, v),
                    _ => (random_net(&mut rng, addr), value),
                };
                let before = reference.len();
                reference.retain(|e| *e != (net, value));
                assert_eq!(t.remove(net, value), before != reference.len(), "step {step}");
            } else if op < 72 {
                t.remove_value(value);
                reference.retain(|e| e.1 != value);
            } else if op < 73 && rng.below(4) == 0 {
                t.clear();
                reference.clear();
            } else {
                assert_eq!(t.lookup(addr), naive_lookup(&reference, addr), "step {step} {addr}");
            }
            assert_eq!(t.len(), reference.len(), "step {step}");
            if step % 64 == 0 {
                check(&t);
                for v in 0..6u8 {
                    let mut got = prefixes_of(&t, v);
                    got.sort();
                    let mut want: Vec<_> = reference.iter().filter(|e| e.1 == v).map(|e| e.0).collect();
                    want.sort();
                    assert_eq!(got, want, "step {step} value {v}");
                }
            }
        }
    }

    #[test]
    fn fixed_lpm() {
        lpm_suite::<FixedRoutes<u8, 16>>();
        for_each_suite::<FixedRoutes<u8, 16>>();
    }

    #[test]
    fn fixed_differential() {
        differential::<FixedRoutes<u8, 64>>(0x9e37_79b9_7f4a_7c15, 4000, |_| {});
    }

    #[test]
    fn fixed_full_keeps_contents() {
        let mut t = FixedRoutes::<u8, 3>::new();
        assert_eq!(t.capacity(), 3);
        t.insert(p("10.0.0.0/8"), 1).unwrap();
        t.insert(p("fd00::/8"), 2).unwrap();
        t.insert(p("0.0.0.0/0"), 3).unwrap();
        assert_eq!(t.insert(p("10.1.0.0/16"), 4), Err(TableFull));
        assert_eq!(t.insert(p("::/0"), 4), Err(TableFull));
        assert_eq!(t.len(), 3);
        assert_eq!(t.lookup(ip("10.1.0.1")), Some(1));
        assert_eq!(t.lookup(ip("fd00::1")), Some(2));
        assert_eq!(t.lookup(ip("1.1.1.1")), Some(3));
        assert_eq!(t.lookup(ip("2001::1")), None);
        // Reassigning an existing prefix still works when full.
        t.insert(p("10.0.0.0/8"), 9).unwrap();
        assert_eq!(t.lookup(ip("10.1.0.1")), Some(9));
        assert_eq!(prefixes_of(&t, 2), [p("fd00::/8")]);
        // Room again after a removal.
        assert!(t.remove(p("fd00::/8"), 2));
        t.insert(p("::/0"), 4).unwrap();
        assert_eq!(t.lookup(ip("fd00::1")), Some(4));
    }

    #[test]
    fn debug_is_printable() {
        let t = FixedRoutes::<u8, 2>::default();
        assert!(std::format!("{t:?}").contains("FixedRoutes"));
        assert_eq!(TableFull.to_string(), "route table full");
        assert_eq!(InvalidPrefix.to_string(), "invalid IP prefix");
    }

    #[cfg(feature = "alloc")]
    mod trie {
        use super::*;

        /// Structural invariants: valueless nodes branch, children are
        /// longer and inside their parent, the value count matches `len`,
        /// and every arena slot is either reachable or free (no leaks).
        fn check(t: &TrieRoutes<u8>) {
            let mut reachable = 0usize;
            let mut values = 0usize;
            let mut stack: Vec<(Idx, Option<(u128, u8)>)> = std::vec![(t.v4_root, None), (t.v6_root, None)];
            while let Some((i, parent)) = stack.pop() {
                let Some(n) = t.node(i) else { continue };
                reachable += 1;
                assert_eq!(n.key & mask(n.cidr), n.key);
                if let Some((pk, pc)) = parent {
                    assert!(n.cidr > pc);
                    assert_eq!(n.key & mask(pc), pk);
                }
                if n.value.is_some() {
                    values += 1;
                } else {
                    assert!(n.left != NIL && n.right != NIL, "branch node with < 2 children");
                }
                for (b, c) in [(false, n.left), (true, n.right)] {
                    if let Some(cn) = t.node(c) {
                        assert_eq!(bit(cn.key, n.cidr), b);
                        stack.push((c, Some((n.key, n.cidr))));
                    }
                }
            }
            let mut free = 0usize;
            let mut f = t.free;
            while let Some(n) = t.node(f) {
                free += 1;
                assert!(n.value.is_none());
                f = n.left;
            }
            assert_eq!(values, t.len);
            assert_eq!(reachable + free, t.nodes.len(), "leaked nodes");
            assert!(reachable <= 2 * t.len.max(1));
        }

        #[test]
        fn trie_lpm() {
            lpm_suite::<TrieRoutes<u8>>();
            for_each_suite::<TrieRoutes<u8>>();
        }

        #[test]
        fn trie_differential() {
            for seed in [1, 0x9e37_79b9_7f4a_7c15, 0xdead_beef_cafe_f00d] {
                differential::<TrieRoutes<u8>>(seed, 5000, check);
            }
        }

        #[test]
        fn trie_for_each_sorted() {
            let mut t = TrieRoutes::new();
            let nets = ["fd00::/8", "10.1.0.0/16", "10.0.0.0/8", "::/0", "9.0.0.0/8", "10.0.0.0/16"];
            for n in nets {
                t.insert(p(n), 1u8).unwrap();
            }
            let mut want: Vec<_> = nets.iter().map(|n| p(n)).collect();
            want.sort();
            assert_eq!(prefixes_of(&t, 1), want);
        }

        #[test]
        fn trie_recycles_nodes() {
            let mut rng = Rng(42);
            let mut t = TrieRoutes::new();
            let mut peak = 0;
            for round in 0..20 {
                let nets: Vec<AllowedIp> = (0..2000)
                    .map(|_| {
                        let a = IpAddr::V4(Ipv4Addr::from(rng.next() as u32));
                        AllowedIp::new(a, 8 + rng.below(25) as u8).unwrap()
                    })
                    .collect();
                for (i, n) in nets.iter().enumerate() {
                    t.insert(*n, (i % 3) as u8).unwrap();
                }
                if round == 0 {
                    peak = t.nodes.len();
                }
                // Half the rounds clean up one by one, half per value.
                if round % 2 == 0 {
                    for (i, n) in nets.iter().enumerate() {
                        t.remove(*n, (i % 3) as u8);
                    }
                    // Duplicates in `nets` were reassigned; sweep leftovers.
                    for v in 0..3 {
                        t.remove_value(v);
                    }
                } else {
                    for v in 0..3 {
                        t.remove_value(v);
                    }
                }
                assert!(t.is_empty());
                assert_eq!(t.v4_root, NIL);
                check(&t);
            }
            // Same workload size each round: the arena must not keep growing.
            assert!(t.nodes.len() <= peak + peak / 10, "{} > {}", t.nodes.len(), peak);
        }

        #[test]
        fn trie_scale_130k() {
            const V4: u32 = 100_000;
            const V6: u64 = 30_000;
            let mut t = TrieRoutes::new();
            // Odd strides are bijective mod 2^k, so every prefix is distinct
            // while spreading across the whole range.
            let v4 = |i: u32| Ipv4Addr::from(0x0a00_0000 | (i.wrapping_mul(0x9e37) & 0x00ff_ffff));
            let v6 = |i: u64| {
                let hi = 0xfd00_0000_0000_0000u64 | (i.wrapping_mul(0x9e37_79b9) & 0xffff_ffff_ffff);
                Ipv6Addr::from(u128::from(hi) << 64)
            };
            for i in 0..V4 {
                t.insert(AllowedIp::new(v4(i).into(), 32).unwrap(), 7u8).unwrap();
            }
            for i in 0..V6 {
                t.insert(AllowedIp::new(v6(i).into(), 64).unwrap(), 7u8).unwrap();
            }
            assert_eq!(t.len(), 130_000);
            assert!(t.nodes.len() < 2 * 130_000);

            let mut count = 0usize;
            let mut last: Option<AllowedIp> = None;
            t.for_each_of(7, &mut |n| {
                count += 1;
                assert!(last.is_none_or(|l| l < n), "not strictly ascending");
                last = Some(n);
            });
            assert_eq!(count, 130_000);

            for i in (0..V4).step_by(97) {
                assert_eq!(t.lookup(v4(i).into()), Some(7));
            }
            for i in (0..V6).step_by(31) {
                let host = u128::from(v6(i)) | 0x1234;
                assert_eq!(t.lookup(Ipv6Addr::from(host).into()), Some(7));
            }
            assert_eq!(t.lookup(ip("11.0.0.1")), None);
            assert_eq!(t.lookup(ip("fe00::1")), None);

            t.insert(p("0.0.0.0/0"), 1).unwrap();
            t.remove_value(7);
            assert_eq!(t.len(), 1);
            assert_eq!(t.lookup(v4(5).into()), Some(1));
            check(&t);
        }
    }
}
