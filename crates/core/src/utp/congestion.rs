//! Round-trip estimation and LEDBAT congestion control (BEP 29, RFC 6817), on times passed in.
//!
//! Invariants: the congestion window stays within `[mss, max_cwnd]` whatever the delay samples
//! say; the base delay is the wrapping minimum of the one-way delay samples of the last
//! [`BASE_HISTORY_MINUTES`] minutes (plus the running one), so it follows a changed route or a
//! drifting clock within minutes; the retransmission timeout is at least `min_rto` and at most
//! [`MAX_RTO`].

use std::time::{Duration, Instant};

use super::packet::ts_less;

/// Whole minutes of base-delay history kept besides the current one.
pub const BASE_HISTORY_MINUTES: usize = 2;
/// Longest retransmission timeout, whatever the backoff.
pub const MAX_RTO: Duration = Duration::from_secs(60);
/// Timeout before the first round-trip sample (BEP 29: 1 s).
const INITIAL_RTO: Duration = Duration::from_secs(1);
/// Largest linear window growth per round trip, in bytes (BEP 29's MAX_CWND_INCREASE).
const MAX_GAIN_PER_RTT: i128 = 3000;
/// Fixed-point shift of the window so that small gains accumulate.
const FRAC: u32 = 16;
/// Delay samples kept for the "current delay" filter (the minimum of the last few samples keeps
/// one delayed ack from shrinking the window).
const CURRENT_DELAY_SAMPLES: usize = 3;

/// Smoothed round-trip time and its variation (BEP 29's formulas).
#[derive(Clone, Debug)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    min_rto: Duration,
}

impl RttEstimator {
    /// No samples yet; the timeout will never be below `min_rto`.
    pub fn new(min_rto: Duration) -> RttEstimator {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            min_rto,
        }
    }

    /// Adds one sample (from a packet sent only once, so the ack is unambiguous).
    pub fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                // rttvar += (|srtt - rtt| - rttvar) / 4; srtt += (rtt - srtt) / 8
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// The smoothed round trip, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The retransmission timeout before backoff: `srtt + 4 rttvar`, within
    /// `[min_rto, MAX_RTO]`.
    pub fn rto(&self) -> Duration {
        match self.srtt {
            None => INITIAL_RTO.max(self.min_rto),
            Some(srtt) => (srtt + self.rttvar * 4).clamp(self.min_rto, MAX_RTO),
        }
    }
}

/// The minimum one-way delay sample per minute: the base against which queueing is measured.
#[derive(Clone, Debug)]
pub struct BaseDelay {
    /// Minimum of each finished minute, most recent first (`None` before it existed).
    history: [Option<u32>; BASE_HISTORY_MINUTES],
    current: Option<u32>,
    minute_started: Option<Instant>,
}

impl BaseDelay {
    /// No samples yet.
    pub fn new() -> BaseDelay {
        BaseDelay {
            history: [None; BASE_HISTORY_MINUTES],
            current: None,
            minute_started: None,
        }
    }

    /// Adds a raw sample (a peer's `timestamp_difference`: delay plus clock offset) and returns
    /// the queueing delay it shows, in microseconds.
    pub fn add(&mut self, now: Instant, sample: u32) -> u32 {
        let started = *self.minute_started.get_or_insert(now);
        let minutes = now.saturating_duration_since(started).as_secs() / 60;
        if minutes > 0 {
            // Each elapsed minute shifts the history; minutes without samples leave gaps.
            for _ in 0..minutes.min(BASE_HISTORY_MINUTES as u64 + 1) {
                self.history.rotate_right(1);
                if let Some(slot) = self.history.first_mut() {
                    *slot = self.current.take();
                }
            }
            self.minute_started = Some(now);
        }
        self.current = Some(match self.current {
            Some(m) if !ts_less(sample, m) => m,
            _ => sample,
        });
        sample.wrapping_sub(self.base().unwrap_or(sample))
    }

    /// The wrapping minimum over the history and the current minute.
    pub fn base(&self) -> Option<u32> {
        self.history
            .iter()
            .flatten()
            .chain(self.current.iter())
            .copied()
            .reduce(|a, b| if ts_less(b, a) { b } else { a })
    }
}

impl Default for BaseDelay {
    fn default() -> BaseDelay {
        BaseDelay::new()
    }
}

/// LEDBAT: grow the window while the queueing delay is under the target, shrink it in
/// proportion when above, halve it on loss, and reset it to one packet on a timeout.
#[derive(Clone, Debug)]
pub struct Ledbat {
    /// Congestion window in bytes, shifted left by `FRAC`.
    cwnd: u64,
    mss: u64,
    max_cwnd: u64,
    target_us: u32,
    slow_start: bool,
    ssthresh: Option<u64>,
    recent: [u32; CURRENT_DELAY_SAMPLES],
    recent_len: usize,
    recent_next: usize,
    base: BaseDelay,
    last_queuing_delay: Option<u32>,
}

impl Ledbat {
    /// A window of `initial` bytes in slow start, kept within `[mss, max_cwnd]`.
    pub fn new(mss: usize, initial: usize, max_cwnd: usize, target: Duration) -> Ledbat {
        let mss = mss.max(1) as u64;
        let max_cwnd = (max_cwnd as u64).max(mss);
        Ledbat {
            cwnd: (initial as u64).clamp(mss, max_cwnd) << FRAC,
            mss,
            max_cwnd,
            target_us: u32::try_from(target.as_micros()).unwrap_or(u32::MAX).max(1),
            slow_start: true,
            ssthresh: None,
            recent: [0; CURRENT_DELAY_SAMPLES],
            recent_len: 0,
            recent_next: 0,
            base: BaseDelay::new(),
            last_queuing_delay: None,
        }
    }

    /// The window in bytes.
    pub fn window(&self) -> usize {
        usize::try_from(self.cwnd >> FRAC).unwrap_or(usize::MAX)
    }

    /// True until the first loss, timeout or over-target delay.
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// The last filtered queueing delay, if any sample came.
    pub fn queuing_delay(&self) -> Option<Duration> {
        self.last_queuing_delay
            .map(|us| Duration::from_micros(u64::from(us)))
    }

    /// Records a one-way delay sample (`timestamp_difference` of a packet from the peer).
    pub fn delay_sample(&mut self, now: Instant, sample: u32) {
        let queuing = self.base.add(now, sample);
        self.recent[self.recent_next] = queuing;
        self.recent_next = (self.recent_next + 1) % CURRENT_DELAY_SAMPLES;
        self.recent_len = (self.recent_len + 1).min(CURRENT_DELAY_SAMPLES);
    }

    /// Adjusts the window for `acked` newly acknowledged bytes out of `in_flight` bytes that
    /// were outstanding before the ack. `rtt` (this ack's smallest round trip) bounds the delay,
    /// since a one-way delay cannot exceed it. `cwnd_limited` is false when the application did
    /// not fill the window: then the window does not grow.
    pub fn on_ack(
        &mut self,
        acked: usize,
        in_flight: usize,
        rtt: Option<Duration>,
        cwnd_limited: bool,
    ) {
        if acked == 0 || in_flight == 0 || self.recent_len == 0 {
            return;
        }
        let mut delay = self
            .recent
            .get(..self.recent_len)
            .and_then(|r| r.iter().copied().min())
            .unwrap_or(0);
        if let Some(rtt) = rtt {
            delay = delay.min(u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX));
        }
        self.last_queuing_delay = Some(delay);
        let target = i128::from(self.target_us);
        let off_target = target - i128::from(delay);
        if off_target <= 0 && self.slow_start {
            self.leave_slow_start(self.cwnd >> (FRAC + 1));
        }
        let acked = acked as i128;
        // gain = MAX_GAIN · (off_target / target) · (acked / in_flight), in fixed point
        let linear = (MAX_GAIN_PER_RTT << FRAC) * off_target * acked / (target * in_flight as i128);
        let gain = if !cwnd_limited && linear > 0 {
            0
        } else if self.slow_start {
            let exponential = acked << FRAC;
            let grown = (self.cwnd as i128 + exponential) >> FRAC;
            if self.ssthresh.is_some_and(|s| grown > i128::from(s)) {
                self.slow_start = false;
                linear
            } else {
                exponential.max(linear)
            }
        } else {
            linear
        };
        self.set_window(self.cwnd as i128 + gain);
    }

    /// A packet was lost (at most once per window, the caller decides): halve the window.
    pub fn on_loss(&mut self) {
        self.set_window(self.cwnd as i128 / 2);
        self.leave_slow_start(self.cwnd >> FRAC);
    }

    /// The retransmission timer fired: back to one packet, slow start up to half the old window.
    pub fn on_timeout(&mut self) {
        let half = self.cwnd >> (FRAC + 1);
        self.ssthresh = Some(half.max(self.mss));
        self.slow_start = true;
        self.set_window(0);
    }

    fn leave_slow_start(&mut self, ssthresh: u64) {
        self.slow_start = false;
        self.ssthresh = Some(ssthresh.max(self.mss));
    }

    fn set_window(&mut self, fixed: i128) {
        let lo = i128::from(self.mss) << FRAC;
        let hi = i128::from(self.max_cwnd) << FRAC;
        self.cwnd = u64::try_from(fixed.clamp(lo, hi)).unwrap_or(self.mss << FRAC);
    }
}
