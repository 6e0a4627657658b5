//! KRPC, the DHT's message format (BEP 5, with BEP 32's `nodes6`/`want` and BEP 43's `ro`):
//! one bencoded dictionary per UDP datagram, a query (`y` = `q`), a response (`r`) or an
//! error (`e`), matched by the transaction id `t` the querier chose.
//!
//! Invariants: decoding never panics and refuses, rather than truncates, anything out of
//! bounds: a datagram over [`MAX_DATAGRAM_LEN`], ids and info hashes that are not exactly 20
//! bytes, compact node strings that are not whole entries, peers that are neither 6 nor 18
//! bytes, more than [`MAX_NODES`] nodes per family or [`MAX_VALUES`] peers, transaction ids
//! over [`MAX_TRANSACTION_LEN`] and tokens over [`MAX_TOKEN_LEN`] bytes. Unknown keys are
//! ignored; `v` is kept up to [`MAX_VERSION_LEN`] bytes and an error's text up to
//! [`MAX_ERROR_TEXT`]. Encoding is canonical bencode, so `decode(encode(m)) == m`.

use core::net::SocketAddr;
use std::collections::BTreeMap;

use super::compact;
use super::id::NodeId;
use crate::bencode::{self, BencodeError, Value};
use crate::types::InfoHash;

/// Largest datagram decoded (a full `get_peers` answer from libtorrent is under 1.5 KiB).
pub const MAX_DATAGRAM_LEN: usize = 8 * 1024;
/// Longest transaction id accepted (ours are 2 bytes; others use 2 to 4).
pub const MAX_TRANSACTION_LEN: usize = 32;
/// Most nodes of one family in a response (BEP 5 sends k = 8).
pub const MAX_NODES: usize = 64;
/// Most peers in a response's `values` (libtorrent sends at most 100).
pub const MAX_VALUES: usize = 256;
/// Longest announce token accepted (libtorrent's are 4 bytes, ours 8).
pub const MAX_TOKEN_LEN: usize = 64;
/// Longest client version `v` kept (longer ones are cut).
pub const MAX_VERSION_LEN: usize = 16;
/// Longest error text kept (longer ones are cut).
pub const MAX_ERROR_TEXT: usize = 256;
/// Longest unknown method name kept (longer ones are cut).
pub const MAX_METHOD_LEN: usize = 32;

/// KRPC error code: generic error.
pub const ERROR_GENERIC: i64 = 201;
/// KRPC error code: server error.
pub const ERROR_SERVER: i64 = 202;
/// KRPC error code: protocol error (malformed packet, invalid arguments, bad token).
pub const ERROR_PROTOCOL: i64 = 203;
/// KRPC error code: method unknown.
pub const ERROR_METHOD_UNKNOWN: i64 = 204;

/// One KRPC message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// `t`: chosen by the querier, echoed in the answer.
    pub transaction: Vec<u8>,
    /// `v`: the sender's client and version, if it said.
    pub version: Option<Vec<u8>>,
    /// `ro` = 1 (BEP 43): the sender does not answer queries, so it must not be routed to.
    pub read_only: bool,
    /// `ip` (BEP 42): in answers, the address the answering node saw us at.
    pub ip: Option<SocketAddr>,
    /// What it carries.
    pub body: Body,
}

/// A query, a response or an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// `y` = `q`.
    Query(Query),
    /// `y` = `r`.
    Response(Response),
    /// `y` = `e`.
    Error(ErrorBody),
}

/// A query's arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The querier's node id.
    pub id: NodeId,
    /// The method and its own arguments.
    pub method: Method,
    /// `want` (BEP 32): the node families the querier wants back; `None` when absent (then
    /// the family it queried over).
    pub want: Option<Want>,
}

/// The families a `want` list names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Want {
    /// `n4`.
    pub v4: bool,
    /// `n6`.
    pub v6: bool,
}

/// A query method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    /// `ping`.
    Ping,
    /// `find_node`: the closest nodes to `target`.
    FindNode {
        /// The id looked for.
        target: NodeId,
    },
    /// `get_peers`: peers of `info_hash`, or the closest nodes to it, and a token.
    GetPeers {
        /// The torrent.
        info_hash: InfoHash,
    },
    /// `announce_peer`: the querier is a peer of `info_hash`.
    AnnouncePeer {
        /// The torrent.
        info_hash: InfoHash,
        /// `port`; 0 when absent with `implied_port`.
        port: u16,
        /// `implied_port` = 1: use the UDP source port instead of `port`.
        implied_port: bool,
        /// The token from our earlier `get_peers` answer.
        token: Vec<u8>,
    },
    /// Any other method (answered with error 204); the name cut to [`MAX_METHOD_LEN`].
    Unknown(Vec<u8>),
}

/// A response's values (the querier knows which query it answers from the transaction id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The responder's node id.
    pub id: NodeId,
    /// `nodes`: IPv4 nodes, if present.
    pub nodes: Option<Vec<(NodeId, SocketAddr)>>,
    /// `nodes6`: IPv6 nodes, if present.
    pub nodes6: Option<Vec<(NodeId, SocketAddr)>>,
    /// `values`: peers of the info hash (6- or 18-byte entries); empty when absent.
    pub values: Vec<SocketAddr>,
    /// `token`: needed to announce to the responder.
    pub token: Option<Vec<u8>>,
}

/// An error's `e` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorBody {
    /// One of the `ERROR_*` codes, or another.
    pub code: i64,
    /// The text, lossily decoded and cut to [`MAX_ERROR_TEXT`] bytes.
    pub message: String,
}

/// Why a datagram is not a KRPC message we accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KrpcError {
    /// Bigger than [`MAX_DATAGRAM_LEN`].
    #[error("datagram of {0} bytes is over the KRPC limit")]
    TooLong(usize),
    /// Not one bencoded value.
    #[error("datagram is not valid bencode")]
    Bencode(#[source] BencodeError),
    /// Bencode, but not a well-formed message.
    #[error("malformed KRPC message: {what}")]
    Malformed {
        /// What is wrong.
        what: &'static str,
        /// The transaction id when the message was recognisably a query, so that it can be
        /// answered with error 203.
        query_transaction: Option<Vec<u8>>,
    },
}

type Dict = BTreeMap<Vec<u8>, Value>;

fn key(k: &str) -> Vec<u8> {
    k.as_bytes().to_vec()
}

fn get<'a>(d: &'a Dict, k: &str) -> Option<&'a Value> {
    d.get(k.as_bytes())
}

/// Decodes messages, remembering the query's transaction id for error reports.
struct Decoder {
    query_transaction: Option<Vec<u8>>,
}

impl Decoder {
    fn fail<T>(&self, what: &'static str) -> Result<T, KrpcError> {
        Err(KrpcError::Malformed {
            what,
            query_transaction: self.query_transaction.clone(),
        })
    }

    fn id(&self, d: &Dict, k: &str, what: &'static str) -> Result<NodeId, KrpcError> {
        match get(d, k)
            .and_then(Value::as_bytes)
            .and_then(NodeId::from_slice)
        {
            Some(id) => Ok(id),
            None => self.fail(what),
        }
    }

    fn query(&self, method: &[u8], args: &Dict) -> Result<Query, KrpcError> {
        let id = self.id(args, "id", "query `id` is not 20 bytes")?;
        let method = match method {
            b"ping" => Method::Ping,
            b"find_node" => Method::FindNode {
                target: self.id(args, "target", "`target` is not 20 bytes")?,
            },
            b"get_peers" => Method::GetPeers {
                info_hash: InfoHash(self.id(args, "info_hash", "`info_hash` is not 20 bytes")?.0),
            },
            b"announce_peer" => self.announce(args)?,
            other => Method::Unknown(other[..other.len().min(MAX_METHOD_LEN)].to_vec()),
        };
        let want = match get(args, "want") {
            None => None,
            Some(Value::List(items)) => {
                let mut want = Want::default();
                for item in items {
                    match item.as_bytes() {
                        Some(b"n4") => want.v4 = true,
                        Some(b"n6") => want.v6 = true,
                        _ => {}
                    }
                }
                Some(want)
            }
            Some(_) => return self.fail("`want` is not a list"),
        };
        Ok(Query { id, method, want })
    }

    fn announce(&self, args: &Dict) -> Result<Method, KrpcError> {
        let info_hash = InfoHash(self.id(args, "info_hash", "`info_hash` is not 20 bytes")?.0);
        let implied_port = match get(args, "implied_port") {
            None => false,
            Some(Value::Int(n)) => *n != 0,
            Some(_) => return self.fail("`implied_port` is not an integer"),
        };
        let port = match get(args, "port") {
            None if implied_port => 0,
            None => return self.fail("announce without `port`"),
            Some(Value::Int(n)) => match u16::try_from(*n) {
                Ok(p) => p,
                Err(_) => return self.fail("`port` outside 0..=65535"),
            },
            Some(_) => return self.fail("`port` is not an integer"),
        };
        let token = match get(args, "token").and_then(Value::as_bytes) {
            Some(t) if t.len() <= MAX_TOKEN_LEN => t.to_vec(),
            Some(_) => return self.fail("`token` is too long"),
            None => return self.fail("announce without `token`"),
        };
        Ok(Method::AnnouncePeer {
            info_hash,
            port,
            implied_port,
            token,
        })
    }

    fn nodes(
        &self,
        r: &Dict,
        k: &str,
        v6: bool,
    ) -> Result<Option<Vec<(NodeId, SocketAddr)>>, KrpcError> {
        let Some(value) = get(r, k) else {
            return Ok(None);
        };
        let Some(bytes) = value.as_bytes() else {
            return self.fail("`nodes` is not a string");
        };
        match compact::nodes(bytes, v6) {
            Some(n) if n.len() <= MAX_NODES => Ok(Some(n)),
            Some(_) => self.fail("too many nodes"),
            None => self.fail("`nodes` is not whole compact entries"),
        }
    }

    fn response(&self, r: &Dict) -> Result<Response, KrpcError> {
        let id = self.id(r, "id", "response `id` is not 20 bytes")?;
        let nodes = self.nodes(r, "nodes", false)?;
        let nodes6 = self.nodes(r, "nodes6", true)?;
        let values = match get(r, "values") {
            None => Vec::new(),
            Some(Value::List(items)) if items.len() <= MAX_VALUES => {
                let mut peers = Vec::with_capacity(items.len());
                for item in items {
                    match item.as_bytes().and_then(compact::peer) {
                        Some(p) => peers.push(p),
                        None => return self.fail("a value is not a compact peer"),
                    }
                }
                peers
            }
            Some(Value::List(_)) => return self.fail("too many values"),
            Some(_) => return self.fail("`values` is not a list"),
        };
        let token = match get(r, "token") {
            None => None,
            Some(Value::Bytes(t)) if t.len() <= MAX_TOKEN_LEN => Some(t.clone()),
            Some(_) => return self.fail("`token` is not a short string"),
        };
        Ok(Response {
            id,
            nodes,
            nodes6,
            values,
            token,
        })
    }

    fn error(&self, e: Option<&Value>) -> Result<ErrorBody, KrpcError> {
        let items = match e {
            Some(Value::List(items)) => items,
            _ => return self.fail("`e` is not a list"),
        };
        let Some(code) = items.first().and_then(Value::as_int) else {
            return self.fail("error without an integer code");
        };
        let text = items.get(1).and_then(Value::as_bytes).unwrap_or_default();
        let mut message =
            String::from_utf8_lossy(&text[..text.len().min(MAX_ERROR_TEXT)]).into_owned();
        // Replacement characters may have made it longer: cut again, on a character boundary,
        // so that decoding what we encode gives the same text.
        while message.len() > MAX_ERROR_TEXT {
            message.pop();
        }
        Ok(ErrorBody { code, message })
    }
}

impl Message {
    /// Decodes one datagram.
    pub fn decode(datagram: &[u8]) -> Result<Message, KrpcError> {
        if datagram.len() > MAX_DATAGRAM_LEN {
            return Err(KrpcError::TooLong(datagram.len()));
        }
        let value = bencode::decode(datagram).map_err(KrpcError::Bencode)?;
        let mut dec = Decoder {
            query_transaction: None,
        };
        let Value::Dict(d) = value else {
            return dec.fail("not a dictionary");
        };
        let transaction = match get(&d, "t").and_then(Value::as_bytes) {
            Some(t) if t.len() <= MAX_TRANSACTION_LEN => t.to_vec(),
            Some(_) => return dec.fail("transaction id is too long"),
            None => return dec.fail("no transaction id"),
        };
        let kind = get(&d, "y").and_then(Value::as_bytes);
        if kind == Some(b"q") {
            dec.query_transaction = Some(transaction.clone());
        }
        let body = match kind {
            Some(b"q") => {
                let Some(method) = get(&d, "q").and_then(Value::as_bytes) else {
                    return dec.fail("query without a method name");
                };
                let Some(args) = get(&d, "a").and_then(Value::as_dict) else {
                    return dec.fail("query without an argument dictionary");
                };
                Body::Query(dec.query(method, args)?)
            }
            Some(b"r") => match get(&d, "r").and_then(Value::as_dict) {
                Some(r) => Body::Response(dec.response(r)?),
                None => return dec.fail("response without an `r` dictionary"),
            },
            Some(b"e") => Body::Error(dec.error(get(&d, "e"))?),
            _ => return dec.fail("`y` is not q, r or e"),
        };
        let version = get(&d, "v")
            .and_then(Value::as_bytes)
            .map(|v| v[..v.len().min(MAX_VERSION_LEN)].to_vec());
        let read_only = matches!(get(&d, "ro"), Some(Value::Int(1)));
        let ip = get(&d, "ip")
            .and_then(Value::as_bytes)
            .and_then(compact::peer);
        Ok(Message {
            transaction,
            version,
            read_only,
            ip,
            body,
        })
    }

    /// The canonical bencoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut d = Dict::new();
        d.insert(key("t"), Value::Bytes(self.transaction.clone()));
        if let Some(v) = &self.version {
            d.insert(key("v"), Value::Bytes(v.clone()));
        }
        if self.read_only {
            d.insert(key("ro"), Value::Int(1));
        }
        if let Some(ip) = self.ip {
            let mut out = Vec::new();
            compact::push_addr(&mut out, ip);
            d.insert(key("ip"), Value::Bytes(out));
        }
        match &self.body {
            Body::Query(q) => {
                let (name, args) = encode_query(q);
                d.insert(key("y"), Value::Bytes(key("q")));
                d.insert(key("q"), Value::Bytes(name));
                d.insert(key("a"), Value::Dict(args));
            }
            Body::Response(r) => {
                d.insert(key("y"), Value::Bytes(key("r")));
                d.insert(key("r"), Value::Dict(encode_response(r)));
            }
            Body::Error(e) => {
                d.insert(key("y"), Value::Bytes(key("e")));
                d.insert(
                    key("e"),
                    Value::List(vec![
                        Value::Int(e.code),
                        Value::Bytes(e.message.as_bytes().to_vec()),
                    ]),
                );
            }
        }
        bencode::encode(&Value::Dict(d))
    }
}

fn encode_query(q: &Query) -> (Vec<u8>, Dict) {
    let mut a = Dict::new();
    a.insert(key("id"), Value::Bytes(q.id.0.to_vec()));
    if let Some(want) = q.want {
        let mut list = Vec::new();
        if want.v4 {
            list.push(Value::Bytes(key("n4")));
        }
        if want.v6 {
            list.push(Value::Bytes(key("n6")));
        }
        a.insert(key("want"), Value::List(list));
    }
    let name = match &q.method {
        Method::Ping => key("ping"),
        Method::FindNode { target } => {
            a.insert(key("target"), Value::Bytes(target.0.to_vec()));
            key("find_node")
        }
        Method::GetPeers { info_hash } => {
            a.insert(key("info_hash"), Value::Bytes(info_hash.0.to_vec()));
            key("get_peers")
        }
        Method::AnnouncePeer {
            info_hash,
            port,
            implied_port,
            token,
        } => {
            a.insert(key("info_hash"), Value::Bytes(info_hash.0.to_vec()));
            a.insert(key("port"), Value::Int(i64::from(*port)));
            if *implied_port {
                a.insert(key("implied_port"), Value::Int(1));
            }
            a.insert(key("token"), Value::Bytes(token.clone()));
            key("announce_peer")
        }
        Method::Unknown(name) => name.clone(),
    };
    (name, a)
}

fn encode_response(r: &Response) -> Dict {
    let mut d = Dict::new();
    d.insert(key("id"), Value::Bytes(r.id.0.to_vec()));
    for (k, nodes) in [("nodes", &r.nodes), ("nodes6", &r.nodes6)] {
        if let Some(nodes) = nodes {
            let mut out = Vec::new();
            compact::push_nodes(&mut out, nodes);
            d.insert(key(k), Value::Bytes(out));
        }
    }
    if !r.values.is_empty() {
        let values = r
            .values
            .iter()
            .map(|&p| {
                let mut out = Vec::new();
                compact::push_addr(&mut out, p);
                Value::Bytes(out)
            })
            .collect();
        d.insert(key("values"), Value::List(values));
    }
    if let Some(t) = &r.token {
        d.insert(key("token"), Value::Bytes(t.clone()));
    }
    d
}

#[cfg(test)]
#[path = "krpc_tests.rs"]
pub(crate) mod tests;
