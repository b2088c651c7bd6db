//! Bounded retries of store calls (`payload_offload.retry`).
//!
//! object_store's own retry loop is switched off (see
//! [`crate::backend`]), so this is the only one: a call is tried at most
//! `max_attempts` times, each attempt bounded by `timeout`, with `backoff`
//! doubling between attempts, and only transient failures are tried again.
//! An unreachable store therefore fails within about
//! `max_attempts × timeout + backoff × (2^(max_attempts-1) - 1)`.

use std::future::Future;
use std::time::Duration;

use wharf_core::payload::RetryConfig;

use crate::failure::StoreError;

/// The policy of one store.
#[derive(Debug, Clone)]
pub(crate) struct Retry {
    pub(crate) max_attempts: u32,
    pub(crate) timeout: Duration,
    pub(crate) backoff: Duration,
}

impl Retry {
    /// The policy of a validated configuration (`max_attempts >= 1`).
    pub(crate) fn new(config: &RetryConfig) -> Self {
        Self {
            max_attempts: config.max_attempts.max(1),
            timeout: config.timeout,
            backoff: config.backoff,
        }
    }

    /// The wait before attempt `attempt + 1` (attempts count from 1).
    pub(crate) fn delay_after(&self, attempt: u32) -> Duration {
        self.backoff.saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1))
                .unwrap_or(u32::MAX),
        )
    }

    /// Runs `attempt` until it succeeds, fails permanently, or the attempts
    /// are used up; each attempt bounds its own time (a streamed body is
    /// bounded per chunk, not as a whole).
    pub(crate) async fn run<T, F, Fut>(&self, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut tried = 0;
        loop {
            tried += 1;
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(err) if err.transient && tried < self.max_attempts => {
                    tracing::debug!(attempt = tried, error = %err, "payload store call failed; retrying");
                    tokio::time::sleep(self.delay_after(tried)).await;
                }
                Err(err) => return Err(err.after_attempts(tried)),
            }
        }
    }

    /// [`Retry::run`] for a call that is one request: each attempt is
    /// bounded by `timeout` as a whole and its error classified.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        self.run(|| {
            let call = call();
            async move { self.bounded(what, call).await }
        })
        .await
    }

    /// One attempt of `call`, bounded by `timeout`.
    pub(crate) async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(StoreError::from_object_store(&err)),
            Err(_) => Err(StoreError::timeout(self.timeout, what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::failure::Kind;

    fn policy(max_attempts: u32) -> Retry {
        Retry {
            max_attempts,
            timeout: Duration::from_millis(50),
            backoff: Duration::from_millis(100),
        }
    }

    #[test]
    fn backoff_doubles_and_saturates() {
        let p = policy(3);
        assert_eq!(p.delay_after(1), Duration::from_millis(100));
        assert_eq!(p.delay_after(2), Duration::from_millis(200));
        assert_eq!(p.delay_after(3), Duration::from_millis(400));
        assert!(p.delay_after(200) >= Duration::from_secs(1_000_000));
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_up_to_max_attempts() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let result: Result<(), _> = policy(3)
            .run(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(StoreError::new(Kind::Unavailable, "connection refused")) }
            })
            .await;
        let err = result.expect_err("always fails");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(err.message, "connection refused (after 3 attempts)");
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_are_not_retried() {
        for kind in [
            Kind::NotFound,
            Kind::AccessDenied,
            Kind::AlreadyExists,
            Kind::Integrity,
        ] {
            let calls = AtomicU32::new(0);
            let result: Result<(), _> = policy(3)
                .run(|| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async move { Err(StoreError::new(kind, "no")) }
                })
                .await;
            assert_eq!(result.expect_err("fails").kind, kind);
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{kind:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_call_times_out_each_attempt() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let result: Result<(), _> = policy(2)
            .call("PUT s3://b/k", || {
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::pending()
            })
            .await;
        let err = result.expect_err("times out");
        assert_eq!(err.kind, Kind::Timeout);
        assert!(
            err.message.contains("PUT s3://b/k timed out after 50ms"),
            "{}",
            err.message
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(started.elapsed(), Duration::from_millis(50 + 100 + 50));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retried_call_that_recovers_succeeds() {
        let calls = AtomicU32::new(0);
        let result = policy(3)
            .run(|| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        Err(StoreError::new(Kind::Timeout, "slow"))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(result.expect("second attempt succeeds"), 1);
    }
}
