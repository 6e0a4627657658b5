//! Rate limits shared by connections: handles on the core's [`TokenBucket`]s, one per
//! direction. Cloned handles share their bucket, so one [`RateLimits`] in a session's
//! [`super::connection::Transports`] limits every torrent of the session together; a daemon
//! also gives each torrent its own ([`super::torrent::Hosted::limits`]), and a connection then
//! obeys both ([`ConnectionLimits`]): it waits until neither bucket is in debt and takes its
//! bytes from each.
//!
//! Only payload counts (block data received and sent), as other clients count it. Connections
//! take their bytes after moving them and, while a bucket is in debt, stop reading (TCP and
//! uTP flow control then slow the sender) or stop serving requests.
//!
//! A limiter's rate may change while connections use it ([`Limiter::set_rate`], for the
//! daemon's API): the bucket is replaced by a full one at the new rate (any debt is forgiven),
//! or removed for "unlimited".

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::rate::TokenBucket;

/// One direction's shared bucket (none inside: unlimited for now).
#[derive(Clone, Debug)]
pub struct Limiter(Arc<Mutex<Option<TokenBucket>>>);

impl Limiter {
    /// A limit of `rate` bytes per second, with one second's worth as the burst.
    pub fn new(rate: u64) -> Limiter {
        Limiter(Arc::new(Mutex::new(Some(bucket(rate)))))
    }

    /// No limit until [`Limiter::set_rate`] sets one.
    pub fn unlimited() -> Limiter {
        Limiter(Arc::new(Mutex::new(None)))
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, Option<TokenBucket>> {
        // The bucket is consistent at every unlock: a panic elsewhere leaves it usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the limit in bytes per second (`None`: unlimited), for every handle.
    pub fn set_rate(&self, rate: Option<u64>) {
        let mut b = self.bucket();
        if b.as_ref().map(TokenBucket::rate) != rate {
            *b = rate.map(bucket);
        }
    }

    /// The limit in bytes per second (`None`: unlimited).
    pub fn rate(&self) -> Option<u64> {
        self.bucket().as_ref().map(TokenBucket::rate)
    }

    /// Takes `bytes` just moved.
    pub fn consume(&self, now: Instant, bytes: u64) {
        if bytes > 0 {
            if let Some(b) = self.bucket().as_mut() {
                b.consume(now, bytes);
            }
        }
    }

    /// `None` if bytes may move now, else when they may again.
    pub fn wait_until(&self, now: Instant) -> Option<Instant> {
        let mut guard = self.bucket();
        let bucket = guard.as_mut()?;
        if bucket.is_open(now) {
            None
        } else {
            bucket.poll_timeout()
        }
    }
}

/// A bucket of `rate` bytes per second with one second's burst (the rate is at least 1).
fn bucket(rate: u64) -> TokenBucket {
    TokenBucket::new(rate, rate)
}

/// The download and upload limits (`None`: unlimited, and no bucket to consult).
#[derive(Clone, Debug, Default)]
pub struct RateLimits {
    pub download: Option<Limiter>,
    pub upload: Option<Limiter>,
}

impl RateLimits {
    /// Fixed limits in bytes per second (`None`: unlimited).
    pub fn new(download: Option<u64>, upload: Option<u64>) -> RateLimits {
        RateLimits {
            download: download.map(Limiter::new),
            upload: upload.map(Limiter::new),
        }
    }

    /// Limits that can be changed later with [`RateLimits::set`] (`None`: unlimited).
    pub fn adjustable(download: Option<u64>, upload: Option<u64>) -> RateLimits {
        let limits = RateLimits {
            download: Some(Limiter::unlimited()),
            upload: Some(Limiter::unlimited()),
        };
        limits.set(download, upload);
        limits
    }

    /// Changes both limits of [`RateLimits::adjustable`] ones (fixed-unlimited directions stay
    /// unlimited).
    pub fn set(&self, download: Option<u64>, upload: Option<u64>) {
        if let Some(l) = &self.download {
            l.set_rate(download);
        }
        if let Some(l) = &self.upload {
            l.set_rate(upload);
        }
    }

    /// The download and upload limits in bytes per second (`None`: unlimited).
    pub fn rates(&self) -> (Option<u64>, Option<u64>) {
        (
            self.download.as_ref().and_then(Limiter::rate),
            self.upload.as_ref().and_then(Limiter::rate),
        )
    }
}

/// The limits one connection obeys: its session's and its torrent's.
#[derive(Clone, Debug, Default)]
pub struct ConnectionLimits {
    pub session: RateLimits,
    pub torrent: RateLimits,
}

impl ConnectionLimits {
    /// Takes `bytes` received from both download buckets.
    pub fn consume_download(&self, now: Instant, bytes: u64) {
        for l in [&self.session.download, &self.torrent.download]
            .into_iter()
            .flatten()
        {
            l.consume(now, bytes);
        }
    }

    /// Takes `bytes` sent from both upload buckets.
    pub fn consume_upload(&self, now: Instant, bytes: u64) {
        for l in [&self.session.upload, &self.torrent.upload]
            .into_iter()
            .flatten()
        {
            l.consume(now, bytes);
        }
    }

    /// `None` if both download buckets let bytes in now, else the later time one opens.
    pub fn download_wait(&self, now: Instant) -> Option<Instant> {
        later(
            wait_until(self.session.download.as_ref(), now),
            wait_until(self.torrent.download.as_ref(), now),
        )
    }

    /// `None` if both upload buckets let bytes out now, else the later time one opens.
    pub fn upload_wait(&self, now: Instant) -> Option<Instant> {
        later(
            wait_until(self.session.upload.as_ref(), now),
            wait_until(self.torrent.upload.as_ref(), now),
        )
    }
}

/// The later of two waits (`None`: no wait).
fn later(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// When `limiter` (if any) lets bytes move again, if not now.
fn wait_until(limiter: Option<&Limiter>, now: Instant) -> Option<Instant> {
    limiter.and_then(|l| l.wait_until(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn clones_share_one_bucket() {
        let t = Instant::now();
        let limits = RateLimits::new(Some(1000), None);
        let (a, b) = (limits.clone(), limits);
        let (a, b) = (a.download.unwrap(), b.download.unwrap());
        assert_eq!(a.wait_until(t), None);
        a.consume(t, 1500);
        let ready = b.wait_until(t).expect("the other handle sees the debt");
        assert!(ready > t + Duration::from_millis(499));
        assert_eq!(wait_until(None, t), None);
    }

    /// Two torrents under one session limit: each is held by its own bucket and by the
    /// session's, whichever is further in debt.
    #[test]
    fn a_connection_waits_for_both_its_torrent_and_the_session() {
        let t = Instant::now();
        let session = RateLimits::adjustable(Some(1000), None);
        let a = ConnectionLimits {
            session: session.clone(),
            torrent: RateLimits::adjustable(Some(100), None),
        };
        let b = ConnectionLimits {
            session,
            torrent: RateLimits::adjustable(None, None),
        };
        assert_eq!(a.download_wait(t), None);
        // 300 bytes: `a`'s torrent is 200 in debt (2 s at 100/s), the session still has 700.
        a.consume_download(t, 300);
        let ready = a.download_wait(t).expect("the torrent's bucket is in debt");
        assert!(ready > t + 2 * SEC && ready <= t + 2 * SEC + Duration::from_micros(1));
        assert_eq!(b.download_wait(t), None, "the session is not in debt");
        // `b` takes 1200: the session is 500 in debt (0.5 s), and now holds `a` too, but `a`'s
        // own bucket is the later one.
        b.consume_download(t, 1200);
        let b_ready = b.download_wait(t).expect("the session's bucket is in debt");
        assert!(b_ready > t + SEC / 2 && b_ready < t + SEC);
        assert_eq!(a.download_wait(t), Some(ready));
        assert_eq!(a.download_wait(ready), None);
        // Uploads are unlimited on both sides.
        a.consume_upload(t, 1 << 30);
        assert_eq!(a.upload_wait(t), None);
    }

    #[test]
    fn changing_a_rate_reaches_every_handle_and_unlimited_removes_the_bucket() {
        let t = Instant::now();
        let limits = RateLimits::adjustable(None, None);
        let conn = ConnectionLimits {
            session: RateLimits::default(),
            torrent: limits.clone(),
        };
        conn.consume_upload(t, 10_000);
        assert_eq!(conn.upload_wait(t), None, "unlimited");
        limits.set(None, Some(1000));
        assert_eq!(limits.rates(), (None, Some(1000)));
        assert_eq!(conn.upload_wait(t), None, "a new bucket starts full");
        conn.consume_upload(t, 3000);
        assert!(conn.upload_wait(t).is_some_and(|r| r > t + SEC * 2));
        // Setting the same rate keeps the debt; a new rate forgives it.
        limits.set(None, Some(1000));
        assert!(conn.upload_wait(t).is_some());
        limits.set(None, Some(5000));
        assert_eq!(conn.upload_wait(t), None);
        limits.set(None, None);
        assert_eq!(limits.rates(), (None, None));
        conn.consume_upload(t, 1 << 40);
        assert_eq!(conn.upload_wait(t), None);
    }

    #[test]
    fn fixed_unlimited_directions_stay_unlimited() {
        let limits = RateLimits::new(Some(10), None);
        limits.set(Some(20), Some(30));
        assert_eq!(limits.rates(), (Some(20), None));
    }
}
