//! One-shot exchanges for the CLI's single-purpose commands: one announce round to find peers
//! (`peers`, `magnet_handshake`), a handshake with one peer (`handshake`), and the first peer
//! of a list to complete the BitTorrent and extension handshakes (`magnet_handshake`).
//!
//! Invariants: every wait is bounded (connects, handshakes, announces); at most
//! [`MAX_CONNECTIONS`] connections are open at once; the handshakes sent are exactly
//! [`Handshake::new`]'s (the reserved bytes these commands send never change).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinSet;

use super::connection::{self, ConnectionError, PeerStream};
use super::tracker::{self, NoTrackerAnswered};
use crate::tracker::{Announcer, Event, NUMWANT};
use crate::types::{InfoHash, PeerId};
use crate::wire::{ExtHandshake, Handshake, Message, WireError};

/// Most connections open at once while looking for a peer that completes the handshakes.
pub const MAX_CONNECTIONS: usize = 5;
/// How long a peer may take to send its extension handshake after ours.
pub const EXT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the closing `stopped` announce may take.
const STOPPED_TIMEOUT: Duration = Duration::from_secs(2);
/// Most non-handshake messages read while waiting for an extension handshake.
const MAX_MESSAGES_BEFORE_EXT_HANDSHAKE: usize = 1024;
/// The port announced by commands that do not listen (a `stopped` takes the entry off again).
pub const UNLISTENED_PORT: u16 = 6881;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Connecting or the BitTorrent handshake failed, or the connection broke.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// No extension handshake within [`EXT_HANDSHAKE_TIMEOUT`].
    #[error("{0} sent no extension handshake within {secs} s", secs = EXT_HANDSHAKE_TIMEOUT.as_secs())]
    ExtTimeout(SocketAddr),
    /// Too many other messages and no extension handshake.
    #[error("{0} sent {MAX_MESSAGES_BEFORE_EXT_HANDSHAKE} messages but no extension handshake")]
    ExtMissing(SocketAddr),
    /// An extension handshake we cannot parse.
    #[error("{addr} sent a bad extension handshake")]
    BadExtHandshake { addr: SocketAddr, source: WireError },
    /// The magnet link names neither trackers nor peers.
    #[error("no trackers and no peers to ask")]
    NoSources,
    /// No tracker answered and no peer was known otherwise.
    #[error(transparent)]
    Trackers(#[from] NoTrackerAnswered),
    /// The trackers answered but knew no peers.
    #[error("no peers known for info hash {0}")]
    NoPeers(InfoHash),
    /// No peer completed the handshakes; the source is the last failure.
    #[error("no peer completed the handshake")]
    NoHandshake(#[source] Option<Box<ProbeError>>),
}

/// Who we are to trackers during a probe: we do not listen, so we announce a placeholder port
/// and take it off again with `stopped`.
pub fn probe_announcer(info_hash: InfoHash, peer_id: PeerId) -> Announcer {
    Announcer {
        info_hash,
        peer_id,
        port: UNLISTENED_PORT,
        key: rand::random(),
        numwant: NUMWANT,
        // Nobody listens: no address to tell.
        ipv6: None,
    }
}

fn has_trackers(trackers: &[Vec<String>]) -> bool {
    trackers.iter().any(|t| !t.is_empty())
}

/// The peers to try for a torrent: `peers` (e.g. a magnet's `x.pe`) first, then whatever one
/// announce round returns (as a leecher of unknown size). A tracker failure is an error only
/// when no peer is known otherwise.
pub async fn find_peers(
    announcer: &Announcer,
    trackers: &[Vec<String>],
    peers: &[SocketAddr],
) -> Result<Vec<SocketAddr>, ProbeError> {
    if !has_trackers(trackers) {
        if peers.is_empty() {
            return Err(ProbeError::NoSources);
        }
        return Ok(peers.to_vec());
    }
    let req = announcer.request(Event::Started, 0, 0, 1);
    match tracker::announce_all(trackers, &req).await {
        Ok(resp) => {
            let mut all = peers.to_vec();
            for p in resp.peers {
                if !all.contains(&p) {
                    all.push(p);
                }
            }
            if all.is_empty() {
                return Err(ProbeError::NoPeers(announcer.info_hash));
            }
            Ok(all)
        }
        Err(e) if peers.is_empty() => Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %super::error_chain(&e), "announce failed; trying the magnet link's peers");
            Ok(peers.to_vec())
        }
    }
}

/// Tells the trackers we are gone (best effort, within 2 s): the port we announced while
/// probing is not one anybody can reach.
pub async fn announce_stopped(announcer: &Announcer, trackers: &[Vec<String>]) {
    if !has_trackers(trackers) {
        return;
    }
    let req = announcer.request(Event::Stopped, 0, 0, 1);
    let _ = tokio::time::timeout(STOPPED_TIMEOUT, tracker::announce_all(trackers, &req)).await;
}

/// Sends our extension handshake (BEP 10) and reads messages until the peer's arrives, within
/// [`EXT_HANDSHAKE_TIMEOUT`]. Other messages before it (bitfield, have...) are skipped.
pub async fn exchange_ext_handshake(conn: &mut PeerStream) -> Result<ExtHandshake, ProbeError> {
    let addr = conn.addr();
    let exchange = async {
        conn.send(&Message::Extended {
            id: 0,
            payload: ExtHandshake::ours(None).encode().into(),
        })
        .await?;
        for _ in 0..=MAX_MESSAGES_BEFORE_EXT_HANDSHAKE {
            if let Message::Extended { id: 0, payload } = conn.read_message().await? {
                return ExtHandshake::decode(&payload)
                    .map_err(|source| ProbeError::BadExtHandshake { addr, source });
            }
        }
        Err(ProbeError::ExtMissing(addr))
    };
    tokio::time::timeout(EXT_HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| ProbeError::ExtTimeout(addr))?
}

/// Connects to `addr`, exchanges BitTorrent handshakes and, if the peer supports the extension
/// protocol, extension handshakes.
pub async fn handshake_with_extensions(
    addr: SocketAddr,
    info_hash: InfoHash,
    peer_id: PeerId,
) -> Result<(Handshake, Option<ExtHandshake>), ProbeError> {
    let ours = Handshake::new(info_hash, peer_id);
    let (mut conn, theirs) = connection::connect_and_handshake(addr, &ours).await?;
    if !theirs.supports_extensions() {
        return Ok((theirs, None));
    }
    let ext = exchange_ext_handshake(&mut conn).await?;
    Ok((theirs, Some(ext)))
}

/// Tries `peers` in order, [`MAX_CONNECTIONS`] at a time, and returns the first one to
/// complete [`handshake_with_extensions`]; the others are abandoned.
pub async fn handshake_any(
    peers: &[SocketAddr],
    info_hash: InfoHash,
    peer_id: PeerId,
) -> Result<(SocketAddr, Handshake, Option<ExtHandshake>), ProbeError> {
    type Attempt = (
        SocketAddr,
        Result<(Handshake, Option<ExtHandshake>), ProbeError>,
    );
    let mut pending = peers.iter().copied();
    let mut running: JoinSet<Attempt> = JoinSet::new();
    let mut last = None;
    loop {
        while running.len() < MAX_CONNECTIONS {
            let Some(addr) = pending.next() else { break };
            running.spawn(async move {
                (
                    addr,
                    handshake_with_extensions(addr, info_hash, peer_id).await,
                )
            });
        }
        let Some(joined) = running.join_next().await else {
            return Err(ProbeError::NoHandshake(last.map(Box::new)));
        };
        match joined {
            Ok((addr, Ok((hs, ext)))) => return Ok((addr, hs, ext)),
            Ok((addr, Err(e))) => {
                tracing::debug!(%addr, error = %super::error_chain(&e), "handshake failed");
                last = Some(e);
            }
            Err(e) => tracing::debug!(error = %e, "handshake task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::metadata::tests::{info_dict, metadata_peer};

    #[test]
    fn announces_as_a_leecher_of_unknown_size() {
        let a = probe_announcer(InfoHash([1; 20]), crate::engine::new_peer_id());
        let req = a.request(Event::Started, 0, 0, 1);
        assert_eq!(req.left, 1);
        assert_eq!(req.port, UNLISTENED_PORT);
        assert_eq!(req.event, Event::Started);
    }

    #[tokio::test]
    async fn no_sources_is_an_error() {
        let a = probe_announcer(InfoHash([2; 20]), crate::engine::new_peer_id());
        let err = find_peers(&a, &[vec![]], &[]).await.unwrap_err();
        assert!(matches!(err, ProbeError::NoSources), "{err}");
    }

    #[tokio::test]
    async fn extension_handshake_after_other_messages() {
        let (info, hash) = info_dict(10);
        let addr = metadata_peer(info.clone(), hash).await;
        let (theirs, ext) = handshake_with_extensions(addr, hash, crate::engine::new_peer_id())
            .await
            .unwrap();
        assert!(theirs.supports_extensions());
        let ext = ext.unwrap();
        assert_eq!(ext.ut_metadata, Some(5));
        assert_eq!(ext.metadata_size, Some(info.len() as u64));
        assert_eq!(ext.client.as_deref(), Some("\u{fffd}\u{fffd}\0"));
    }
}
