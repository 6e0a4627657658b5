//! Rate limits shared by connections: handles on the core's [`TokenBucket`]s, one per
//! direction. Cloned handles share their bucket, so one [`RateLimits`] in a session's
//! [`super::connection::Transports`] limits every torrent of the session together; a torrent
//! (or a daemon's per-torrent setting) may carry its own instead.
//!
//! Only payload counts (block data received and sent), as other clients count it. Connections
//! take their bytes after moving them and, while the bucket is in debt, stop reading (TCP and
//! uTP flow control then slow the sender) or stop serving requests.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::rate::TokenBucket;

/// One direction's shared bucket.
#[derive(Clone, Debug)]
pub struct Limiter(Arc<Mutex<TokenBucket>>);

impl Limiter {
    /// A limit of `rate` bytes per second, with one second's worth as the burst.
    pub fn new(rate: u64) -> Limiter {
        Limiter(Arc::new(Mutex::new(TokenBucket::new(rate, rate))))
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, TokenBucket> {
        // The bucket is consistent at every unlock: a panic elsewhere leaves it usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `bytes` just moved.
    pub fn consume(&self, now: Instant, bytes: u64) {
        if bytes > 0 {
            self.bucket().consume(now, bytes);
        }
    }

    /// `None` if bytes may move now, else when they may again.
    pub fn wait_until(&self, now: Instant) -> Option<Instant> {
        let mut bucket = self.bucket();
        if bucket.is_open(now) {
            None
        } else {
            bucket.poll_timeout()
        }
    }
}

/// The download and upload limits (`None`: unlimited).
#[derive(Clone, Debug, Default)]
pub struct RateLimits {
    pub download: Option<Limiter>,
    pub upload: Option<Limiter>,
}

impl RateLimits {
    /// Limits in bytes per second (`None`: unlimited).
    pub fn new(download: Option<u64>, upload: Option<u64>) -> RateLimits {
        RateLimits {
            download: download.map(Limiter::new),
            upload: upload.map(Limiter::new),
        }
    }
}

/// When `limiter` (if any) lets bytes move again, if not now.
pub(crate) fn wait_until(limiter: Option<&Limiter>, now: Instant) -> Option<Instant> {
    limiter.and_then(|l| l.wait_until(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
