//! The closed-loop runner: `concurrency` workers, each with one request in flight, draw
//! request numbers from one counter until the request count or the deadline is reached, and
//! record each request's latency.
//!
//! A run also stops when [`MAX_CONSECUTIVE_FAILURES`] requests in a row fail, because the
//! target is then gone and waiting out the deadline would only add errors. A request that
//! fails with [`TokenRejected`] stops the run at once and is not counted, because no later
//! request can succeed.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;

use super::report::{new_histogram, record_micros};
use super::token::TokenRejected;

/// Failed requests in a row, over all workers, after which the run stops.
pub const MAX_CONSECUTIVE_FAILURES: u64 = 200;

/// Outcome of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// Items the request carried: 1, or the updates of a batch.
    pub items: u64,
    /// Items the target did not accept, such as `STALE` location updates.
    pub rejected: u64,
}

impl Done {
    pub const ONE: Done = Done {
        items: 1,
        rejected: 0,
    };
}

/// One worker: a connection to the target and what it needs to build requests.
pub trait Worker: Send + 'static {
    /// Sends request number `index` and waits for the response.
    fn call(&mut self, index: u64) -> impl Future<Output = anyhow::Result<Done>> + Send;

    /// Counters the worker kept, such as statuses or result sizes; summed over workers.
    fn counters(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
}

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Wall-clock limit of the measured phase.
    pub duration: Duration,
    /// Requests after which the run stops, if given.
    pub requests: Option<u64>,
}

impl Limits {
    /// Limits from `--duration` and `--requests`: without `--requests` the run lasts
    /// `duration_s` (10 s when absent); with it, `duration_s` (600 s when absent) caps it.
    pub fn from_args(duration_s: Option<f64>, requests: Option<u64>) -> anyhow::Result<Self> {
        let default_s = if requests.is_some() { 600.0 } else { 10.0 };
        let seconds = duration_s.unwrap_or(default_s);
        if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
            anyhow::bail!("invalid --duration {seconds}: give seconds in 0..=86400");
        }
        if requests == Some(0) {
            anyhow::bail!("invalid --requests 0: give at least 1");
        }
        Ok(Self {
            duration: Duration::from_secs_f64(seconds),
            requests,
        })
    }
}

/// Measurements of a run.
#[derive(Debug)]
pub struct RunResult {
    pub requests: u64,
    /// Requests that returned an error.
    pub failed: u64,
    pub items: u64,
    pub rejected_items: u64,
    pub elapsed: Duration,
    /// Latency of every request, failed ones included, in microseconds.
    pub histogram: Histogram<u64>,
    pub counters: BTreeMap<String, u64>,
    /// The first error message, for the report.
    pub first_error: Option<String>,
    /// Reason the run stopped early, if it did.
    pub aborted: Option<String>,
    /// The [`TokenRejected`] error that stopped the run, if one did. The run's measurements
    /// are then meaningless.
    pub token_rejected: Option<String>,
}

struct Shared {
    next: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    consecutive_failures: AtomicU64,
    stop: AtomicBool,
    first_error: Mutex<Option<String>>,
    last_error: Mutex<Option<String>>,
    token_rejected: Mutex<Option<String>>,
}

/// Runs `workers` concurrently until `limits` is reached, with a progress bar labelled
/// `label` on standard error.
pub async fn run<W: Worker>(label: &str, workers: Vec<W>, limits: Limits) -> RunResult {
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        consecutive_failures: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        first_error: Mutex::new(None),
        last_error: Mutex::new(None),
        token_rejected: Mutex::new(None),
    });
    let started = Instant::now();
    let deadline = started + limits.duration;
    let progress = progress_bar(label, limits);
    let ticker = tokio::spawn(tick_progress(
        progress.clone(),
        shared.clone(),
        started,
        limits,
    ));

    let tasks: Vec<_> = workers
        .into_iter()
        .map(|worker| tokio::spawn(work(worker, shared.clone(), deadline, limits.requests)))
        .collect();
    let mut histogram = new_histogram();
    let mut counters: BTreeMap<String, u64> = BTreeMap::new();
    let (mut items, mut rejected_items) = (0, 0);
    for task in tasks {
        match task.await {
            Ok(outcome) => {
                histogram
                    .add(&outcome.histogram)
                    .expect("histograms share bounds");
                items += outcome.items;
                rejected_items += outcome.rejected;
                for (name, count) in outcome.counters {
                    *counters.entry(name).or_default() += count;
                }
            }
            Err(e) => {
                let mut first = shared.first_error.lock();
                first.get_or_insert_with(|| format!("worker task failed: {e}"));
            }
        }
    }
    let elapsed = started.elapsed();
    ticker.abort();
    progress.finish_and_clear();

    let failed = shared.failed.load(Ordering::Relaxed);
    let aborted = (shared.consecutive_failures.load(Ordering::Relaxed) >= MAX_CONSECUTIVE_FAILURES)
        .then(|| {
            format!(
                "stopped after {MAX_CONSECUTIVE_FAILURES} failed requests in a row; last error: {}",
                shared.last_error.lock().clone().unwrap_or_default()
            )
        });
    RunResult {
        requests: shared.completed.load(Ordering::Relaxed),
        failed,
        items,
        rejected_items,
        elapsed,
        histogram,
        counters,
        first_error: shared.first_error.lock().clone(),
        aborted,
        token_rejected: shared.token_rejected.lock().clone(),
    }
}

struct WorkerOutcome {
    histogram: Histogram<u64>,
    items: u64,
    rejected: u64,
    counters: BTreeMap<String, u64>,
}

async fn work<W: Worker>(
    mut worker: W,
    shared: Arc<Shared>,
    deadline: Instant,
    max_requests: Option<u64>,
) -> WorkerOutcome {
    let mut histogram = new_histogram();
    let (mut items, mut rejected) = (0, 0);
    loop {
        if shared.stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let index = shared.next.fetch_add(1, Ordering::Relaxed);
        if max_requests.is_some_and(|max| index >= max) {
            break;
        }
        let sent = Instant::now();
        // A request that outlives the deadline is cut off and counted as failed, so a hung
        // target cannot stretch the run.
        let remaining = deadline.saturating_duration_since(sent) + Duration::from_secs(1);
        let result = match tokio::time::timeout(remaining, worker.call(index)).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!(
                "request timed out after {:.1} s",
                remaining.as_secs_f64()
            )),
        };
        if let Err(e) = &result
            && e.is::<TokenRejected>()
        {
            shared.stop.store(true, Ordering::Relaxed);
            shared
                .token_rejected
                .lock()
                .get_or_insert_with(|| e.to_string());
            break;
        }
        record_micros(&mut histogram, sent.elapsed().as_micros() as u64);
        shared.completed.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(done) => {
                shared.consecutive_failures.store(0, Ordering::Relaxed);
                items += done.items;
                rejected += done.rejected;
            }
            Err(e) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                let message = format!("{e:#}");
                {
                    let mut first = shared.first_error.lock();
                    if first.is_none() {
                        tracing::warn!(
                            error = %message,
                            "first failed request; later ones are only counted"
                        );
                        *first = Some(message.clone());
                    }
                }
                *shared.last_error.lock() = Some(message);
                let in_a_row = shared.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if in_a_row >= MAX_CONSECUTIVE_FAILURES {
                    shared.stop.store(true, Ordering::Relaxed);
                }
            }
        }
    }
    WorkerOutcome {
        histogram,
        items,
        rejected,
        counters: worker.counters(),
    }
}

/// Creates a bar of requests when `--requests` is given, else of elapsed milliseconds.
/// indicatif hides it when standard error is not a terminal.
pub fn progress_bar(label: &str, limits: Limits) -> ProgressBar {
    let (length, template) = match limits.requests {
        Some(requests) => (requests, "{prefix} [{bar:30}] {pos}/{len} requests {msg}"),
        None => (
            limits.duration.as_millis() as u64,
            "{prefix} [{bar:30}] {elapsed}/{duration} {msg}",
        ),
    };
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("static progress template is valid")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

async fn tick_progress(bar: ProgressBar, shared: Arc<Shared>, started: Instant, limits: Limits) {
    let mut interval = tokio::time::interval(Duration::from_millis(250));
    loop {
        interval.tick().await;
        let completed = shared.completed.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        let elapsed = started.elapsed();
        match limits.requests {
            Some(_) => bar.set_position(completed),
            None => bar.set_position(elapsed.as_millis() as u64),
        }
        let rate = completed as f64 / elapsed.as_secs_f64().max(1e-3);
        bar.set_message(format!("{completed} done, {rate:.0}/s, {failed} errors"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting {
        fail_every: u64,
    }

    impl Worker for Counting {
        async fn call(&mut self, index: u64) -> anyhow::Result<Done> {
            if self.fail_every > 0 && index.is_multiple_of(self.fail_every) {
                anyhow::bail!("request {index} failed on purpose");
            }
            Ok(Done {
                items: 2,
                rejected: 1,
            })
        }

        fn counters(&self) -> BTreeMap<String, u64> {
            BTreeMap::from([("workers".to_owned(), 1)])
        }
    }

    #[tokio::test]
    async fn run_stops_at_request_count() {
        let workers = (0..4).map(|_| Counting { fail_every: 10 }).collect();
        let limits = Limits::from_args(Some(30.0), Some(100)).unwrap();
        let result = run("test", workers, limits).await;
        assert_eq!(result.requests, 100);
        assert_eq!(result.failed, 10);
        assert_eq!(result.items, 180);
        assert_eq!(result.rejected_items, 90);
        assert_eq!(result.histogram.len(), 100);
        assert_eq!(result.counters["workers"], 4);
        assert!(result.first_error.unwrap().contains("on purpose"));
        assert_eq!(result.aborted, None);
    }

    #[tokio::test]
    async fn run_stops_when_every_request_fails() {
        let workers = (0..2).map(|_| Counting { fail_every: 1 }).collect();
        let limits = Limits::from_args(Some(30.0), None).unwrap();
        let result = run("test", workers, limits).await;
        assert!(result.elapsed < Duration::from_secs(10));
        assert!(result.failed >= MAX_CONSECUTIVE_FAILURES);
        assert!(result.aborted.unwrap().contains("in a row"));
    }

    struct Rejected;

    impl Worker for Rejected {
        async fn call(&mut self, _index: u64) -> anyhow::Result<Done> {
            let token = super::super::token::TokenArgs::default();
            Err(token
                .http_rejected("http://127.0.0.1:1/graphql", "missing")
                .into())
        }
    }

    #[tokio::test]
    async fn rejected_token_stops_the_run_uncounted() {
        let workers = (0..4).map(|_| Rejected).collect();
        let limits = Limits::from_args(Some(30.0), None).unwrap();
        let result = run("test", workers, limits).await;
        assert!(result.elapsed < Duration::from_secs(10));
        assert_eq!(result.requests, 0);
        assert_eq!(result.failed, 0);
        assert!(result.token_rejected.unwrap().contains("MOBILITY_TOKEN"));
        assert_eq!(result.aborted, None);
    }

    #[test]
    fn limits_defaults_and_checks() {
        let by_time = Limits::from_args(None, None).unwrap();
        assert_eq!(by_time.duration, Duration::from_secs(10));
        assert_eq!(by_time.requests, None);
        let by_count = Limits::from_args(None, Some(5)).unwrap();
        assert_eq!(by_count.duration, Duration::from_secs(600));
        assert!(Limits::from_args(Some(0.0), None).is_err());
        assert!(Limits::from_args(Some(f64::NAN), None).is_err());
        assert!(Limits::from_args(None, Some(0)).is_err());
    }
}
