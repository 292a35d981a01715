#!/usr/bin/env bash
# The cluster figures of docs/cluster.md and .bench/cluster.md: one open-loop
# chat load (10 senders x 100 lines/s, 64 B, 5 s) on 1, 2 and 3 servers of
# one strategy joined through one redis-server (1 server: standalone, no
# --cluster), everything on loopback and unpinned, as a user would run it.
#
#   .bench/cluster.sh [SERVER_BINARY ...]
#
# Default binary: .build/release/echochat-server. Several binaries (two
# builds, to compare) take turns within each round, so they share the
# machine's moods alike. Environment: STRATEGY (epoll), CLIENTS ("30 100"),
# ROUNDS (3), LOAD (.build/release/echochat-load). Prints one line per run:
# binary, clients, nodes, deliveries/s, p50, p99, p99.9, same-server p99,
# cross-server p99 (µs). Every server and Redis it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=(.build/release/echochat-server)
load=${LOAD:-.build/release/echochat-load}
strategy=${STRATEGY:-epoll}
rounds=${ROUNDS:-3}
work=$(mktemp -d)
pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
redis_pid=$!
trap 'stop_all; kill $redis_pid 2>/dev/null; wait $redis_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do grep -q "Ready to accept" "$work/redis.log" && break; sleep 0.1; done

# Starts `nodes` servers of binary $1; sets `hosts`.
start_servers() {
    local binary=$1 nodes=$2 index
    hosts=""
    for index in $(seq "$nodes"); do
        local log="$work/server$index.log" cluster=()
        [ "$nodes" -gt 1 ] && cluster=(--cluster "redis://127.0.0.1:$redis_port" --node-id "n$index")
        "$binary" --mode chat --strategy "$strategy" --port 0 "${cluster[@]}" >"$log" 2>&1 &
        pids+=($!)
        local port=""
        for _ in $(seq 100); do
            port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
            [ -n "$port" ] && break
            sleep 0.05
        done
        [ -n "$port" ] || { echo "server did not start: $(cat "$log")" >&2; exit 1; }
        hosts+="${hosts:+,}127.0.0.1:$port"
    done
    if [ "$nodes" -gt 1 ]; then
        for index in $(seq "$nodes"); do
            for _ in $(seq 100); do
                grep -q "cluster: $nodes nodes" "$work/server$index.log" && break
                sleep 0.05
            done
        done
    fi
}

echo "binary clients nodes deliveries/s p50 p99 p99.9 same_p99 cross_p99"
for round in $(seq "$rounds"); do
    for clients in ${CLIENTS:-30 100}; do
        for nodes in 1 2 3; do
            for binary in "${servers[@]}"; do
                redis-cli -p "$redis_port" flushall >/dev/null
                start_servers "$binary" "$nodes"
                "$load" --mode chat --hosts "$hosts" -c "$clients" --senders 10 --rate 100 -d 5 -q \
                    --json "$work/run.json" >/dev/null
                python3 - "$binary" "$clients" "$nodes" "$work/run.json" <<'EOF'
import json, sys
binary, clients, nodes, path = sys.argv[1:]
r = json.load(open(path))
def p(key, q):
    v = r.get(key) or {}
    return str(round(v[q])) if q in v else "-"
ok = all(r[k] == 0 for k in ("errors", "lost", "mismatches", "duplicated", "reordered", "unexpected_closes"))
print(binary, clients, nodes, round(r["deliveries_per_s"]), p("latency_us", "p50"), p("latency_us", "p99"),
      p("latency_us", "p999"), p("same_server_latency_us", "p99"), p("cross_server_latency_us", "p99"),
      "" if ok else "NOT-VERIFIED")
EOF
                stop_all
            done
        done
    done
done
