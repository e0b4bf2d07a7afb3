//! One retry policy for transient failures (database, storage, API server): exponential
//! back-off with full jitter, so that many clients recovering from the same outage do not
//! retry in step. Built on `backon`.

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use std::{future::Future, time::Duration};

/// How long and how often to retry.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Attempts after the first one.
    pub retries: usize,
}

impl Policy {
    /// About a minute in all (0.25 s doubling to 8 s, ~12 retries): a database restart or a
    /// storage hiccup, not a long outage (the executor retries the whole importer for those).
    pub const MINUTE: Policy = Policy {
        first_delay: Duration::from_millis(250),
        max_delay: Duration::from_secs(8),
        retries: 12,
    };
    /// A few seconds: for calls on a request's path.
    pub const BRIEF: Policy = Policy {
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        retries: 4,
    };

    /// The delays between attempts, jittered.
    pub fn backoff(self) -> impl Iterator<Item = Duration> + Send + Sync + 'static {
        ExponentialBuilder::default()
            .with_min_delay(self.first_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.retries)
            .with_jitter()
            .build()
    }

    /// The delay before retry `n` (1 for the first), without jitter: for a caller that
    /// counts failures itself and schedules each retry (the operator requeues a failing
    /// ImportJob after it). `retries` does not apply.
    pub fn delay(self, n: u32) -> Duration {
        // Past 64 doublings every delay is `max_delay`: no need to walk further.
        let steps = n.clamp(1, 64) as usize - 1;
        ExponentialBuilder::default()
            .with_min_delay(self.first_delay)
            .with_max_delay(self.max_delay)
            .without_max_times()
            .build()
            .nth(steps)
            .unwrap_or(self.max_delay)
    }

    /// An endless jittered back-off (for background loops that stop on their own terms).
    pub fn forever(first_delay: Duration, max_delay: Duration) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(first_delay)
            .with_max_delay(max_delay)
            .without_max_times()
            .with_jitter()
            .build()
    }
}

/// Runs `f` until it succeeds, fails with an error `transient` rejects, or the policy runs
/// out; logs each retry with `what`.
pub async fn retry<T, E, F, Fut>(
    what: &str,
    policy: Policy,
    transient: impl Fn(&E) -> bool,
    f: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    f.retry(
        ExponentialBuilder::default()
            .with_min_delay(policy.first_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.retries)
            .with_jitter(),
    )
    .sleep(tokio::time::sleep)
    .when(transient)
    .notify(|e: &E, delay: Duration| tracing::warn!(error = %e, ?delay, "{what} failed, retrying"))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn the_nth_delay_doubles_up_to_the_maximum() {
        let policy = Policy {
            first_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(300),
            retries: 0,
        };
        let delays: Vec<u64> = (1..=11).map(|n| policy.delay(n).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(policy.delay(0), Duration::from_secs(2));
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(300));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_only_and_gives_up() {
        let calls = AtomicU32::new(0);
        let policy = Policy {
            retries: 3,
            ..Policy::BRIEF
        };
        let r: Result<(), String> = retry(
            "x",
            policy,
            |_| true,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("down".to_string())
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        calls.store(0, Ordering::SeqCst);
        let r: Result<(), String> = retry(
            "x",
            policy,
            |e: &String| e != "fatal",
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("fatal".to_string())
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn delays_are_jittered_and_bounded() {
        let a: Vec<Duration> = Policy::MINUTE.backoff().collect();
        assert_eq!(a.len(), Policy::MINUTE.retries);
        assert!(a.iter().all(|d| *d <= Policy::MINUTE.max_delay * 2));
        let b: Vec<Duration> = Policy::MINUTE.backoff().collect();
        assert_ne!(a, b, "two back-off sequences should differ (jitter)");
    }
}
