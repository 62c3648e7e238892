#!/bin/sh
# bench/million.sh: the moonshot of issue 8, one run, not part of `make bench`.
#
#   sh bench/million.sh [BUILD_DIR]        (env: M_CONNS, M_NODES, M_RATE, ...)
#
# Starts `phx-chat cluster --nodes M_NODES --one-port` (51 by default: one
# process holds at most ~19,900 sockets) and `loadgen broadcast` with
# M_CONNS subscribers (1,000,000) joined to room:lobby, paced at M_RATE
# connections/s over M_NODES workers, each worker on its own source address
# (127.0.0.2+k: one address reaches ~28,000 ports of one destination).  Once
# every subscriber has joined, one publisher sends M_MSGS messages, one every
# M_GAP s, and loadgen reports each message's fan-out time (first send to
# last receipt over all subscribers).
#
# The client heartbeat is M_HB s (300) and the nodes close a WebSocket silent
# for M_WS_TIMEOUT_MS (600,000): Phoenix's defaults (30 s, 60 s) make 1,000,000
# idle clients cost 33,000 heartbeat round trips a second, which is what
# stopped the first attempt at 601,335 joined on this 2-core box.  A Phoenix
# endpoint sets the same with `websocket: [timeout: ...]` and the client's
# `heartbeatIntervalMs`.
#
# Writes results/million/: loadgen.json, cluster.log, samples.csv (every 10 s:
# the nodes' summed RSS, the loadgen's RSS, the load average).
set -eu

BUILD=${1:-build}
CHAT=$BUILD/phx-chat
LG=$BUILD/bench/loadgen
M_CONNS=${M_CONNS:-1000000}
M_NODES=${M_NODES:-51}
M_RATE=${M_RATE:-4000}
M_MSGS=${M_MSGS:-3}
M_GAP=${M_GAP:-20}
M_HB=${M_HB:-300}
M_WS_TIMEOUT_MS=${M_WS_TIMEOUT_MS:-600000}
M_PORT=${M_PORT:-24000}
OUT=${M_RESULTS:-results/million}

[ -x "$CHAT" ] && [ -x "$LG" ] || {
	echo "million: build first (make; $CHAT and $LG)" >&2
	exit 2
}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"
# A broadcast queues ~1 KB of socket buffer per connection until the clients
# read it: 1,000,000 of them pass the kernel's default TCP memory limit
# (tcp_mem, about 2.2 GB here), past which sends stall.  Raised when
# allowed (root), to 4 / 6 / 8 GB in pages of 4 KB; said either way.
TCP_MEM_WAS=$(cat /proc/sys/net/ipv4/tcp_mem)
if [ -w /proc/sys/net/ipv4/tcp_mem ]; then
	echo "1048576 1572864 2097152" >/proc/sys/net/ipv4/tcp_mem
fi
echo "million: tcp_mem $(cat /proc/sys/net/ipv4/tcp_mem) (pages)"

PER=$(((M_CONNS + 1 + M_NODES - 1) / M_NODES))
DURATION=$((M_MSGS * M_GAP))
RATE=$(awk -v g="$M_GAP" 'BEGIN { printf "%.6f\n", 1 / g }')

echo "million: $M_CONNS connections, $M_NODES nodes on port $M_PORT, $M_NODES loadgen workers of $PER," \
	"paced at $M_RATE/s; heartbeat ${M_HB} s, node timeout ${M_WS_TIMEOUT_MS} ms"

"$CHAT" cluster --nodes "$M_NODES" --one-port --port "$M_PORT" --cluster-port $((M_PORT + 1000)) \
	--log-level warning --heartbeat-ms 1000 --down-after-ms 30000 \
	--websocket-timeout-ms "$M_WS_TIMEOUT_MS" >"$OUT/cluster.log" 2>&1 &
CL=$!
SAMPLER=""
cleanup() {
	[ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
	kill -TERM "$CL" 2>/dev/null || true
	wait "$CL" 2>/dev/null || true
	[ -w /proc/sys/net/ipv4/tcp_mem ] && echo "$TCP_MEM_WAS" >/proc/sys/net/ipv4/tcp_mem
	return 0
}
trap cleanup EXIT INT TERM

# Every node answers GET /api/cluster with all the others as members.
i=0
until [ "$(curl -s -m 2 "http://127.0.0.1:$M_PORT/api/cluster" | grep -o '"name"' | wc -l)" -ge "$M_NODES" ]; do
	i=$((i + 1))
	[ $i -lt 120 ] || {
		echo "million: the cluster did not form in 120 s (see $OUT/cluster.log)" >&2
		exit 1
	}
	sleep 1
done
echo "million: the cluster is up ($(grep -c ' pid ' "$OUT/cluster.log") node starts)"

# The nodes' pids (the cluster command's children) and a sampler.
node_pids() { pgrep -P "$CL" | tr '\n' ' '; }
rss_sum() { # rss_sum PID...: summed VmRSS in kB
	for p in "$@"; do awk '/^VmRSS/ { print $2 }' "/proc/$p/status" 2>/dev/null; done |
		awk '{ s += $1 } END { print s + 0 }'
}
(
	echo "t_s,nodes_rss_kb,loadgen_rss_kb,nodes_alive,loadavg1"
	t=0
	while :; do
		# shellcheck disable=SC2046
		n=$(rss_sum $(node_pids))
		# shellcheck disable=SC2046
		l=$(rss_sum $(pgrep -f "^$LG" | tr '\n' ' '))
		echo "$t,$n,$l,$(node_pids | wc -w),$(cut -d' ' -f1 /proc/loadavg)"
		sleep 10
		t=$((t + 10))
	done
) >"$OUT/samples.csv" &
SAMPLER=$!

"$LG" broadcast --url "http://127.0.0.1:$M_PORT" -n "$M_CONNS" --workers "$M_NODES" \
	--per-worker "$PER" --connect-rate "$M_RATE" --max-pending 500 --timeout 120 --src-ports 10000-60000 \
	--heartbeat "$M_HB" --publishers 1 --rate "$RATE" --duration "$DURATION" --drain 120 \
	--json "$OUT/loadgen.json" || echo "million: loadgen exited with status $?" >&2

echo "million: samples (t, nodes RSS kB, loadgen RSS kB, nodes, load):"
tail -n 5 "$OUT/samples.csv"
echo "million: node restarts during the run: $(($(grep -c ' pid ' "$OUT/cluster.log") - M_NODES))"
