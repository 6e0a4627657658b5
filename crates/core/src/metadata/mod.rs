//! Getting a torrent's info dictionary from peers (BEP 9), for magnet links: the
//! [`fetch::MetadataFetch`] state machine coordinates several peers at once.

pub mod fetch;

pub use fetch::{FetchConfig, FetchEvent, MetadataFetch, PeerFault};
