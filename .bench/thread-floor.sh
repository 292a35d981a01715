#!/bin/bash
# How fast can any thread-per-connection echo server be on this machine?
#
# Runs, interleaved, ROUNDS times each: EchoChat's `--strategy thread`, a
# minimal C thread-per-connection server (thread-floor.c: blocking recv and
# send, nothing else) and Python's socketserver.ThreadingTCPServer (recv(1024)
# and sendall, listen backlog 4096). Server on SERVER_CPU, echochat-load (one
# thread) on LOAD_CPU; 64 B ping-pong on CONNS connections. Prints msgs/s,
# p99.9, server CPU per message and context switches per message (from /proc
# over the measured seconds), then the medians.
#
#   swift build -c release && bash .bench/thread-floor.sh
#   CONNS=100 ROUNDS=5 bash .bench/thread-floor.sh
#
# Needs gcc and python3. Loopback only; every server it starts is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-1000} ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-6}
SERVER_CPU=${SERVER_CPU:-0} LOAD_CPU=${LOAD_CPU:-1} PORT=${PORT:-7390}
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
gcc -O2 -pthread -o "$work/c-thread" .bench/thread-floor.c
cat > "$work/py-threads.py" <<'PY'
import socketserver, sys

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(1024)
            if not data:
                break
            self.request.sendall(data)

class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 4096

Server(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
PY
ulimit -n 20000
load=.build/release/echochat-load

command_for() {
    case $1 in
    thread) echo ".build/release/echochat-server --strategy thread --port $PORT --log-level warn" ;;
    c-thread) echo "$work/c-thread $PORT" ;;
    py-threads) echo "python3 $work/py-threads.py $PORT" ;;
    esac
}

measure() {  # NAME: one run, one result line
    local name=$1
    PORT=$((PORT + 1))
    # shellcheck disable=SC2046
    taskset -c "$SERVER_CPU" $(command_for "$name") > "$work/server.log" 2>&1 &
    server=$!
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
    taskset -c "$LOAD_CPU" "$load" --port "$PORT" -c "$CONNS" --threads 1 -d "$DURATION" -w 1 --json "$work/run.json" -q \
        > "$work/load.log" 2>&1 < /dev/null &
    local lg=$!
    sleep 2
    local c0 s0 t0 c1 s1 t1
    c0=$(awk '{print $14+$15}' "/proc/$server/stat"); s0=$(cat /proc/"$server"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s+=$2} END {print s}'); t0=$(date +%s.%N)
    sleep 4
    c1=$(awk '{print $14+$15}' "/proc/$server/stat"); s1=$(cat /proc/"$server"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s+=$2} END {print s}'); t1=$(date +%s.%N)
    # (A load that ended inside the window would spoil the CPU figures.)
    if ! kill -0 "$lg" 2>/dev/null; then
        echo "$name FAILED: the load ended early:"; tail -3 "$work/load.log"
        kill "$server"; wait "$server" 2>/dev/null || true; server=; return
    fi
    wait "$lg" || true
    kill "$server"; wait "$server" 2>/dev/null || true
    server=
    python3 - "$name" "$work/run.json" "$c0" "$c1" "$s0" "$s1" "$t0" "$t1" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
c0, c1, s0, s1 = map(int, sys.argv[3:7]); t = float(sys.argv[8]) - float(sys.argv[7])
j = json.load(open(path))
rate = j["msgs_per_s"]
if not j["passed"] or rate == 0:
    print(f"{name} FAILED: see the load client's report"); sys.exit()
print(f"{name} {rate:.0f} {j['latency_us']['p999'] / 1000:.2f} {(c1 - c0) * 1e4 / (rate * t):.2f} {(s1 - s0) / (rate * t):.2f}")
PY
}

echo "$CONNS connections, 64 B ping-pong, $DURATION s, server on CPU $SERVER_CPU, load on CPU $LOAD_CPU"
for round in $(seq "$ROUNDS"); do
    for name in thread c-thread py-threads; do measure "$name" | tee -a "$work/results"; done
done | awk '{ if ($2 ~ /^FAILED/ || NF != 5) print; else printf "%-11s %8.1fk msgs/s  p99.9 %9.2f ms  %6.2f µs/msg  %4.2f switches/msg\n", $1, $2 / 1000, $3, $4, $5 }'
echo "medians:"
python3 - "$work/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) == 5: rows.setdefault(f[0], []).append(list(map(float, f[1:])))
py = statistics.median(r[0] for r in rows.get("py-threads", [[0]]))
for name, runs in rows.items():
    rate = statistics.median(r[0] for r in runs)
    ratio = f"{rate / py:.2f}x py-threads" if py else ""
    print(f"{name:11s} {rate / 1000:8.1f}k msgs/s  p99.9 {statistics.median(r[1] for r in runs):9.2f} ms  "
          f"{statistics.median(r[2] for r in runs):6.2f} µs/msg  {ratio}")
PY
