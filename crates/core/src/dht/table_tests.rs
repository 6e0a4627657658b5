//! Routing-table tests: liveness by time, splitting, replacement, and the invariants under
//! arbitrary operation sequences.

use std::collections::BTreeSet;

use proptest::prelude::*;
use rand::SeedableRng;

use super::*;

fn addr(n: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, (n >> 8) as u8, n as u8], 6881))
}

/// An id sharing exactly `prefix` bits with `own`, made distinct by `tag`.
fn id_in_bucket(own: &NodeId, prefix: usize, tag: u8) -> NodeId {
    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(tag) << 8 | prefix as u64);
    own.random_in_bucket(prefix, &mut rng)
}

/// Every structural invariant of the table.
fn check_invariants(t: &RoutingTable) {
    assert!(!t.buckets.is_empty() && t.buckets.len() <= ID_BITS);
    let mut ids = BTreeSet::new();
    let last = t.buckets.len() - 1;
    for (i, b) in t.buckets.iter().enumerate() {
        assert!(
            b.nodes.len() <= t.k,
            "bucket {i} holds {} nodes",
            b.nodes.len()
        );
        assert!(b.replacements.len() <= t.k);
        for e in b.nodes.iter().chain(&b.replacements) {
            assert_ne!(e.id, t.own, "our own id is in the table");
            assert!(ids.insert(e.id), "id {} stored twice", e.id);
            let cpl = t.own.common_prefix_len(&e.id);
            if i == last {
                assert!(cpl >= i, "node with prefix {cpl} in last bucket {i}");
            } else {
                assert_eq!(cpl, i, "node with prefix {cpl} in bucket {i}");
            }
        }
    }
    assert!(t.len() <= ID_BITS * t.k);
}

#[test]
fn liveness_follows_time_and_failures() {
    let t0 = Instant::now();
    let own = NodeId([0; 20]);
    let mut t = RoutingTable::new(own, 8, t0);
    let a = NodeId([0x80; 20]);
    t.heard(t0, a, addr(1), Heard::Query);
    assert_eq!(
        t.status(t0, &a),
        Some(Status::Questionable),
        "never answered"
    );
    t.heard(t0, a, addr(1), Heard::Response);
    assert_eq!(t.status(t0, &a), Some(Status::Good));
    assert_eq!(t.status(t0 + GOOD_FOR, &a), Some(Status::Questionable));
    t.heard(t0 + GOOD_FOR, a, addr(1), Heard::Query);
    assert_eq!(
        t.status(t0 + GOOD_FOR, &a),
        Some(Status::Good),
        "query from a node that answered before"
    );
    t.failed(t0 + GOOD_FOR, &a, addr(1));
    assert_eq!(t.status(t0 + GOOD_FOR, &a), Some(Status::Questionable));
    t.failed(t0 + GOOD_FOR, &a, addr(1));
    assert_eq!(t.status(t0 + GOOD_FOR, &a), Some(Status::Bad));
    assert!(
        t.closest(t0 + GOOD_FOR, &own, 8).is_empty(),
        "bad nodes are not handed out"
    );
    t.heard(t0 + GOOD_FOR, a, addr(1), Heard::Response);
    assert_eq!(
        t.status(t0 + GOOD_FOR, &a),
        Some(Status::Good),
        "an answer clears the failures"
    );
}

#[test]
fn our_id_and_port_zero_are_never_stored() {
    let t0 = Instant::now();
    let own = NodeId([7; 20]);
    let mut t = RoutingTable::new(own, 8, t0);
    t.heard(t0, own, addr(1), Heard::Response);
    t.heard(
        t0,
        NodeId([8; 20]),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Heard::Response,
    );
    assert!(t.is_empty());
}

#[test]
fn the_bucket_holding_our_id_splits_and_far_buckets_fill_their_cache() {
    let t0 = Instant::now();
    let own = NodeId([0x55; 20]);
    let mut t = RoutingTable::new(own, 8, t0);
    // 12 nodes in the far half: 8 fit once the first bucket split, 4 go to the cache.
    for tag in 0..12 {
        t.heard(
            t0,
            id_in_bucket(&own, 0, tag),
            addr(u16::from(tag)),
            Heard::Response,
        );
    }
    // 8 close nodes fit the bucket holding our id; 8 at prefix 2 make it split twice.
    for tag in 0..8 {
        t.heard(
            t0,
            id_in_bucket(&own, 5, tag),
            addr(100 + u16::from(tag)),
            Heard::Response,
        );
    }
    for tag in 0..8 {
        t.heard(
            t0,
            id_in_bucket(&own, 2, tag),
            addr(200 + u16::from(tag)),
            Heard::Response,
        );
    }
    check_invariants(&t);
    assert_eq!(t.buckets[0].nodes.len(), 8);
    assert_eq!(t.buckets[0].replacements.len(), 4);
    assert_eq!(t.buckets.len(), 4);
    assert_eq!(t.len(), 24);
    let close = t.closest(t0, &own, 8);
    assert!(close.iter().all(|(id, _)| own.common_prefix_len(id) == 5));
}

#[test]
fn a_bad_node_is_replaced_by_an_answering_replacement() {
    let t0 = Instant::now();
    let own = NodeId([0; 20]);
    let mut t = RoutingTable::new(own, 2, t0);
    let far: Vec<NodeId> = (0..3).map(|tag| id_in_bucket(&own, 0, tag)).collect();
    t.heard(t0, id_in_bucket(&own, 3, 9), addr(50), Heard::Response);
    for (i, id) in far.iter().enumerate() {
        t.heard(t0, *id, addr(i as u16), Heard::Response);
    }
    check_invariants(&t);
    assert_eq!(
        t.status(t0, &far[2]),
        None,
        "third far node should wait in the cache"
    );
    t.failed(t0, &far[0], addr(0));
    t.failed(t0, &far[0], addr(0));
    assert_eq!(t.status(t0, &far[0]), None, "bad node kept");
    assert_eq!(t.status(t0, &far[2]), Some(Status::Good));
    check_invariants(&t);
}

#[test]
fn a_query_from_a_known_id_at_another_address_changes_nothing() {
    let t0 = Instant::now();
    let own = NodeId([0; 20]);
    let mut t = RoutingTable::new(own, 8, t0);
    let a = NodeId([0x40; 20]);
    t.heard(t0, a, addr(1), Heard::Response);
    t.heard(t0, a, addr(2), Heard::Query);
    assert_eq!(t.closest(t0, &a, 1), vec![(a, addr(1))]);
    // Another id claiming the same address by a query is ignored too.
    t.heard(t0, NodeId([0x41; 20]), addr(1), Heard::Query);
    assert_eq!(t.len(), 1);
    // An answer from the address under a new id means the node restarted.
    t.heard(t0, NodeId([0x41; 20]), addr(1), Heard::Response);
    assert_eq!(t.closest(t0, &a, 8), vec![(NodeId([0x41; 20]), addr(1))]);
}

#[test]
fn questionable_nodes_are_pinged_at_most_once_per_interval() {
    let t0 = Instant::now();
    let own = NodeId([0; 20]);
    let mut t = RoutingTable::new(own, 8, t0);
    t.heard(t0, NodeId([1; 20]), addr(1), Heard::Saved);
    t.heard(t0, NodeId([2; 20]), addr(2), Heard::Response);
    assert_eq!(
        t.take_nodes_to_ping(t0, 8),
        vec![(NodeId([1; 20]), addr(1))]
    );
    assert!(t.take_nodes_to_ping(t0, 8).is_empty());
    assert_eq!(t.take_nodes_to_ping(t0 + PING_INTERVAL, 8).len(), 1);
    let later = t0 + GOOD_FOR;
    assert_eq!(t.take_nodes_to_ping(later, 8).len(), 2);
}

#[test]
fn idle_buckets_are_refreshed_once() {
    let t0 = Instant::now();
    let own = NodeId([0; 20]);
    let mut t = RoutingTable::new(own, 8, t0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    assert!(t.take_refresh_targets(t0, 8, &mut rng).is_empty());
    let due = t0 + REFRESH_AFTER;
    assert_eq!(t.take_refresh_targets(due, 8, &mut rng).len(), 1);
    assert!(t.take_refresh_targets(due, 8, &mut rng).is_empty());
}

#[derive(Clone, Debug)]
enum Op {
    Heard(u8, u8, u8, u8),
    Failed(u8, u8),
    Ping,
    Refresh,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..24, any::<u8>(), 0u8..32, 0u8..3).prop_map(|(p, t, a, h)| Op::Heard(p, t, a, h)),
        2 => (0u8..24, any::<u8>()).prop_map(|(p, t)| Op::Failed(p, t)),
        1 => Just(Op::Ping),
        1 => Just(Op::Refresh),
    ]
}

proptest! {
    /// Whatever happens, no bucket outgrows k, our id never enters, ids are unique and every
    /// node sits in its bucket; the table stays bounded.
    #[test]
    fn invariants_hold(own in any::<[u8; 20]>(), k in 1usize..9, ops in proptest::collection::vec(arb_op(), 0..300)) {
        let t0 = Instant::now();
        let own = NodeId(own);
        let mut t = RoutingTable::new(own, k, t0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for (step, op) in ops.into_iter().enumerate() {
            let now = t0 + Duration::from_secs(step as u64 * 20);
            match op {
                Op::Heard(prefix, tag, a, how) => {
                    let id = if tag == 0 { own } else { id_in_bucket(&own, usize::from(prefix), tag % 16) };
                    let heard = [Heard::Response, Heard::Query, Heard::Saved][usize::from(how)];
                    t.heard(now, id, addr(u16::from(a)), heard);
                }
                Op::Failed(prefix, tag) => {
                    let id = id_in_bucket(&own, usize::from(prefix), tag % 16);
                    for (nid, a) in t.closest(now, &id, 1) {
                        t.failed(now, &nid, a);
                    }
                }
                Op::Ping => { t.take_nodes_to_ping(now, 4); }
                Op::Refresh => { t.take_refresh_targets(now, 4, &mut rng); }
            }
            check_invariants(&t);
        }
    }
}
