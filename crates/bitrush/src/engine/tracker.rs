//! Tracker clients over real sockets: HTTP and HTTPS (reqwest with rustls, trusting the
//! authorities [`super::tls`] loads) and UDP (tokio `UdpSocket` driving the sans-IO
//! [`UdpAnnounce`] state machine), plus [`announce_all`], which asks every tier at once (for the
//! `peers` command and probes; sessions schedule per tracker).
//!
//! Invariants: every announce ends by itself (HTTP has a whole-request timeout, name lookup
//! is bounded, and UDP gives up after its last retransmission); HTTP bodies larger than
//! [`MAX_RESPONSE_LEN`] are refused while streaming; UDP connection ids are reused for at most
//! their 60 s lifetime from a small process-wide cache.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::JoinSet;

use super::tls::{self, TrustRootsError};
use crate::tracker::http::{announce_url, parse_announce_response};
use crate::tracker::udp::CONNECTION_ID_LIFETIME;
use crate::tracker::{
    is_global_ipv6, push_peers, AnnounceRequest, AnnounceResponse, TrackerError, UdpAnnounce,
    UdpConfig, MAX_RESPONSE_LEN,
};

/// Largest UDP datagram we read (bigger ones are truncated by the socket).
const MAX_DATAGRAM: usize = 64 * 1024;
/// Most UDP connection ids remembered.
const MAX_CACHED_CONNECTIONS: usize = 256;

/// Why one announce failed.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// The tracker answered, but not usefully (its failure reason, a malformed response, or
    /// no answer in time over UDP).
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    /// A URL we cannot announce to.
    #[error("unsupported tracker URL {0}")]
    BadUrl(String),
    /// The tracker's host could not be reached (refused, unreachable, reset): the socket
    /// error alone, without the HTTP stack's layers around it.
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    /// The HTTPS tracker's certificate was refused (`problem` says why in words).
    #[error("TLS certificate {problem}")]
    Certificate {
        problem: &'static str,
        source: rustls::Error,
    },
    /// The TLS handshake with an HTTPS tracker failed for another reason than its certificate.
    #[error("TLS handshake failed")]
    Tls(#[source] rustls::Error),
    /// There is no certificate authority to check an HTTPS tracker against.
    #[error(transparent)]
    TrustRoots(#[from] TrustRootsError),
    /// The HTTP request failed otherwise (protocol, body).
    #[error("HTTP request failed")]
    Http(#[source] reqwest::Error),
    /// The HTTP tracker answered with another status than 200.
    #[error("HTTP status {0}")]
    HttpStatus(reqwest::StatusCode),
    /// The HTTP body was larger than we read.
    #[error("response body over {MAX_RESPONSE_LEN} bytes")]
    TooLarge,
    /// Name resolution or a UDP socket failed.
    #[error("{what}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// Name resolution took too long or found nothing.
    #[error("resolving {0}: {1}")]
    Resolve(String, &'static str),
    /// The announce task itself failed.
    #[error("the announce task failed")]
    Task(#[source] tokio::task::JoinError),
    /// The announce task ended without an answer.
    #[error("the announce task ended without an answer")]
    Lost,
}

/// Every tracker that failed, with why; shown as one line.
#[derive(Debug, Default)]
pub struct AnnounceFailures(pub Vec<(String, AnnounceError)>);

impl std::fmt::Display for AnnounceFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no trackers");
        }
        for (i, (url, e)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{url}: {}", super::error_chain(e))?;
        }
        Ok(())
    }
}

impl std::error::Error for AnnounceFailures {}

/// No tracker of any tier answered.
#[derive(Debug, thiserror::Error)]
#[error("no tracker answered")]
pub struct NoTrackerAnswered(#[source] pub AnnounceFailures);

/// Timeouts for one announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceOptions {
    /// Whole-request timeout for HTTP trackers, also bounding name lookups.
    pub http_timeout: Duration,
    /// Retransmission settings for UDP trackers (`ipv6` is set per tracker address).
    pub udp: UdpConfig,
}

impl Default for AnnounceOptions {
    /// 10 s for HTTP; UDP waits 1.5 s, 3 s then 6 s, so a dead tracker fails in ~10.5 s.
    fn default() -> AnnounceOptions {
        AnnounceOptions {
            http_timeout: Duration::from_secs(10),
            udp: UdpConfig {
                base_timeout: Duration::from_millis(1500),
                max_tries: 3,
                ipv6: false,
            },
        }
    }
}

/// What [`announce_all_detailed`] learned from every tier.
#[derive(Debug, Default)]
pub struct AnnounceAll {
    /// All answers merged: peers deduplicated in tier order, the smallest interval, the largest
    /// `min interval` and counts, the first warning.
    pub merged: AnnounceResponse,
    /// For each tier that answered, the tracker that did and its response.
    pub answered: Vec<(String, AnnounceResponse)>,
    /// Every tracker that failed, with why.
    pub failed: AnnounceFailures,
}

/// Announces to one tracker (`http://` or `udp://host:port`) with default timeouts.
pub async fn announce(url: &str, req: &AnnounceRequest) -> Result<AnnounceResponse, AnnounceError> {
    announce_with(url, req, &AnnounceOptions::default()).await
}

/// Announces to one tracker with the given timeouts.
pub async fn announce_with(
    url: &str,
    req: &AnnounceRequest,
    opts: &AnnounceOptions,
) -> Result<AnnounceResponse, AnnounceError> {
    announce_through(None, url, req, opts).await
}

/// An HTTP(S) client shared by many announces (a daemon announcing thousands of torrents), so
/// that one is not built for each. Made on, and used only on, one runtime.
#[derive(Clone)]
pub struct SharedClient(reqwest::Client);

impl SharedClient {
    /// A client trusting the authorities if they load (without them, HTTPS announces fail
    /// as they would with a client of their own). It keeps no idle connection: trackers
    /// often close one right after their answer, and the next announce sent on it would fail
    /// (opentracker: 14 of 1,000 announces).
    pub fn new() -> Result<SharedClient, AnnounceError> {
        let builder = tls::client_builder(false)?.pool_max_idle_per_host(0);
        builder
            .build()
            .map(SharedClient)
            .map_err(AnnounceError::Http)
    }
}

/// Announces to one tracker through `client`, with the default timeouts.
pub async fn announce_shared(
    client: &SharedClient,
    url: &str,
    req: &AnnounceRequest,
) -> Result<AnnounceResponse, AnnounceError> {
    announce_through(Some(client), url, req, &AnnounceOptions::default()).await
}

async fn announce_through(
    client: Option<&SharedClient>,
    url: &str,
    req: &AnnounceRequest,
    opts: &AnnounceOptions,
) -> Result<AnnounceResponse, AnnounceError> {
    let url = url.trim();
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("http") => announce_http(client, url, false, req, opts).await,
        Some("https") => announce_http(client, url, true, req, opts).await,
        Some("udp") => announce_udp(url, req, opts).await,
        _ => Err(AnnounceError::BadUrl(url.to_string())),
    }
}

/// Announces to every tier concurrently (within a tier, trackers are tried in order until one
/// answers) and merges the answers. Fails only if no tier answered; the error lists every
/// tracker's failure.
pub async fn announce_all(
    tiers: &[Vec<String>],
    req: &AnnounceRequest,
) -> Result<AnnounceResponse, NoTrackerAnswered> {
    announce_all_detailed(tiers, req, &AnnounceOptions::default())
        .await
        .map(|all| all.merged)
}

/// [`announce_all`] with explicit timeouts, also reporting which tracker answered and which
/// failed.
pub async fn announce_all_detailed(
    tiers: &[Vec<String>],
    req: &AnnounceRequest,
    opts: &AnnounceOptions,
) -> Result<AnnounceAll, NoTrackerAnswered> {
    type TierOutcome = (
        usize,
        Option<(String, AnnounceResponse)>,
        Vec<(String, AnnounceError)>,
    );
    let mut set: JoinSet<TierOutcome> = JoinSet::new();
    for (index, tier) in tiers.iter().enumerate().filter(|(_, t)| !t.is_empty()) {
        let (tier, req, opts) = (tier.clone(), req.clone(), *opts);
        set.spawn(async move {
            let mut failed = Vec::new();
            for url in tier {
                match announce_with(&url, &req, &opts).await {
                    Ok(resp) => return (index, Some((url, resp)), failed),
                    Err(e) => failed.push((url, e)),
                }
            }
            (index, None, failed)
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => outcomes.push((
                usize::MAX,
                None,
                vec![("(tier task)".to_string(), AnnounceError::Task(e))],
            )),
        }
    }
    outcomes.sort_by_key(|o| o.0);

    let mut all = AnnounceAll::default();
    let mut seen = HashSet::new();
    for (_, answer, failed) in outcomes {
        all.failed.0.extend(failed);
        let Some((url, resp)) = answer else { continue };
        let m = &mut all.merged;
        push_peers(&mut m.peers, &mut seen, resp.peers.iter().copied());
        m.interval = min_some(m.interval, resp.interval);
        m.min_interval = m.min_interval.max(resp.min_interval);
        m.seeders = m.seeders.max(resp.seeders);
        m.leechers = m.leechers.max(resp.leechers);
        if m.warning.is_none() {
            m.warning = resp.warning.clone();
        }
        all.answered.push((url, resp));
    }
    if all.answered.is_empty() {
        return Err(NoTrackerAnswered(all.failed));
    }
    Ok(all)
}

/// The IPv6 address to tell HTTP trackers (BEP 7 `ipv6=`) for a session whose peer listener is
/// bound to `listen`: the listener's own address if that is a global IPv6 one, our global IPv6
/// address if it listens on every IPv6 address (`[::]`), else none (an IPv4 listener takes no
/// IPv6 peers, and loopback, link-local or unique-local addresses are no use to a tracker).
pub fn announce_ipv6(listen: Option<SocketAddr>) -> Option<Ipv6Addr> {
    match listen?.ip() {
        IpAddr::V6(ip) if ip.is_unspecified() => global_ipv6(),
        IpAddr::V6(ip) => is_global_ipv6(&ip).then_some(ip),
        IpAddr::V4(_) => None,
    }
}

/// Our global IPv6 address, if the machine has one: the source address the system picks for a
/// global destination, read from a UDP socket "connected" to one. Connecting a UDP socket only
/// looks up the route; nothing is sent.
pub fn global_ipv6() -> Option<Ipv6Addr> {
    // Any global unicast destination works; 2000::1 is in unallocated global space.
    let probe = SocketAddr::from((Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 1), 9));
    let socket = std::net::UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect(probe).ok()?;
    match socket.local_addr().ok()?.ip() {
        IpAddr::V6(ip) if is_global_ipv6(&ip) => Some(ip),
        _ => None,
    }
}

fn min_some(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// The socket error under an HTTP client's error, if any (a copy: the chain owns it).
fn socket_error(e: &reqwest::Error) -> Option<std::io::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return Some(match io.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(io.kind(), io.to_string()),
            });
        }
        source = cause.source();
    }
    None
}

/// Announces over HTTP, or over HTTPS if `https` (then the trusted authorities must load),
/// through `shared` or else a client of its own.
async fn announce_http(
    shared: Option<&SharedClient>,
    url: &str,
    https: bool,
    req: &AnnounceRequest,
    opts: &AnnounceOptions,
) -> Result<AnnounceResponse, AnnounceError> {
    // Without a shared client, a client per announce (a process-wide one would outlive the
    // runtime it was first used on); the TLS configuration behind it is built once.
    let own;
    let client = match shared {
        Some(SharedClient(client)) => {
            if https {
                tls::https_ready()?;
            }
            client
        }
        None => {
            own = tls::client_builder(https)?
                .build()
                .map_err(AnnounceError::Http)?;
            &own
        }
    };
    let http = |e: reqwest::Error| {
        if e.is_timeout() {
            return AnnounceError::Tracker(TrackerError::Timeout);
        }
        match tls::tls_failure(&e) {
            Some(rustls::Error::InvalidCertificate(cert)) => AnnounceError::Certificate {
                problem: tls::certificate_problem(cert),
                source: rustls::Error::InvalidCertificate(cert.clone()),
            },
            Some(other) => AnnounceError::Tls(other.clone()),
            None => match e.is_connect().then(|| socket_error(&e)).flatten() {
                Some(io) => AnnounceError::Connect(io),
                None => AnnounceError::Http(e.without_url()),
            },
        }
    };
    let mut resp = client
        .get(announce_url(url, req))
        .timeout(opts.http_timeout)
        .send()
        .await
        .map_err(http)?;
    let status = resp.status();
    if status != reqwest::StatusCode::OK {
        return Err(AnnounceError::HttpStatus(status));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_LEN as u64)
    {
        return Err(AnnounceError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(http)? {
        if body.len().saturating_add(chunk.len()) > MAX_RESPONSE_LEN {
            return Err(AnnounceError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(parse_announce_response(&body)?)
}

/// `host:port` of a `udp://host:port[/path]` URL.
fn udp_host_port(url: &str) -> Result<&str, AnnounceError> {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| AnnounceError::BadUrl(url.to_string()))?;
    let host_port = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let port_ok = host_port
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if !port_ok {
        return Err(AnnounceError::BadUrl(format!(
            "{url} (a UDP tracker needs host:port)"
        )));
    }
    Ok(host_port)
}

type ConnectionCache = Mutex<HashMap<SocketAddr, (u64, Instant)>>;

/// UDP connection ids by tracker address, shared by all announces of the process.
fn connections() -> &'static ConnectionCache {
    static CACHE: OnceLock<ConnectionCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn cached_connection(addr: SocketAddr) -> Option<(u64, Instant)> {
    let cache = connections().lock().ok()?;
    cache.get(&addr).copied()
}

fn remember_connection(addr: SocketAddr, conn: Option<(u64, Instant)>) {
    let Ok(mut cache) = connections().lock() else {
        return;
    };
    match conn {
        Some(c) => {
            if cache.len() >= MAX_CACHED_CONNECTIONS {
                let now = Instant::now();
                cache
                    .retain(|_, (_, t)| now.saturating_duration_since(*t) < CONNECTION_ID_LIFETIME);
                if cache.len() >= MAX_CACHED_CONNECTIONS {
                    cache.clear();
                }
            }
            cache.insert(addr, c);
        }
        None => {
            cache.remove(&addr);
        }
    }
}

fn io_error(what: &str) -> impl FnOnce(std::io::Error) -> AnnounceError + '_ {
    move |source| AnnounceError::Io {
        what: what.to_string(),
        source,
    }
}

async fn announce_udp(
    url: &str,
    req: &AnnounceRequest,
    opts: &AnnounceOptions,
) -> Result<AnnounceResponse, AnnounceError> {
    let host_port = udp_host_port(url)?;
    let resolving = format!("resolving {host_port}");
    let mut addrs = tokio::time::timeout(opts.http_timeout, tokio::net::lookup_host(host_port))
        .await
        .map_err(|_| AnnounceError::Resolve(host_port.to_string(), "timed out"))?
        .map_err(io_error(&resolving))?;
    let addr = addrs
        .next()
        .ok_or_else(|| AnnounceError::Resolve(host_port.to_string(), "no address"))?;
    let local: SocketAddr = if addr.is_ipv4() {
        SocketAddr::from(([0u8; 4], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(io_error("binding a UDP socket"))?;
    socket
        .connect(addr)
        .await
        .map_err(io_error("connecting a UDP socket"))?;

    let config = UdpConfig {
        ipv6: addr.is_ipv6(),
        ..opts.udp
    };
    let mut sm = UdpAnnounce::new(
        req.clone(),
        cached_connection(addr),
        Instant::now(),
        rand::random(),
        config,
    );
    let result = drive_udp(&socket, &mut sm).await;
    remember_connection(
        addr,
        if result.is_ok() {
            sm.connection()
        } else {
            None
        },
    );
    result
}

async fn drive_udp(
    socket: &UdpSocket,
    sm: &mut UdpAnnounce,
) -> Result<AnnounceResponse, AnnounceError> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        sm.handle_timeout(Instant::now());
        while let Some(packet) = sm.poll_transmit(Instant::now()) {
            socket
                .send(&packet)
                .await
                .map_err(io_error("sending to the UDP tracker"))?;
        }
        if let Some(result) = sm.poll_result() {
            return Ok(result?);
        }
        let Some(deadline) = sm.poll_timeout() else {
            return Err(TrackerError::Timeout.into());
        };
        tokio::select! {
            received = socket.recv(&mut buf) => {
                let n = received.map_err(io_error("receiving from the UDP tracker"))?;
                sm.handle_datagram(Instant::now(), buf.get(..n).unwrap_or(&buf));
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Event;
    use crate::types::{InfoHash, PeerId};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    fn req() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: InfoHash([0xab; 20]),
            peer_id: PeerId(*b"-BR0001-0123456789ab"),
            port: 6881,
            uploaded: 0,
            downloaded: 0,
            left: 100,
            event: Event::Started,
            numwant: Some(50),
            key: 1,
            ipv6: None,
        }
    }

    fn fast() -> AnnounceOptions {
        AnnounceOptions {
            http_timeout: Duration::from_secs(5),
            udp: UdpConfig {
                base_timeout: Duration::from_millis(100),
                max_tries: 2,
                ipv6: false,
            },
        }
    }

    fn compact_body(peers: &[([u8; 4], u16)], interval: u32) -> Vec<u8> {
        let mut compact = Vec::new();
        for (ip, port) in peers {
            compact.extend_from_slice(ip);
            compact.extend_from_slice(&port.to_be_bytes());
        }
        let mut body = format!("d8:intervali{interval}e5:peers{}:", compact.len()).into_bytes();
        body.extend_from_slice(&compact);
        body.push(b'e');
        body
    }

    /// Serves one canned HTTP response per connection, `count` times; yields the request lines.
    async fn http_server(responses: Vec<Vec<u8>>) -> (String, JoinHandle<Vec<String>>) {
        http_server_on("127.0.0.1:0", responses).await
    }

    /// [`http_server`] bound to `bind`.
    async fn http_server_on(
        bind: &str,
        responses: Vec<Vec<u8>>,
    ) -> (String, JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = tokio::spawn(async move {
            let mut lines = Vec::new();
            for response in responses {
                let Ok((mut conn, _)) = listener.accept().await else {
                    break;
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match conn.read(&mut byte).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&byte[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                lines.push(text.lines().next().unwrap_or_default().to_string());
                let _ = conn.write_all(&response).await;
                let _ = conn.shutdown().await;
            }
            lines
        });
        (format!("http://{addr}/announce"), handle)
    }

    fn http_ok(body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    /// A UDP tracker answering connect and announce `announces` times (or with an error
    /// message), recording the actions it saw.
    async fn udp_server(
        announces: usize,
        error: Option<&'static str>,
        peers: Vec<([u8; 4], u16)>,
    ) -> (String, JoinHandle<Vec<u32>>) {
        let peers = peers.into_iter().map(SocketAddr::from).collect();
        udp_server_on("127.0.0.1:0", announces, error, peers).await
    }

    /// [`udp_server`] bound to `bind`, answering with `peers` in the compact form of their
    /// family (6 or 18 bytes each).
    async fn udp_server_on(
        bind: &str,
        announces: usize,
        error: Option<&'static str>,
        peers: Vec<SocketAddr>,
    ) -> (String, JoinHandle<Vec<u32>>) {
        let sock = UdpSocket::bind(bind).await.unwrap();
        let addr = sock.local_addr().unwrap();
        let handle = tokio::spawn(async move {
            let mut actions = Vec::new();
            let mut done = 0;
            let mut buf = [0u8; 2048];
            while done < announces {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    break;
                };
                let p = &buf[..n];
                let action = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
                actions.push(action);
                let tid = &p[12..16];
                let mut reply = Vec::new();
                if let Some(msg) = error {
                    reply.extend_from_slice(&3u32.to_be_bytes());
                    reply.extend_from_slice(tid);
                    reply.extend_from_slice(msg.as_bytes());
                    done += 1;
                } else if action == 0 {
                    assert_eq!(n, 16);
                    reply.extend_from_slice(&0u32.to_be_bytes());
                    reply.extend_from_slice(tid);
                    reply.extend_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes());
                } else {
                    assert_eq!(n, 98);
                    assert_eq!(&p[0..8], &0x1234_5678_9abc_def0u64.to_be_bytes());
                    assert_eq!(&p[16..36], &[0xab; 20]);
                    reply.extend_from_slice(&1u32.to_be_bytes());
                    reply.extend_from_slice(tid);
                    reply.extend_from_slice(&600u32.to_be_bytes());
                    reply.extend_from_slice(&2u32.to_be_bytes());
                    reply.extend_from_slice(&3u32.to_be_bytes());
                    for peer in &peers {
                        match peer.ip() {
                            IpAddr::V4(ip) => reply.extend_from_slice(&ip.octets()),
                            IpAddr::V6(ip) => reply.extend_from_slice(&ip.octets()),
                        }
                        reply.extend_from_slice(&peer.port().to_be_bytes());
                    }
                    done += 1;
                }
                let _ = sock.send_to(&reply, from).await;
            }
            actions
        });
        (format!("udp://{addr}/announce"), handle)
    }

    /// A UDP tracker that never answers (kept open until the returned socket is dropped).
    async fn silent_udp() -> (String, UdpSocket) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let url = format!("udp://{}", sock.local_addr().unwrap());
        (url, sock)
    }

    /// An HTTP URL on a port nobody listens on.
    async fn dead_http() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}/announce")
    }

    #[tokio::test]
    async fn http_announce_parses_peers_and_sends_query() {
        let body = compact_body(&[([10, 0, 0, 1], 6881), ([10, 0, 0, 2], 6882)], 900);
        let (url, server) = http_server(vec![http_ok(&body)]).await;
        let resp = announce(&url, &req()).await.unwrap();
        assert_eq!(resp.interval, Some(900));
        assert_eq!(resp.peers.len(), 2);
        let lines = server.await.unwrap();
        assert!(
            lines[0].starts_with("GET /announce?info_hash=%AB%AB"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("&event=started&"), "{}", lines[0]);
    }

    #[tokio::test]
    async fn http_errors_are_clear() {
        let not_found =
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec();
        let failure = http_ok(b"d14:failure reason7:go awaye");
        let (url, _server) = http_server(vec![not_found, failure]).await;
        match announce(&url, &req()).await {
            Err(AnnounceError::HttpStatus(status)) => assert_eq!(status.as_u16(), 404),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            announce(&url, &req()).await,
            Err(AnnounceError::Tracker(TrackerError::Failure(f))) if f == "go away"
        ));
        // A refused connection reads as such, without the HTTP stack's layers.
        let refused = announce(&dead_http().await, &req()).await.unwrap_err();
        let expected = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(matches!(&refused, AnnounceError::Connect(io) if io.kind() == expected.kind()));
        let chain = crate::engine::error_chain(&refused);
        assert!(
            chain.starts_with("cannot connect: ") && chain.matches(": ").count() == 1,
            "{chain}"
        );
    }

    #[tokio::test]
    async fn http_body_size_is_bounded() {
        // No Content-Length: the body runs until the connection closes.
        let mut big = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        big.resize(big.len() + MAX_RESPONSE_LEN + 1, b'x');
        let declared = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            MAX_RESPONSE_LEN + 1
        )
        .into_bytes();
        let (url, _server) = http_server(vec![big, declared]).await;
        for _ in 0..2 {
            match announce(&url, &req()).await {
                Err(AnnounceError::TooLarge) => {}
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn trackers_over_ipv6_give_ipv6_peers() {
        let v6: Vec<SocketAddr> = ["[2001:db8::7]:6881", "[::1]:51413"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        // HTTP on [::1], answering with peers6 alone.
        let mut compact = Vec::new();
        for peer in &v6 {
            if let IpAddr::V6(ip) = peer.ip() {
                compact.extend_from_slice(&ip.octets());
            }
            compact.extend_from_slice(&peer.port().to_be_bytes());
        }
        let mut body = format!("d8:intervali900e6:peers6{}:", compact.len()).into_bytes();
        body.extend_from_slice(&compact);
        body.push(b'e');
        let (url, _server) = http_server_on("[::1]:0", vec![http_ok(&body)]).await;
        assert!(url.starts_with("http://[::1]:"), "{url}");
        assert_eq!(announce(&url, &req()).await.unwrap().peers, v6);
        // UDP on [::1]: the answer's entries are 18 bytes long (BEP 15 over IPv6).
        let (url, _server) = udp_server_on("[::1]:0", 1, None, v6.clone()).await;
        assert!(url.starts_with("udp://[::1]:"), "{url}");
        let resp = announce_with(&url, &req(), &fast()).await.unwrap();
        assert_eq!(resp.peers, v6);
    }

    #[tokio::test]
    async fn http_announce_tells_our_ipv6_address() {
        let body = compact_body(&[], 900);
        let (url, server) = http_server(vec![http_ok(&body), http_ok(&body)]).await;
        announce(&url, &req()).await.unwrap();
        let ip: Ipv6Addr = "2a01:4f8::1".parse().unwrap();
        let with_ip = AnnounceRequest {
            ipv6: Some(ip),
            ..req()
        };
        announce(&url, &with_ip).await.unwrap();
        let lines = server.await.unwrap();
        assert!(!lines[0].contains("ipv6="), "{}", lines[0]);
        assert!(
            lines[1].contains("&ipv6=2a01%3A4f8%3A%3A1 "),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn the_ipv6_address_announced_follows_the_listener() {
        let at = |s: &str| announce_ipv6(Some(s.parse().unwrap()));
        assert_eq!(announce_ipv6(None), None);
        assert_eq!(
            at("0.0.0.0:6881"),
            None,
            "an IPv4 listener takes no IPv6 peers"
        );
        assert_eq!(at("[::1]:6881"), None);
        assert_eq!(at("[fd00::2]:6881"), None);
        assert_eq!(
            at("[2a01:4f8::1]:6881"),
            Some("2a01:4f8::1".parse().unwrap())
        );
        // Listening everywhere: the machine's global address, if it has one (this one may not).
        if let Some(ip) = at("[::]:6881") {
            assert!(is_global_ipv6(&ip), "{ip}");
        }
        assert_eq!(at("[::]:6881"), global_ipv6());
    }

    #[tokio::test]
    async fn https_needs_trust_and_says_why_it_failed() {
        // A plain HTTP server behind an https:// URL answers the TLS hello with HTTP: the
        // rustls error is found inside reqwest's and named.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut conn, _)) = listener.accept().await {
                let _ = conn.write_all(&http_ok(b"de")).await;
                let mut sink = [0u8; 1024];
                while let Ok(n) = conn.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            }
        });
        let url = format!("https://{addr}/announce");
        let err = announce_with(&url, &req(), &fast()).await.unwrap_err();
        assert!(matches!(err, AnnounceError::Tls(_)), "{err:?}");
        let line = crate::engine::error_chain(&err);
        assert!(line.starts_with("TLS handshake failed: "), "{line}");
    }

    #[tokio::test]
    async fn bad_urls() {
        for url in [
            "ftp://x/announce",
            "nonsense",
            "udp://host-without-port/announce",
            "udp://:80",
        ] {
            assert!(
                matches!(announce(url, &req()).await, Err(AnnounceError::BadUrl(_))),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn udp_announce_and_connection_reuse() {
        let (url, server) = udp_server(2, None, vec![([10, 0, 0, 9], 51413)]).await;
        let resp = announce_with(&url, &req(), &fast()).await.unwrap();
        assert_eq!(resp.interval, Some(600));
        assert_eq!(resp.leechers, Some(2));
        assert_eq!(resp.seeders, Some(3));
        assert_eq!(
            resp.peers,
            vec!["10.0.0.9:51413".parse::<SocketAddr>().unwrap()]
        );
        // The second announce reuses the connection id: no connect request.
        announce_with(&url, &req(), &fast()).await.unwrap();
        assert_eq!(server.await.unwrap(), vec![0, 1, 1]);
    }

    #[tokio::test]
    async fn udp_error_and_timeout() {
        let (url, _server) = udp_server(1, Some("unregistered torrent"), vec![]).await;
        assert!(matches!(
            announce_with(&url, &req(), &fast()).await,
            Err(AnnounceError::Tracker(TrackerError::Failure(f))) if f == "unregistered torrent"
        ));
        let (url, sock) = silent_udp().await;
        assert!(matches!(
            announce_with(&url, &req(), &fast()).await,
            Err(AnnounceError::Tracker(TrackerError::Timeout))
        ));
        // It gave up after its last retransmission: one connect request per try.
        let mut buf = [0u8; 64];
        let mut sent = 0;
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(50), sock.recv_from(&mut buf)).await
        {
            sent += 1;
        }
        assert_eq!(sent, fast().udp.max_tries);
    }

    #[tokio::test]
    async fn announce_all_merges_tiers_and_survives_dead_trackers() {
        let http_body = compact_body(&[([10, 0, 0, 1], 1), ([10, 0, 0, 2], 2)], 1800);
        let (http_url, _h) = http_server(vec![http_ok(&http_body)]).await;
        let (udp_url, _u) = udp_server(1, None, vec![([10, 0, 0, 2], 2), ([10, 0, 0, 3], 3)]).await;
        let (silent, _sock) = silent_udp().await;
        let dead = dead_http().await;
        let tiers = vec![
            vec![dead.clone(), http_url.clone()],
            vec![udp_url.clone()],
            vec![silent.clone()],
            vec![],
        ];
        let all = announce_all_detailed(&tiers, &req(), &fast())
            .await
            .unwrap();
        let peers: Vec<SocketAddr> = ["10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(all.merged.peers, peers);
        assert_eq!(all.merged.interval, Some(600));
        let answered: Vec<&str> = all.answered.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(answered, vec![http_url.as_str(), udp_url.as_str()]);
        let failed: Vec<&str> = all.failed.0.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(failed, vec![dead.as_str(), silent.as_str()]);
    }

    #[tokio::test]
    async fn announce_all_fails_only_when_nobody_answers() {
        let (silent, _sock) = silent_udp().await;
        let dead = dead_http().await;
        let tiers = vec![vec![dead.clone()], vec![silent.clone()]];
        match announce_all_detailed(&tiers, &req(), &fast()).await {
            Err(NoTrackerAnswered(failures)) => {
                let msg = failures.to_string();
                assert!(msg.contains(&dead) && msg.contains(&silent), "{msg}");
                assert!(msg.contains("timed out"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        let none = announce_all(&[], &req()).await.unwrap_err();
        assert_eq!(none.0.to_string(), "no trackers");
    }
}
