//! A rate limit shared by every copy session: a token bucket of bytes. A session that sends a
//! buffer takes its size; when the bucket runs into debt it sleeps until the rate has paid it
//! back, so the sessions together stay at the rate (bursts of at most one second's worth).

use std::time::Duration;

use tokio::{sync::Mutex, time::Instant};

/// Bytes per second, shared.
#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    /// A limit of `bytes_per_second` (at least 1).
    pub fn new(bytes_per_second: u64) -> Self {
        let rate = bytes_per_second.max(1) as f64;
        Self {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Accounts for `bytes` just moved; waits while the copy is ahead of the rate.
    pub async fn take(&self, bytes: u64) {
        let wait = {
            let mut s = self.state.lock().await;
            let now = Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
            s.0 = (s.0 + refill).min(self.rate) - bytes as f64;
            s.1 = now;
            if s.0 < 0.0 {
                Duration::from_secs_f64(-s.0 / self.rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn sessions_together_keep_to_the_rate() {
        let t = Arc::new(Throttle::new(1_000_000));
        let start = Instant::now();
        let mut sessions = Vec::new();
        for _ in 0..4 {
            let t = t.clone();
            sessions.push(tokio::spawn(async move {
                for _ in 0..10 {
                    t.take(256 * 1024).await;
                }
            }));
        }
        for s in sessions {
            s.await.expect("session");
        }
        // 10,485,760 bytes at 1 MB/s, less the first second's allowance.
        let took = start.elapsed().as_secs_f64();
        assert!((9.4..=9.6).contains(&took), "{took} s");
    }
}
