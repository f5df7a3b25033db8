//! The one retry loop: exponential backoff with jitter, a per-attempt timeout and a total
//! budget, retrying only what [`Error::is_retryable`] accepts.

use std::future::Future;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// How a store retries and times out its requests.
///
/// Every attempt runs under `request_timeout`. A retryable failure waits a backoff that starts at
/// `initial_backoff`, doubles up to `max_backoff`, and is jittered down by up to half, then tries
/// again, until `max_attempts` attempts were made or the next wait would end past `budget` from
/// the first attempt. Then the last error is returned inside [`Error::GaveUp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    pub max_attempts: NonZeroU32,
    /// The first backoff.
    pub initial_backoff: Duration,
    /// The largest backoff.
    pub max_backoff: Duration,
    /// Total time allowed for all attempts and waits.
    pub budget: Duration,
    /// Time allowed for one attempt.
    pub request_timeout: Duration,
}

impl RetryConfig {
    /// For `archive_command`: PostgreSQL's archiver is blocked while we retry and it retries
    /// the command itself, so the budget is short.
    pub const ARCHIVE: RetryConfig = RetryConfig {
        max_attempts: NonZeroU32::new(6).expect("6 is not zero"),
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(4),
        budget: Duration::from_secs(30),
        request_timeout: Duration::from_secs(60),
    };

    /// For restores: a failure aborts recovery, so the store is given longer to come back.
    pub const RESTORE: RetryConfig = RetryConfig {
        max_attempts: NonZeroU32::new(10).expect("10 is not zero"),
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(8),
        budget: Duration::from_secs(60),
        request_timeout: Duration::from_secs(60),
    };

    /// The backoff before attempt `attempt + 1`, before jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig::RESTORE
    }
}

/// What every request to a store goes through: a slot of the concurrency limit, then [`retry`].
///
/// Cloning is cheap and clones share the limit.
#[derive(Debug, Clone)]
pub(crate) struct RequestPolicy {
    retry: RetryConfig,
    limit: Arc<Semaphore>,
}

impl RequestPolicy {
    pub(crate) fn new(retry: RetryConfig, concurrency: NonZeroUsize) -> RequestPolicy {
        RequestPolicy {
            retry,
            limit: Arc::new(Semaphore::new(concurrency.get())),
        }
    }

    pub(crate) fn retry_config(&self) -> &RetryConfig {
        &self.retry
    }

    /// Waits for a slot (or cancellation), then runs `attempt` under [`retry`], holding the
    /// slot throughout.
    pub(crate) fn run<T, F, Fut>(
        &self,
        op: &'static str,
        key: &str,
        cancel: &CancellationToken,
        attempt: F,
    ) -> impl Future<Output = Result<T>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        // Not an async fn: no extra layer of future around run_with's.
        self.run_with(op, key, cancel, true, attempt)
    }

    /// Like [`run`](Self::run), except that an attempt once sent is never abandoned when
    /// `cancel` fires: it runs to its end (or its request timeout), and its outcome is
    /// returned. Cancellation still ends the wait for a slot and stops further attempts.
    ///
    /// For requests whose effect the server may apply even though the client walked away,
    /// and which only the response names (CreateMultipartUpload): the caller learns of it
    /// and can undo it, checking `cancel` afterwards.
    pub(crate) fn run_to_end<T, F, Fut>(
        &self,
        op: &'static str,
        key: &str,
        cancel: &CancellationToken,
        attempt: F,
    ) -> impl Future<Output = Result<T>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        // Not an async fn: no extra layer of future around run_with's.
        self.run_with(op, key, cancel, false, attempt)
    }

    /// Waits for a slot (or cancellation), then retries `attempt`, holding the slot;
    /// `interrupt`: whether cancellation abandons an attempt in flight.
    async fn run_with<T, F, Fut>(
        &self,
        op: &'static str,
        key: &str,
        cancel: &CancellationToken,
        interrupt: bool,
        attempt: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let _permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Error::Cancelled),
            permit = self.limit.acquire() => permit.map_err(|_| Error::Cancelled)?,
        };
        retry_with(&self.retry, op, key, cancel, interrupt, attempt).await
    }
}

/// Runs `attempt` until it succeeds, fails permanently, or the policy gives up.
pub(crate) async fn retry<T, F, Fut>(
    config: &RetryConfig,
    op: &'static str,
    key: &str,
    cancel: &CancellationToken,
    attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    retry_with(config, op, key, cancel, true, attempt).await
}

/// [`retry`], where `interrupt` says whether cancellation drops an attempt in flight (`true`)
/// or only prevents the next one (`false`).
async fn retry_with<T, F, Fut>(
    config: &RetryConfig,
    op: &'static str,
    key: &str,
    cancel: &CancellationToken,
    interrupt: bool,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts = attempts.saturating_add(1);
        let timed = async {
            match tokio::time::timeout(config.request_timeout, attempt()).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout {
                    op,
                    key: key.to_owned(),
                    after: config.request_timeout,
                }),
            }
        };
        let outcome = if interrupt {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Error::Cancelled),
                r = timed => r,
            }
        } else {
            timed.await
        };
        let err = match outcome {
            Ok(value) => return Ok(value),
            // The attempt ran on past a cancellation only to learn its outcome.
            Err(_) if cancel.is_cancelled() => return Err(Error::Cancelled),
            Err(err) if err.is_retryable() => err,
            Err(err) => return Err(err),
        };
        let base = config.backoff(attempts);
        let wait = base.saturating_sub(base.mul_f64(fastrand::f64() / 2.0));
        let elapsed = start.elapsed();
        if attempts >= config.max_attempts.get() || elapsed + wait > config.budget {
            return Err(Error::GaveUp {
                op,
                key: key.to_owned(),
                attempts,
                elapsed,
                last: Box::new(err),
            });
        }
        tracing::warn!("{err}; retrying in {wait:.1?} (attempt {attempts} failed)");
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Error::Cancelled),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn quick() -> RetryConfig {
        RetryConfig {
            max_attempts: NonZeroU32::new(4).unwrap(),
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            budget: Duration::from_secs(5),
            request_timeout: Duration::from_millis(200),
        }
    }

    fn transient() -> Error {
        Error::Transient {
            op: "get",
            key: "k".into(),
            message: "reset".into(),
        }
    }

    /// `run_to_end` sees an attempt in flight through when cancelled, returns its outcome,
    /// and makes no further attempt.
    #[tokio::test]
    async fn run_to_end_finishes_the_attempt_in_flight() {
        let policy = RequestPolicy::new(quick(), NonZeroUsize::new(1).unwrap());
        let cancel = CancellationToken::new();
        let calls = AtomicU32::new(0);
        let slow = || {
            calls.fetch_add(1, Ordering::SeqCst);
            let cancel = cancel.clone();
            async move {
                cancel.cancel();
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(7)
            }
        };
        let got = policy.run_to_end("create", "k", &cancel, slow).await;
        assert_eq!(got.unwrap(), 7);
        let cancel2 = CancellationToken::new();
        let cancel = cancel2.clone();
        let calls2 = AtomicU32::new(0);
        let err = policy
            .run_to_end("create", "k", &cancel2, || {
                calls2.fetch_add(1, Ordering::SeqCst);
                let cancel = cancel.clone();
                async move {
                    cancel.cancel();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Err::<(), _>(transient())
                }
            })
            .await
            .unwrap_err();
        assert!(err.is_cancelled(), "{err:?}");
        assert_eq!(calls2.load(Ordering::SeqCst), 1);
        // Cancelled before a slot is free: nothing is sent.
        let err = policy
            .run_to_end("create", "k", &cancel2, slow)
            .await
            .unwrap_err();
        assert!(err.is_cancelled(), "{err:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = RetryConfig::ARCHIVE;
        assert_eq!(c.backoff(1), Duration::from_millis(100));
        assert_eq!(c.backoff(2), Duration::from_millis(200));
        assert_eq!(c.backoff(3), Duration::from_millis(400));
        assert_eq!(c.backoff(10), Duration::from_secs(4));
        assert_eq!(c.backoff(100), Duration::from_secs(4));
    }

    #[tokio::test]
    async fn retries_transient_then_succeeds() {
        let calls = AtomicU32::new(0);
        let got = retry(&quick(), "get", "k", &CancellationToken::new(), || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(transient())
            } else {
                Ok(7)
            }
        })
        .await
        .unwrap();
        assert_eq!(got, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts() {
        let calls = AtomicU32::new(0);
        let err = retry(&quick(), "get", "k", &CancellationToken::new(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(transient())
        })
        .await
        .unwrap_err();
        assert!(matches!(err, Error::GaveUp { attempts: 4, .. }), "{err:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let err = retry(&quick(), "get", "k", &CancellationToken::new(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Error::NotFound { key: "k".into() })
        })
        .await
        .unwrap_err();
        assert!(err.is_not_found());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn slow_attempts_time_out_and_count() {
        let err = retry(&quick(), "get", "k", &CancellationToken::new(), || async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(())
        })
        .await
        .unwrap_err();
        match err {
            Error::GaveUp { last, attempts, .. } => {
                assert_eq!(attempts, 4);
                assert!(matches!(*last, Error::Timeout { .. }));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn cancellation_stops_at_once() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let err = retry(&quick(), "get", "k", &cancel, || async { Ok(()) })
            .await
            .unwrap_err();
        assert!(err.is_cancelled());
    }
}
