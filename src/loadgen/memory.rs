//! The `memory` scenario and the resident set size (RSS) of a process, read from
//! `/proc/<pid>/status`.
//!
//! For the server, bytes per online driver are (RSS with N drivers - RSS with 0 drivers) / N,
//! both read right after start. The baseline comes from `--baseline-rss`, or else from the
//! last `memory` row of the server with 0 drivers in `--output`. For Redis the row records
//! the key's `MEMORY USAGE`, and for PostGIS the table's `pg_total_relation_size`, each
//! divided by N for bytes per driver.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

use super::report::{self, ResultRow};
use super::server::ServerClient;
use super::{Target, TargetArgs};

#[derive(Debug, Args)]
pub struct MemoryArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Process id of the server, for `--target server`.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Online drivers on the server; read from `/healthz` at --url when absent.
    #[arg(long)]
    pub drivers: Option<u64>,

    /// RSS in bytes of the same server started with 0 drivers; when absent, the last server
    /// `memory` row with 0 drivers in --output is used.
    #[arg(long)]
    pub baseline_rss: Option<u64>,

    /// File that gets one JSON line per run appended.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Resident set size of process `pid` in bytes, from `VmRSS` in `/proc/<pid>/status`.
///
/// # Errors
/// The process does not exist or the file has no `VmRSS` line.
pub fn read_rss(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {path}; is --server-pid {pid} running here?"))?;
    parse_vm_rss(&status).with_context(|| format!("{path} has no VmRSS line"))
}

/// Parses the `VmRSS` value of a `/proc/<pid>/status` text, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut parts = line.split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    // The kernel always reports this field in kB, meaning KiB.
    match parts.next() {
        Some("kB") => Some(value * 1_024),
        _ => None,
    }
}

/// Raises this process's open-files limit to at least `required`, raising the hard limit too
/// when the process may (root). Returns the soft limit in force afterwards.
pub fn raise_open_files(required: u64) -> u64 {
    use rlimit::Resource;

    let Ok((soft, hard)) = Resource::NOFILE.get() else {
        return 0;
    };
    if soft >= required {
        return soft;
    }
    if hard < required && Resource::NOFILE.set(required, required).is_ok() {
        return required;
    }
    let target = required.min(hard);
    match Resource::NOFILE.set(target, hard) {
        Ok(()) => target,
        Err(_) => soft,
    }
}

/// Returns the RSS of the last `memory` row of `target` with 0 drivers in `path`, if any.
pub fn baseline_from_file(path: &Path, target: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|row| row["scenario"] == "memory" && row["target"] == target)
        .filter(|row| row["drivers"] == 0)
        .find_map(|row| row["rss_bytes"].as_u64())
}

/// Bytes per driver above `baseline`, or `None` for 0 drivers or no baseline.
pub fn bytes_per_driver(rss: u64, baseline: Option<u64>, drivers: u64) -> Option<f64> {
    let baseline = baseline?;
    (drivers > 0).then(|| (rss as f64 - baseline as f64) / drivers as f64)
}

/// Runs `memory`.
///
/// # Errors
/// A missing `--server-pid`, an unreadable process, or an unreachable target.
pub async fn run(args: MemoryArgs) -> anyhow::Result<()> {
    let started_at = report::now_rfc3339();
    let target = &args.target;
    let (drivers, rss, per_driver, connection, details) = match target.target {
        Target::Server => {
            let pid = args.server_pid.context(
                "--server-pid is required for --target server: the process id of `mobility serve`",
            )?;
            let rss = read_rss(pid)?;
            let drivers = match args.drivers {
                Some(drivers) => drivers,
                None => {
                    ServerClient::new(&target.url, 1, &target.token)?
                        .online_drivers()
                        .await?
                }
            };
            let (baseline, source) = match args.baseline_rss {
                Some(rss) => (Some(rss), "--baseline-rss"),
                None => match args.output.as_deref() {
                    Some(path) => (baseline_from_file(path, "server"), "--output"),
                    None => (None, "none"),
                },
            };
            let details = json!({
                "measure": "VmRSS of /proc/<pid>/status",
                "server_pid": pid,
                "baseline_rss_bytes": baseline,
                "baseline_source": if baseline.is_some() { source } else { "none" },
            });
            let per_driver = bytes_per_driver(rss, baseline, drivers);
            (drivers, rss, per_driver, "procfs".to_owned(), details)
        }
        Target::Redis => {
            let (members, usage, server_rss) =
                super::redis_target::memory(&target.redis_url, &target.key).await?;
            let details = json!({
                "measure": "MEMORY USAGE key SAMPLES 0, bytes of the key, not process RSS",
                "key": target.key,
                "redis_used_memory_rss": server_rss,
            });
            let per_driver = (members > 0).then(|| usage as f64 / members as f64);
            (members, usage, per_driver, "one".to_owned(), details)
        }
        Target::Postgis => {
            let (rows, size) = super::postgis::memory(&target.postgres_url).await?;
            let details = json!({
                "measure": "pg_total_relation_size('drivers_geo'): table, GiST and primary \
                            key indexes on disk, not process RSS",
            });
            let per_driver = (rows > 0).then(|| size as f64 / rows as f64);
            (rows, size, per_driver, "one".to_owned(), details)
        }
    };
    let row = ResultRow {
        scenario: "memory".into(),
        target: target.target.name().into(),
        drivers,
        concurrency: 0,
        batch: None,
        subscribers: None,
        requests: 0,
        errors: 0,
        duration_s: 0.0,
        throughput_per_s: 0.0,
        latency_ms: None,
        rss_bytes: Some(rss),
        bytes_per_driver: per_driver,
        connection,
        started_at,
        git_rev: report::git_rev(),
        details,
    };
    report::emit(args.output.as_deref(), &row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_parsed_in_bytes() {
        let status = "Name:\tmobility\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(12_345 * 1_024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn own_rss_is_readable() {
        let rss = read_rss(std::process::id()).unwrap();
        assert!(rss > 1_000_000, "{rss}");
    }

    #[test]
    fn per_driver_needs_baseline_and_drivers() {
        assert_eq!(bytes_per_driver(3_000, Some(1_000), 10), Some(200.0));
        assert_eq!(bytes_per_driver(3_000, None, 10), None);
        assert_eq!(bytes_per_driver(3_000, Some(1_000), 0), None);
    }

    #[test]
    fn baseline_is_last_zero_driver_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        let rows = [
            json!({"scenario": "memory", "target": "server", "drivers": 0, "rss_bytes": 100}),
            json!({"scenario": "memory", "target": "server", "drivers": 0, "rss_bytes": 120}),
            json!({"scenario": "memory", "target": "server", "drivers": 5, "rss_bytes": 900}),
            json!({"scenario": "memory", "target": "redis", "drivers": 0, "rss_bytes": 7}),
            json!({"scenario": "nearby", "target": "server", "drivers": 0, "rss_bytes": 1}),
        ];
        let text: String = rows.iter().map(|row| format!("{row}\n")).collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(baseline_from_file(&path, "server"), Some(120));
        assert_eq!(baseline_from_file(&path, "postgis"), None);
        assert_eq!(
            baseline_from_file(&dir.path().join("missing"), "server"),
            None
        );
    }
}
