//! HTTP tracker (BEP 3, BEP 23 compact peers, BEP 7 IPv6 peers): announce URL building and
//! response parsing.
//!
//! Invariants: binary query values are percent-encoded byte by byte; responses are parsed as
//! bencode without assuming UTF-8; peer lists are bounded and deduplicated (see
//! [`super::MAX_PEERS`]); a compact list whose length is not a multiple of the entry size is
//! rejected as malformed.

use core::net::{IpAddr, SocketAddr};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

use super::{
    compact_v4, compact_v6, push_peers, tracker_text, AnnounceRequest, AnnounceResponse, Event,
    TrackerError,
};
use crate::bencode::{self, Value};

/// Percent-encodes every byte outside `A-Za-z0-9-._~`.
pub fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The `event` query value, or `None` for a regular announce.
fn event_name(event: Event) -> Option<&'static str> {
    match event {
        Event::None => None,
        Event::Started => Some("started"),
        Event::Completed => Some("completed"),
        Event::Stopped => Some("stopped"),
    }
}

/// The full announce URL: `base` plus query parameters, with `info_hash` and `peer_id`
/// percent-encoded byte by byte (every byte outside `A-Za-z0-9-._~`), and BEP 7's `ipv6=` when
/// the request has an IPv6 address. Appends with `&` if `base` already has a query. A
/// `#fragment` in `base` is dropped.
pub fn announce_url(base: &str, req: &AnnounceRequest) -> String {
    let base = base.split('#').next().unwrap_or(base);
    let mut url = String::with_capacity(base.len() + 256);
    url.push_str(base);
    if !base.contains('?') {
        url.push('?');
    } else if !(base.ends_with('?') || base.ends_with('&')) {
        url.push('&');
    }
    // Writing to a String cannot fail.
    let _ = write!(
        url,
        "info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact=1",
        percent_encode(&req.info_hash.0),
        percent_encode(&req.peer_id.0),
        req.port,
        req.uploaded,
        req.downloaded,
        req.left,
    );
    if let Some(event) = event_name(req.event) {
        let _ = write!(url, "&event={event}");
    }
    if let Some(n) = req.numwant {
        let _ = write!(url, "&numwant={n}");
    }
    let _ = write!(url, "&key={:08x}", req.key);
    if let Some(ip) = req.ipv6 {
        let _ = write!(url, "&ipv6={}", percent_encode(ip.to_string().as_bytes()));
    }
    url
}

fn malformed(what: &str) -> TrackerError {
    TrackerError::Malformed(what.to_string())
}

/// An optional non-negative integer field; wrong types and out-of-range values count as absent.
fn u32_field(d: &BTreeMap<Vec<u8>, Value>, key: &[u8]) -> Option<u32> {
    match d.get(key) {
        Some(Value::Int(n)) => u32::try_from(*n).ok(),
        _ => None,
    }
}

/// One entry of a dictionary-model peer list; `None` for entries we cannot use (hostnames,
/// bad ports, wrong types).
fn dict_peer(v: &Value) -> Option<SocketAddr> {
    let Value::Dict(d) = v else { return None };
    let Some(Value::Bytes(ip)) = d.get(b"ip".as_slice()) else {
        return None;
    };
    let Some(Value::Int(port)) = d.get(b"port".as_slice()) else {
        return None;
    };
    let ip: IpAddr = std::str::from_utf8(ip).ok()?.trim().parse().ok()?;
    Some(SocketAddr::new(ip, u16::try_from(*port).ok()?))
}

/// Parses a bencoded announce response (compact `peers`/`peers6` and dictionary peer lists).
/// A `failure reason` becomes [`TrackerError::Failure`]. Bytes after the dictionary are ignored.
pub fn parse_announce_response(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    let d = match bencode::decode_prefix(body) {
        Ok((Value::Dict(d), _)) => d,
        Ok(_) => return Err(malformed("response is not a dictionary")),
        Err(e) => return Err(TrackerError::Malformed(format!("invalid bencode: {e}"))),
    };
    if let Some(reason) = d.get(b"failure reason".as_slice()) {
        return Err(match reason {
            Value::Bytes(b) => TrackerError::Failure(tracker_text(b)),
            _ => TrackerError::Failure("(failure reason is not a string)".to_string()),
        });
    }
    let mut peers = Vec::new();
    let mut seen = HashSet::new();
    match d.get(b"peers".as_slice()) {
        None => {}
        Some(Value::Bytes(b)) => {
            if b.len() % 6 != 0 {
                return Err(malformed("compact peers length is not a multiple of 6"));
            }
            push_peers(&mut peers, &mut seen, compact_v4(b));
        }
        Some(Value::List(list)) => {
            push_peers(&mut peers, &mut seen, list.iter().filter_map(dict_peer))
        }
        Some(_) => return Err(malformed("peers is neither a string nor a list")),
    }
    match d.get(b"peers6".as_slice()) {
        Some(Value::Bytes(b)) => {
            if b.len() % 18 != 0 {
                return Err(malformed("compact peers6 length is not a multiple of 18"));
            }
            push_peers(&mut peers, &mut seen, compact_v6(b));
        }
        Some(Value::List(list)) => {
            push_peers(&mut peers, &mut seen, list.iter().filter_map(dict_peer))
        }
        _ => {}
    }
    let warning = match d.get(b"warning message".as_slice()) {
        Some(Value::Bytes(b)) => Some(tracker_text(b)),
        _ => None,
    };
    Ok(AnnounceResponse {
        interval: u32_field(&d, b"interval"),
        min_interval: u32_field(&d, b"min interval"),
        peers,
        warning,
        seeders: u32_field(&d, b"complete"),
        leechers: u32_field(&d, b"incomplete"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::MAX_PEERS;
    use crate::types::{InfoHash, PeerId};
    use proptest::prelude::*;

    fn req() -> AnnounceRequest {
        let mut ih = [0u8; 20];
        for (i, b) in ih.iter_mut().enumerate() {
            *b = (i as u8) * 13;
        }
        AnnounceRequest {
            info_hash: InfoHash(ih),
            peer_id: PeerId(*b"-BR0001-a.b~c_d-e f!"),
            port: 6881,
            uploaded: 1,
            downloaded: 2,
            left: 3,
            event: Event::Started,
            numwant: Some(50),
            key: 0xdead_beef,
            ipv6: None,
        }
    }

    fn unpercent(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn url_has_all_params_and_encodes_binary() {
        let r = req();
        let url = announce_url("http://t.example/announce", &r);
        let (base, query) = url.split_once('?').unwrap();
        assert_eq!(base, "http://t.example/announce");
        let params: Vec<(&str, &str)> = query
            .split('&')
            .map(|p| p.split_once('=').unwrap())
            .collect();
        let names: Vec<&str> = params.iter().map(|p| p.0).collect();
        assert_eq!(
            names,
            [
                "info_hash",
                "peer_id",
                "port",
                "uploaded",
                "downloaded",
                "left",
                "compact",
                "event",
                "numwant",
                "key"
            ]
        );
        assert_eq!(unpercent(params[0].1), r.info_hash.0);
        assert_eq!(params[1].1, "-BR0001-a.b~c_d-e%20f%21");
        assert_eq!(
            &params[2..7],
            &[
                ("port", "6881"),
                ("uploaded", "1"),
                ("downloaded", "2"),
                ("left", "3"),
                ("compact", "1")
            ]
        );
        assert_eq!(params[7], ("event", "started"));
        assert_eq!(params[9], ("key", "deadbeef"));
    }

    #[test]
    fn url_omits_none_event_and_numwant_and_appends_to_query() {
        let r = AnnounceRequest {
            event: Event::None,
            numwant: None,
            ..req()
        };
        let url = announce_url("http://t/a?passkey=x", &r);
        assert!(url.starts_with("http://t/a?passkey=x&info_hash="));
        assert!(!url.contains("event="));
        assert!(!url.contains("numwant="));
        let url = announce_url("http://t/a?", &r);
        assert!(url.starts_with("http://t/a?info_hash="));
        for (event, name) in [(Event::Completed, "completed"), (Event::Stopped, "stopped")] {
            let url = announce_url("http://t/a", &AnnounceRequest { event, ..req() });
            assert!(url.contains(&format!("&event={name}&")));
        }
    }

    #[test]
    fn url_tells_our_ipv6_address_when_we_have_one() {
        let url = announce_url("http://t/a", &req());
        assert!(!url.contains("ipv6="), "{url}");
        let ip: core::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        let url = announce_url(
            "http://t/a",
            &AnnounceRequest {
                ipv6: Some(ip),
                ..req()
            },
        );
        assert!(
            url.ends_with("&key=deadbeef&ipv6=2001%3Adb8%3A%3A1"),
            "{url}"
        );
    }

    #[test]
    fn parses_ipv6_only_responses() {
        // BEP 7: a tracker may answer with `peers6` alone, compact or as dictionaries.
        let mut body = b"d8:intervali60e5:peers0:6:peers636:".to_vec();
        body.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        body.extend_from_slice(&[0x1a, 0xe1]);
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 80]);
        body.push(b'e');
        let want: Vec<SocketAddr> = vec![
            "[2001:db8::2]:6881".parse().unwrap(),
            "[::1]:80".parse().unwrap(),
        ];
        assert_eq!(parse_announce_response(&body).unwrap().peers, want);
        let dicts = b"d6:peers6ld2:ip11:2001:db8::24:porti6881eed2:ip3:::14:porti80eeee";
        assert_eq!(parse_announce_response(dicts).unwrap().peers, want);
    }

    #[test]
    fn parses_compact_response() {
        let mut body =
            b"d8:completei5e10:incompletei3e8:intervali1800e12:min intervali60e5:peers12:".to_vec();
        body.extend_from_slice(&[10, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 2, 0, 80]);
        body.extend_from_slice(b"6:peers618:");
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x1a, 0xe1]);
        body.extend_from_slice(b"15:warning message3:hey");
        body.push(b'e');
        let resp = parse_announce_response(&body).unwrap();
        assert_eq!(resp.interval, Some(1800));
        assert_eq!(resp.min_interval, Some(60));
        assert_eq!(resp.seeders, Some(5));
        assert_eq!(resp.leechers, Some(3));
        assert_eq!(resp.warning.as_deref(), Some("hey"));
        let want: Vec<SocketAddr> = vec![
            "10.0.0.1:6881".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
            "[::1]:6881".parse().unwrap(),
        ];
        assert_eq!(resp.peers, want);
    }

    #[test]
    fn parses_dict_peers_and_dedupes() {
        let body = b"d8:intervali900e5:peersld2:ip8:10.0.0.17:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti6881eed2:ip3:::14:porti1eed2:ip8:10.0.0.14:porti6881eed2:ip11:example.com4:porti1eed2:ip8:10.0.0.34:porti70000eed2:ip8:10.0.0.44:porti0eei7eee";
        let resp = parse_announce_response(body).unwrap();
        let want: Vec<SocketAddr> =
            vec!["10.0.0.1:6881".parse().unwrap(), "[::1]:1".parse().unwrap()];
        assert_eq!(resp.peers, want);
        assert_eq!(resp.interval, Some(900));
    }

    #[test]
    fn failure_and_malformed() {
        assert_eq!(
            parse_announce_response(b"d14:failure reason9:not founde"),
            Err(TrackerError::Failure("not found".into()))
        );
        assert!(matches!(
            parse_announce_response(b"d5:peers5:abcdee"),
            Err(TrackerError::Malformed(_))
        ));
        assert!(matches!(
            parse_announce_response(b"d6:peers65:abcdee"),
            Err(TrackerError::Malformed(_))
        ));
        assert!(matches!(
            parse_announce_response(b"d5:peersi3ee"),
            Err(TrackerError::Malformed(_))
        ));
        assert!(matches!(
            parse_announce_response(b"le"),
            Err(TrackerError::Malformed(_))
        ));
        assert!(matches!(
            parse_announce_response(b"<html>"),
            Err(TrackerError::Malformed(_))
        ));
        // No peers at all is fine; negative interval is treated as absent.
        let resp = parse_announce_response(b"d8:intervali-1ee").unwrap();
        assert_eq!(resp, AnnounceResponse::default());
    }

    #[test]
    fn peer_count_is_bounded() {
        let n = MAX_PEERS + 100;
        let mut compact = Vec::with_capacity(n * 6);
        for i in 0..n as u32 {
            compact.extend_from_slice(&i.to_be_bytes());
            compact.extend_from_slice(&[0, 1]);
        }
        let mut body = format!("d5:peers{}:", compact.len()).into_bytes();
        body.extend_from_slice(&compact);
        body.push(b'e');
        assert_eq!(
            parse_announce_response(&body).unwrap().peers.len(),
            MAX_PEERS
        );
    }

    proptest! {
        #[test]
        fn prop_percent_encoding_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let enc = percent_encode(&bytes);
            prop_assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
            prop_assert_eq!(unpercent(&enc), bytes);
        }

        #[test]
        fn prop_compact_peers_round_trip(peers in proptest::collection::vec((any::<[u8; 4]>(), 1u16..), 0..50)) {
            let mut compact = Vec::new();
            let mut want = Vec::new();
            for (ip, port) in &peers {
                compact.extend_from_slice(ip);
                compact.extend_from_slice(&port.to_be_bytes());
                let addr = SocketAddr::from((*ip, *port));
                if !want.contains(&addr) {
                    want.push(addr);
                }
            }
            let mut body = format!("d5:peers{}:", compact.len()).into_bytes();
            body.extend_from_slice(&compact);
            body.push(b'e');
            prop_assert_eq!(parse_announce_response(&body).unwrap().peers, want);
        }

        #[test]
        fn prop_compact_peers6_round_trip(peers in proptest::collection::vec((any::<[u8; 16]>(), 1u16..), 0..50)) {
            let mut compact = Vec::new();
            let mut want = Vec::new();
            for (ip, port) in &peers {
                compact.extend_from_slice(ip);
                compact.extend_from_slice(&port.to_be_bytes());
                let addr = SocketAddr::from((*ip, *port));
                if !want.contains(&addr) {
                    want.push(addr);
                }
            }
            let mut body = format!("d6:peers6{}:", compact.len()).into_bytes();
            body.extend_from_slice(&compact);
            body.push(b'e');
            prop_assert_eq!(parse_announce_response(&body).unwrap().peers, want);
        }

        #[test]
        fn prop_arbitrary_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            check_response(&bytes);
        }
    }

    /// What every accepted response satisfies: at most [`MAX_PEERS`] peers, none twice, no
    /// port 0.
    fn check_response(body: &[u8]) {
        if let Ok(resp) = parse_announce_response(body) {
            assert!(resp.peers.len() <= MAX_PEERS);
            let unique: HashSet<&SocketAddr> = resp.peers.iter().collect();
            assert_eq!(unique.len(), resp.peers.len());
            assert!(resp.peers.iter().all(|p| p.port() != 0));
        }
    }

    #[test]
    fn corpus_replays_cleanly() {
        crate::bencode::fuzz_tests::replay_corpus("tracker", check_response, |b| {
            parse_announce_response(b).is_ok()
        });
    }
}
