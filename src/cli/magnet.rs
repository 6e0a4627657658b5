//! The magnet-link commands: `magnet_parse`, `magnet_handshake`, `magnet_info`, and the
//! metadata fetch behind `magnet_download_piece`, `magnet_download` and magnet links given to
//! `download` / `download_piece`.

use std::path::Path;

use bitrush::engine::metadata;
use bitrush::engine::probe::{self, probe_announcer};
use bitrush::metainfo::Magnet;

use bitrush::engine::connection::Transports;
use bitrush::engine::dht::DhtHandle;

use super::commands::{self, DhtSettings, Torrent};

/// The link if `source` is a magnet link rather than a file path.
pub(super) fn as_link(source: &Path) -> Option<&str> {
    let s = source.to_str()?;
    s.get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("magnet:"))
        .map(|_| s)
}

/// Each `tr` of the link as its own tier, so they are all asked at once and their peers merged.
fn tiers(magnet: &Magnet) -> Vec<Vec<String>> {
    magnet.trackers.iter().map(|t| vec![t.clone()]).collect()
}

fn first_tracker(magnet: &Magnet) -> &str {
    magnet.trackers.first().map_or("", String::as_str)
}

/// Prints the first tracker and the info hash (`Info Hash v2` too when the link has one, in
/// place of `Info Hash` when it has only that); contacts nothing.
pub fn magnet_parse(link: &str, json: bool) -> anyhow::Result<()> {
    let magnet = Magnet::parse(link)?;
    if json {
        let value = serde_json::json!({
            "tracker": first_tracker(&magnet),
            "trackers": magnet.trackers,
            "name": magnet.name,
            "info_hash": magnet.info_hash_v1().map(|h| h.to_string()),
            "info_hash_v2": magnet.info_hash_v2.map(|h| h.to_string()),
            "peers": magnet.peers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        println!("{value}");
        return Ok(());
    }
    let mut out = format!("Tracker URL: {}\n", first_tracker(&magnet));
    if let Some(v1) = magnet.info_hash_v1() {
        out.push_str(&format!("Info Hash: {v1}\n"));
    }
    if let Some(v2) = magnet.info_hash_v2 {
        out.push_str(&format!("Info Hash v2: {v2}\n"));
    }
    print!("{out}");
    Ok(())
}

/// Handshakes (BitTorrent, then extensions) with a peer found through the link and prints its
/// peer id and the id it assigned to `ut_metadata`.
pub async fn magnet_handshake(link: &str) -> anyhow::Result<()> {
    let magnet = Magnet::parse(link)?;
    let peer_id = bitrush::engine::new_peer_id();
    let trackers = tiers(&magnet);
    let announcer = probe_announcer(magnet.info_hash, peer_id);
    let peers = probe::find_peers(&announcer, &trackers, &magnet.peers).await?;
    let handshake = probe::handshake_any(&peers, magnet.info_hash, peer_id).await;
    probe::announce_stopped(&announcer, &trackers).await;
    let (_, theirs, ext) = handshake?;
    let mut out = format!("Peer ID: {}\n", theirs.peer_id);
    if let Some(id) = ext.and_then(|e| e.ut_metadata) {
        out.push_str(&format!("Peer Metadata Extension ID: {id}\n"));
    }
    print!("{out}");
    Ok(())
}

/// Fetches the link's metadata from peers and prints it like `info`.
pub async fn magnet_info(link: &str, dht: Option<DhtSettings>) -> anyhow::Result<()> {
    let magnet = Magnet::parse(link)?;
    // The DHT only: the metadata comes over plain TCP, as the handshake commands' does.
    let udp = commands::start_udp(0, dht.as_ref(), false).await;
    let dht = udp.dht;
    // A v2-only torrent's piece hashes are its piece layers, fetched from the peers too.
    let fetched = metadata::fetch_torrent_metadata(metadata::Sources {
        info_hash: magnet.info_hash,
        trackers: &tiers(&magnet),
        peers: &magnet.peers,
        peer_id: bitrush::engine::new_peer_id(),
        dht: dht.clone(),
        transports: Transports::default(),
    })
    .await;
    if let Some(dht) = dht {
        dht.shutdown().await;
    }
    let fetched = fetched?;
    let info = &fetched.info;
    let hashes = commands::InfoHashes {
        v1: magnet.info_hash_v1(),
        v2: bitrush::metainfo::info_hashes(&fetched.info_bytes, info.version).1,
    };
    // As `Metainfo::piece_hashes_v2`: a file's layer, or its root for a file of one piece.
    let v2_hashes: Vec<[u8; 32]> = info
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.attr.pad)
        .flat_map(|(i, f)| {
            if f.length > u64::from(info.piece_length) {
                fetched.piece_layers.get(&i).cloned().unwrap_or_default()
            } else {
                f.pieces_root.into_iter().collect()
            }
        })
        .collect();
    commands::print_info(first_tracker(&magnet), info, hashes, &v2_hashes);
    Ok(())
}

/// What a download needs, with the metadata fetched from peers (found through the link's
/// trackers and peers, and the DHT if given).
pub(super) async fn torrent_from_magnet(
    link: &str,
    dht: Option<DhtHandle>,
    transports: Transports,
) -> anyhow::Result<Torrent> {
    let magnet = Magnet::parse(link)?;
    let trackers = tiers(&magnet);
    let fetched = metadata::fetch_torrent_metadata(metadata::Sources {
        info_hash: magnet.info_hash,
        trackers: &trackers,
        peers: &magnet.peers,
        peer_id: bitrush::engine::new_peer_id(),
        dht,
        transports,
    })
    .await?;
    // The peers proved 20 bytes of the hash; a link with the whole v2 hash gets all 32 checked.
    let v2 = bitrush::metainfo::info_hashes(&fetched.info_bytes, fetched.info.version).1;
    if let (Some(want), Some(got)) = (magnet.info_hash_v2, v2) {
        if want != got {
            anyhow::bail!("the metadata peers sent has v2 info hash {got}, not the link's {want}");
        }
    }
    Ok(Torrent {
        private: fetched.info.private,
        info: fetched.info,
        info_bytes: fetched.info_bytes,
        info_hash: magnet.info_hash,
        trackers,
        peers: magnet.peers,
        web_seeds: magnet.web_seeds,
        piece_layers: fetched.piece_layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_magnet_links_only() {
        assert_eq!(
            as_link(Path::new("magnet:?xt=urn:btih:x")),
            Some("magnet:?xt=urn:btih:x")
        );
        assert!(as_link(Path::new("MAGNET:?xt")).is_some());
        assert!(as_link(Path::new("file.torrent")).is_none());
        assert!(as_link(Path::new("magnet")).is_none());
        assert!(as_link(Path::new("./magnet:?xt")).is_none());
    }

    #[test]
    fn each_tracker_is_its_own_tier() {
        let m = Magnet::parse(
            "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&tr=http%3A%2F%2Fa%2Fannounce&tr=udp%3A%2F%2Fb%3A1",
        )
        .unwrap();
        assert_eq!(
            tiers(&m),
            vec![
                vec!["http://a/announce".to_string()],
                vec!["udp://b:1".to_string()]
            ]
        );
        assert_eq!(first_tracker(&m), "http://a/announce");
    }
}
