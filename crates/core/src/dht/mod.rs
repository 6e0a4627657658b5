//! The Mainline DHT (BEP 5, with BEP 32 for IPv6), sans-IO: find peers of a torrent without a
//! tracker, announce ourselves, and serve other nodes.
//!
//! - [`krpc`]: the message codec (strict bounds, never panics).
//! - `id`, `table`: node ids, XOR distance, and one k-bucket routing table per address family.
//! - `token`, `store`: announce tokens (rotating secret, bound to the querier's IP) and the
//!   bounded store of peers announced to us.
//! - `lookup`: one iterative lookup (alpha parallel queries, closest first).
//! - [`Dht`]: the node, driven by the caller with datagrams and time (see its module docs).
//!
//! What is left out: BEP 42 (node ids derived from the external IP are neither made nor
//! enforced), BEP 33 scrapes, BEP 44 storage and BEP 51 sampling (answered with error 204).

pub(crate) mod compact;
mod id;
pub mod krpc;
mod lookup;
mod node;
mod ratelimit;
mod store;
mod table;
mod token;

pub use compact::{NODE_V4_LEN, NODE_V6_LEN, PEER_V4_LEN, PEER_V6_LEN};
pub use id::{Distance, NodeId};
pub use lookup::LookupId;
pub use node::{
    AnnouncePort, Dht, DhtConfig, DhtEvent, StateError, BOOTSTRAP_RETRY_MAX, BOOTSTRAP_RETRY_MIN,
    MAINTENANCE_INTERVAL, MAX_BOOTSTRAP_NODES, MAX_STATE_LEN, MAX_VALUES_REPLY, OUR_VERSION,
    PINGS_PER_ROUND,
};
pub use store::{StoreLimits, PEER_TTL};
pub use table::{FAILURES_BAD, GOOD_FOR, PING_INTERVAL, REFRESH_AFTER};
pub use token::{ROTATION as TOKEN_ROTATION, TOKEN_LEN};

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod sim_tests;
