//! Shared helpers for bitrush's integration tests (`mod common;` in each test
//! file, then `use common::*;`): this module only gathers its parts and
//! re-exports all of them.
//!
//! Everything here talks to 127.0.0.1 only. Every helper process is started in
//! its own process group and killed (the whole group) when its guard is
//! dropped; helper processes also watch their stdin, which only the test
//! process holds, so they die even if the test process is killed outright.
//!
//! External tools (`opentracker`, `mktorrent`, `aria2c`, `stunnel4`,
//! `openssl`, `/usr/bin/python3` with `libtorrent`) are required: a missing
//! tool makes the test panic with a message naming it, never skip.
//!
//! The parts: [`tools`] (support scripts and external programs), [`procs`]
//! (child processes), [`payload`] (test directories, payloads, comparisons),
//! [`net`] (ports, dead addresses, a silent peer), [`torrents`] (making and
//! reading torrents, bencode, magnet links), [`tracker`] (opentracker),
//! [`libtorrent`] and [`aria2`] (the reference clients as peers),
//! [`scripted`] (scripted honest and hostile peers), [`tls`] (a certificate
//! authority and stunnel4 for HTTPS trackers), [`bitrush`] (the binary under
//! test), [`swarm`] (the usual fixture tying them together), [`netns`] (network namespaces
//! for peers that refuse loopback, with a tracker inside) and [`transmission`] (Transmission
//! 3.00 in one of them), [`qbittorrent`] (qbittorrent-nox and its Web API) and [`rtorrent`]
//! (a headless rtorrent and its XML-RPC over SCGI).

// Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

// First: `net` defines `listener_accessors!`, which the modules after it use.
#[macro_use]
mod net;

mod aria2;
mod bitrush;
mod libtorrent;
mod netns;
mod payload;
mod procs;
mod qbittorrent;
mod rtorrent;
mod scripted;
mod swarm;
mod tls;
mod tools;
mod torrents;
mod tracker;
mod transmission;

// Each test binary uses only some of the parts, so some globs go unused.
#[allow(unused_imports)]
pub use self::{
    aria2::*, bitrush::*, libtorrent::*, net::*, netns::*, payload::*, procs::*, qbittorrent::*,
    rtorrent::*, scripted::*, swarm::*, tls::*, tools::*, torrents::*, tracker::*, transmission::*,
};
