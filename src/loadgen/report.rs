//! The result row of a run: one JSON object per line appended to `--output`, and the one-line
//! human summary printed to standard output.
//!
//! The row's keys are a contract with the scripts that read them; add keys only inside
//! `details`, which contains scenario-specific facts.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Creates a latency histogram in microseconds from 1 µs to one hour with three significant
/// digits, so every percentile is within 0.1% of the exact sample.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

/// Records `micros`, clamped into the histogram's range so no sample is lost.
pub fn record_micros(histogram: &mut Histogram<u64>, micros: u64) {
    histogram.saturating_record(micros.max(1));
}

/// Returns the percentiles of `histogram`, or `None` when it has no sample.
pub fn percentiles(histogram: &Histogram<u64>) -> Option<LatencyMs> {
    if histogram.is_empty() {
        return None;
    }
    let ms = |micros: u64| micros as f64 / 1_000.0;
    Some(LatencyMs {
        p50: ms(histogram.value_at_quantile(0.50)),
        p99: ms(histogram.value_at_quantile(0.99)),
        p999: ms(histogram.value_at_quantile(0.999)),
        max: ms(histogram.max()),
    })
}

/// One run's result, serialized as one line of `--output`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultRow {
    /// `nearby`, `ingest_single`, `ingest_batch`, `fanout` or `memory`.
    pub scenario: String,
    /// `server`, `redis` or `postgis`.
    pub target: String,
    /// Drivers the target held.
    pub drivers: u64,
    /// Workers with one request in flight each.
    pub concurrency: u64,
    /// Updates per request of `ingest_batch`.
    pub batch: Option<u64>,
    /// WebSocket subscriptions of `fanout`.
    pub subscribers: Option<u64>,
    /// Requests completed, failed ones included. `fanout` counts the location updates sent.
    pub requests: u64,
    /// Failed requests, plus for ingest the updates that the target did not accept.
    pub errors: u64,
    /// Wall-clock seconds of the measured phase.
    pub duration_s: f64,
    /// Requests per second for `nearby`, updates per second for ingest, events delivered per
    /// second for `fanout`.
    pub throughput_per_s: f64,
    /// Request latency, or for `fanout` the time from `recordedAt` to the event's arrival;
    /// `None` without samples.
    pub latency_ms: Option<LatencyMs>,
    /// Resident set size in bytes of the measured process or structure.
    pub rss_bytes: Option<u64>,
    pub bytes_per_driver: Option<f64>,
    /// Connection setup of the workers, such as `one per worker`.
    pub connection: String,
    /// RFC 3339 start time of the run.
    pub started_at: String,
    /// `git rev-parse --short=12 HEAD` of the working directory, `-dirty` when it has
    /// uncommitted changes; `None` outside a repository.
    pub git_rev: Option<String>,
    /// Scenario-specific facts: the operation sent, status counts, result counts.
    pub details: Value,
}

impl ResultRow {
    /// Serializes the row as one JSON line without the trailing newline.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a result row always serializes")
    }

    /// Formats a one-line summary for people.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{} {}: {} drivers",
            self.scenario, self.target, self.drivers
        );
        if self.concurrency > 0 {
            line.push_str(&format!(", concurrency {}", self.concurrency));
        }
        if let Some(batch) = self.batch {
            line.push_str(&format!(", batch {batch}"));
        }
        if let Some(subscribers) = self.subscribers {
            line.push_str(&format!(", {subscribers} subscribers"));
        }
        if self.duration_s > 0.0 {
            line.push_str(&format!(
                ": {} requests, {} errors in {:.1} s, {:.0}/s",
                self.requests, self.errors, self.duration_s, self.throughput_per_s
            ));
        }
        if let Some(latency) = self.latency_ms {
            line.push_str(&format!(
                ", latency p50 {:.3} ms p99 {:.3} ms p999 {:.3} ms max {:.3} ms",
                latency.p50, latency.p99, latency.p999, latency.max
            ));
        }
        if let Some(rss) = self.rss_bytes {
            line.push_str(&format!(", rss {:.1} MiB", rss as f64 / 1_048_576.0));
        }
        if let Some(per_driver) = self.bytes_per_driver {
            line.push_str(&format!(", {per_driver:.0} bytes per driver"));
        }
        line
    }
}

/// Appends `row` as one line to `path`, creating the file if needed.
///
/// # Errors
/// The file cannot be opened or written.
pub fn append(path: &Path, row: &ResultRow) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open --output file {}", path.display()))?;
    // One write call per line, so rows of runs that share a file do not interleave.
    let line = format!("{}\n", row.to_json_line());
    file.write_all(line.as_bytes())
        .with_context(|| format!("cannot append to {}", path.display()))
}

/// Prints the summary and appends the row when `output` is given.
///
/// # Errors
/// The output file cannot be written.
pub fn emit(output: Option<&Path>, row: &ResultRow) -> anyhow::Result<()> {
    println!("{}", row.summary());
    if let Some(path) = output {
        append(path, row)?;
    }
    Ok(())
}

/// Returns the commit of the repository around the working directory, or else around the
/// executable, because `target/release/mobility` sits inside its checkout. Uncommitted
/// changes to tracked files add `-dirty`. Without git or a repository the result is `None`.
pub fn git_rev() -> Option<String> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    let dirs = [std::env::current_dir().ok(), exe_dir];
    dirs.into_iter().flatten().find_map(|dir| git_rev_in(&dir))
}

fn git_rev_in(dir: &Path) -> Option<String> {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let rev = run(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|status| !status.is_empty());
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}

/// Returns the current time in RFC 3339 with seconds precision, in UTC.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> ResultRow {
        ResultRow {
            scenario: "nearby".into(),
            target: "redis".into(),
            drivers: 10_000,
            concurrency: 8,
            batch: None,
            subscribers: None,
            requests: 1_000,
            errors: 2,
            duration_s: 2.5,
            throughput_per_s: 400.0,
            latency_ms: Some(LatencyMs {
                p50: 0.5,
                p99: 1.25,
                p999: 2.0,
                max: 3.0,
            }),
            rss_bytes: None,
            bytes_per_driver: None,
            connection: "one per worker".into(),
            started_at: "2026-12-04T10:00:00Z".into(),
            git_rev: None,
            details: serde_json::json!({ "operation": "GEOSEARCH" }),
        }
    }

    #[test]
    fn row_serializes_contract_keys_in_order() {
        let line = row().to_json_line();
        let keys = [
            "scenario",
            "target",
            "drivers",
            "concurrency",
            "batch",
            "subscribers",
            "requests",
            "errors",
            "duration_s",
            "throughput_per_s",
            "latency_ms",
            "rss_bytes",
            "bytes_per_driver",
            "connection",
            "started_at",
            "git_rev",
            "details",
        ];
        let mut last = 0;
        for key in keys {
            let at = line
                .find(&format!("\"{key}\":"))
                .unwrap_or_else(|| panic!("{key} missing in {line}"));
            assert!(at >= last, "{key} out of order in {line}");
            last = at;
        }
        assert!(!line.contains('\n'));
    }

    #[test]
    fn row_serializes_values_and_nulls() {
        let value: Value = serde_json::from_str(&row().to_json_line()).unwrap();
        assert_eq!(value["scenario"], "nearby");
        assert_eq!(value["drivers"], 10_000);
        assert_eq!(value["batch"], Value::Null);
        assert_eq!(value["subscribers"], Value::Null);
        assert_eq!(value["git_rev"], Value::Null);
        assert_eq!(value["latency_ms"]["p50"], 0.5);
        assert_eq!(value["latency_ms"]["p999"], 2.0);
        assert_eq!(value["throughput_per_s"], 400.0);
        assert_eq!(value["details"]["operation"], "GEOSEARCH");
    }

    #[test]
    fn row_without_latency_has_null() {
        let value: Value = serde_json::from_str(
            &ResultRow {
                latency_ms: None,
                ..row()
            }
            .to_json_line(),
        )
        .unwrap();
        assert_eq!(value["latency_ms"], Value::Null);
    }

    #[test]
    fn append_writes_one_line_per_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        append(&path, &row()).unwrap();
        append(&path, &row()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        for line in text.lines() {
            let value: Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["target"], "redis");
        }
    }

    #[test]
    fn percentiles_of_uniform_samples() {
        let mut histogram = new_histogram();
        // 1 to 10,000 µs, once each: p50 is 5 ms, p99 9.9 ms, p999 9.99 ms, max 10 ms.
        for micros in 1..=10_000 {
            record_micros(&mut histogram, micros);
        }
        let latency = percentiles(&histogram).unwrap();
        let close = |value: f64, expected: f64| (value - expected).abs() <= expected * 0.001;
        assert!(close(latency.p50, 5.0), "{latency:?}");
        assert!(close(latency.p99, 9.9), "{latency:?}");
        assert!(close(latency.p999, 9.99), "{latency:?}");
        assert!(close(latency.max, 10.0), "{latency:?}");
    }

    #[test]
    fn percentiles_of_empty_histogram() {
        assert_eq!(percentiles(&new_histogram()), None);
    }

    #[test]
    fn percentiles_keep_outliers() {
        let mut histogram = new_histogram();
        for _ in 0..999 {
            record_micros(&mut histogram, 100);
        }
        record_micros(&mut histogram, 0);
        record_micros(&mut histogram, u64::MAX);
        let latency = percentiles(&histogram).unwrap();
        assert!((latency.p50 - 0.1).abs() < 0.001, "{latency:?}");
        assert!(latency.max >= 3_600_000.0 * 0.999, "{latency:?}");
    }

    #[test]
    fn summary_names_scenario_and_numbers() {
        let summary = row().summary();
        assert!(
            summary.starts_with("nearby redis: 10000 drivers"),
            "{summary}"
        );
        assert!(summary.contains("400/s"), "{summary}");
        assert!(summary.contains("p99 1.250 ms"), "{summary}");
    }
}
