//! Scripted peers (`tests/support/scripted_peer.py`): honest or hostile in a
//! named way, logging every event on stdout so that a test can tell what
//! bitrush did to them. [`BadPeer`] is the same script in one of the three
//! modes the download tests mix into a swarm. [`HandshakeRecorder`]
//! (`tests/support/handshake_recorder.py`) prints the handshakes it is sent.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::Path;
use std::time::Duration;

use super::procs::Proc;
use super::tools::support_script;
use super::torrents::hex_to_bytes;

/// A scripted peer (tests/support/scripted_peer.py) for a single-file torrent
/// whose data lies in `save_dir`: honest, or hostile in one of the ways its
/// `--mode` names. It does not announce: use [`Tracker::announce_fake_peer`].
/// Killed on drop.
pub struct ScriptedPeer {
    port: u16,
    proc: Proc,
}

impl ScriptedPeer {
    pub fn start(torrent: &Path, save_dir: &Path, mode: &str) -> ScriptedPeer {
        let mut cmd = support_script("scripted_peer.py");
        cmd.arg("--mode").arg(mode).arg(torrent).arg(save_dir);
        let proc = Proc::spawn(&format!("scripted_peer {mode}"), cmd);
        let port = proc.ready_port("scripted_peer did not get ready");
        ScriptedPeer { port, proc }
    }

    /// A scripted peer that does not listen but dials `target` `cycles` times
    /// in a row, behaving as `mode` on each connection (see the script).
    pub fn dial(
        torrent: &Path,
        save_dir: &Path,
        mode: &str,
        target: SocketAddr,
        cycles: usize,
    ) -> ScriptedPeer {
        let mut cmd = support_script("scripted_peer.py");
        cmd.arg("--mode")
            .arg(mode)
            .arg("--connect")
            .arg(target.to_string())
            .arg("--cycles")
            .arg(cycles.to_string())
            .arg(torrent)
            .arg(save_dir);
        let proc = Proc::spawn(&format!("scripted_peer {mode} dialling {target}"), cmd);
        ScriptedPeer { port: 0, proc }
    }

    /// How many stdout lines so far equal `word` or start with `word `.
    pub fn count(&self, word: &str) -> usize {
        let with_space = format!("{word} ");
        self.proc
            .stdout_lines()
            .iter()
            .filter(|l| *l == word || l.starts_with(&with_space))
            .count()
    }

    /// Waits (up to `timeout`, only against a hang) for a stdout line equal to
    /// `word` or starting with `word `.
    pub fn wait_for(&self, word: &str, timeout: Duration) -> Result<String, String> {
        let with_space = format!("{word} ");
        self.proc
            .wait_for_stdout_line(|l| l == word || l.starts_with(&with_space), timeout)
    }

    /// The pieces it served at least one correct block of.
    pub fn served_pieces(&self) -> BTreeSet<u32> {
        self.proc
            .stdout_lines()
            .iter()
            .filter_map(|l| l.strip_prefix("SERVED "))
            .filter_map(|rest| rest.split(' ').next()?.parse().ok())
            .collect()
    }

    /// How many connections it has accepted so far.
    pub fn connections(&self) -> usize {
        self.count("CONN")
    }

    /// How many wrong blocks it has sent so far (the sum of its `BOGUS <n>`
    /// lines).
    pub fn bogus_blocks(&self) -> usize {
        self.proc
            .stdout_lines()
            .iter()
            .filter_map(|l| l.strip_prefix("BOGUS "))
            .filter_map(|n| n.parse::<usize>().ok())
            .sum()
    }

    /// Payload bytes it served in correct blocks.
    pub fn served_bytes(&self) -> u64 {
        self.proc
            .stdout_lines()
            .iter()
            .filter_map(|l| l.strip_prefix("SERVED "))
            .filter_map(|rest| rest.split(' ').nth(2)?.parse::<u64>().ok())
            .sum()
    }
}

listener_accessors!(ScriptedPeer);

/// How a [`BadPeer`] misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPeerMode {
    /// Correct protocol, but every block it sends has bytes flipped.
    Corrupt,
    /// Answers the handshake with random bytes.
    Garbage,
    /// Answers with a handshake for another info hash.
    WrongInfoHash,
}

/// A misbehaving [`ScriptedPeer`] (listening, in the script's mode of the
/// same name) for a single-file torrent whose data lies in `save_dir`. It
/// does not announce: use [`Tracker::announce_fake_peer`] with its port.
/// Killed on drop.
pub struct BadPeer {
    peer: ScriptedPeer,
}

impl BadPeer {
    pub fn start(torrent: &Path, save_dir: &Path, mode: BadPeerMode) -> BadPeer {
        let mode = match mode {
            BadPeerMode::Corrupt => "corrupt",
            BadPeerMode::Garbage => "garbage",
            BadPeerMode::WrongInfoHash => "wrong-infohash",
        };
        BadPeer {
            peer: ScriptedPeer::start(torrent, save_dir, mode),
        }
    }

    /// How many corrupt blocks it has sent so far.
    pub fn served_blocks(&self) -> usize {
        self.peer.bogus_blocks()
    }
}

/// A bad peer is a scripted peer: its port, address, logs and counts.
impl Deref for BadPeer {
    type Target = ScriptedPeer;

    fn deref(&self) -> &ScriptedPeer {
        &self.peer
    }
}

/// A peer that prints every handshake it is sent (tests/support/handshake_recorder.py) and
/// answers as a peer of `info_hash` offering ut_metadata. Killed on drop.
pub struct HandshakeRecorder {
    port: u16,
    proc: Proc,
}

impl HandshakeRecorder {
    pub fn start(info_hash: &str) -> HandshakeRecorder {
        let mut cmd = support_script("handshake_recorder.py");
        cmd.arg(info_hash);
        let proc = Proc::spawn("handshake_recorder", cmd);
        let port = proc.ready_port("handshake_recorder did not get ready");
        HandshakeRecorder { port, proc }
    }

    /// The handshakes received so far, in order.
    pub fn handshakes(&self) -> Vec<Vec<u8>> {
        self.proc
            .stdout_lines()
            .iter()
            .filter_map(|l| l.strip_prefix("HANDSHAKE "))
            .map(hex_to_bytes)
            .collect()
    }
}

listener_accessors!(HandshakeRecorder);
