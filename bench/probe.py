#!/usr/bin/env python3
"""Measurements around a `mobility loadgen` run that the load generator cannot take itself.

Subcommands:

- `machine FILE`: writes the machine description (cores, CPU model, memory, kernel, versions
  of rustc, PostgreSQL, PostGIS and Redis, git revision, date) as JSON.
- `run [options] -- COMMAND...`: runs COMMAND and appends one `probe` row to `--output`. The
  row holds the CPU seconds that COMMAND (the load generator) and the `--pid` processes (the
  target) used during the run and the machine's busy fraction from /proc/stat. With
  `--metrics-url`, it also holds the server-side latency of `nearbyDrivers` from the difference of the
  `mobility_graphql_request_duration_seconds` histogram before and after. With
  `--capture-port`, it also records every HTTP request to that loopback port with tcpdump
  and takes as server-side latency the time from the first packet of each request to the
  first packet of its response on the same connection.
- `heap --pid PID --log FILE`: attaches gdb to the server, calls glibc's `malloc_stats()`
  (which prints to the server's standard error, LOG) and `malloc_trim(0)`, and appends one
  `probe` row with the heap bytes in use and the resident memory before and after the trim.
- `quiet`: waits until the machine's CPUs are mostly idle, so that a run does not start
  while other work is using them; after `--timeout` seconds it warns and returns anyway.
- `replay FILE`: appends one `replay` row from the JSON report of `mobility replay`.
- `criterion DIR SINCE_FILE`: appends one `criterion` row per benchmark whose
  `new/estimates.json` under DIR is newer than SINCE_FILE.

Rows have the keys of the load generator's result rows (src/loadgen/report.rs), so
bench/report.py reads one file. Python 3 standard library only.
"""

import argparse
import json
import math
import os
import platform
import re
import signal
import struct
import subprocess
import tempfile
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

HISTOGRAM = "mobility_graphql_request_duration_seconds"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BUCKET_LINE = re.compile(
    HISTOGRAM + r'_bucket\{(?P<labels>[^}]*)\}\s+(?P<value>[0-9.eE+-]+)'
)


def now_rfc3339():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def command_output(args, strip=True):
    """Return the standard output of ARGS, stripped unless STRIP is false, or None when it
    fails."""
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() if strip else result.stdout.rstrip()


def git_rev(root):
    rev = command_output(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"])
    if rev is None:
        return None
    status = command_output(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"]
    )
    return f"{rev}-dirty" if status else rev


def cpu_model():
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def os_name():
    try:
        with open("/etc/os-release", encoding="utf-8") as release:
            for line in release:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return None


def machine(args):
    root = Path(__file__).resolve().parent.parent
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc"]
    description = {
        "date": now_rfc3339(),
        "nproc": int(command_output(["nproc"]) or 0),
        "cpu_model": cpu_model(),
        "memory_total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        # Unstripped, so that the column headers stay over their columns.
        "free_h": command_output(["free", "-h"], strip=False),
        "kernel": platform.release(),
        "os": os_name(),
        "rustc": command_output(["rustc", "--version"]),
        "git_rev": git_rev(root),
        # The benchmarked build includes uncommitted changes; this lists the changed files.
        "git_status": command_output(["git", "-C", str(root), "status", "--porcelain"]),
        "postgresql": command_output(psql + ["SHOW server_version"]),
        "postgis": command_output(
            psql + ["SELECT default_version FROM pg_available_extensions WHERE name = 'postgis'"]
        ),
        "redis": command_output(["redis-server", "--version"]),
    }
    Path(args.file).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(description, indent=2))


def process_cpu_seconds(pid):
    """CPU seconds of PID and of its reaped children: utime + stime + cutime + cstime."""
    with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
        text = stat.read()
    # The command name may contain spaces, so fields are counted after its closing bracket.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime + cutime + cstime) / CLOCK_TICKS


def machine_jiffies():
    """(busy, total) jiffies of all CPUs from the first line of /proc/stat."""
    with open("/proc/stat", encoding="utf-8") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


def parse_labels(text):
    return dict(re.findall(r'(\w+)="([^"]*)"', text))


def scrape_buckets(url, operation):
    """Cumulative bucket counts of the request histogram for OPERATION, summed over
    outcomes, as {upper_bound_seconds: count}."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode("utf-8")
    buckets = {}
    for match in BUCKET_LINE.finditer(text):
        labels = parse_labels(match.group("labels"))
        if labels.get("operation") != operation:
            continue
        bound = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
        buckets[bound] = buckets.get(bound, 0) + float(match.group("value"))
    return buckets


def bucket_quantile(buckets, quantile):
    """Quantile of a cumulative histogram by linear interpolation inside the bucket, as
    Prometheus' histogram_quantile does; None without samples. Returns seconds."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = quantile * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                # Above the highest finite bound nothing is known but the bound itself.
                return previous_bound
            width = count - previous_count
            share = 0.0 if width <= 0 else (rank - previous_count) / width
            return previous_bound + (bound - previous_bound) * share
        previous_bound, previous_count = bound, count
    return previous_bound


def histogram_summary(before, after):
    delta = {bound: after.get(bound, 0) - before.get(bound, 0) for bound in after}
    bounds = sorted(delta)
    total = delta[bounds[-1]] if bounds else 0
    if total <= 0:
        return None, None
    ms = lambda seconds: None if seconds is None else seconds * 1_000.0  # noqa: E731
    latency = {
        "p50": ms(bucket_quantile(delta, 0.50)),
        "p99": ms(bucket_quantile(delta, 0.99)),
        "p999": ms(bucket_quantile(delta, 0.999)),
        "max": None,
    }
    within_1ms = delta.get(0.001)
    details = {
        "requests": total,
        "buckets_le_seconds": [
            ["+Inf" if bound == float("inf") else bound, delta[bound]] for bound in bounds
        ],
        "fraction_within_1ms": None if within_1ms is None else within_1ms / total,
        "quantile_method": "linear interpolation inside the bucket (histogram_quantile)",
    }
    return latency, details


# --- wire-level latency ----------------------------------------------------------------------

# First four payload bytes of an HTTP/1.1 request (`POST`) and response (`HTTP`).
POST, HTTP = 0x504F5354, 0x48545450


class Capture:
    """tcpdump on the loopback interface, keeping only TCP segments to or from PORT whose
    payload starts with `POST` or `HTTP`: the first segment of each request and response."""

    def __init__(self, port):
        self.port = port
        self.directory = tempfile.TemporaryDirectory(prefix="mobility-capture-")
        self.path = Path(self.directory.name) / "capture.pcap"
        payload = "tcp[((tcp[12:1] & 0xf0) >> 2):4]"
        expression = f"tcp port {port} and ({payload} = {POST:#x} or {payload} = {HTTP:#x})"
        self.process = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-n", "-s", "128", "-B", "65536",
             "--time-stamp-precision=nano", "-w", str(self.path), expression],
            stderr=subprocess.PIPE, text=True,
        )
        # tcpdump writes "listening on lo" once the filter is installed.
        line = self.process.stderr.readline()
        if "listening" not in line:
            self.process.kill()
            raise RuntimeError(f"tcpdump did not start: {line.strip()}")

    def stop(self):
        """Stop tcpdump; return (server latencies in seconds, packets dropped by the kernel)."""
        self.process.send_signal(signal.SIGINT)
        _, errors = self.process.communicate(timeout=60)
        match = re.search(r"(\d+) packets? dropped by kernel", errors)
        dropped = int(match.group(1)) if match else None
        latencies = server_latencies(self.path, self.port)
        self.directory.cleanup()
        return latencies, dropped


def tcp_segments(path):
    """Yield (timestamp seconds, source port, destination port, first 4 payload bytes as an
    integer) of each IPv4 or IPv6 TCP segment in the pcap file at PATH."""
    with open(path, "rb") as capture:
        header = capture.read(24)
        if len(header) < 24:
            return
        magic = struct.unpack("<I", header[:4])[0]
        order = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
        magic = struct.unpack(order + "I", header[:4])[0]
        fraction = 1e-9 if magic == 0xA1B23C4D else 1e-6
        link_type = struct.unpack(order + "I", header[20:24])[0]
        link_header = {1: 14, 113: 16, 276: 20, 0: 4}.get(link_type)
        if link_header is None:
            raise RuntimeError(f"unsupported pcap link type {link_type}")
        while True:
            record = capture.read(16)
            if len(record) < 16:
                return
            seconds, fraction_part, included, _ = struct.unpack(order + "IIII", record)
            data = capture.read(included)
            ip = data[link_header:]
            if not ip:
                continue
            version = ip[0] >> 4
            if version == 4:
                if ip[9] != 6:
                    continue
                tcp = ip[(ip[0] & 0x0F) * 4 :]
            elif version == 6:
                if ip[6] != 6:
                    continue
                tcp = ip[40:]
            else:
                continue
            if len(tcp) < 20:
                continue
            source, destination = struct.unpack(">HH", tcp[:4])
            payload = tcp[(tcp[12] >> 4) * 4 :]
            if len(payload) < 4:
                continue
            first = struct.unpack(">I", payload[:4])[0]
            yield seconds + fraction_part * fraction, source, destination, first


def server_latencies(path, port):
    """Pair each request with the next response on its connection; HTTP/1.1 without
    pipelining has at most one request in flight per connection."""
    pending = {}
    latencies = []
    for timestamp, source, destination, first in tcp_segments(path):
        if destination == port and first == POST:
            pending[source] = timestamp
        elif source == port and first == HTTP:
            sent = pending.pop(destination, None)
            if sent is not None:
                latencies.append(timestamp - sent)
    return latencies


def exact_percentiles(values):
    """Nearest-rank percentiles of VALUES in milliseconds."""
    if not values:
        return None
    ordered = sorted(values)

    def rank(quantile):
        return ordered[min(len(ordered) - 1, max(0, math.ceil(quantile * len(ordered)) - 1))]

    return {
        "p50": 1e3 * rank(0.50),
        "p99": 1e3 * rank(0.99),
        "p999": 1e3 * rank(0.999),
        "max": 1e3 * ordered[-1],
    }


def run(args):
    pids = [int(pid) for pid in args.pid]
    target_before = sum(process_cpu_seconds(pid) for pid in pids)
    busy_before, total_before = machine_jiffies()
    buckets_before = (
        scrape_buckets(args.metrics_url, args.operation) if args.metrics_url else None
    )
    capture = Capture(args.capture_port) if args.capture_port else None
    started_at = now_rfc3339()
    started = time.monotonic()
    child = subprocess.Popen(args.command)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    wire = capture.stop() if capture else None
    if code != 0:
        print(f"probe: command failed with exit code {code}: {args.command}", file=sys.stderr)
        return code
    # PostgreSQL backends end when the load generator disconnects; their CPU time reaches
    # the postmaster's cutime only once it has reaped them.
    time.sleep(0.5)
    busy_after, total_after = machine_jiffies()
    target_after = sum(process_cpu_seconds(pid) for pid in pids)

    details = {
        "for_scenario": args.scenario,
        "loadgen_cpu_s": usage.ru_utime + usage.ru_stime,
        "target_cpu_s": target_after - target_before if pids else None,
        "target_pids": pids,
        "target_cpu_source": args.cpu_source,
        "machine_busy_fraction": (busy_after - busy_before) / max(total_after - total_before, 1),
        "wall_s": elapsed,
    }

    latency = None
    if wire is not None:
        latencies, dropped = wire
        latency = exact_percentiles(latencies)
        details["wire"] = {
            "requests": len(latencies),
            "fraction_within_1ms": (
                sum(1 for value in latencies if value <= 0.001) / len(latencies)
                if latencies else None
            ),
            "packets_dropped_by_kernel": dropped,
            "measure": "first request segment to first response segment on the loopback "
                       "interface, by tcpdump",
        }
    if args.metrics_url:
        buckets_after = scrape_buckets(args.metrics_url, args.operation)
        histogram_latency, histogram = histogram_summary(buckets_before, buckets_after)
        details["server_histogram"] = histogram
        details["server_histogram_latency_ms"] = histogram_latency
        if latency is None:
            latency = histogram_latency
        details["server_histogram_operation"] = args.operation

    row = {
        "scenario": "probe",
        "target": args.target,
        "drivers": args.drivers,
        "concurrency": args.concurrency,
        "batch": args.batch,
        "subscribers": None,
        "requests": 0,
        "errors": 0,
        "duration_s": elapsed,
        "throughput_per_s": 0.0,
        "latency_ms": latency,
        "rss_bytes": None,
        "bytes_per_driver": None,
        "connection": "",
        "started_at": started_at,
        "git_rev": git_rev(Path(__file__).resolve().parent.parent),
        "details": details,
    }
    with open(args.output, "a", encoding="utf-8") as output:
        output.write(json.dumps(row) + "\n")
    return 0


def read_status_bytes(pid, field="VmRSS"):
    """Return a memory FIELD of /proc/PID/status, such as VmRSS or VmHWM (peak RSS), in
    bytes."""
    with open(f"/proc/{pid}/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no {field} line")


def heap(args):
    log = Path(args.log)
    offset = log.stat().st_size
    rss_before = read_status_bytes(args.pid)
    rss_peak = read_status_bytes(args.pid, "VmHWM")
    result = subprocess.run(
        ["gdb", "-p", str(args.pid), "-batch", "-nx",
         "-ex", "call (void) malloc_stats()", "-ex", "call (int) malloc_trim(0)"],
        capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0:
        print(result.stdout + result.stderr, file=sys.stderr)
        return 1
    time.sleep(0.5)
    rss_after = read_status_bytes(args.pid)
    with open(log, encoding="utf-8", errors="replace") as text:
        text.seek(offset)
        printed = text.read()
    total = printed.rsplit("Total (incl. mmap):", 1)
    if len(total) != 2:
        print(f"probe: no malloc_stats output in {log}", file=sys.stderr)
        return 1

    numbers = dict(re.findall(r"^(system bytes|in use bytes)\s*=\s*(\d+)", total[1], re.M))
    row = {
        "scenario": "probe",
        "target": "server",
        "drivers": args.drivers,
        "concurrency": 0,
        "batch": None,
        "subscribers": None,
        "requests": 0,
        "errors": 0,
        "duration_s": 0.0,
        "throughput_per_s": 0.0,
        "latency_ms": None,
        "rss_bytes": rss_after,
        "bytes_per_driver": None,
        "connection": "",
        "started_at": now_rfc3339(),
        "git_rev": git_rev(Path(__file__).resolve().parent.parent),
        "details": {
            "for_scenario": "memory_heap",
            "heap_in_use_bytes": int(numbers["in use bytes"]),
            "heap_system_bytes": int(numbers["system bytes"]),
            "rss_before_trim_bytes": rss_before,
            "rss_peak_bytes": rss_peak,
            "rss_after_trim_bytes": rss_after,
            "measure": "glibc malloc_stats() 'in use bytes' including mmap, through gdb; "
                       "then malloc_trim(0)",
        },
    }
    with open(args.output, "a", encoding="utf-8") as output:
        output.write(json.dumps(row) + "\n")
    print(f"heap server: {args.drivers} drivers, {int(numbers['in use bytes']) / 2**20:.1f} MiB "
          f"in use, RSS {rss_before / 2**20:.1f} MiB before trim and "
          f"{rss_after / 2**20:.1f} MiB after")
    return 0


def quiet(args):
    waited = 0.0
    while True:
        busy_before, total_before = machine_jiffies()
        time.sleep(args.sample)
        busy_after, total_after = machine_jiffies()
        busy = (busy_after - busy_before) / max(total_after - total_before, 1)
        if busy <= args.max_busy:
            return 0
        waited += args.sample
        if waited >= args.timeout:
            print(f"probe: the machine is still {100 * busy:.0f}% busy after {waited:.0f} s of "
                  "waiting; measuring anyway", file=sys.stderr)
            return 0
        time.sleep(args.pause)
        waited += args.pause


def replay(args):
    report = json.loads(Path(args.file).read_text(encoding="utf-8"))
    latency = (report.get("latency_ms") or {}).get("nearbyDrivers")
    row = {
        "scenario": "replay",
        "target": "server",
        "drivers": 0,
        "concurrency": (report.get("settings") or {}).get("concurrency") or 0,
        "batch": None,
        "subscribers": None,
        "requests": 0,
        "errors": 0,
        "duration_s": report["wall_time_s"],
        "throughput_per_s": 0.0,
        "latency_ms": None,
        "rss_bytes": None,
        "bytes_per_driver": None,
        "connection": "",
        "started_at": now_rfc3339(),
        "git_rev": git_rev(Path(__file__).resolve().parent.parent),
        "details": {
            "speedup": report["effective_speedup"],
            "wall_time_s": report["wall_time_s"],
            "match_rate": report.get("match_rate"),
            "real_taxi_rate": report.get("real_taxi_rate"),
            "settings": report.get("settings"),
            "nearby_latency_ms": latency,
            "source": "mobility replay --speed max --output FILE",
        },
    }
    with open(args.output, "a", encoding="utf-8") as output:
        output.write(json.dumps(row) + "\n")
    print(f"replay: {report['effective_speedup']:,.0f}x real time in {report['wall_time_s']:.1f} s")
    return 0


def criterion(args):
    since = Path(args.since).stat().st_mtime
    rows = 0
    with open(args.output, "a", encoding="utf-8") as output:
        for estimates in sorted(Path(args.directory).glob("**/new/estimates.json")):
            if estimates.stat().st_mtime < since:
                continue
            benchmark = json.loads((estimates.parent / "benchmark.json").read_text())
            values = json.loads(estimates.read_text())
            mean = values["mean"]
            row = {
                "scenario": "criterion",
                "target": "in-process",
                "drivers": int(value) if (value := benchmark.get("value_str") or "").isdigit() else 0,
                "concurrency": 1,
                "batch": None,
                "subscribers": None,
                "requests": 0,
                "errors": 0,
                "duration_s": 0.0,
                "throughput_per_s": 1e9 / mean["point_estimate"],
                "latency_ms": None,
                "rss_bytes": None,
                "bytes_per_driver": None,
                "connection": "",
                "started_at": now_rfc3339(),
                "git_rev": git_rev(Path(__file__).resolve().parent.parent),
                "details": {
                    "id": benchmark["full_id"],
                    "mean_ns": mean["point_estimate"],
                    "mean_ci95_ns": [
                        mean["confidence_interval"]["lower_bound"],
                        mean["confidence_interval"]["upper_bound"],
                    ],
                    "median_ns": values["median"]["point_estimate"],
                    "std_dev_ns": values["std_dev"]["point_estimate"],
                },
            }
            output.write(json.dumps(row) + "\n")
            rows += 1
    print(f"probe: {rows} criterion results appended to {args.output}")
    if rows == 0:
        print("probe: no criterion estimates newer than the run start", file=sys.stderr)
        return 1
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command_name", required=True)

    machine_parser = commands.add_parser("machine", help="write the machine description")
    machine_parser.add_argument("file")

    run_parser = commands.add_parser("run", help="run a command and append a probe row")
    run_parser.add_argument("--output", required=True, help="JSON-lines file to append to")
    run_parser.add_argument("--scenario", required=True, help="scenario of the measured run")
    run_parser.add_argument("--target", required=True, help="server, redis or postgis")
    run_parser.add_argument("--drivers", type=int, required=True)
    run_parser.add_argument("--concurrency", type=int, required=True)
    run_parser.add_argument("--batch", type=int)
    run_parser.add_argument("--pid", action="append", default=[], help="target process id")
    run_parser.add_argument("--cpu-source", default="", help="what the --pid CPU time covers")
    run_parser.add_argument("--metrics-url", help="the server's /metrics URL")
    run_parser.add_argument("--operation", default="nearbyDrivers", help="histogram label")
    run_parser.add_argument("--capture-port", type=int,
                            help="time HTTP requests to this loopback port with tcpdump")
    run_parser.add_argument("command", nargs="+", help="the command to run, after --")

    heap_parser = commands.add_parser("heap", help="record the server's heap in use")
    heap_parser.add_argument("--pid", type=int, required=True)
    heap_parser.add_argument("--log", required=True, help="the server's standard error")
    heap_parser.add_argument("--drivers", type=int, required=True)
    heap_parser.add_argument("--output", required=True)

    quiet_parser = commands.add_parser("quiet", help="wait until the CPUs are mostly idle")
    quiet_parser.add_argument("--max-busy", type=float, default=0.25,
                              help="busy fraction of all CPUs that counts as idle")
    quiet_parser.add_argument("--sample", type=float, default=2.0, help="seconds per sample")
    quiet_parser.add_argument("--pause", type=float, default=5.0, help="seconds between samples")
    quiet_parser.add_argument("--timeout", type=float, default=120.0, help="maximum seconds to wait")

    replay_parser = commands.add_parser("replay", help="append the result of mobility replay")
    replay_parser.add_argument("file", help="the --output JSON of mobility replay")
    replay_parser.add_argument("--output", required=True)

    criterion_parser = commands.add_parser("criterion", help="append criterion results")
    criterion_parser.add_argument("directory", help="criterion output, target/criterion")
    criterion_parser.add_argument("since", help="a file touched before the benchmark ran")
    criterion_parser.add_argument("--output", required=True)

    args = parser.parse_args()
    if args.command_name == "machine":
        machine(args)
        return 0
    if args.command_name == "run":
        return run(args)
    if args.command_name == "heap":
        return heap(args)
    if args.command_name == "quiet":
        return quiet(args)
    if args.command_name == "replay":
        return replay(args)
    return criterion(args)


if __name__ == "__main__":
    sys.exit(main())
