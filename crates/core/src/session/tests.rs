//! The session's rules, driven by hand on virtual time.

use super::*;
use crate::types::{InfoHash, PeerId};

fn announcer() -> Announcer {
    Announcer {
        info_hash: InfoHash([1; 20]),
        peer_id: PeerId([2; 20]),
        port: 6000,
        key: 77,
        numwant: 200,
        ipv6: None,
    }
}

fn params(trackers: &[&[&str]], peers: &[SocketAddr], seed: Option<SeedLimits>) -> SessionParams {
    SessionParams {
        announcer: announcer(),
        trackers: trackers
            .iter()
            .map(|t| t.iter().map(|u| u.to_string()).collect())
            .collect(),
        peers: peers.to_vec(),
        total_length: 1000,
        config: SessionConfig {
            max_peers: 2,
            seed,
            ..SessionConfig::default()
        }
        .into(),
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 9], port))
}

fn left(n: u64) -> Transfer {
    Transfer {
        left: n,
        ..Transfer::default()
    }
}

/// A transfer of 1000 bytes, complete.
fn completed() -> Transfer {
    Transfer {
        downloaded: 1000,
        ..left(0)
    }
}

fn events(s: &mut Session) -> Vec<SessionEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn announces(ev: &[SessionEvent]) -> Vec<(String, Event)> {
    ev.iter()
        .filter_map(|e| match e {
            SessionEvent::Announce { url, request } => Some((url.clone(), request.event)),
            _ => None,
        })
        .collect()
}

fn connects(ev: &[SessionEvent]) -> Vec<SocketAddr> {
    ev.iter()
        .filter_map(|e| match e {
            SessionEvent::Connect(a) => Some(*a),
            _ => None,
        })
        .collect()
}

fn response(peers: &[SocketAddr]) -> AnnounceResponse {
    AnnounceResponse {
        interval: Some(1800),
        peers: peers.to_vec(),
        ..AnnounceResponse::default()
    }
}

#[test]
fn a_download_announces_dials_and_closes_with_completed_and_stopped() {
    let t = Instant::now();
    let mut s = Session::new(t, params(&[&["a", "b"], &["c"]], &[], None));
    s.handle_transfer(t, left(1000));
    assert_eq!(
        s.poll_timeout(),
        Some(t),
        "never-asked trackers are due at once"
    );
    s.handle_timeout(t);
    let ev = events(&mut s);
    assert_eq!(
        announces(&ev),
        vec![("a".into(), Event::Started), ("c".into(), Event::Started)],
        "one tracker per tier"
    );
    // a fails: b, the next of its tier, is asked at once.
    s.handle_announce_failure(t, "a");
    assert_eq!(
        announces(&events(&mut s)),
        vec![("b".into(), Event::Started)]
    );
    s.handle_announce_response(t, "b", &response(&[addr(1), addr(2), addr(3)]));
    s.handle_announce_response(t, "c", &response(&[addr(3)]));
    s.handle_timeout(t);
    assert_eq!(
        connects(&events(&mut s)),
        vec![addr(1), addr(2)],
        "max 2 dialled"
    );
    s.handle_connection_established(addr(1));
    s.handle_connection_closed(t, addr(2), true, CloseKind::Transient);
    s.handle_timeout(t);
    assert_eq!(connects(&events(&mut s)), vec![addr(3)]);

    let t1 = t + Duration::from_secs(40);
    s.handle_transfer(
        t1,
        Transfer {
            left: 0,
            downloaded: 1000,
            peers: 2,
            ..Transfer::default()
        },
    );
    s.handle_timeout(t1);
    let mut closing = announces(&events(&mut s));
    closing.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        closing,
        vec![
            ("b".into(), Event::Completed),
            ("c".into(), Event::Completed)
        ]
    );
    s.handle_announce_response(t1, "b", &response(&[]));
    s.handle_announce_failure(t1, "c");
    let mut closing = announces(&events(&mut s));
    closing.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        closing,
        vec![("b".into(), Event::Stopped), ("c".into(), Event::Stopped)]
    );
    s.handle_announce_response(t1, "b", &response(&[]));
    s.handle_announce_response(t1, "c", &response(&[]));
    assert_eq!(
        events(&mut s),
        vec![SessionEvent::Finished(Finish::Complete)]
    );
    assert!(s.is_finished());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn complete_data_without_seeding_contacts_nobody() {
    let t = Instant::now();
    let mut s = Session::new(t, params(&[&["a"]], &[addr(1)], None));
    s.handle_transfer(t, left(0));
    s.handle_timeout(t);
    assert_eq!(
        events(&mut s),
        vec![SessionEvent::Finished(Finish::Complete)]
    );
}

#[test]
fn dead_trackers_and_no_peers_give_up_after_one_round() {
    let t = Instant::now();
    let mut s = Session::new(t, params(&[&["a", "b"], &["c"]], &[], None));
    s.handle_transfer(t, left(10));
    s.handle_timeout(t);
    events(&mut s);
    s.handle_announce_failure(t, "a");
    s.handle_announce_failure(t, "c");
    s.handle_timeout(t);
    assert!(!s.is_finished(), "b is still being asked");
    events(&mut s);
    s.handle_announce_failure(t, "b");
    s.handle_timeout(t);
    assert_eq!(
        events(&mut s),
        vec![SessionEvent::Finished(Finish::GaveUp(
            GiveUp::NoTrackerAnswered
        ))]
    );
}

#[test]
fn unreachable_peers_back_off_then_give_up_without_trackers() {
    let t = Instant::now();
    let mut s = Session::new(t, params(&[], &[addr(1)], None));
    s.handle_transfer(t, left(10));
    let mut now = t;
    let mut dials = 0;
    let mut stalls = Vec::new();
    while !s.is_finished() {
        s.handle_timeout(now);
        for e in events(&mut s) {
            match e {
                SessionEvent::Connect(a) => {
                    dials += 1;
                    s.handle_connection_closed(now, a, true, CloseKind::Transient);
                }
                SessionEvent::Stalled(why) => stalls.push(why),
                SessionEvent::Finished(f) => {
                    assert_eq!(f, Finish::GaveUp(GiveUp::NoPeers));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        now = s.poll_timeout().unwrap_or(now).max(now);
        assert!(now < t + Duration::from_secs(3600), "never gave up");
    }
    assert_eq!(dials, candidates::MAX_QUICK_RETRIES as usize);
    assert!(
        stalls.is_empty(),
        "gave up before a report was due: {stalls:?}"
    );
}

#[test]
fn peers_that_refuse_us_are_reported_while_trackers_answer() {
    let t = Instant::now();
    let mut s = Session::new(t, params(&[&["a"]], &[], None));
    s.handle_transfer(t, left(10));
    let mut now = t;
    let mut stalls = Vec::new();
    let mut dial_times = Vec::new();
    while now < t + Duration::from_secs(200) {
        s.handle_timeout(now);
        for e in events(&mut s) {
            match e {
                SessionEvent::Announce { url, .. } => {
                    s.handle_announce_response(now, &url, &response(&[addr(1)]))
                }
                SessionEvent::Connect(a) => {
                    dial_times.push(now.duration_since(t).as_secs());
                    s.handle_connection_closed(now, a, true, CloseKind::Transient);
                }
                SessionEvent::Stalled(why) => stalls.push((now.duration_since(t).as_secs(), why)),
                other => panic!("unexpected {other:?}"),
            }
        }
        now = s.poll_timeout().unwrap();
    }
    assert_eq!(
        dial_times,
        vec![0, 5, 15, 35, 75, 155],
        "backs off, never re-dials every 2 s"
    );
    assert_eq!(
        stalls,
        vec![
            (
                30,
                Stall::PeersUnreachable {
                    known: 1,
                    given_up: 1
                }
            ),
            (
                90,
                Stall::PeersUnreachable {
                    known: 1,
                    given_up: 1
                }
            ),
            (
                150,
                Stall::PeersUnreachable {
                    known: 1,
                    given_up: 1
                }
            ),
        ]
    );
    assert!(!s.is_finished(), "trackers answer: keep trying");
}

#[test]
fn a_seed_announces_completed_once_and_stops_at_its_ratio() {
    let t = Instant::now();
    let limits = SeedLimits {
        ratio: Some(2.0),
        time: None,
    };
    let mut s = Session::new(t, params(&[&["a"]], &[], Some(limits)));
    s.handle_transfer(t, left(1000));
    s.handle_timeout(t);
    events(&mut s);
    s.handle_announce_response(t, "a", &response(&[]));
    s.handle_transfer(t, completed());
    s.handle_timeout(t);
    let ev = events(&mut s);
    assert!(ev.contains(&SessionEvent::Seeding));
    assert_eq!(announces(&ev), vec![("a".into(), Event::Completed)]);
    s.handle_announce_response(t, "a", &response(&[]));
    s.handle_transfer(
        t,
        Transfer {
            downloaded: 1000,
            uploaded: 2000,
            ..Transfer::default()
        },
    );
    s.handle_timeout(t);
    assert_eq!(
        announces(&events(&mut s)),
        vec![("a".into(), Event::Stopped)]
    );
    // The tracker never answers the `stopped`: the session ends at the deadline anyway.
    assert_eq!(s.poll_timeout(), Some(t + FINAL_ANNOUNCE_TIMEOUT));
    s.handle_timeout(t + FINAL_ANNOUNCE_TIMEOUT);
    assert_eq!(
        events(&mut s),
        vec![SessionEvent::Finished(Finish::Complete)]
    );
}

#[test]
fn starving_downloads_ask_again_soon_then_less_often() {
    let t = Instant::now();
    let mut s = Session::new(t, params(&[&["a"]], &[], None));
    s.handle_transfer(t, left(10));
    let mut now = t;
    let mut times = Vec::new();
    while times.len() < 6 {
        s.handle_timeout(now);
        for e in events(&mut s) {
            if let SessionEvent::Announce { url, .. } = e {
                times.push(now.duration_since(t).as_secs());
                s.handle_announce_response(now, &url, &response(&[]));
            }
        }
        now = s.poll_timeout().unwrap();
    }
    assert_eq!(times, vec![0, 2, 6, 14, 30, 62]);
}

#[test]
fn incoming_connections_are_limited_and_banned_addresses_refused() {
    let t = Instant::now();
    let mut p = params(&[], &[], None);
    Arc::make_mut(&mut p.config).max_incoming = 1;
    let mut s = Session::new(t, p);
    assert!(s.handle_incoming(addr(1)));
    assert!(!s.handle_incoming(addr(2)));
    s.handle_connection_closed(t, addr(1), false, CloseKind::Banned);
    assert!(!s.handle_incoming(addr(1)));
    assert!(s.handle_incoming(addr(2)));
}

#[test]
fn an_address_banned_after_its_connection_ended_is_refused_and_never_dialled() {
    let t = Instant::now();
    let mut s = Session::new(t, params(&[], &[addr(1), addr(2)], None));
    s.handle_transfer(t, left(1000));
    // Peer 3 connected to us and left; peer 1 is waiting to be dialled.
    assert!(s.handle_incoming(addr(3)));
    s.handle_connection_closed(t, addr(3), false, CloseKind::Transient);
    s.ban(addr(3));
    s.ban(addr(1));
    assert!(!s.handle_incoming(addr(3)), "a banned peer dialled in");
    assert!(!s.handle_incoming(addr(1)));
    assert!(s.is_banned(&addr(3)) && s.is_banned(&addr(1)));
    s.handle_timeout(t);
    assert_eq!(connects(&events(&mut s)), vec![addr(2)]);
    assert_eq!(s.candidate_counts().banned, 2);
    // A ban outlives a later close of the connection we dialled.
    s.ban(addr(2));
    s.handle_connection_closed(t, addr(2), true, CloseKind::Ours);
    s.handle_timeout(t + Duration::from_secs(3600));
    assert!(connects(&events(&mut s)).is_empty());
    assert!(!s.handle_incoming(addr(2)));
}

fn with_dht(mut p: SessionParams) -> SessionParams {
    Arc::make_mut(&mut p.config).dht = true;
    Arc::make_mut(&mut p.config).dht_announce = true;
    p
}

#[test]
fn a_trackerless_session_asks_the_dht_backs_off_and_gives_up_when_it_finds_nobody() {
    let t = Instant::now();
    let mut s = Session::new(t, with_dht(params(&[], &[], None)));
    s.handle_transfer(t, left(10));
    let mut now = t;
    let mut lookups = Vec::new();
    while !s.is_finished() {
        s.handle_timeout(now);
        for e in events(&mut s) {
            match e {
                SessionEvent::DhtLookup { announce } => {
                    assert!(announce);
                    lookups.push(now.duration_since(t).as_secs());
                    s.handle_dht_done(now, 0);
                }
                SessionEvent::Finished(f) => assert_eq!(f, Finish::GaveUp(GiveUp::NoPeers)),
                other => panic!("unexpected {other:?}"),
            }
        }
        now = s.poll_timeout().unwrap_or(now).max(now);
        assert!(now < t + Duration::from_secs(600), "never gave up");
    }
    assert_eq!(lookups, vec![0, 5, 15]);
}

#[test]
fn peers_from_the_dht_are_dialled_and_the_next_lookup_waits_its_interval() {
    let t = Instant::now();
    let mut s = Session::new(t, with_dht(params(&[&["a"]], &[], None)));
    s.handle_transfer(t, left(10));
    s.handle_timeout(t);
    let ev = events(&mut s);
    assert!(
        ev.contains(&SessionEvent::DhtLookup { announce: true }),
        "{ev:?}"
    );
    // Trackers failing do not end a session that has the DHT.
    s.handle_announce_failure(t, "a");
    s.handle_peers(&[addr(7)]);
    s.handle_dht_done(t, 1);
    s.handle_timeout(t);
    let ev = events(&mut s);
    assert_eq!(connects(&ev), vec![addr(7)]);
    assert!(!s.is_finished());
    s.handle_connection_established(addr(7));
    let t1 = t + Duration::from_secs(60);
    s.handle_timeout(t1);
    assert!(!events(&mut s)
        .iter()
        .any(|e| matches!(e, SessionEvent::DhtLookup { .. })));
    s.handle_timeout(t + DHT_INTERVAL);
    assert!(events(&mut s).contains(&SessionEvent::DhtLookup { announce: true }));
}

#[test]
fn stall_reasons_read_as_sentences_in_singular_and_plural() {
    let said = |s: Stall| s.to_string();
    assert_eq!(
        said(Stall::PeersUnreachable {
            known: 1,
            given_up: 1
        }),
        "the only known peer refuses or drops our connections; retrying at growing intervals"
    );
    assert_eq!(
        said(Stall::PeersUnreachable {
            known: 4,
            given_up: 0
        }),
        "none of the 4 known peers accepts our connections; retrying at growing intervals"
    );
    assert_eq!(
        said(Stall::PeersUnreachable {
            known: 4,
            given_up: 2
        }),
        "none of the 4 known peers accepts our connections (2 of them failed repeatedly); \
         retrying at growing intervals"
    );
    assert_eq!(
        said(Stall::AllBanned { banned: 1 }),
        "the only known peer was banned for sending bad data"
    );
    assert_eq!(
        said(Stall::PeersSendNothing { peers: 1 }),
        "the only connected peer sends nothing (it chokes us or lacks the pieces we need)"
    );
    assert_eq!(
        said(Stall::PeersSendNothing { peers: 3 }),
        "3 connected peers send nothing (they choke us or lack the pieces we need)"
    );
}

/// A seed of complete data that goes dormant after `after` without peers.
fn resting_seed(t: Instant, trackers: &[&[&str]], after: Duration) -> Session {
    let mut p = params(trackers, &[], Some(SeedLimits::default()));
    Arc::make_mut(&mut p.config).dormant_after = Some(after);
    let mut s = Session::new(t, p);
    s.handle_transfer(t, left(0));
    s
}

/// A resting seed (one tracker, dormant after `after`) driven to dormancy from `t`, then woken
/// 100 s after `t` by an incoming peer (`addr(1)`); returns it and that instant.
fn woken_seed(t: Instant, after: Duration) -> (Session, Instant) {
    let mut s = resting_seed(t, &[&["a"]], after);
    drive(&mut s, t + after);
    assert!(s.is_dormant());
    let woken = t + Duration::from_secs(100);
    assert!(s.handle_incoming(addr(1)));
    assert!(!s.is_dormant());
    (s, woken)
}

/// Drives `s` by its own deadlines until `until`, answering every announce at once with an
/// interval of 1800 s; returns each deadline it asked for and the events it gave.
fn drive(s: &mut Session, until: Instant) -> (Vec<Instant>, Vec<SessionEvent>) {
    let (mut deadlines, mut all) = (Vec::new(), Vec::new());
    while let Some(at) = s.poll_timeout().filter(|&at| at <= until) {
        deadlines.push(at);
        s.handle_timeout(at);
        for e in events(s) {
            if let SessionEvent::Announce { url, .. } = &e {
                s.handle_announce_response(at, url, &response(&[]));
            }
            all.push(e);
        }
        assert!(deadlines.len() < 100, "a busy session: {deadlines:?}");
    }
    (deadlines, all)
}

#[test]
fn an_idle_seed_goes_dormant_and_then_wakes_only_for_its_announces() {
    let t = Instant::now();
    let after = Duration::from_secs(60);
    let mut s = resting_seed(t, &[&["a"], &["b"]], after);
    let (_, ev) = drive(&mut s, t + after);
    assert_eq!(
        announces(&ev),
        vec![("a".into(), Event::Started), ("b".into(), Event::Started)]
    );
    assert_eq!(ev.last(), Some(&SessionEvent::Dormant), "{ev:?}");
    assert!(s.is_dormant());
    // From now on its only deadline is the next announce, 1800 s after the first.
    assert_eq!(s.poll_timeout(), Some(t + Duration::from_secs(1800)));
    let day = t + Duration::from_secs(24 * 3600);
    let (mut deadlines, ev) = drive(&mut s, day);
    // (An answer makes the session due at once: it looks at it at the same instant.)
    deadlines.dedup();
    let every = |n: u64| t + Duration::from_secs(1800 * n);
    assert_eq!(deadlines, (1..=48).map(every).collect::<Vec<_>>());
    assert_eq!(announces(&ev).len(), 96, "one per tier per interval");
    assert!(ev
        .iter()
        .all(|e| matches!(e, SessionEvent::Announce { .. })));
    assert!(s.is_dormant());
}

#[test]
fn a_peer_wakes_a_dormant_seed_which_rests_again_after_it_leaves() {
    let t = Instant::now();
    let after = Duration::from_secs(60);
    let (mut s, t1) = woken_seed(t, after);
    s.handle_transfer(
        t1,
        Transfer {
            peers: 1,
            ..left(0)
        },
    );
    // While the peer stays, the session waits for nothing but its announce.
    assert_eq!(drive(&mut s, t1 + Duration::from_secs(600)).1, Vec::new());
    let t2 = t1 + Duration::from_secs(600);
    s.handle_connection_closed(t2, addr(1), false, CloseKind::Ours);
    s.handle_transfer(t2, left(0));
    let (deadlines, ev) = drive(&mut s, t2 + after);
    assert_eq!(ev, vec![SessionEvent::Dormant]);
    assert_eq!(deadlines.last(), Some(&(t2 + after)));
    assert_eq!(s.poll_timeout(), Some(t + Duration::from_secs(1800)));
}

#[test]
fn a_seed_does_not_go_dormant_with_an_announce_in_flight() {
    let t = Instant::now();
    let after = Duration::from_secs(60);
    let mut s = resting_seed(t, &[&["a"]], after);
    s.handle_timeout(t);
    assert_eq!(
        announces(&events(&mut s)),
        vec![("a".into(), Event::Started)]
    );
    // The tracker takes its time: no deadline for going dormant while it does.
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(t + after * 2);
    assert!(events(&mut s).is_empty());
    s.handle_announce_response(t + after * 2, "a", &response(&[]));
    assert_eq!(s.poll_timeout(), Some(t + after * 2));
    s.handle_timeout(t + after * 2);
    assert_eq!(events(&mut s), vec![SessionEvent::Dormant]);
}

#[test]
fn a_seed_is_not_woken_by_addresses_it_will_never_dial() {
    let t = Instant::now();
    let mut s = Session::new(t, params(&[], &[addr(1)], Some(SeedLimits::default())));
    s.handle_transfer(t, left(1000));
    s.handle_timeout(t);
    assert_eq!(connects(&events(&mut s)), vec![addr(1)]);
    // The dial fails: the address waits out a retry delay.
    s.handle_connection_closed(t, addr(1), true, CloseKind::Transient);
    s.handle_timeout(t);
    events(&mut s);
    assert!(s.poll_timeout().is_some(), "a download retries it");
    // The data completes meanwhile (from another source): a seed has nothing to dial.
    s.handle_transfer(t, completed());
    s.handle_timeout(t);
    assert!(events(&mut s).contains(&SessionEvent::Seeding));
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_seed_keeps_no_addresses_but_its_bans() {
    let t = Instant::now();
    let mut s = Session::new(
        t,
        params(&[&["a"]], &[addr(1)], Some(SeedLimits::default())),
    );
    s.handle_transfer(t, left(1000));
    s.handle_timeout(t);
    assert_eq!(connects(&events(&mut s)), vec![addr(1)]);
    assert!(s.handle_incoming(addr(2)));
    s.handle_connection_closed(t, addr(2), false, CloseKind::Banned);
    s.handle_announce_response(t, "a", &response(&[addr(3), addr(4)]));
    assert_eq!(s.candidate_counts().ready, 2);
    // Complete: the dial queue is forgotten, the ban kept.
    s.handle_transfer(t, completed());
    s.handle_timeout(t);
    assert!(events(&mut s).contains(&SessionEvent::Seeding));
    let counts = s.candidate_counts();
    assert_eq!((counts.ready, counts.dialled, counts.banned), (0, 0, 1));
    assert!(!s.handle_incoming(addr(2)), "still banned");
    // A seed's announces bring peers it never keeps.
    let peers: Vec<SocketAddr> = (10..200).map(addr).collect();
    s.handle_announce_response(t, "a", &response(&peers));
    s.handle_timeout(t);
    assert_eq!(s.candidate_counts().ready, 0);
    assert!(connects(&events(&mut s)).is_empty());
}

#[test]
fn a_resting_seed_whose_data_went_missing_downloads_again() {
    let t = Instant::now();
    // A peer wakes it; its next run finds half the data gone.
    let (mut s, t1) = woken_seed(t, Duration::from_secs(60));
    s.handle_transfer(t1, left(500));
    s.handle_timeout(t1);
    events(&mut s);
    s.handle_announce_response(t1, "a", &response(&[addr(2)]));
    s.handle_timeout(t1);
    assert_eq!(connects(&events(&mut s)), vec![addr(2)]);
    assert!(!s.is_dormant());
}
