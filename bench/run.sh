#!/usr/bin/env bash
# Reproduces every table and plot of BENCHMARKS.md: the mobility server, Redis GEOSEARCH and
# PostGIS with the same seeded drivers and the same queries, then the criterion
# micro-benchmarks, then bench/report.py.
#
#   bench/run.sh            full run, about 30 minutes on 2 cores; writes bench/results/
#   bench/run.sh --quick    smoke run at 10,000 drivers, a few minutes; writes target/bench-quick/
#
# Needs root on Debian 12 for apt-get and for starting PostgreSQL 15 and Redis when they are
# down. Every server this script starts listens on 127.0.0.1 and is stopped on exit; every
# load run is bounded by --duration and by `timeout`. One admin token, made by `mobility token
# generate`, is given to every server as MOBILITY_ADMIN_TOKEN and to the load generator and
# the replay as MOBILITY_TOKEN.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/run.sh [--quick] [--skip-criterion] [--skip-report]

  --quick           smoke run: 10,000 drivers, 2-second runs, 1,000 fan-out subscribers,
                    no criterion; results in target/bench-quick/ instead of bench/results/
  --skip-criterion  do not run `cargo bench --bench matching`
  --skip-report     do not run bench/report.py at the end

Environment: BENCH_PG_DATABASE (default mobility_bench), BENCH_REDIS_KEY (default
mobility-bench:drivers), BENCH_MAX_SECONDS (default 7200: the run stops with an error
when it has taken longer).
EOF
}

QUICK=0
RUN_CRITERION=1
RUN_REPORT=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --skip-criterion) RUN_CRITERION=0 ;;
        --skip-report) RUN_REPORT=0 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bench/run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PG_HOST=127.0.0.1
PG_PORT=5432
PG_DATABASE=${BENCH_PG_DATABASE:-mobility_bench}
PG_URL="postgres://postgres@${PG_HOST}:${PG_PORT}/${PG_DATABASE}"
REDIS_URL=redis://127.0.0.1:6379
REDIS_KEY=${BENCH_REDIS_KEY:-mobility-bench:drivers}
MAX_SECONDS=${BENCH_MAX_SECONDS:-7200}
SEED=42
# Seeded fixes keep their seeding time, so the server must not call them stale during a run.
STALE_SECONDS=604800

if [[ $QUICK == 1 ]]; then
    NEARBY_SIZES=(10000)         # drivers for the nearby runs
    FULL_SIZES=(10000)           # drivers for ingest, memory and fan-out as well
    CONCURRENCY=(1 16)
    DURATION=2                   # seconds per nearby and ingest run
    WIRE_DURATION=2              # seconds per server run timed by tcpdump
    WARMUP=1
    INGEST_BATCHES=(100)
    FANOUT_SUBSCRIBERS=1000
    FANOUT_WATCHED=100
    FANOUT_RATES=(100)
    FANOUT_DURATION=3
    OUT_DIR=$ROOT/target/bench-quick
    RUN_CRITERION=0
else
    NEARBY_SIZES=(10000 100000 1000000)
    FULL_SIZES=(100000 1000000)
    CONCURRENCY=(1 4 16 64)
    DURATION=10
    WIRE_DURATION=5
    WARMUP=3
    INGEST_BATCHES=(100 500)
    # 20,000 WebSocket subscribers, 20 per watched driver: 200 updates/s make 4,000 events/s,
    # 1,000 updates/s make 20,000 events/s.
    FANOUT_SUBSCRIBERS=20000
    FANOUT_WATCHED=1000
    FANOUT_RATES=(200 1000)
    FANOUT_DURATION=30
    OUT_DIR=$ROOT/bench/results
fi
INGEST_CONCURRENCY=16
INGEST_BATCH_CONCURRENCY=8

WORK_DIR=$ROOT/target/bench-work
RESULTS=$OUT_DIR/results.jsonl
LOG_DIR=$WORK_DIR/logs
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/mobility
PROBE=(python3 "$ROOT/bench/probe.py")
STARTED=$SECONDS

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Called before each measured step: stops a run that has gone on too long, then waits (at
# most 2 minutes) for other work on the machine to leave the CPUs idle.
check_time() {
    if (( SECONDS - STARTED > MAX_SECONDS )); then
        die "the run has taken more than BENCH_MAX_SECONDS=${MAX_SECONDS} s; stopping"
    fi
    "${PROBE[@]}" quiet --max-busy 0.25 --timeout 120
}

# --- servers started here, stopped on exit -------------------------------------------------

SERVER_PIDS=()
cleanup() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            # Bounded wait for the graceful shutdown, then SIGKILL.
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- prerequisites ---------------------------------------------------------------------------

install_packages() {
    local missing=()
    command -v psql >/dev/null || missing+=(postgresql-client)
    command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-cli >/dev/null || missing+=(redis-tools)
    command -v python3 >/dev/null || missing+=(python3)
    command -v curl >/dev/null || missing+=(curl)
    command -v tcpdump >/dev/null || missing+=(tcpdump)
    command -v gdb >/dev/null || missing+=(gdb)
    local pg_version
    pg_version=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1 || true)
    if [[ -z $pg_version || ! -f /usr/share/postgresql/$pg_version/extension/postgis.control ]]; then
        missing+=("postgresql-${pg_version:-15}-postgis-3")
    fi
    if (( ${#missing[@]} > 0 )); then
        [[ $(id -u) == 0 ]] || die "missing ${missing[*]}; run as root or install them"
        log "installing ${missing[*]}"
        timeout 600 apt-get update
        DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get install -y "${missing[@]}"
    fi
}

start_services() {
    if ! pg_isready -h "$PG_HOST" -p "$PG_PORT" -q; then
        log "starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -n | tail -1)" main start
        for _ in $(seq 60); do pg_isready -h "$PG_HOST" -p "$PG_PORT" -q && break; sleep 1; done
        pg_isready -h "$PG_HOST" -p "$PG_PORT" -q || die "PostgreSQL did not start on ${PG_HOST}:${PG_PORT}"
    fi
    if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        log "starting Redis"
        mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
            --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
        for _ in $(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
        redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || die "Redis did not start on 127.0.0.1:6379"
    fi
    local psql=(psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -Atq)
    if [[ $("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '${PG_DATABASE}'") != 1 ]]; then
        log "creating database ${PG_DATABASE}"
        createdb -h "$PG_HOST" -p "$PG_PORT" -U postgres "$PG_DATABASE"
    fi
    "${psql[@]}" -d "$PG_DATABASE" -c "CREATE EXTENSION IF NOT EXISTS postgis"
}

raise_open_files() {
    # 20,000 WebSocket subscribers need that many sockets in the load generator and in the
    # server, which inherit this limit.
    local wanted=65536
    if (( $(ulimit -Hn) < wanted )); then
        ulimit -Hn "$wanted" 2>/dev/null || log "cannot raise the hard open-files limit above $(ulimit -Hn)"
    fi
    ulimit -Sn "$(ulimit -Hn)"
    log "open-files limit $(ulimit -n)"
    # The server and the load generator each hold one socket per subscriber plus a few dozen
    # other files. Without CAP_SYS_RESOURCE the hard limit may stay below what 20,000 need.
    local most=$(( $(ulimit -n) - 100 ))
    if (( FANOUT_SUBSCRIBERS > most )); then
        log "fan-out lowered from $FANOUT_SUBSCRIBERS to $most subscribers by the open-files limit"
        FANOUT_SUBSCRIBERS=$most
    fi
}

# --- the mobility server ---------------------------------------------------------------------

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

SERVER_PID=
SERVER_URL=
# start_server DB_FILE EXPECTED_DRIVERS LABEL [SERVE_FLAG...]: starts `mobility serve` on a
# free loopback port and waits until /healthz reports the expected number of indexed drivers.
# Without flags the server keeps seeded fixes fresh for the whole run.
start_server() {
    local db=$1 expected=$2 label=$3 port
    shift 3
    local flags=("$@")
    (( ${#flags[@]} > 0 )) || flags=(--location-stale-seconds "$STALE_SECONDS")
    port=$(free_port)
    SERVER_URL=http://127.0.0.1:$port
    RUST_LOG=mobility=info,tower_http=warn MOBILITY_ADMIN_TOKEN="$MOBILITY_TOKEN" "$BIN" serve \
        --listen "127.0.0.1:$port" \
        --database-url "sqlite://$db?mode=rwc" \
        "${flags[@]}" \
        >"$LOG_DIR/server-$label.log" 2>&1 &
    SERVER_PID=$!
    SERVER_PIDS+=("$SERVER_PID")
    local indexed=
    for _ in $(seq 1200); do
        kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited at start; see $LOG_DIR/server-$label.log"
        indexed=$(curl -sf --max-time 2 "$SERVER_URL/healthz" | python3 -c \
            'import json, sys; print(json.load(sys.stdin)["onlineDriversIndexed"])' 2>/dev/null || true)
        [[ $indexed == "$expected" ]] && break
        sleep 0.5
    done
    [[ $indexed == "$expected" ]] || die "the server indexed '${indexed}' drivers, expected $expected"
    log "server pid $SERVER_PID at $SERVER_URL with $expected drivers"
}

stop_server() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID"
        for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
}

# --- load generator wrappers -----------------------------------------------------------------

loadgen() {
    # A run lasts --duration; the margin covers connecting and draining.
    timeout --kill-after=10 $((DURATION + 180)) "$BIN" loadgen "$@"
}

target_args() {
    case $1 in
        server) echo "--target server --url $SERVER_URL" ;;
        redis) echo "--target redis --redis-url $REDIS_URL --key $REDIS_KEY" ;;
        postgis) echo "--target postgis --postgres-url $PG_URL" ;;
    esac
}

redis_pid() { redis-cli -h 127.0.0.1 -p 6379 info server | tr -d '\r' | sed -n 's/^process_id://p'; }
postmaster_pid() { head -1 "$(psql -h "$PG_HOST" -U postgres -Atc 'SHOW data_directory')/postmaster.pid"; }

# probe_args TARGET: the process whose CPU time counts as the target's.
probe_args() {
    case $1 in
        server) echo "--pid $SERVER_PID --cpu-source mobility-serve" ;;
        redis) echo "--pid $(redis_pid) --cpu-source redis-server" ;;
        postgis) echo "--pid $(postmaster_pid) --cpu-source postmaster-and-reaped-backends" ;;
    esac
}

# measured SCENARIO TARGET DRIVERS CONCURRENCY BATCH -- COMMAND: runs COMMAND under probe.py.
measured() {
    local scenario=$1 target=$2 drivers=$3 concurrency=$4 batch=$5
    shift 6
    local extra=()
    [[ $batch != - ]] && extra+=(--batch "$batch")
    if [[ $target == server && $scenario == nearby ]]; then
        extra+=(--metrics-url "$SERVER_URL/metrics")
    fi
    if [[ $target == server && $scenario == nearby_wire ]]; then
        extra+=(--metrics-url "$SERVER_URL/metrics" --capture-port "${SERVER_URL##*:}")
    fi
    # shellcheck disable=SC2046
    "${PROBE[@]}" run --output "$RESULTS" --scenario "$scenario" --target "$target" \
        --drivers "$drivers" --concurrency "$concurrency" $(probe_args "$target") "${extra[@]}" \
        -- "$@"
}

# --- scenarios -------------------------------------------------------------------------------

run_nearby() {
    local n=$1 target c
    for target in server redis postgis; do
        # shellcheck disable=SC2046
        loadgen nearby $(target_args "$target") --concurrency 16 --duration "$WARMUP" \
            --seed "$SEED" >/dev/null
    done
    for c in "${CONCURRENCY[@]}"; do
        for target in server redis postgis; do
            check_time
            # shellcheck disable=SC2046
            measured nearby "$target" "$n" "$c" - -- "$BIN" loadgen nearby $(target_args "$target") \
                --concurrency "$c" --duration "$DURATION" --seed "$SEED" --output "$RESULTS"
        done
    done
    # Server-side latency from packet times, in runs of their own so that tcpdump's CPU use
    # does not lower the throughput above. Only the probe row is kept.
    for c in "${CONCURRENCY[@]}"; do
        check_time
        # shellcheck disable=SC2046
        measured nearby_wire server "$n" "$c" - -- "$BIN" loadgen nearby $(target_args server) \
            --concurrency "$c" --duration "$WIRE_DURATION" --seed "$SEED" >/dev/null
    done
}

run_ingest() {
    local n=$1 target batch
    for target in server redis postgis; do
        check_time
        # shellcheck disable=SC2046
        measured ingest_single "$target" "$n" "$INGEST_CONCURRENCY" - -- "$BIN" loadgen ingest \
            $(target_args "$target") --concurrency "$INGEST_CONCURRENCY" --batch 1 \
            --duration "$DURATION" --seed "$SEED" --output "$RESULTS"
        for batch in "${INGEST_BATCHES[@]}"; do
            check_time
            # shellcheck disable=SC2046
            measured ingest_batch "$target" "$n" "$INGEST_BATCH_CONCURRENCY" "$batch" -- "$BIN" \
                loadgen ingest $(target_args "$target") --concurrency "$INGEST_BATCH_CONCURRENCY" \
                --batch "$batch" --duration "$DURATION" --seed "$SEED" --output "$RESULTS"
        done
    done
}

run_fanout() {
    local n=$1 rate
    for rate in "${FANOUT_RATES[@]}"; do
        check_time
        timeout --kill-after=10 $((FANOUT_DURATION + 600)) "$BIN" loadgen fanout \
            --url "$SERVER_URL" --subscribers "$FANOUT_SUBSCRIBERS" \
            --drivers-watched "$FANOUT_WATCHED" --rate "$rate" --duration "$FANOUT_DURATION" \
            --server-pid "$SERVER_PID" --seed "$SEED" --output "$RESULTS"
    done
}

# The Porto replay of docs/REPLAY.md at full speed on a new database, for its speed-up over
# real time. The fixes are compressed in time, so the speed check is widened as that page
# describes.
run_replay() {
    if [[ ! -d $ROOT/data/porto ]] || ! "$BIN" replay --help >/dev/null 2>&1; then
        log "skipping the Porto replay: data/porto or \`mobility replay\` is missing"
        return
    fi
    check_time
    local db=$WORK_DIR/replay.db
    rm -f "$db" "$db-shm" "$db-wal"
    start_server "$db" 0 replay --max-speed-mps 1000000
    timeout --kill-after=10 900 "$BIN" replay --server "$SERVER_URL" --speed max \
        --output "$WORK_DIR/replay.json" >"$LOG_DIR/replay.log" 2>&1
    "${PROBE[@]}" replay "$WORK_DIR/replay.json" --output "$RESULTS"
    stop_server
    rm -f "$db" "$db-shm" "$db-wal"
}

memory_baseline() {
    local db=$WORK_DIR/empty.db
    rm -f "$db" "$db-shm" "$db-wal"
    start_server "$db" 0 empty
    loadgen memory --target server --url "$SERVER_URL" --server-pid "$SERVER_PID" --drivers 0 \
        --output "$RESULTS"
    "${PROBE[@]}" heap --pid "$SERVER_PID" --log "$LOG_DIR/server-empty.log" --drivers 0 \
        --output "$RESULTS"
    stop_server
}

run_size() {
    local n=$1 full=$2
    local db=$WORK_DIR/seed-$n.db
    check_time
    log "=== $n drivers ==="
    rm -f "$db" "$db-shm" "$db-wal"
    timeout 3600 "$BIN" seed --database-url "sqlite://$db?mode=rwc" --drivers "$n" --seed "$SEED"
    start_server "$db" "$n" "$n"

    if [[ $full == 1 ]]; then
        # Right after start, before any request, as the server baseline was taken.
        loadgen memory --target server --url "$SERVER_URL" --server-pid "$SERVER_PID" \
            --drivers "$n" --output "$RESULTS"
        # The heap in use, without what the allocator kept after the start-up load.
        "${PROBE[@]}" heap --pid "$SERVER_PID" --log "$LOG_DIR/server-$n.log" --drivers "$n" \
            --output "$RESULTS"
    fi
    timeout 1800 "$BIN" loadgen load --target redis --redis-url "$REDIS_URL" --key "$REDIS_KEY" \
        --drivers "$n" --seed "$SEED"
    timeout 3600 "$BIN" loadgen load --target postgis --postgres-url "$PG_URL" \
        --drivers "$n" --seed "$SEED"

    if [[ $full == 1 ]]; then
        loadgen memory --target redis --redis-url "$REDIS_URL" --key "$REDIS_KEY" --output "$RESULTS"
        loadgen memory --target postgis --postgres-url "$PG_URL" --output "$RESULTS"
    fi

    run_nearby "$n"
    if [[ $full == 1 ]]; then
        run_ingest "$n"
        run_fanout "$n"
    fi
    stop_server
    rm -f "$db" "$db-shm" "$db-wal"
}

# --- main ------------------------------------------------------------------------------------

mkdir -p "$OUT_DIR" "$WORK_DIR" "$LOG_DIR"
install_packages
start_services
raise_open_files

log "building target/release/mobility and the criterion benchmark"
timeout 3600 cargo build --release --bin mobility
# Every server stores this token as its admin token at start, and every `mobility loadgen` and
# `mobility replay` below sends it, because the server rejects requests without a token.
MOBILITY_TOKEN=$("$BIN" token generate)
export MOBILITY_TOKEN
if [[ $RUN_CRITERION == 1 ]]; then
    # Built now and run at the end, so that both measure the same source even if the working
    # tree changes during the run.
    BENCH_EXE=$(timeout 3600 cargo bench --bench matching --no-run --message-format=json \
        | python3 -c 'import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "matching" \
            and message.get("executable"):
        print(message["executable"])')
    [[ -x $BENCH_EXE ]] || die "cargo bench --no-run built no executable for benches/matching.rs"
fi

: >"$RESULTS"
"${PROBE[@]}" machine "$OUT_DIR/machine.json" >/dev/null
memory_baseline
for n in "${NEARBY_SIZES[@]}"; do
    full=0
    for m in "${FULL_SIZES[@]}"; do [[ $m == "$n" ]] && full=1; done
    run_size "$n" "$full"
done

run_replay

if [[ $RUN_CRITERION == 1 ]]; then
    check_time
    log "cargo bench --bench matching ($BENCH_EXE)"
    since=$WORK_DIR/criterion-start
    touch "$since"
    timeout 3600 "$BENCH_EXE" --bench 2>&1 | tee "$LOG_DIR/criterion.log"
    "${PROBE[@]}" criterion "${CARGO_TARGET_DIR:-$ROOT/target}/criterion" "$since" --output "$RESULTS"
fi

if [[ $RUN_REPORT == 1 ]]; then
    if [[ $QUICK == 1 ]]; then
        python3 bench/report.py --results "$RESULTS" --machine "$OUT_DIR/machine.json" \
            --markdown "$OUT_DIR/BENCHMARKS.md" --plots "$OUT_DIR/plots"
    else
        python3 bench/report.py
    fi
fi
log "done in $(( (SECONDS - STARTED) / 60 )) min; results in $RESULTS"
