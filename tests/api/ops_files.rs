//! The Prometheus alert rules and the Grafana dashboard in `ops/` name only metrics that
//! `src/metrics.rs` declares, the dashboard is valid JSON, and every alert has its runbook
//! section. These read the files as text and start no server.

use std::collections::BTreeSet;

const METRICS_RS: &str = include_str!("../../src/metrics.rs");
const ALERTS_YML: &str = include_str!("../../ops/prometheus/alerts.yml");
const DASHBOARD_JSON: &str = include_str!("../../ops/grafana/mobility.json");
const RUNBOOK_MD: &str = include_str!("../../docs/RUNBOOK.md");

/// Suffixes that Prometheus adds to a histogram's name for its series.
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// Collects the metric names that `src/metrics.rs` declares as string constants, such as
/// `pub const ONLINE_DRIVERS: &str = "mobility_online_drivers";`.
fn declared_metrics() -> BTreeSet<String> {
    METRICS_RS
        .lines()
        .filter(|line| line.trim_start().starts_with("pub const") && line.contains(": &str = \""))
        .filter_map(|line| line.split('"').nth(1))
        .map(str::to_owned)
        .collect()
}

/// Collects every `mobility_[a-z_]+` word in `text`, with a histogram suffix removed.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let is_name_byte = |b: u8| b.is_ascii_lowercase() || b == b'_';
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("mobility_") {
        // Skip matches inside a longer word, such as `my_mobility_x`.
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue;
        }
        let end = bytes[start..]
            .iter()
            .position(|&b| !is_name_byte(b))
            .map_or(bytes.len(), |length| start + length);
        let name = &text[start..end];
        let base = HISTOGRAM_SUFFIXES
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(base.to_owned());
    }
    names
}

/// Returns the names in `used` that `src/metrics.rs` does not declare.
fn undeclared(used: &BTreeSet<String>) -> Vec<String> {
    let declared = declared_metrics();
    used.difference(&declared).cloned().collect()
}

/// Collects the alert names of `alerts.yml` from its `- alert: Name` lines.
fn alert_names() -> Vec<&'static str> {
    ALERTS_YML
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("- alert:"))
        .map(str::trim)
        .collect()
}

#[test]
fn metrics_rs_declares_names() {
    let declared = declared_metrics();
    assert!(
        declared.contains("mobility_graphql_request_duration_seconds"),
        "the parser of src/metrics.rs found only {declared:?}"
    );
    assert!(
        declared.contains("mobility_online_drivers"),
        "the parser of src/metrics.rs found only {declared:?}"
    );
}

#[test]
fn alert_rules_use_declared_metrics() {
    let used = metric_names_in(ALERTS_YML);
    assert!(
        used.contains("mobility_database_up"),
        "found no metric names in ops/prometheus/alerts.yml: {used:?}"
    );
    let missing = undeclared(&used);
    assert!(
        missing.is_empty(),
        "ops/prometheus/alerts.yml uses metrics that src/metrics.rs does not declare: {missing:?}"
    );
}

#[test]
fn dashboard_uses_declared_metrics() {
    let used = metric_names_in(DASHBOARD_JSON);
    assert!(
        used.contains("mobility_graphql_request_duration_seconds"),
        "found no metric names in ops/grafana/mobility.json: {used:?}"
    );
    let missing = undeclared(&used);
    assert!(
        missing.is_empty(),
        "ops/grafana/mobility.json uses metrics that src/metrics.rs does not declare: {missing:?}"
    );
}

#[test]
fn dashboard_parses_as_json() {
    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD_JSON).expect("ops/grafana/mobility.json is not JSON");
    let panels = dashboard["panels"]
        .as_array()
        .expect("the dashboard has no `panels` array");
    assert!(!panels.is_empty(), "the dashboard has no panels");
    assert_eq!(
        dashboard["__inputs"][0]["name"], "DS_PROMETHEUS",
        "the dashboard's data source input is not DS_PROMETHEUS"
    );
}

#[test]
fn metric_name_scanner_strips_suffixes() {
    let text = r#"rate(mobility_x_seconds_bucket{le="1"}[5m]) / mobility_y_total, my_mobility_z"#;
    let names: Vec<String> = metric_names_in(text).into_iter().collect();
    assert_eq!(names, ["mobility_x_seconds", "mobility_y_total"]);
}

#[test]
fn every_alert_has_runbook_section() {
    let alerts = alert_names();
    assert!(
        alerts.len() >= 10,
        "found only {alerts:?} in ops/prometheus/alerts.yml"
    );
    for alert in alerts {
        let heading = format!("\n## {alert}\n");
        assert!(
            RUNBOOK_MD.contains(&heading),
            "docs/RUNBOOK.md has no `## {alert}` section"
        );
        let annotation = format!(
            "runbook: \"docs/RUNBOOK.md#{}\"",
            alert.to_ascii_lowercase()
        );
        assert!(
            ALERTS_YML.contains(&annotation),
            "alert {alert} has no `{annotation}` annotation"
        );
    }
}

/// Returns the environment variables of `mobility serve`, as clap declares them.
fn serve_variables() -> std::collections::BTreeSet<String> {
    use clap::Args;

    let command = mobility::config::ServeConfig::augment_args(clap::Command::new("serve"));
    command
        .get_arguments()
        .filter_map(|argument| argument.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn readme_lists_every_setting() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("## Configuration")
        .expect("README has a Configuration section");
    let section = &readme[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let listed: std::collections::BTreeSet<String> = section[..end]
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_owned)
        .collect();
    let variables = serve_variables();
    assert!(
        variables.contains("DATABASE_URL"),
        "clap reports the variables: {variables:?}"
    );
    assert!(
        variables.contains("REDIS_URL"),
        "clap reports the variables: {variables:?}"
    );
    for variable in &variables {
        assert!(
            listed.contains(variable),
            "{variable} is a setting of `mobility serve` but missing from README's Configuration table"
        );
    }
    for variable in &listed {
        assert!(
            variable == "RUST_LOG" || variables.contains(variable),
            "README's Configuration table lists {variable}, which `mobility serve` does not read"
        );
    }
}
