//! bitrush: a BitTorrent client library.
//!
//! Layers, from the bytes up (see ARCHITECTURE.md):
//! - sans-IO protocol logic: [`bencode`], [`metainfo`], [`wire`], [`tracker`], [`swarm`];
//!   plain functions and state machines over bytes and time passed in.
//! - [`storage`]: mapping pieces onto files and positioned, synchronous disk I/O.
//! - [`engine`]: the tokio driver that owns sockets, timers and threads and feeds the state machines.

pub mod bencode;
pub mod engine;
pub mod metainfo;
pub mod storage;
pub mod swarm;
pub mod tracker;
pub mod types;
pub mod wire;
