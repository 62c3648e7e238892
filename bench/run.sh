#!/bin/sh
# Runs the benchmarks (called by `make bench` as `sh bench/run.sh BUILD_DIR`).
#
#   sh bench/run.sh [BUILD_DIR [SECTION...]]
#
# Each section is a shell function section_NAME below: it runs its binaries,
# prints a human summary and writes results/NAME.json.  Sections run in the
# order of SECTIONS (default: the ones in DEFAULT_SECTIONS); to add one, write
# its function and append its name to ALL_SECTIONS (and DEFAULT_SECTIONS if
# `make bench` should run it).  The phoenix section (`make bench-phoenix`)
# runs the channels scenarios against phx-chat and a real Phoenix 1.7.24 node
# side by side; it is not a default section (it builds Phoenix, and takes
# longer).  BENCH_QUICK=1 runs a much smaller smoke
# version (runtime: --quick, 10x smaller sizes; channels: 2,000 connections and
# 2 s scenarios; cluster: 3,000 connections, 1,000 subscribers, 2 s scenarios;
# BENCH_CLUSTER_NODES and BENCH_CLUSTER_CONNECTIONS change its sizes); BENCH_REPEAT=N runs each timed runtime scenario N times
# (default 3) and reports the best (channels scenarios run once each).  The last
# line printed is one JSON object {"SECTION": <results/SECTION.json>, ...} of
# the sections that ran.  The exit status is 0 when everything ran, non-zero
# when a benchmark or the server crashed or a benchmark printed no result (a
# missed performance target or a failed scenario is reported, not an error).
set -u
BUILD=${1:-build}
[ $# -gt 0 ] && shift
cd "$(dirname "$0")/.."

ALL_SECTIONS="runtime channels cluster longpoll phoenix"
DEFAULT_SECTIONS="runtime channels cluster longpoll"
SECTIONS=${*:-$DEFAULT_SECTIONS}
QUICK=""
[ -n "${BENCH_QUICK:-}" ] && [ "${BENCH_QUICK}" != 0 ] && QUICK="--quick"
REPEAT=${BENCH_REPEAT:-3}
RESULTS=results
mkdir -p "$RESULTS"
TMP=$(mktemp -d)
SERVER_PID=""
PHX_PID=""
CL_PID=""
SERVER_LOG=$RESULTS/server.log
# Never leave a server behind (the channels, cluster and phoenix sections start them).
cleanup() {
	[ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null
	[ -n "$CL_PID" ] && kill -TERM "$CL_PID" 2>/dev/null
	[ -n "$PHX_PID" ] && kill -TERM "$PHX_PID" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'cleanup; trap - EXIT; exit 130' INT TERM

# ------------------------------------------------------------------ helpers

# json_num KEY JSON: the value of "KEY" in a flat JSON object (numbers, booleans).
json_num() {
	printf '%s\n' "$2" | sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" | tr -d '" '
}

# ratio A B [PRECISION]: A / B, or null when B is missing or zero.
ratio() {
	awk -v a="$1" -v b="$2" -v p="${3:-2}" 'BEGIN {
		if (a == "" || b == "" || b + 0 == 0) print "null"; else printf "%.*f\n", p, a / b }'
}

# human N: 12345678 -> 12.35 M
human() {
	awk -v n="$1" 'BEGIN {
		if (n == "" || n == "null") print "-";
		else if (n >= 1e6) printf "%.2f M\n", n / 1e6;
		else if (n >= 1e3) printf "%.1f k\n", n / 1e3;
		else printf "%.0f\n", n }'
}

# met VALUE OP LIMIT: true/false (OP is ge or le); null without a value.
met() {
	awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
		if (v == "" || v == "null") print "null";
		else if (op == "ge") print (v + 0 >= l + 0 ? "true" : "false");
		else print (v + 0 <= l + 0 ? "true" : "false") }'
}

# run_logged OUT CMD...: runs CMD, output shown and saved in OUT; returns CMD's status.
run_logged() {
	out=$1
	shift
	{ "$@" 2>&1; echo $? >"$out.rc"; } | tee "$out"
	return "$(cat "$out.rc")"
}

# The last line of a file when it is a JSON object, else nothing.
last_json() {
	tail -n 1 "$1" | grep -E '^\{.*\}$'
}

# The 1-minute load average (other work on the machine skews every figure).
loadavg() {
	cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo null
}

# machine_json LOAD: the machine, with the load average seen before the run.
machine_json() {
	cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed -e 's/.*: //' -e 's/["\\]//g')
	printf '{"cores":%s,"cpu":"%s","kernel":"%s","date":"%s","loadavg_1m_before":%s}' \
		"$(nproc 2>/dev/null || echo 0)" "$cpu" "$(uname -r)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
		"$1"
}

# ------------------------------------------------------------------ runtime

section_runtime() {
	load0=$(loadavg)
	bin=$BUILD/bench/bench_runtime
	if [ ! -x "$bin" ]; then
		echo "bench: $bin is missing (run make all)" >&2
		return 1
	fi
	failed=0
	run_logged "$TMP/rt.out" "$bin" $QUICK --repeat "$REPEAT" || failed=1
	ours=$(last_json "$TMP/rt.out")
	if [ -z "$ours" ]; then
		echo "bench: bench_runtime printed no JSON result" >&2
		return 1
	fi

	erl_json=""
	if command -v erl >/dev/null 2>&1 && command -v erlc >/dev/null 2>&1; then
		mkdir -p "$BUILD/bench/erl"
		if erlc -o "$BUILD/bench/erl" bench/ring.erl; then
			echo
			run_logged "$TMP/erl.out" env ERL_CRASH_DUMP="$BUILD/bench/erl/erl_crash.dump" \
				erl -noshell +S 2 +P 4000000 -pa "$BUILD/bench/erl" \
				-run ring main ${QUICK:+quick} "$REPEAT" -s init stop || failed=1
			erl_json=$(last_json "$TMP/erl.out")
			[ -n "$erl_json" ] || failed=1
		else
			failed=1
		fi
	else
		echo "bench: erl not found (apt-get install erlang-base): no Erlang comparison"
	fi

	o_ring=$(json_num local_msgs_per_s "$ours")
	o_mem=$(json_num bytes_per_idle_process "$ours")
	o_spawn=$(json_num spawn_exit_per_s "$ours")
	o_m2m=$(json_num msgs_per_s_2_schedulers "$ours")
	e_ring=$(json_num local_msgs_per_s "$erl_json")
	e_mem=$(json_num bytes_per_idle_process "$erl_json")
	e_spawn=$(json_num spawn_exit_per_s "$erl_json")
	e_m2m=$(json_num msgs_per_s_2_schedulers "$erl_json")
	r_ring=$(ratio "$o_ring" "$e_ring")
	r_mem=$(ratio "$e_mem" "$o_mem" 1)
	r_spawn=$(ratio "$o_spawn" "$e_spawn")
	r_m2m=$(ratio "$o_m2m" "$e_m2m")
	t_mem=$(met "$o_mem" le 256)
	t_spawn=$(met "$o_spawn" ge 5000000)
	t_ring=$(met "$r_ring" ge 3)
	[ "$r_ring" = null ] && t_ring=null

	mark() { case $1 in true) echo met ;; false) echo MISSED ;; *) echo "n/a" ;; esac; }
	echo
	echo "runtime: phx-c vs Erlang/OTP (ratio = phx-c / Erlang, memory: Erlang / phx-c)"
	printf '  %-34s %12s %12s %8s   %s\n' "" "phx-c" "Erlang" "ratio" "target"
	printf '  %-34s %12s %12s %8s   %s\n' "ring msgs/s, 1 scheduler" "$(human "$o_ring")" \
		"$(human "$e_ring")" "$r_ring" ">= 3x Erlang: $(mark "$t_ring")"
	printf '  %-34s %12s %12s %8s   %s\n' "bytes per idle process" "$o_mem" "${e_mem:--}" \
		"$r_mem" "<= 256: $(mark "$t_mem")"
	printf '  %-34s %12s %12s %8s   %s\n' "spawn+exit /s (best of 1, 2 sched)" \
		"$(human "$o_spawn")" "$(human "$e_spawn")" "$r_spawn" ">= 5 M/s: $(mark "$t_spawn")"
	printf '  %-34s %12s %12s %8s   %s\n' "many-to-many msgs/s, 2 schedulers" "$(human "$o_m2m")" \
		"$(human "$e_m2m")" "$r_m2m" "-"

	# One line, so that the combined result at the end stays one line.
	{
		printf '{"machine":%s,"phx":%s,"erlang":%s,' "$(machine_json "$load0")" "$ours" "${erl_json:-null}"
		printf '"ratios":{"local_msgs_per_s":%s,"memory_erlang_over_phx":%s,"spawn_exit_per_s":%s,"msgs_per_s_2_schedulers":%s},' \
			"$r_ring" "$r_mem" "$r_spawn" "$r_m2m"
		printf '"targets":{"bytes_per_idle_process_le_256":%s,"spawn_exit_per_s_ge_5M":%s,"ring_ge_3x_erlang":%s}}\n' \
			"$t_mem" "$t_spawn" "$t_ring"
	} >"$RESULTS/runtime.json"
	echo "  results written to $RESULTS/runtime.json"
	return $failed
}

# ------------------------------------------------------------------ channels
#
# The reference app (build/phx-chat) under build/bench/loadgen, next to the
# raw reference build/bench/rawfanout.  See "The channels section" in
# bench/README.md for what each figure means.

# proc_alive PID: true while PID runs (a zombie has exited).
proc_alive() {
	st=$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\) .*/\1/p' "/proc/$1/stat" 2>/dev/null)
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# http_up PORT: true when something answers HTTP on 127.0.0.1:PORT.
http_up() {
	if command -v curl >/dev/null 2>&1; then
		curl -s -o /dev/null -m 2 "http://127.0.0.1:$1/"
	elif command -v wget >/dev/null 2>&1; then
		wget -q -O /dev/null -T 2 -t 1 "http://127.0.0.1:$1/"
	else
		ss -Hltn "( sport = :$1 )" 2>/dev/null | grep -q .
	fi
}

# port_free PORT: no socket of this machine uses PORT (no ss: assume free; a
# server that cannot bind exits with status 1 and the next port is tried).
port_free() {
	command -v ss >/dev/null 2>&1 || return 0
	[ -z "$(ss -Htan "( sport = :$1 )" 2>/dev/null)" ]
}

# now_ms: monotonic enough for durations (GNU date).
now_ms() {
	echo $(($(date +%s%N) / 1000000))
}

# server_start: starts $CHAT on a free port, waits until it answers HTTP.
# Sets SERVER_PID, SERVER_PORT and URL; returns non-zero when it cannot.
# await_http PID PORT NAME TENTHS: waits up to TENTHS x 0.1 s for PID to
# answer HTTP on PORT.  0: up; 1: no answer in time (PID killed); 2: PID
# exited (its status in START_RC).
await_http() {
	_i=0
	while [ $_i -lt "$4" ] && proc_alive "$1"; do
		http_up "$2" && return 0
		sleep 0.1
		_i=$((_i + 1))
	done
	if proc_alive "$1"; then
		echo "bench: $3 did not answer HTTP on port $2 within $(($4 / 10)) s" >&2
		kill -KILL "$1" 2>/dev/null
		wait "$1"
		return 1
	fi
	wait "$1"
	START_RC=$?
	return 2
}

server_start() {
	SERVER_PID=""
	port=$((15000 + $$ % 5000))
	tries=0
	while [ $tries -lt 20 ]; do
		tries=$((tries + 1))
		port=$((port + 1))
		port_free "$port" || continue
		echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) $CHAT --port $port --log-level warning" >>"$SERVER_LOG"
		"$CHAT" --port "$port" --log-level warning >>"$SERVER_LOG" 2>&1 &
		pid=$!
		SERVER_STARTS=$((SERVER_STARTS + 1))
		await_http "$pid" "$port" phx-chat 150
		case $? in
		0)
			SERVER_PID=$pid
			SERVER_PORT=$port
			URL=http://127.0.0.1:$port
			echo "  phx-chat pid $pid listening on $URL (log: $SERVER_LOG)"
			return 0
			;;
		1) return 1 ;;
		esac
		[ "$START_RC" = 1 ] && continue # port taken meanwhile: next one
		echo "bench: phx-chat exited with status $START_RC at start (see $SERVER_LOG)" >&2
		return 1
	done
	echo "bench: no free port for phx-chat" >&2
	return 1
}

# server_stop: SIGTERM, then up to 20 s for the exit (then SIGKILL).  Sets
# SERVER_EXIT (its exit status; 0 is a clean shutdown) and SERVER_STOP_MS.
# term_wait PID SECONDS NAME: SIGTERM to PID (a child of this shell), up to
# SECONDS for its exit, then SIGKILL with a line on stderr; returns its exit
# status.
term_wait() {
	kill -TERM "$1" 2>/dev/null
	_tw=0
	while proc_alive "$1" && [ $_tw -lt $(($2 * 10)) ]; do
		sleep 0.1
		_tw=$((_tw + 1))
	done
	if proc_alive "$1"; then
		echo "bench: $3 did not exit within $2 s of SIGTERM: SIGKILL" >&2
		kill -KILL "$1" 2>/dev/null
	fi
	wait "$1"
}

server_stop() {
	[ -n "$SERVER_PID" ] || return 0
	t0=$(now_ms)
	term_wait "$SERVER_PID" 20 phx-chat
	SERVER_EXIT=$?
	SERVER_STOP_MS=$(($(now_ms) - t0))
	SERVER_PID=""
}

# server_check SCENARIO: after a scenario, a server that died is a crash:
# recorded, and a fresh server is started for the scenarios that follow.
server_check() {
	if [ -z "$SERVER_PID" ]; then
		server_start || return 1
		return 0
	fi
	proc_alive "$SERVER_PID" && return 0
	wait "$SERVER_PID"
	rc=$?
	SERVER_DIED=$rc
	echo "bench: phx-chat CRASHED during $1 (exit status $rc; see $SERVER_LOG)" >&2
	CRASHES="$CRASHES${CRASHES:+,}{\"scenario\":\"$1\",\"exit_status\":$rc}"
	SERVER_PID=""
	failed=1
	server_start
}

# settle: waits (up to 20 s) until the server has closed every connection of
# the previous scenario, so that its teardown does not overlap the next one.
settle() {
	[ -n "$SERVER_PID" ] && command -v ss >/dev/null 2>&1 || {
		sleep 1
		return
	}
	i=0
	while [ $i -lt 200 ]; do
		[ -z "$(ss -Htn state connected exclude time-wait "( sport = :$SERVER_PORT )" 2>/dev/null | head -n 1)" ] && return
		sleep 0.1
		i=$((i + 1))
	done
	echo "bench: the server still holds connections 20 s after the last scenario" >&2
}

# note_result NAME RC: records how scenario NAME ended (results/NAME.json).
note_result() {
	f=$RESULTS/$1.json
	if [ -n "$SERVER_DIED" ]; then
		st="server crashed (exit status $SERVER_DIED)"
		SERVER_DIED=""
	elif [ ! -s "$f" ]; then
		st="no result"
		failed=1
	elif [ "$2" = 0 ]; then
		st=ok
	elif [ "$2" = 124 ]; then
		st="timed out (partial result)"
	elif [ "$2" -ge 125 ]; then
		st="crashed (exit status $2)"
		failed=1
	else
		st="incomplete (exit status $2)"
	fi
	[ "$st" = ok ] || echo "bench: scenario $1: $st" >&2
	SCENARIOS="$SCENARIOS${SCENARIOS:+,}\"$1\":{\"exit_status\":$2,\"status\":\"$st\",\"file\":\"$f\"}"
}

# lg NAME ARGS...: one loadgen scenario against the server: summary on the
# terminal, JSON in results/NAME.json, charts in results/NAME/ (gnuplot).
lg() {
	name=$1
	shift
	rm -rf "$RESULTS/$name.json" "$RESULTS/$name"
	echo
	echo "-- $name: loadgen $*"
	if [ -z "$SERVER_PID" ]; then
		echo "bench: scenario $name: no server" >&2
		SCENARIOS="$SCENARIOS${SCENARIOS:+,}\"$name\":{\"exit_status\":null,\"status\":\"no server\",\"file\":null}"
		failed=1
		return
	fi
	set -- "$@" --url "$URL" --server-pid "$SERVER_PID" --json "$RESULTS/$name.json"
	[ -n "$PLOT" ] && set -- "$@" --plot "$RESULTS/$name"
	{
		timeout --foreground -s INT -k 30 "$LG_LIMIT" "$LG" "$@" 2>&1
		echo $? >"$TMP/$name.rc"
	} | grep -v '^{"'
	server_check "$name"
	note_result "$name" "$(cat "$TMP/$name.rc")"
	settle
}

# raw NAME ARGS...: one rawfanout run, JSON in results/NAME.json.
raw() {
	name=$1
	shift
	rm -f "$RESULTS/$name.json"
	echo
	echo "-- $name: rawfanout $*"
	{
		timeout -k 10 "$RAW_LIMIT" "$RAW" "$@" --json "$RESULTS/$name.json" 2>&1
		echo $? >"$TMP/$name.rc"
	} | grep -v '^{"'
	note_result "$name" "$(cat "$TMP/$name.rc")"
}

# jn NAME KEY: the top-level number KEY of results/NAME.json ("" when absent).
jn() {
	[ -s "$RESULTS/$1.json" ] || return 0
	json_num "$2" "$(cat "$RESULTS/$1.json")"
}

# jp NAME OBJ KEY: KEY of the percentile object OBJ (e.g. latency_ms p99).
jp() {
	[ -s "$RESULTS/$1.json" ] || return 0
	o=$(sed -n "s/.*\"$2\":{\([^}]*\)}.*/\1/p" "$RESULTS/$1.json")
	[ -n "$o" ] && json_num "$3" "{$o}"
}

# v VALUE: VALUE, or null when empty (for JSON).
v() {
	if [ -z "$1" ]; then echo null; else echo "$1"; fi
}

# fig KEY VALUE: adds "KEY": VALUE to the figures object.
fig() {
	FIGS="$FIGS${FIGS:+,}\"$1\":$(v "$2")"
}

# fmt KIND VALUE: a figure for the table (rate, ms, us, bytes, x, count).
fmt() {
	awk -v k="$1" -v n="$2" 'BEGIN {
		if (n == "" || n == "null") { print "-"; exit }
		if (k == "ms") printf (n < 10 ? "%.2f ms\n" : "%.1f ms\n"), n;
		else if (k == "bytes") printf "%.0f B\n", n;
		else if (k == "us") printf "%.2f us\n", n;
		else if (k == "x") printf "%.2fx\n", n;
		else if (k == "count") printf "%d\n", n;
		else if (n >= 1e6) printf "%.2f M/s\n", n / 1e6;
		else if (n >= 1e3) printf "%.1f k/s\n", n / 1e3;
		else printf "%.1f /s\n", n }'
}

# row FIGURE MEASURED GOAL MET RAW RATIO: one line of the comparison table.
row() {
	case $4 in true) m=met ;; false) m=MISSED ;; null) m="n/a" ;; *) m=$4 ;; esac
	printf '  %-46s %19s %11s %-7s %10s %6s\n' "$1" "$2" "$3" "$m" "$5" "$6" >>"$TMP/table"
}

# goal KEY VALUE OP LIMIT [NO]: adds "KEY": {"value","limit","met"} to the goals
# object; sets T to met (true/false/null; false whenever NO is given and not 0).
goal() {
	T=$(met "$2" "$3" "$4")
	[ "${5:-0}" != 0 ] && [ "$T" = true ] && T=false
	GOALS="$GOALS${GOALS:+,}\"$1\":{\"value\":$(v "$2"),\"limit\":$4,\"met\":$T}"
}

section_channels() {
	load0=$(loadavg)
	CHAT=$BUILD/phx-chat
	LG=$BUILD/bench/loadgen
	RAW=$BUILD/bench/rawfanout
	for b in "$CHAT" "$LG" "$RAW"; do
		if [ ! -x "$b" ]; then
			echo "bench: $b is missing (run make all)" >&2
			return 1
		fi
	done
	if ! command -v timeout >/dev/null 2>&1; then
		echo "bench: timeout (coreutils) not found" >&2
		return 1
	fi
	# 19,000 connections need 19,000 descriptors in the server and in the loadgen.
	ulimit -n "$(ulimit -Hn)" 2>/dev/null
	PLOT=""
	if command -v gnuplot >/dev/null 2>&1; then
		PLOT=1
	else
		echo "bench: gnuplot not found (apt-get install gnuplot-nox): no charts"
	fi
	if [ -n "$QUICK" ]; then
		N=2000 D=2 HOLD=1 RAW_FAN_M=10 RAW_PEAK_M=1600
	else
		N=19000 D=8 HOLD=3 RAW_FAN_M=25 RAW_PEAK_M=800
	fi
	PP_N=1000
	PP_SMALL=100
	BATCH=16
	HALF_W=$((N / 2))     # connect: 2 workers of N/2
	PUB_W=$((N / 2 + 1))  # broadcast: N subscribers + 1 publisher over 2 workers
	LG_LIMIT=$((D + 150)) # setup (--timeout 30) + run + drain (10 s) + reports, generously
	RAW_LIMIT=120
	failed=0
	SERVER_STARTS=0
	SERVER_EXIT=""
	SERVER_STOP_MS=""
	CRASHES=""
	SERVER_DIED=""
	SCENARIOS=""
	FIGS=""
	GOALS=""
	: >"$TMP/table"
	SERVER_LOG=$RESULTS/server.log
	: >"$SERVER_LOG"
	# No figure of an earlier run may stand in for a scenario that does not run now.
	for sc in connect broadcast-fanout broadcast-peak broadcast-half pingpong-$PP_N \
		pingpong-$PP_SMALL raw-fanout raw-peak; do
		rm -rf "$RESULTS/$sc.json" "$RESULTS/$sc"
	done
	common="--workers 2 --timeout 30"

	echo "channels: $CHAT under $LG, $N connections on room:lobby, ${D} s scenarios"
	server_start || return 1

	# A fresh server first: its RSS growth per joined connection.
	lg connect connect -n "$N" $common --per-worker "$HALF_W" --connect-rate 0 --duration "$HOLD"
	lg broadcast-fanout broadcast -n "$N" $common --per-worker "$PUB_W" --connect-rate 0 \
		--publishers 1 --rate 5 --duration "$D"
	lg broadcast-peak broadcast -n "$N" $common --per-worker "$PUB_W" --connect-rate 0 \
		--publishers 1 --rate 0 --window 16 --duration "$D"
	peak=$(jn broadcast-peak deliveries_per_s)
	half_rate=""
	if [ -n "$peak" ] && [ "$peak" != null ]; then
		half_rate=$(awk -v d="$peak" -v n="$N" 'BEGIN { r = int(d / 2 / n + 0.5); print (r < 1 ? 1 : r) }')
		lg broadcast-half broadcast -n "$N" $common --per-worker "$PUB_W" --connect-rate 0 \
			--publishers 1 --rate "$half_rate" --duration "$D"
	else
		echo "bench: no peak delivery rate: broadcast-half skipped" >&2
		SCENARIOS="$SCENARIOS${SCENARIOS:+,}\"broadcast-half\":{\"exit_status\":null,\"status\":\"skipped (no peak)\",\"file\":null}"
	fi
	lg pingpong-$PP_N pingpong -n "$PP_N" --timeout 30 --connect-rate 0 --duration "$D"
	lg pingpong-$PP_SMALL pingpong -n "$PP_SMALL" --timeout 30 --connect-rate 0 --duration "$D"

	echo
	echo "-- stopping phx-chat (SIGTERM)"
	server_stop
	if [ "$SERVER_EXIT" != "" ]; then
		echo "  exit status $SERVER_EXIT after $SERVER_STOP_MS ms"
		if [ "$SERVER_EXIT" != 0 ]; then
			echo "bench: phx-chat exited with status $SERVER_EXIT on SIGTERM (see $RESULTS/server.log)" >&2
			failed=1
		fi
	fi

	# The raw reference, with the machine otherwise as idle as for the node.
	raw raw-fanout -n "$N" -m "$RAW_FAN_M" --rate 5
	raw raw-peak -n "$N" -m "$RAW_PEAK_M" --batch "$BATCH"

	# ---- figures
	c_mem=$(jn connect server_bytes_per_conn)
	c_rate=$(jn connect connect_rate_per_s)
	c_joined=$(jn connect joined)
	f_p50=$(jp broadcast-fanout fanout_ms p50)
	f_p99=$(jp broadcast-fanout fanout_ms p99)
	f_dps=$(jn broadcast-fanout deliveries_per_s)
	h_p99=$(jp broadcast-half latency_ms p99)
	h_dps=$(jn broadcast-half deliveries_per_s)
	p_rt=$(jn pingpong-$PP_N round_trips_per_s)
	p_p99=$(jp pingpong-$PP_N latency_ms p99)
	p_mean=$(jp pingpong-$PP_N latency_ms mean)
	p_little=$(awk -v n="$PP_N" -v t="$p_rt" 'BEGIN { if (t == "" || t + 0 == 0) print ""; else printf "%.3f\n", n / t * 1000 }')
	s_rt=$(jn pingpong-$PP_SMALL round_trips_per_s)
	s_p99=$(jp pingpong-$PP_SMALL latency_ms p99)
	rf_dps=$(jn raw-fanout deliveries_per_s)
	rf_p50=$(jp raw-fanout fanout_ms p50)
	rf_p99=$(jp raw-fanout fanout_ms p99)
	rp_dps=$(jn raw-peak deliveries_per_s)
	# Loss, duplicates and order over the three broadcast runs (null if none ran).
	# A run where a subscriber dropped or that did not complete is not clean either.
	bad=""
	unclean=0
	for sc in broadcast-fanout broadcast-peak broadcast-half; do
		if [ ! -s "$RESULTS/$sc.json" ]; then
			unclean=$((unclean + 1))
			continue
		fi
		for k in lost duplicated out_of_order; do
			x=$(jn $sc $k)
			bad=$((${bad:-0} + ${x:-0}))
		done
		[ "$(jn $sc dropped)" = 0 ] || unclean=$((unclean + 1))
		[ "$(jn $sc ok)" = true ] || unclean=$((unclean + 1))
	done
	raw_lost=""
	for sc in raw-fanout raw-peak; do
		x=$(jn $sc lost)
		[ -n "$x" ] && raw_lost=$((${raw_lost:-0} + x))
	done
	r_peak=$(ratio "$peak" "$rp_dps" 3)
	r_fan50=$(ratio "$f_p50" "$rf_p50")
	r_fan99=$(ratio "$f_p99" "$rf_p99")
	r_fdps=$(ratio "$f_dps" "$rf_dps")

	fig server_bytes_per_conn "$c_mem"
	fig connect_rate_per_s "$c_rate"
	fig connect_joined "$c_joined"
	fig connect_server_rss_before "$(jn connect server_rss_before)"
	fig connect_server_rss_after "$(jn connect server_rss_after)"
	for k in join_ms connect_join_ms; do
		for p in p50 p99 max; do fig "${k}_$p" "$(jp connect $k $p)"; done
	done
	for sc in fanout peak half; do
		n=broadcast-$sc
		for k in deliveries_per_s sent_per_s rate_target_per_pub lost duplicated out_of_order dropped \
			server_cpu_pct loadgen_cpu_pct loadgen_loop_max_ms; do
			fig "${sc}_$k" "$(jn $n $k)"
		done
		for k in latency_ms fanout_ms; do
			for p in p50 p90 p99 max mean; do fig "${sc}_${k%_ms}_ms_$p" "$(jp $n $k $p)"; done
		done
	done
	for n in $PP_N $PP_SMALL; do
		for k in round_trips_per_s server_cpu_pct loadgen_cpu_pct; do fig "pingpong_${n}_$k" "$(jn pingpong-$n $k)"; done
		for p in p50 p90 p99 max mean; do fig "pingpong_${n}_latency_ms_$p" "$(jp pingpong-$n latency_ms $p)"; done
	done
	fig pingpong_${PP_N}_littles_law_mean_ms "$p_little"
	for sc in fanout peak; do
		for k in deliveries_per_s lost; do fig "raw_${sc}_$k" "$(jn raw-$sc $k)"; done
		for k in latency_ms fanout_ms send_loop_ms; do
			for p in p50 p99 max; do fig "raw_${sc}_${k%_ms}_ms_$p" "$(jp raw-$sc $k $p)"; done
		done
	done

	# ---- goals and the table
	row "figure" "measured" "goal" "met?" "raw" "ratio"
	goal server_bytes_per_conn_le_2048 "$c_mem" le 2048
	row "server RSS per joined connection ($(fmt count "$c_joined"))" "$(fmt bytes "$c_mem")" "<= 2048 B" "$T" "-" "-"
	goal connect_rate_per_s_ge_20000 "$c_rate" ge 20000
	row "connect+join rate" "$(fmt rate "$c_rate")" ">= 20 k/s" "$T" "-" "-"
	row "  join latency p50 / p99" "$(fmt ms "$(jp connect join_ms p50)") / $(fmt ms "$(jp connect join_ms p99)")" "" "" "" ""
	goal peak_deliveries_per_s_ge_350000 "$peak" ge 350000
	row "broadcast peak deliveries/s (window 16)" "$(fmt rate "$peak")" ">= 350 k/s" "$T" "$(fmt rate "$rp_dps")" "$r_peak"
	goal peak_over_raw_ge_0_9 "$r_peak" ge 0.9
	row "  peak / raw (send() of $BATCH messages at a time)" "$(fmt x "$r_peak")" ">= 0.90x" "$T" "" ""
	goal lost_dup_ooo_eq_0 "$bad" le 0 "$unclean"
	row "lost + dup + out of order (3 broadcasts)" "$(fmt count "$bad")" "0" "$T" "$(fmt count "$raw_lost")" ""
	[ "$unclean" = 0 ] || row "  broadcast runs missing, incomplete or with drops" "$unclean" "0" "false" "" ""
	row "broadcast at 5 msg/s: deliveries/s" "$(fmt rate "$f_dps")" "" "" "$(fmt rate "$rf_dps")" "$r_fdps"
	goal fanout_ms_p50_le_50 "$f_p50" le 50
	row "fan-out time p50 (send -> last subscriber)" "$(fmt ms "$f_p50")" "<= 50 ms" "$T" "$(fmt ms "$rf_p50")" "$r_fan50"
	goal fanout_ms_p99_le_50 "$f_p99" le 50
	row "fan-out time p99" "$(fmt ms "$f_p99")" "<= 50 ms" "$T" "$(fmt ms "$rf_p99")" "$r_fan99"
	goal half_peak_latency_ms_p99_le_10 "$h_p99" le 10
	row "latency p99 at half peak (${half_rate:-?} msg/s, $(fmt rate "$h_dps"))" "$(fmt ms "$h_p99")" "<= 10 ms" "$T" "-" "-"
	goal pingpong_round_trips_per_s_ge_150000 "$p_rt" ge 150000
	row "ping-pong round trips/s ($PP_N clients)" "$(fmt rate "$p_rt")" ">= 150 k/s" "$T" "-" "-"
	goal pingpong_latency_ms_p99_le_2 "$p_p99" le 2
	row "  round-trip p99 ($PP_N clients)" "$(fmt ms "$p_p99")" "<= 2 ms" "$T" "" ""
	row "  mean: measured / Little's law $PP_N/rate" "$(fmt ms "$p_mean") / $(fmt ms "$p_little")" "" "" "" ""
	row "ping-pong $PP_SMALL clients: rate, p99" "$(fmt rate "$s_rt"), $(fmt ms "$s_p99")" "" "" "" ""

	echo
	echo "channels: phx-chat vs goals (raw = rawfanout on the same machine; ratio = phx-c / raw)"
	[ -n "$QUICK" ] && echo "  (BENCH_QUICK: $N connections, ${D} s scenarios; the goals are for 19,000)"
	cat "$TMP/table"
	[ -n "$CRASHES" ] && echo "  server crashes: $CRASHES"

	{
		printf '{"machine":%s,"quick":%s,' "$(machine_json "$load0")" "$([ -n "$QUICK" ] && echo true || echo false)"
		printf '"sizes":{"connections":%s,"workers":2,"duration_s":%s,"connect_hold_s":%s,"pingpong_clients":[%s,%s],"half_rate_per_s":%s,"raw_fanout_messages":%s,"raw_peak_messages":%s,"raw_peak_batch":%s},' \
			"$N" "$D" "$HOLD" "$PP_N" "$PP_SMALL" "$(v "$half_rate")" "$RAW_FAN_M" "$RAW_PEAK_M" "$BATCH"
		printf '"server":{"binary":"%s","starts":%s,"crashes":[%s],"exit_status_on_sigterm":%s,"stop_ms":%s,"log":"%s/server.log"},' \
			"$CHAT" "$SERVER_STARTS" "$CRASHES" "$(v "$SERVER_EXIT")" "$(v "$SERVER_STOP_MS")" "$RESULTS"
		printf '"scenarios":{%s},"figures":{%s},' "$SCENARIOS" "$FIGS"
		printf '"ratios":{"peak_over_raw_peak":%s,"fanout_p50_over_raw":%s,"fanout_p99_over_raw":%s,"fanout_deliveries_over_raw":%s},' \
			"$r_peak" "$r_fan50" "$r_fan99" "$r_fdps"
		printf '"goals":{%s}}\n' "$GOALS"
	} >"$RESULTS/channels.json"
	echo "  results written to $RESULTS/channels.json (per scenario: $RESULTS/<scenario>.json${PLOT:+, charts in $RESULTS/<scenario>/})"
	return $failed
}

# ------------------------------------------------------------------ cluster
#
# A local cluster of phx-chat nodes (`phx-chat cluster`), under
# build/bench/loadgen, next to `rawfanout -p NODES` (the same fan-out from the
# same number of processes).  Two clusters are started in turn: NODES nodes
# behind one port (--one-port, SO_REUSEPORT: the kernel spreads the
# connections) for memory and the fan-out time of one broadcast to all
# connections; then NODES nodes on consecutive ports, so that the loadgen can
# put the subscribers on node 1 and the publisher on node 1 or node 2, for the
# latency a hop between nodes adds and the bus's drop counters.  See "The
# cluster section" in bench/README.md.

# cl_pids: the latest pid of every node in the cluster command's log (one
# "nodeI@... pid N" line per start), comma-separated, node 1 first.
cl_pids() {
	sed -n "$CL_LOG_FROM,\$p" "$CL_LOG" |
		sed -n 's/^node\([0-9]*\)@[^ ]* .* pid \([0-9]*\).*/\1 \2/p' |
		awk '{ p[$1] = $2; if ($1 > n) n = $1 } END { s = ""; for (i = 1; i <= n; i++) s = s (i > 1 ? "," : "") p[i]; print s }'
}

# cl_starts: how many node starts the command's log shows for this cluster.
cl_starts() {
	sed -n "$CL_LOG_FROM,\$p" "$CL_LOG" | grep -c '^node[0-9]*@[^ ]* .* pid [0-9]*'
}

# cl_ports: the HTTP ports of the running cluster (one with --one-port).
cl_ports() {
	if [ "$CL_ONE" = 1 ]; then
		echo "$CL_PORT"
	else
		seq "$CL_PORT" $((CL_PORT + NODES - 1))
	fi
}

# cl_stats OUT: every node's GET /api/cluster, one line each, into OUT.  On
# one port the kernel picks the node of each request: ask up to 300 times
# until every node has answered.  Returns non-zero when some did not.
cl_stats() {
	: >"$1"
	if [ "$CL_ONE" = 1 ]; then
		_q=0
		while [ $_q -lt 300 ] && [ "$(wc -l <"$1")" -lt "$NODES" ]; do
			_q=$((_q + 1))
			_j=$(curl -s -m 2 "http://127.0.0.1:$CL_PORT/api/cluster") || continue
			_n=$(printf '%s\n' "$_j" | sed -n 's/^{"name":"\([^"]*\)".*/\1/p')
			[ -n "$_n" ] || continue
			grep -q "^{\"name\":\"$_n\"" "$1" || printf '%s\n' "$_j" >>"$1"
			[ "$_n" = nonode@nohost ] && break
		done
	else
		for _p in $(cl_ports); do
			curl -s -m 2 "http://127.0.0.1:$_p/api/cluster" >>"$1" && echo >>"$1"
		done
	fi
	[ "$(grep -c '^{"name":"node' "$1")" -ge "$NODES" ]
}

# cl_sum FILE KEY...: the sum of the top-level counters KEY over the nodes in
# FILE (cl_stats), or "" when no node reports them.
cl_sum() {
	_f=$1
	shift
	_t=""
	while read -r _l; do
		for _k in "$@"; do
			_x=$(json_num "$_k" "$_l")
			[ -n "$_x" ] && _t=$((${_t:-0} + _x))
		done
	done <"$_f"
	echo "$_t"
}

# cl_meshed: true when every node reports NODES-1 members up.
cl_meshed() {
	cl_stats "$TMP/mesh" || return 1
	_ok=0
	while read -r _l; do
		[ "$(printf '%s\n' "$_l" | grep -o '"up":true' | wc -l)" -ge $((NODES - 1)) ] && _ok=$((_ok + 1))
	done <"$TMP/mesh"
	[ "$_ok" -ge "$NODES" ]
}

# cl_start one|ports: starts `$CHAT cluster --nodes NODES` on free ports and
# waits (up to 30 s) until every node answers HTTP and sees all the others up.
# Sets CL_PID (the supervising command), CL_PORT, CL_ONE, PIDS and URL.
cl_start() {
	CL_PID=""
	CL_ONE=0
	[ "$1" = one ] && CL_ONE=1
	port=$((25000 + $$ % 2000))
	tries=0
	while [ $tries -lt 20 ]; do
		tries=$((tries + 1))
		port=$((port + NODES + 1))
		free=1
		for p in $(seq "$port" $((port + NODES - 1))) $(seq $((port + 1000)) $((port + 1000 + NODES - 1))); do
			port_free "$p" || free=0
		done
		[ $free = 1 ] || continue
		CL_PORT=$port
		CL_LOG_FROM=$(($(wc -l <"$CL_LOG") + 1))
		set -- cluster --nodes "$NODES" --port "$port" --cluster-port $((port + 1000))
		[ $CL_ONE = 1 ] && set -- "$@" --one-port
		set -- "$@" --log-level warning
		echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) $CHAT $*" >>"$CL_LOG"
		CL_LOG_FROM=$((CL_LOG_FROM + 1))
		"$CHAT" "$@" >>"$CL_LOG" 2>&1 &
		CL_PID=$!
		CL_STARTS=$((CL_STARTS + 1))
		_i=0
		while [ $_i -lt 300 ] && proc_alive "$CL_PID"; do
			_i=$((_i + 1))
			if [ "$(cl_starts)" -ge "$NODES" ]; then
				_up=1
				for p in $(cl_ports); do http_up "$p" || _up=0; done
				[ $_up = 1 ] && break
			fi
			sleep 0.1
		done
		if ! proc_alive "$CL_PID"; then
			wait "$CL_PID"
			echo "bench: phx-chat cluster exited with status $? at start (see $CL_LOG)" >&2
			CL_PID=""
			grep -q 'ddress already in use\|EADDRINUSE' "$CL_LOG" && continue
			return 1
		fi
		# The mesh: every node sees every other one up (a node that is alone,
		# whose /api/cluster says nonode@nohost, cannot tell: then 2 s).
		while [ $_i -lt 300 ]; do
			cl_meshed && break
			if grep -q nonode@nohost "$TMP/mesh"; then
				echo "bench: the nodes answer /api/cluster as nodes alone: no bus counters, no membership check" >&2
				sleep 2
				break
			fi
			_i=$((_i + 1))
			sleep 0.1
		done
		if [ $_i -ge 300 ]; then
			echo "bench: the cluster did not form within 30 s (see $CL_LOG; /api/cluster: $TMP/mesh)" >&2
			cl_stop
			return 1
		fi
		PIDS=$(cl_pids)
		URL=http://127.0.0.1:$CL_PORT
		if [ $CL_ONE = 1 ]; then
			echo "  phx-chat cluster pid $CL_PID: $NODES nodes (pids $PIDS) all on $URL (log: $CL_LOG)"
		else
			echo "  phx-chat cluster pid $CL_PID: $NODES nodes (pids $PIDS) on ports $CL_PORT-$((CL_PORT + NODES - 1)) (log: $CL_LOG)"
		fi
		return 0
	done
	echo "bench: no free ports for the cluster" >&2
	return 1
}

# cl_stop: SIGTERM to the command (it stops its nodes; SIGKILL after 10 s),
# up to 30 s for its exit.  Sets CL_EXIT (0: every node stopped cleanly).
cl_stop() {
	[ -n "$CL_PID" ] || return 0
	term_wait "$CL_PID" 30 "phx-chat cluster"
	CL_EXIT=$?
	CL_EXITS="$CL_EXITS${CL_EXITS:+,}$CL_EXIT"
	[ "$CL_EXIT" = 0 ] || failed=1
	CL_PID=""
}

# cl_check NAME: after a scenario, a node the command had to restart (or a
# command that died) is a crash: recorded; the pids are refreshed.
cl_check() {
	if [ -n "$CL_PID" ] && ! proc_alive "$CL_PID"; then
		wait "$CL_PID"
		rc=$?
		echo "bench: phx-chat cluster DIED during $1 (exit status $rc; see $CL_LOG)" >&2
		CRASHES="$CRASHES${CRASHES:+,}{\"scenario\":\"$1\",\"cluster_exit_status\":$rc}"
		SERVER_DIED=$rc
		CL_PID=""
		failed=1
		return
	fi
	n=$(cl_starts)
	if [ "$n" -gt "$CL_SEEN" ]; then
		echo "bench: $((n - CL_SEEN)) node(s) CRASHED during $1 and were restarted (see $CL_LOG)" >&2
		CRASHES="$CRASHES${CRASHES:+,}{\"scenario\":\"$1\",\"node_restarts\":$((n - CL_SEEN))}"
		SERVER_DIED="node restarted"
		CL_SEEN=$n
		PIDS=$(cl_pids)
		failed=1
	fi
}

# cl_settle: waits (up to 30 s per port) until the nodes hold no connection.
cl_settle() {
	for p in $(cl_ports); do settle_port "$p"; done
}

# clg NAME ARGS...: one loadgen scenario against the cluster (--url is node 1,
# or the one port), with every node's pid: JSON in results/NAME.json.
clg() {
	name=$1
	shift
	rm -rf "$RESULTS/$name.json" "$RESULTS/$name"
	echo
	echo "-- $name: loadgen $*"
	if [ -z "$CL_PID" ]; then
		echo "bench: scenario $name: no cluster" >&2
		SCENARIOS="$SCENARIOS${SCENARIOS:+,}\"$name\":{\"exit_status\":null,\"status\":\"no cluster\",\"file\":null}"
		failed=1
		return
	fi
	set -- "$@" --url "$URL" --server-pid "$PIDS" --json "$RESULTS/$name.json"
	[ -n "$PLOT" ] && set -- "$@" --plot "$RESULTS/$name"
	{
		timeout --foreground -s INT -k 30 "$LG_LIMIT" "$LG" "$@" 2>&1
		echo $? >"$TMP/$name.rc"
	} | grep -v '^{"'
	cl_check "$name"
	note_result "$name" "$(cat "$TMP/$name.rc")"
	cl_settle
}

section_cluster() {
	load0=$(loadavg)
	CHAT=$BUILD/phx-chat
	LG=$BUILD/bench/loadgen
	RAW=$BUILD/bench/rawfanout
	for b in "$CHAT" "$LG" "$RAW"; do
		if [ ! -x "$b" ]; then
			echo "bench: $b is missing (run make all)" >&2
			return 1
		fi
	done
	for c in timeout curl; do
		if ! command -v $c >/dev/null 2>&1; then
			echo "bench: $c not found" >&2
			return 1
		fi
	done
	if ! "$CHAT" cluster --help >/dev/null 2>&1; then
		echo "bench: $CHAT has no cluster command (the launcher's): cluster section skipped"
		printf '{"skipped":"%s has no cluster command"}\n' "$CHAT" >"$RESULTS/cluster.json"
		return 0
	fi
	ulimit -n "$(ulimit -Hn)" 2>/dev/null
	PLOT=""
	command -v gnuplot >/dev/null 2>&1 && PLOT=1
	# The fan-out of one broadcast: FAN_M messages, one every 1 / FAN_RATE s,
	# far enough apart that one fan-out ends before the next begins (at
	# 100,000 a fan-out takes about a second: at 1 msg/s they overlapped and
	# each waited for the one before).
	if [ -n "$QUICK" ]; then
		N=3000 D=2 HOLD=1 FAN_RATE=2 FAN_M=4 SUBS=1000
	else
		N=100000 D=8 HOLD=3 FAN_RATE=0.4 FAN_M=5 SUBS=1000
	fi
	NODES=${BENCH_CLUSTER_NODES:-6}
	N=${BENCH_CLUSTER_CONNECTIONS:-$N}
	# --server-pid takes at most 16 pids; node 2 must exist.
	case $NODES in [2-9] | 1[0-6]) ;; *)
		echo "bench: BENCH_CLUSTER_NODES=$NODES: 2 to 16 nodes" >&2
		return 1
		;;
	esac
	case $N in '' | *[!0-9]*)
		echo "bench: BENCH_CLUSTER_CONNECTIONS=$N is not a number" >&2
		return 1
		;;
	esac
	if [ "$N" -lt "$NODES" ]; then
		echo "bench: BENCH_CLUSTER_CONNECTIONS=$N: at least one per node" >&2
		return 1
	fi
	FAN_D=$(awk -v m="$FAN_M" -v r="$FAN_RATE" 'BEGIN { print int(m / r) }')
	# Loadgen workers: each under the open-file limit (20,000) and the ~28,000
	# ports one source address reaches of one server port.
	LW=$(((N + 1 + 16999) / 17000))
	[ $LW -lt 2 ] && LW=2
	PER_C=$(((N + LW - 1) / LW))
	PER_B=$(((N + 1 + LW - 1) / LW))
	SUB_W=$(((SUBS + 1 + 1) / 2))
	LG_LIMIT=$((FAN_D + 200)) # setup (--timeout 60) + run + drain (10 s) + reports
	RAW_LIMIT=$((FAN_D + 180))
	failed=0
	CL_STARTS=0
	CL_EXITS=""
	CL_PID=""
	CRASHES=""
	SERVER_DIED=""
	SCENARIOS=""
	FIGS=""
	GOALS=""
	: >"$TMP/table"
	CL_LOG=$RESULTS/cluster-server.log
	: >"$CL_LOG"
	for sc in cluster-connect cluster-fanout cluster-raw-fanout cluster-peak cluster-local \
		cluster-remote; do
		rm -rf "$RESULTS/$sc.json" "$RESULTS/$sc"
	done
	common="--timeout 60 --connect-rate 0"

	echo "cluster: $NODES nodes of $CHAT under $LG; $N connections behind one port, then $SUBS subscribers on node 1"

	# ---- one port: memory and the fan-out of one broadcast to all N.
	if cl_start one; then
		CL_SEEN=$(cl_starts)
		clg cluster-connect connect -n "$N" $common --workers "$LW" --per-worker "$PER_C" \
			--duration "$HOLD"
		clg cluster-fanout broadcast -n "$N" $common --workers "$LW" --per-worker "$PER_B" \
			--publishers 1 --rate "$FAN_RATE" --duration "$FAN_D"
		cl_stats "$RESULTS/cluster-bus-one-port.txt" ||
			echo "bench: /api/cluster: not every node answered (see $RESULTS/cluster-bus-one-port.txt)" >&2
		echo
		echo "-- stopping the one-port cluster (SIGTERM)"
		cl_stop
		echo "  exit status $CL_EXIT"
	else
		failed=1
		: >"$RESULTS/cluster-bus-one-port.txt"
	fi

	# The raw reference, with the machine otherwise as idle as for the nodes.
	raw cluster-raw-fanout -p "$NODES" -n "$N" -m "$FAN_M" --rate "$FAN_RATE"

	# ---- consecutive ports: subscribers on node 1, the publisher on node 1 or 2.
	if cl_start ports; then
		CL_SEEN=$(cl_starts)
		url1=http://127.0.0.1:$CL_PORT
		url2=http://127.0.0.1:$((CL_PORT + 1))
		clg cluster-peak broadcast -n "$SUBS" $common --workers 2 --per-worker "$SUB_W" \
			--publishers 1 --rate 0 --window 16 --duration "$D"
		peak=$(jn cluster-peak deliveries_per_s)
		half_rate=""
		if [ -n "$peak" ] && [ "$peak" != null ]; then
			half_rate=$(awk -v d="$peak" -v n="$SUBS" 'BEGIN { r = int(d / 2 / n + 0.5); print (r < 1 ? 1 : r) }')
		fi
		cl_stats "$RESULTS/cluster-bus-before.txt" ||
			echo "bench: /api/cluster: not every node answered (see $RESULTS/cluster-bus-before.txt)" >&2
		if [ -n "$half_rate" ]; then
			clg cluster-local broadcast -n "$SUBS" $common --workers 2 --per-worker "$SUB_W" \
				--publishers 1 --rate "$half_rate" --duration "$D" --pub-url "$url1"
			clg cluster-remote broadcast -n "$SUBS" $common --workers 2 --per-worker "$SUB_W" \
				--publishers 1 --rate "$half_rate" --duration "$D" --pub-url "$url2"
		else
			echo "bench: no peak delivery rate: cluster-local and cluster-remote skipped" >&2
			SCENARIOS="$SCENARIOS${SCENARIOS:+,}\"cluster-local\":{\"exit_status\":null,\"status\":\"skipped (no peak)\",\"file\":null}"
			SCENARIOS="$SCENARIOS${SCENARIOS:+,}\"cluster-remote\":{\"exit_status\":null,\"status\":\"skipped (no peak)\",\"file\":null}"
		fi
		cl_stats "$RESULTS/cluster-bus-after.txt" ||
			echo "bench: /api/cluster: not every node answered (see $RESULTS/cluster-bus-after.txt)" >&2
		echo
		echo "-- stopping the cluster (SIGTERM)"
		cl_stop
		echo "  exit status $CL_EXIT"
	else
		failed=1
		: >"$RESULTS/cluster-bus-before.txt"
		: >"$RESULTS/cluster-bus-after.txt"
	fi
	load1=$(loadavg)

	# ---- figures
	c_mem=$(jn cluster-connect server_bytes_per_conn)
	c_joined=$(jn cluster-connect joined)
	c_rate=$(jn cluster-connect connect_rate_per_s)
	f_p50=$(jp cluster-fanout fanout_ms p50)
	f_p99=$(jp cluster-fanout fanout_ms p99)
	f_n=$(jp cluster-fanout fanout_ms count)
	rf_p50=$(jp cluster-raw-fanout fanout_ms p50)
	rf_p99=$(jp cluster-raw-fanout fanout_ms p99)
	r_fan50=$(ratio "$f_p50" "$rf_p50")
	r_fan99=$(ratio "$f_p99" "$rf_p99")
	l_p50=$(jp cluster-local latency_ms p50)
	l_p99=$(jp cluster-local latency_ms p99)
	m_p50=$(jp cluster-remote latency_ms p50)
	m_p99=$(jp cluster-remote latency_ms p99)
	add() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") print ""; else printf "%.3f\n", a - b }'; }
	a_p50=$(add "$m_p50" "$l_p50")
	a_p99=$(add "$m_p99" "$l_p99")
	# CPU per delivery over the fan-out run (summed over the nodes, and over
	# the loadgen workers), next to rawfanout's servers and clients: where the
	# fan-out time goes on a box that servers and clients share.
	per_dlv() { # per_dlv CPU_PCT SECONDS DELIVERIES: microseconds of CPU per delivery
		awk -v c="$1" -v s="$2" -v d="$3" 'BEGIN {
			if (c == "" || s == "" || d == "" || d + 0 == 0) print ""; else printf "%.2f\n", c / 100 * s * 1e6 / d }'
	}
	f_run=$(jn cluster-fanout run_s)
	f_dlv=$(jn cluster-fanout deliveries)
	cpu_node=$(per_dlv "$(jn cluster-fanout server_cpu_pct)" "$f_run" "$f_dlv")
	cpu_lg=$(per_dlv "$(jn cluster-fanout loadgen_cpu_pct)" "$f_run" "$f_dlv")
	cpu_rs=$(jn cluster-raw-fanout server_cpu_us_per_delivery)
	cpu_rc=$(jn cluster-raw-fanout client_cpu_us_per_delivery)
	drops_before=$(cl_sum "$RESULTS/cluster-bus-before.txt" send_dropped lost)
	drops_after=$(cl_sum "$RESULTS/cluster-bus-after.txt" send_dropped lost)
	drops_half=""
	[ -n "$drops_before" ] && [ -n "$drops_after" ] && drops_half=$((drops_after - drops_before))
	drops_one=$(cl_sum "$RESULTS/cluster-bus-one-port.txt" send_dropped lost)
	bad=""
	unclean=0
	for sc in cluster-fanout cluster-peak cluster-local cluster-remote; do
		if [ ! -s "$RESULTS/$sc.json" ]; then
			unclean=$((unclean + 1))
			continue
		fi
		for k in lost duplicated out_of_order; do
			x=$(jn $sc $k)
			bad=$((${bad:-0} + ${x:-0}))
		done
		[ "$(jn $sc dropped)" = 0 ] || unclean=$((unclean + 1))
		[ "$(jn $sc ok)" = true ] || unclean=$((unclean + 1))
	done

	fig nodes "$NODES"
	fig server_bytes_per_conn "$c_mem"
	fig connect_joined "$c_joined"
	fig connect_rate_per_s "$c_rate"
	fig connect_server_rss_before "$(jn cluster-connect server_rss_before)"
	fig connect_server_rss_after "$(jn cluster-connect server_rss_after)"
	for p in p50 p99 max; do fig "join_ms_$p" "$(jp cluster-connect join_ms $p)"; done
	for p in p50 p90 p99 max mean count; do
		fig "fanout_ms_$p" "$(jp cluster-fanout fanout_ms $p)"
		fig "raw_fanout_ms_$p" "$(jp cluster-raw-fanout fanout_ms $p)"
	done
	for p in p50 p99 max; do
		fig "fanout_latency_ms_$p" "$(jp cluster-fanout latency_ms $p)"
		fig "raw_latency_ms_$p" "$(jp cluster-raw-fanout latency_ms $p)"
		fig "raw_send_loop_ms_$p" "$(jp cluster-raw-fanout send_loop_ms $p)"
	done
	for k in deliveries_per_s server_cpu_pct loadgen_cpu_pct; do fig "fanout_$k" "$(jn cluster-fanout $k)"; done
	fig fanout_node_cpu_us_per_delivery "$cpu_node"
	fig fanout_loadgen_cpu_us_per_delivery "$cpu_lg"
	fig raw_server_cpu_us_per_delivery "$cpu_rs"
	fig raw_client_cpu_us_per_delivery "$cpu_rc"
	fig raw_deliveries_per_s "$(jn cluster-raw-fanout deliveries_per_s)"
	fig raw_lost "$(jn cluster-raw-fanout lost)"
	fig peak_deliveries_per_s "$peak"
	fig half_rate_per_s "$half_rate"
	for sc in local remote; do
		for k in deliveries_per_s sent_per_s server_cpu_pct; do fig "${sc}_$k" "$(jn cluster-$sc $k)"; done
		for p in p50 p90 p99 max mean; do fig "${sc}_latency_ms_$p" "$(jp cluster-$sc latency_ms $p)"; done
	done
	fig remote_added_latency_ms_p50 "$a_p50"
	fig remote_added_latency_ms_p99 "$a_p99"
	fig bus_drops_at_half_rate "$drops_half"
	fig bus_drops_one_port_total "$drops_one"
	fig bus_drops_ports_total "$drops_after"
	fig bus_frames_sent_one_port "$(cl_sum "$RESULTS/cluster-bus-one-port.txt" sent)"
	fig bus_frames_sent_ports "$(cl_sum "$RESULTS/cluster-bus-after.txt" sent)"
	fig lost_dup_ooo "$bad"

	# ---- goals and the table
	row "figure" "measured" "goal" "met?" "raw" "ratio"
	goal server_bytes_per_conn_le_2048 "$c_mem" le 2048
	row "RSS per connection, $NODES nodes summed ($(fmt count "$c_joined"))" "$(fmt bytes "$c_mem")" "<= 2048 B" "$T" "-" "-"
	row "  connect+join rate (unpaced)" "$(fmt rate "$c_rate")" "" "" "" ""
	row "  join p50 / p99" "$(fmt ms "$(jp cluster-connect join_ms p50)") / $(fmt ms "$(jp cluster-connect join_ms p99)")" "" "" "" ""
	goal fanout_p50_over_raw_le_1_2 "$r_fan50" le 1.2
	row "fan-out p50, $(fmt count "$N") subscribers ($(fmt count "$f_n") msgs)" "$(fmt ms "$f_p50")" "<= 1.2x raw" "$T" "$(fmt ms "$rf_p50")" "$r_fan50"
	goal fanout_p99_over_raw_le_1_2 "$r_fan99" le 1.2
	row "fan-out p99 (max of the messages)" "$(fmt ms "$f_p99")" "<= 1.2x raw" "$T" "$(fmt ms "$rf_p99")" "$r_fan99"
	row "  CPU per delivery: nodes (raw's servers)" "$(fmt us "$cpu_node")" "" "" "$(fmt us "$cpu_rs")" "$(ratio "$cpu_node" "$cpu_rs")"
	row "  CPU per delivery: loadgen (raw's clients)" "$(fmt us "$cpu_lg")" "" "" "$(fmt us "$cpu_rc")" "$(ratio "$cpu_lg" "$cpu_rc")"
	row "peak, $(fmt count "$SUBS") subscribers on node 1 (window 16)" "$(fmt rate "$peak")" "" "" "" ""
	row "latency p50 / p99 at half peak (${half_rate:-?} msg/s):" "" "" "" "" ""
	row "  publisher on node 1 (the subscribers' node)" "$(fmt ms "$l_p50") / $(fmt ms "$l_p99")" "" "" "" ""
	row "  publisher on node 2 (one hop on the bus)" "$(fmt ms "$m_p50") / $(fmt ms "$m_p99")" "" "" "" ""
	row "  added by the hop" "$(fmt ms "$a_p50") / $(fmt ms "$a_p99")" "" "" "" ""
	goal bus_drops_at_half_rate_eq_0 "$drops_half" le 0
	row "bus send_dropped + lost (all nodes), half peak" "$(fmt count "$drops_half")" "0" "$T" "" ""
	row "  over each cluster's life (one port / ports)" "$(fmt count "$drops_one") / $(fmt count "$drops_after")" "" "" "" ""
	goal lost_dup_ooo_eq_0 "$bad" le 0 "$unclean"
	row "lost + dup + out of order (4 broadcasts)" "$(fmt count "$bad")" "0" "$T" "$(fmt count "$(jn cluster-raw-fanout lost)")" ""
	[ "$unclean" = 0 ] || row "  broadcast runs missing, incomplete or with drops" "$unclean" "0" "false" "" ""

	echo
	echo "cluster: $NODES phx-chat nodes vs goals (raw = rawfanout -p $NODES on the same machine; ratio = phx-c / raw)"
	[ -n "$QUICK" ] && echo "  (BENCH_QUICK: $N connections, $SUBS subscribers, ${D} s scenarios; the goals are for 100,000)"
	echo "  load average (1 min) before $load0, after $load1"
	cat "$TMP/table"
	[ -n "$CRASHES" ] && echo "  crashes: $CRASHES"

	lines() { # lines FILE: the nodes' counters in FILE as a JSON array (members: how many up)
		printf '['
		[ -s "$1" ] && grep '^{' "$1" | awk '{
			n = gsub(/"up":true/, "&"); i = index($0, ",\"members\":[")
			if (i) $0 = substr($0, 1, i - 1) ",\"members_up\":" n "}"
			print }' | paste -sd, - | tr -d '\n'
		printf ']'
	}
	{
		printf '{"machine":%s,"loadavg_1m_after":%s,"quick":%s,' "$(machine_json "$load0")" "$load1" \
			"$([ -n "$QUICK" ] && echo true || echo false)"
		printf '"sizes":{"nodes":%s,"connections":%s,"loadgen_workers":%s,"fanout_rate":%s,"fanout_duration_s":%s,"raw_messages":%s,"subscribers":%s,"duration_s":%s,"connect_hold_s":%s,"half_rate_per_s":%s},' \
			"$NODES" "$N" "$LW" "$FAN_RATE" "$FAN_D" "$FAN_M" "$SUBS" "$D" "$HOLD" "$(v "$half_rate")"
		printf '"cluster":{"binary":"%s","starts":%s,"crashes":[%s],"exit_status_on_sigterm":[%s],"log":"%s"},' \
			"$CHAT" "$CL_STARTS" "$CRASHES" "$CL_EXITS" "$CL_LOG"
		printf '"bus":{"one_port_end":%s,"ports_before_half":%s,"ports_end":%s},' \
			"$(lines "$RESULTS/cluster-bus-one-port.txt")" "$(lines "$RESULTS/cluster-bus-before.txt")" \
			"$(lines "$RESULTS/cluster-bus-after.txt")"
		printf '"scenarios":{%s},"figures":{%s},' "$SCENARIOS" "$FIGS"
		printf '"ratios":{"fanout_p50_over_raw":%s,"fanout_p99_over_raw":%s},' "$r_fan50" "$r_fan99"
		printf '"goals":{%s}}\n' "$GOALS"
	} >"$RESULTS/cluster.json"
	echo "  results written to $RESULTS/cluster.json (per scenario: $RESULTS/cluster-<scenario>.json${PLOT:+, charts in $RESULTS/<scenario>/})"
	return $failed
}

# ------------------------------------------------------------------ phoenix
#
# The channels scenarios against phx-chat and against a real Phoenix 1.7.24 node
# running the same reference app (/work/shared/phoenix-ref), both started here on
# free ports and up at the same time: every scenario is one
# `loadgen ... --url PHX-C --compare PHOENIX` (phx-c first, then Phoenix once
# phx-c has closed that run's connections).  See "phx-c vs Phoenix" in
# bench/README.md.  Environment:
#   PHOENIX_REF      the phoenix-ref recipe (default /work/shared/phoenix-ref)
#   PHOENIX_OUT      its build output (default: what build.sh picks: anchors/phoenix
#                    beside the .mirror folder above PHOENIX_REF); built when missing
#   PHOENIX_REBUILD  1: run build.sh even when a release is there (it reuses what it can)
#   MIRROR           passed to build.sh: where the 15 source mirrors are

# phoenix_find: sets PHX_OUT to a built reference release, building it when needed.
phoenix_find() {
	ref=${PHOENIX_REF:-/work/shared/phoenix-ref}
	PHX_OUT=${PHOENIX_OUT:-}
	if [ -z "$PHX_OUT" ]; then
		root=$ref
		while [ "$root" != / ] && [ "$root" != . ] && [ ! -d "$root/.mirror" ]; do
			root=$(dirname "$root")
		done
		if [ -d "$root/.mirror" ]; then
			PHX_OUT=$root/anchors/phoenix
		else
			PHX_OUT=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/phx-c/phoenix
		fi
	fi
	rel=$PHX_OUT/app/_build/prod/rel/ref_app/bin/ref_app
	if [ -x "$PHX_OUT/start.sh" ] && [ -x "$rel" ] && [ "${PHOENIX_REBUILD:-0}" = 0 ]; then
		echo "  Phoenix reference release: $PHX_OUT"
		return 0
	fi
	if [ ! -f "$ref/build.sh" ]; then
		echo "bench: no Phoenix reference release in $PHX_OUT, and no recipe to build one ($ref/build.sh):" >&2
		echo "  set PHOENIX_OUT to a built phoenix-ref output, or PHOENIX_REF to the phoenix-ref folder" >&2
		return 1
	fi
	for c in bash git erl elixir mix; do
		if ! command -v "$c" >/dev/null 2>&1; then
			echo "bench: $c not found, needed to build the Phoenix reference:" \
				"run sh scripts/setup.sh bench-phoenix (Debian: apt-get install erlang elixir git)" >&2
			return 1
		fi
	done
	echo "  building the Phoenix reference: $ref/build.sh $PHX_OUT (log: $RESULTS/phoenix-build.log)"
	if ! bash "$ref/build.sh" "$PHX_OUT" >"$RESULTS/phoenix-build.log" 2>&1; then
		echo "bench: building the Phoenix reference FAILED ($RESULTS/phoenix-build.log):" >&2
		grep -E 'build.sh:|error|Error' "$RESULTS/phoenix-build.log" | tail -n 5 | sed 's/^/  /' >&2
		echo "  It builds offline from 15 mirrored source repositories (MIRROR=${MIRROR:-<.mirror above $ref>});" \
			"see $ref/README.md for the list and how to fetch them." >&2
		return 1
	fi
	if [ ! -x "$PHX_OUT/start.sh" ] || [ ! -x "$rel" ]; then
		echo "bench: $ref/build.sh ran, but $rel is missing" >&2
		return 1
	fi
}

# phoenix_start: starts the reference release on a free port, waits until it
# answers HTTP.  Sets PHX_PID (the BEAM: start.sh exec's into beam.smp), PHX_PORT
# and PHX_URL.
phoenix_start() {
	PHX_PID=""
	port=$((20000 + $$ % 5000))
	tries=0
	while [ $tries -lt 20 ]; do
		tries=$((tries + 1))
		port=$((port + 1))
		port_free "$port" || continue
		echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) $PHX_OUT/start.sh $port" >>"$PHX_LOG"
		"$PHX_OUT/start.sh" "$port" >>"$PHX_LOG" 2>&1 &
		pid=$!
		PHX_STARTS=$((PHX_STARTS + 1))
		await_http "$pid" "$port" Phoenix 600
		case $? in
		0)
			PHX_PID=$pid
			PHX_PORT=$port
			PHX_URL=http://127.0.0.1:$port
			comm=$(cat "/proc/$pid/comm" 2>/dev/null)
			echo "  Phoenix ($comm) pid $pid listening on $PHX_URL, open-file limit" \
				"$(sed -n 's/^Max open files *\([0-9]*\).*/\1/p' "/proc/$pid/limits" 2>/dev/null) (log: $PHX_LOG)"
			[ "$comm" = beam.smp ] || echo "bench: pid $pid is $comm, not beam.smp: Phoenix's RSS and CPU are not its own" >&2
			return 0
			;;
		1) return 1 ;;
		esac
		if grep -q eaddrinuse "$PHX_LOG" 2>/dev/null && [ $tries -lt 20 ]; then
			continue
		fi
		echo "bench: Phoenix exited with status $START_RC at start (see $PHX_LOG)" >&2
		return 1
	done
	echo "bench: no free port for Phoenix" >&2
	return 1
}

# phoenix_stop: SIGTERM, up to 30 s for the exit (then SIGKILL); sets PHX_EXIT.
phoenix_stop() {
	[ -n "$PHX_PID" ] || return 0
	term_wait "$PHX_PID" 30 Phoenix
	PHX_EXIT=$?
	PHX_PID=""
}

# settle_port PORT: waits (up to 30 s) until nothing holds a connection on PORT.
settle_port() {
	command -v ss >/dev/null 2>&1 || {
		sleep 1
		return
	}
	i=0
	while [ $i -lt 300 ]; do
		[ -z "$(ss -Htn state connected exclude time-wait "( sport = :$1 )" 2>/dev/null | head -n 1)" ] && return
		sleep 0.1
		i=$((i + 1))
	done
	echo "bench: the server on port $1 still holds connections 30 s after the last scenario" >&2
}

# both_check NAME: after a scenario, a server that died is a crash: recorded,
# and a fresh one is started for the scenarios that follow.
both_check() {
	if [ -n "$SERVER_PID" ] && ! proc_alive "$SERVER_PID"; then
		wait "$SERVER_PID"
		rc=$?
		echo "bench: phx-chat CRASHED during $1 (exit status $rc; see $SERVER_LOG)" >&2
		CRASHES="$CRASHES${CRASHES:+,}{\"server\":\"phx-c\",\"scenario\":\"$1\",\"exit_status\":$rc}"
		SERVER_PID=""
		failed=1
		server_start
	fi
	if [ -n "$PHX_PID" ] && ! proc_alive "$PHX_PID"; then
		wait "$PHX_PID"
		rc=$?
		echo "bench: Phoenix CRASHED during $1 (exit status $rc; see $PHX_LOG)" >&2
		CRASHES="$CRASHES${CRASHES:+,}{\"server\":\"phoenix\",\"scenario\":\"$1\",\"exit_status\":$rc}"
		PHX_PID=""
		failed=1
		phoenix_start
	fi
}

# split_compare FILE: FILE.phx and FILE.phoenix, the two results of a --compare
# line (the phx-c run's top-level figures; the "compare" object).
split_compare() {
	awk -v a="$1.phx" -v b="$1.phoenix" '{
		i = index($0, ",\"compare\":{")
		if (!i) { print > a; exit }
		print substr($0, 1, i - 1) "}" > a
		rest = substr($0, i + 12)
		j = index(rest, "},\"ratios\":{")
		if (j) print "{" substr(rest, 1, j - 1) "}" > b
	}' "$1"
}

# lgc NAME ARGS...: one loadgen scenario, phx-c then Phoenix: JSON in
# results/phoenix-NAME.json (split into .phx and .phoenix), charts in
# results/phoenix-NAME/ (both servers in each chart).
lgc() {
	name=$1
	shift
	f=$RESULTS/phoenix-$name
	rm -rf "$f.json" "$f.json.phx" "$f.json.phoenix" "$f"
	echo
	echo "-- $name: loadgen $* (phx-c, then Phoenix)"
	if [ -z "$SERVER_PID" ] || [ -z "$PHX_PID" ]; then
		echo "bench: scenario $name: a server is missing" >&2
		SCENARIOS="$SCENARIOS${SCENARIOS:+,}\"$name\":{\"exit_status\":null,\"status\":\"no server\",\"file\":null}"
		failed=1
		return
	fi
	set -- "$@" --url "$URL" --server-pid "$SERVER_PID" --compare "$PHX_URL" \
		--compare-pid "$PHX_PID" --json "$f.json"
	[ -n "$PLOT" ] && set -- "$@" --plot "$f"
	{
		timeout --foreground -s INT -k 30 "$LG_LIMIT" "$LG" "$@" 2>&1
		echo $? >"$TMP/$name.rc"
	} | grep -v '^{"'
	rc=$(cat "$TMP/$name.rc")
	[ -s "$f.json" ] && split_compare "$f.json"
	both_check "$name"
	if [ ! -s "$f.json.phx" ] || [ ! -s "$f.json.phoenix" ]; then
		st="no result"
		[ -s "$f.json.phx" ] && st="no Phoenix result"
		failed=1
	elif [ "$rc" = 0 ]; then
		st=ok
	elif [ "$rc" = 124 ]; then
		st="timed out (partial result)"
	elif [ "$rc" -ge 125 ]; then
		st="crashed (exit status $rc)"
		failed=1
	else
		st="incomplete (exit status $rc)"
	fi
	[ "$st" = ok ] || echo "bench: scenario $name: $st" >&2
	SCENARIOS="$SCENARIOS${SCENARIOS:+,}\"$name\":{\"exit_status\":$rc,\"status\":\"$st\",\"file\":\"$f.json\"}"
	[ -n "$SERVER_PID" ] && settle_port "$SERVER_PORT"
	[ -n "$PHX_PID" ] && settle_port "$PHX_PORT"
}

# cn SIDE NAME KEY: a top-level number of one side (phx or phoenix) of scenario NAME.
cn() {
	g=$RESULTS/phoenix-$2.json.$1
	[ -s "$g" ] || return 0
	json_num "$3" "$(cat "$g")"
}

# cp SIDE NAME OBJ KEY: KEY of the percentile object OBJ of one side.
cpc() {
	g=$RESULTS/phoenix-$2.json.$1
	[ -s "$g" ] || return 0
	o=$(sed -n "s/.*\"$3\":{\([^}]*\)}.*/\1/p" "$g")
	[ -n "$o" ] && json_num "$4" "{$o}"
}

# prow FIGURE PHX PHOENIX ADVANTAGE: one line of the phx-c vs Phoenix table.
prow() {
	printf '  %-50s %26s %26s %13s\n' "$1" "$2" "$3" "$4" >>"$TMP/ptable"
}

# adv KEY PHX PHOENIX higher|lower [WORD]: the advantage of phx-c (phx/phoenix
# when higher is better, phoenix/phx when lower is), recorded as "KEY": ratio;
# sets A to it for the table ("2.50x WORD", or "-").
adv() {
	if [ "$4" = higher ]; then A=$(ratio "$2" "$3" 2); else A=$(ratio "$3" "$2" 2); fi
	ADV="$ADV${ADV:+,}\"$1\":$A"
	if [ "$A" = null ]; then A="-"; else A="${A}x${5:+ $5}"; fi
}

section_phoenix() {
	load0=$(loadavg)
	CHAT=$BUILD/phx-chat
	LG=$BUILD/bench/loadgen
	for b in "$CHAT" "$LG"; do
		if [ ! -x "$b" ]; then
			echo "bench: $b is missing (run make all)" >&2
			return 1
		fi
	done
	if ! command -v timeout >/dev/null 2>&1; then
		echo "bench: timeout (coreutils) not found" >&2
		return 1
	fi
	phoenix_find || return 1
	# 19,000 connections need 19,000 descriptors in each server and in the loadgen
	# (start.sh raises the BEAM's to the hard limit too; it needs ~20,000).
	ulimit -n "$(ulimit -Hn)" 2>/dev/null
	hard=$(ulimit -Hn)
	PLOT=""
	command -v gnuplot >/dev/null 2>&1 && PLOT=1
	if [ -n "$QUICK" ]; then
		N=2000 D=2 HOLD=1
	else
		N=19000 D=8 HOLD=3
	fi
	if [ "$hard" != unlimited ] && [ "$hard" -lt $((N + 1000)) ]; then
		echo "bench: open-file hard limit $hard: the BEAM needs about $((N + 1000)) for $N connections" >&2
	fi
	SMALL=1000      # subscribers of the small fan-out
	PP_N=1000       # ping-pong clients
	FAN_RATE=1      # msg/s for the fan-out time at N subscribers
	FIX_RATE=20     # msg/s for the latency at a fixed rate, SMALL subscribers
	FAN_D=$((D + 2)) # 10 messages at 1 msg/s
	HALF_W=$((N / 2))
	PUB_W=$((N / 2 + 1))
	LG_LIMIT=$((2 * (D + 150)))
	failed=0
	SERVER_STARTS=0
	PHX_STARTS=0
	SERVER_EXIT=""
	PHX_EXIT=""
	CRASHES=""
	SCENARIOS=""
	ADV=""
	SERVER_LOG=$RESULTS/phoenix-phx-chat.log
	PHX_LOG=$RESULTS/phoenix-server.log
	: >"$SERVER_LOG"
	: >"$PHX_LOG"
	: >"$TMP/ptable"
	for sc in connect bcast-1k peak-w4 peak-w16 fanout fixed-rate pingpong; do
		rm -rf "$RESULTS/phoenix-$sc.json" "$RESULTS/phoenix-$sc.json.phx" \
			"$RESULTS/phoenix-$sc.json.phoenix" "$RESULTS/phoenix-$sc"
	done
	# Phoenix sets up 19,000 connections at ~1,000-2,500/s on a busy 2-core
	# machine: 60 s for each one's connect+join (phx-c needs ~2 s for all).
	common="--workers 2 --timeout 60"

	echo "phoenix: $CHAT vs Phoenix 1.7.24 ($PHX_OUT) under $LG, ${D} s scenarios"
	server_start || return 1
	phoenix_start || return 1
	phx_vsn=$(cat "$PHX_OUT/VERSIONS.txt" 2>/dev/null | grep -m1 -i 'erlang/otp' | sed 's/^# *//')

	# Both servers fresh: RSS growth per joined connection.
	lgc connect connect -n "$N" $common --per-worker "$HALF_W" --connect-rate 0 --duration "$HOLD"
	lgc bcast-1k broadcast -n "$SMALL" $common --connect-rate 0 --publishers 1 --rate 0 \
		--window 16 --duration "$D"
	lgc peak-w4 broadcast -n "$N" $common --per-worker "$PUB_W" --connect-rate 0 --publishers 1 \
		--rate 0 --window 4 --duration "$D"
	lgc peak-w16 broadcast -n "$N" $common --per-worker "$PUB_W" --connect-rate 0 --publishers 1 \
		--rate 0 --window 16 --duration "$D"
	lgc fanout broadcast -n "$N" $common --per-worker "$PUB_W" --connect-rate 0 --publishers 1 \
		--rate "$FAN_RATE" --duration "$FAN_D"
	lgc fixed-rate broadcast -n "$SMALL" $common --connect-rate 0 --publishers 1 \
		--rate "$FIX_RATE" --duration "$D"
	lgc pingpong pingpong -n "$PP_N" --timeout 60 --connect-rate 0 --duration "$D"

	echo
	echo "-- stopping phx-chat and Phoenix (SIGTERM)"
	server_stop
	phoenix_stop
	echo "  phx-chat exit status ${SERVER_EXIT:-?}, Phoenix exit status ${PHX_EXIT:-?}"
	load1=$(loadavg)

	# ---- the table
	prow "figure" "phx-c" "Phoenix" "phx-c adv."
	a=$(cn phx connect server_bytes_per_conn)
	b=$(cn phoenix connect server_bytes_per_conn)
	adv memory_per_conn "$a" "$b" lower less
	prow "server RSS per joined connection ($(fmt count "$(cn phx connect joined)") / $(fmt count "$(cn phoenix connect joined)"))" \
		"$(fmt bytes "$a")" "$(fmt bytes "$b")" "$A"
	a=$(cn phx connect connect_rate_per_s)
	b=$(cn phoenix connect connect_rate_per_s)
	adv connect_rate "$a" "$b" higher
	prow "connect+join rate (unpaced, $N)" "$(fmt rate "$a")" "$(fmt rate "$b")" "$A"
	prow "  join p50 / p99" \
		"$(fmt ms "$(cpc phx connect join_ms p50)") / $(fmt ms "$(cpc phx connect join_ms p99)")" \
		"$(fmt ms "$(cpc phoenix connect join_ms p50)") / $(fmt ms "$(cpc phoenix connect join_ms p99)")" ""
	for sc in bcast-1k:"$SMALL":16 peak-w4:"$N":4 peak-w16:"$N":16; do
		n=${sc%%:*}
		rest=${sc#*:}
		subs=${rest%%:*}
		w=${rest#*:}
		a=$(cn phx "$n" deliveries_per_s)
		b=$(cn phoenix "$n" deliveries_per_s)
		adv "deliveries_per_s_${subs}_window_$w" "$a" "$b" higher
		prow "deliveries/s, $(fmt count "$subs") subscribers, window $w" "$(fmt rate "$a")" "$(fmt rate "$b")" "$A"
		prow "  latency p50 / p99; server CPU" \
			"$(fmt ms "$(cpc phx "$n" latency_ms p50)") / $(fmt ms "$(cpc phx "$n" latency_ms p99)"); $(cn phx "$n" server_cpu_pct)%" \
			"$(fmt ms "$(cpc phoenix "$n" latency_ms p50)") / $(fmt ms "$(cpc phoenix "$n" latency_ms p99)"); $(cn phoenix "$n" server_cpu_pct)%" ""
	done
	for p in p50 p99; do
		a=$(cpc phx fanout fanout_ms $p)
		b=$(cpc phoenix fanout fanout_ms $p)
		adv "fanout_ms_$p" "$a" "$b" lower shorter
		prow "fan-out time $p, $(fmt count "$N") subscribers at $FAN_RATE msg/s" "$(fmt ms "$a")" "$(fmt ms "$b")" "$A"
	done
	for p in p50 p99; do
		a=$(cpc phx fixed-rate latency_ms $p)
		b=$(cpc phoenix fixed-rate latency_ms $p)
		adv "fixed_rate_latency_ms_$p" "$a" "$b" lower lower
		prow "latency $p, $(fmt count "$SMALL") subscribers at $FIX_RATE msg/s" "$(fmt ms "$a")" "$(fmt ms "$b")" "$A"
	done
	a=$(cn phx pingpong round_trips_per_s)
	b=$(cn phoenix pingpong round_trips_per_s)
	adv pingpong_round_trips_per_s "$a" "$b" higher
	prow "ping-pong round trips/s ($PP_N clients)" "$(fmt rate "$a")" "$(fmt rate "$b")" "$A"
	a=$(cpc phx pingpong latency_ms p99)
	b=$(cpc phoenix pingpong latency_ms p99)
	adv pingpong_latency_ms_p99 "$a" "$b" lower lower
	prow "  round-trip p99" "$(fmt ms "$a")" "$(fmt ms "$b")" "$A"
	bad_a=0
	bad_b=0
	for n in bcast-1k peak-w4 peak-w16 fanout fixed-rate; do
		for k in lost duplicated out_of_order dropped; do
			x=$(cn phx $n $k)
			bad_a=$((bad_a + ${x:-0}))
			x=$(cn phoenix $n $k)
			bad_b=$((bad_b + ${x:-0}))
		done
	done
	prow "lost + dup + out of order + dropped (5 broadcasts)" "$bad_a" "$bad_b" ""

	echo
	echo "phoenix: phx-c vs Phoenix 1.7.24, same machine, same run (adv. = how many times better phx-c is)"
	[ -n "$QUICK" ] && echo "  (BENCH_QUICK: $N connections, ${D} s scenarios)"
	echo "  load average (1 min) before $load0, after $load1; $(nproc 2>/dev/null) cores; $phx_vsn"
	cat "$TMP/ptable"
	[ -n "$CRASHES" ] && echo "  server crashes: $CRASHES"

	figs() { # figs SIDE: the figures of one side as a JSON object body
		out=""
		for n in connect bcast-1k peak-w4 peak-w16 fanout fixed-rate pingpong; do
			g=$RESULTS/phoenix-$n.json.$1
			[ -s "$g" ] || continue
			out="$out${out:+,}\"$n\":$(cat "$g")"
		done
		printf '%s' "$out"
	}
	{
		printf '{"machine":%s,"loadavg_1m_after":%s,"quick":%s,' "$(machine_json "$load0")" "$load1" \
			"$([ -n "$QUICK" ] && echo true || echo false)"
		printf '"phoenix":{"release":"%s","tools":"%s","starts":%s,"exit_status_on_sigterm":%s,"log":"%s"},' \
			"$PHX_OUT" "$phx_vsn" "$PHX_STARTS" "$(v "$PHX_EXIT")" "$PHX_LOG"
		printf '"phx":{"binary":"%s","starts":%s,"exit_status_on_sigterm":%s,"log":"%s"},"crashes":[%s],' \
			"$CHAT" "$SERVER_STARTS" "$(v "$SERVER_EXIT")" "$SERVER_LOG" "$CRASHES"
		printf '"sizes":{"connections":%s,"small":%s,"pingpong_clients":%s,"duration_s":%s,"fanout_rate":%s,"fixed_rate":%s},' \
			"$N" "$SMALL" "$PP_N" "$D" "$FAN_RATE" "$FIX_RATE"
		printf '"scenarios":{%s},"advantage":{%s},"lost_dup_ooo_dropped":{"phx":%s,"phoenix":%s},' \
			"$SCENARIOS" "$ADV" "$bad_a" "$bad_b"
		printf '"results":{"phx":{%s},"phoenix":{%s}}}\n' "$(figs phx)" "$(figs phoenix)"
	} >"$RESULTS/phoenix.json"
	echo "  results written to $RESULTS/phoenix.json (per scenario: $RESULTS/phoenix-<scenario>.json${PLOT:+, charts in $RESULTS/phoenix-<scenario>/})"
	return $failed
}

# ------------------------------------------------------------------ longpoll
#
# Long polling next to WebSocket, in the same run, under build/bench/loadgen
# (--transport longpoll: every session holds a poll and a POST connection).
# Per transport, on a fresh phx-chat: sessions held and server RSS per
# session (connect, N sessions held HOLD s), deliveries/s to N subscribers
# with the publisher flat out (window 16), and delivery latency at a fixed
# rate: half the long-poll peak, the same rate for both transports, so that
# the latencies compare.  The publisher is a WebSocket client in both, so that
# only the subscribers' transport differs.  While phx-chat answers 404 on
# /socket/longpoll the section is skipped.  BENCH_LONGPOLL_URL=http://H:P runs
# it against a server already running there instead (e.g. a real Phoenix
# node: anchors/phoenix/start.sh PORT), BENCH_LONGPOLL_PID=PID for its RSS and
# CPU; BENCH_LONGPOLL_SESSIONS changes N.  See "The longpoll section" in
# bench/README.md.

# lpg NAME ARGS...: one loadgen scenario against $URL (phx-chat, or the
# external server), like lg.
lpg() {
	name=$1
	shift
	rm -rf "$RESULTS/$name.json" "$RESULTS/$name"
	echo
	echo "-- $name: loadgen $*"
	if [ -z "$LP_EXTERNAL" ] && [ -z "$SERVER_PID" ]; then
		echo "bench: scenario $name: no server" >&2
		SCENARIOS="$SCENARIOS${SCENARIOS:+,}\"$name\":{\"exit_status\":null,\"status\":\"no server\",\"file\":null}"
		failed=1
		return
	fi
	set -- "$@" --url "$URL" --json "$RESULTS/$name.json"
	[ -n "$SERVER_PID$LP_PID" ] && set -- "$@" --server-pid "$SERVER_PID$LP_PID"
	[ -n "$PLOT" ] && set -- "$@" --plot "$RESULTS/$name"
	{
		timeout --foreground -s INT -k 30 "$LG_LIMIT" "$LG" "$@" 2>&1
		echo $? >"$TMP/$name.rc"
	} | grep -v '^{"'
	if [ -z "$LP_EXTERNAL" ]; then
		server_check "$name"
	elif [ -n "$LP_PID" ] && ! kill -0 "$LP_PID" 2>/dev/null; then
		echo "bench: the server at $URL (pid $LP_PID) died during $name" >&2
		SERVER_DIED=died
		failed=1
	fi
	note_result "$name" "$(cat "$TMP/$name.rc")"
	lp_settle
}

# lp_settle: like settle, for phx-chat or the external server (which this
# script never stops: its pid is LP_PID, never SERVER_PID).
lp_settle() {
	command -v ss >/dev/null 2>&1 && [ -n "$SERVER_PORT" ] || {
		sleep 1
		return
	}
	i=0
	while [ $i -lt 200 ]; do
		[ -z "$(ss -Htn state connected exclude time-wait "( sport = :$SERVER_PORT )" 2>/dev/null | head -n 1)" ] && return
		sleep 0.1
		i=$((i + 1))
	done
	echo "bench: the server still holds connections 20 s after the last scenario" >&2
}

# lp_serves URL: the HTTP status of a session-opening GET on URL's
# /socket/longpoll (000: no answer).
lp_serves() {
	curl -s -o /dev/null -m 5 -w '%{http_code}' "$1/socket/longpoll?vsn=2.0.0" 2>/dev/null || true
}

section_longpoll() {
	load0=$(loadavg)
	CHAT=$BUILD/phx-chat
	LG=$BUILD/bench/loadgen
	for b in "$CHAT" "$LG"; do
		if [ ! -x "$b" ]; then
			echo "bench: $b is missing (run make all)" >&2
			return 1
		fi
	done
	for c in timeout curl; do
		if ! command -v $c >/dev/null 2>&1; then
			echo "bench: $c not found" >&2
			return 1
		fi
	done
	# 5,000 sessions are 10,000 sockets in the loadgen and in the server.
	ulimit -n "$(ulimit -Hn)" 2>/dev/null
	PLOT=""
	command -v gnuplot >/dev/null 2>&1 && PLOT=1
	if [ -n "$QUICK" ]; then
		N=500 D=2 HOLD=1
	else
		N=5000 D=8 HOLD=12 # HOLD: past the 10 s poll window (204s included)
	fi
	N=${BENCH_LONGPOLL_SESSIONS:-$N}
	LG_LIMIT=$((D + 150))
	failed=0
	SERVER_STARTS=0
	SERVER_EXIT=""
	SERVER_STOP_MS=""
	CRASHES=""
	SERVER_DIED=""
	SCENARIOS=""
	: >"$TMP/table"
	SERVER_LOG=$RESULTS/server-longpoll.log
	: >"$SERVER_LOG"
	for t in lp ws; do
		for sc in connect broadcast-peak broadcast-half; do
			rm -rf "$RESULTS/$t-$sc.json" "$RESULTS/$t-$sc"
		done
	done
	LP_EXTERNAL=${BENCH_LONGPOLL_URL:-}
	LP_PID=""
	SERVER_PORT=""
	if [ -n "$LP_EXTERNAL" ]; then
		URL=${LP_EXTERNAL%/}
		LP_PID=${BENCH_LONGPOLL_PID:-}
		SERVER_PORT=$(echo "$URL" | sed -n 's#^[a-z]*://[^/]*:\([0-9][0-9]*\).*#\1#p')
		[ -n "$SERVER_PORT" ] || SERVER_PORT=80
		server_name="$URL${LP_PID:+ (pid $LP_PID)}"
		echo "longpoll: the server at $URL (BENCH_LONGPOLL_URL), $N sessions, ${D} s scenarios"
	else
		server_name=$CHAT
		echo "longpoll: $CHAT under $LG, $N sessions on room:lobby, ${D} s scenarios"
		server_start || return 1
	fi
	code=$(lp_serves "$URL")
	if [ "$code" != 200 ]; then
		why="GET /socket/longpoll answers HTTP $code"
		[ "$code" = 404 ] && why="$why: $server_name does not serve long polling yet"
		[ "$code" = 000 ] && why="GET /socket/longpoll: no answer from $URL"
		echo "bench: $why: longpoll section skipped"
		printf '{"skipped":"%s"}\n' "$why" >"$RESULTS/longpoll.json"
		[ -z "$LP_EXTERNAL" ] && server_stop
		return 0
	fi

	common="--workers 2 --timeout 30 --topics room:lobby"
	half_rate=""
	for t in lp ws; do
		if [ $t = lp ]; then tr=longpoll; else tr=websocket; fi
		if [ $t = ws ] && [ -z "$LP_EXTERNAL" ]; then
			# A fresh server for each transport: the RSS per session of each.
			echo
			echo "-- a fresh phx-chat for the WebSocket runs"
			server_stop
			server_start || failed=1
		fi
		lpg $t-connect connect -n "$N" $common --transport $tr --connect-rate 2000 \
			--duration "$HOLD"
		lpg $t-broadcast-peak broadcast -n "$N" $common --transport $tr \
			--pub-transport websocket --connect-rate 2000 --publishers 1 --rate 0 \
			--window 16 --duration "$D"
		if [ $t = lp ] || [ -z "$half_rate" ]; then
			peak=$(jn $t-broadcast-peak deliveries_per_s)
			if [ -n "$peak" ] && [ "$peak" != null ]; then
				half_rate=$(awk -v d="$peak" -v n="$N" 'BEGIN { r = int(d / 2 / n + 0.5); print (r < 1 ? 1 : r) }')
				half_from=$t
			fi
		fi
		if [ -n "$half_rate" ]; then
			lpg $t-broadcast-half broadcast -n "$N" $common --transport $tr \
				--pub-transport websocket --connect-rate 2000 --publishers 1 \
				--rate "$half_rate" --duration "$D"
		else
			echo "bench: no peak delivery rate: $t-broadcast-half skipped" >&2
			SCENARIOS="$SCENARIOS${SCENARIOS:+,}\"$t-broadcast-half\":{\"exit_status\":null,\"status\":\"skipped (no peak)\",\"file\":null}"
		fi
	done
	if [ -z "$LP_EXTERNAL" ]; then
		echo
		echo "-- stopping phx-chat (SIGTERM)"
		server_stop
		if [ "$SERVER_EXIT" != "" ] && [ "$SERVER_EXIT" != 0 ]; then
			echo "bench: phx-chat exited with status $SERVER_EXIT on SIGTERM (see $SERVER_LOG)" >&2
			failed=1
		fi
	fi

	# ---- figures, per transport
	for t in lp ws; do
		joined=$(jn $t-connect joined)
		dropped=$(jn $t-connect dropped)
		held=""
		[ -n "$joined" ] && held=$((joined - ${dropped:-0}))
		eval "${t}_held=\$held"
		eval "${t}_mem=\$(jn $t-connect server_bytes_per_conn)"
		eval "${t}_peak=\$(jn $t-broadcast-peak deliveries_per_s)"
		eval "${t}_hdps=\$(jn $t-broadcast-half deliveries_per_s)"
		eval "${t}_p50=\$(jp $t-broadcast-half latency_ms p50)"
		eval "${t}_p99=\$(jp $t-broadcast-half latency_ms p99)"
		bad=""
		for sc in broadcast-peak broadcast-half; do
			[ -s "$RESULTS/$t-$sc.json" ] || continue
			for k in lost duplicated out_of_order dropped; do
				x=$(jn $t-$sc $k)
				bad=$((${bad:-0} + ${x:-0}))
			done
		done
		eval "${t}_bad=\$bad"
	done
	# lp_figs lp|ws: the figures of one transport, as JSON members.
	lp_figs() {
		eval "held=\$${1}_held mem=\$${1}_mem pk=\$${1}_peak hd=\$${1}_hdps p50=\$${1}_p50 p99=\$${1}_p99 bad=\$${1}_bad"
		printf '"sessions_held":%s,"server_bytes_per_session":%s,"connect_rate_per_s":%s,' \
			"$(v "$held")" "$(v "$mem")" "$(v "$(jn "$1-connect" connect_rate_per_s)")"
		printf '"join_ms_p50":%s,"join_ms_p99":%s,"peak_deliveries_per_s":%s,' \
			"$(v "$(jp "$1-connect" join_ms p50)")" "$(v "$(jp "$1-connect" join_ms p99)")" "$(v "$pk")"
		printf '"half_deliveries_per_s":%s,"half_latency_ms_p50":%s,"half_latency_ms_p99":%s,' \
			"$(v "$hd")" "$(v "$p50")" "$(v "$p99")"
		printf '"lost_dup_ooo_dropped":%s,"peak_polls":%s,"peak_posts":%s' \
			"$(v "$bad")" "$(v "$(jn "$1-broadcast-peak" lp_polls)")" "$(v "$(jn "$1-broadcast-peak" lp_posts)")"
	}
	r_mem=$(ratio "$lp_mem" "$ws_mem")
	r_peak=$(ratio "$lp_peak" "$ws_peak")
	r_p50=$(ratio "$lp_p50" "$ws_p50")
	r_p99=$(ratio "$lp_p99" "$ws_p99")

	printf '  %-44s %16s %16s %8s\n' "figure ($N sessions)" "long poll" "WebSocket" "LP / WS" >"$TMP/table"
	lp_row() {
		printf '  %-44s %16s %16s %8s\n' "$1" "$2" "$3" "$4" >>"$TMP/table"
	}
	lp_row "sessions held (connect, ${HOLD} s)" "$(fmt count "$lp_held")" "$(fmt count "$ws_held")" "-"
	lp_row "server RSS per session" "$(fmt bytes "$lp_mem")" "$(fmt bytes "$ws_mem")" "$(fmt x "$r_mem")"
	lp_row "deliveries/s, publisher flat out (window 16)" "$(fmt rate "$lp_peak")" "$(fmt rate "$ws_peak")" "$(fmt x "$r_peak")"
	lp_row "latency p50 at ${half_rate:-?} msg/s" "$(fmt ms "$lp_p50")" "$(fmt ms "$ws_p50")" "$(fmt x "$r_p50")"
	lp_row "latency p99 at ${half_rate:-?} msg/s" "$(fmt ms "$lp_p99")" "$(fmt ms "$ws_p99")" "$(fmt x "$r_p99")"
	lp_row "lost + dup + out of order + dropped" "$(fmt count "$lp_bad")" "$(fmt count "$ws_bad")" "-"
	[ -n "$lp_bad" ] && [ "$lp_bad" != 0 ] && failed=1
	[ -n "$ws_bad" ] && [ "$ws_bad" != 0 ] && failed=1

	echo
	echo "longpoll: long-poll vs WebSocket subscribers on $server_name (publisher: WebSocket)"
	[ -n "$QUICK" ] && echo "  (BENCH_QUICK: $N sessions, ${D} s scenarios)"
	cat "$TMP/table"
	[ -n "$CRASHES" ] && echo "  server crashes: $CRASHES"
	{
		printf '{"machine":%s,"quick":%s,' "$(machine_json "$load0")" "$([ -n "$QUICK" ] && echo true || echo false)"
		printf '"server":{"target":"%s","external":%s,"starts":%s,"crashes":[%s],"exit_status_on_sigterm":%s,"log":"%s"},' \
			"$server_name" "$([ -n "$LP_EXTERNAL" ] && echo true || echo false)" "$SERVER_STARTS" "$CRASHES" \
			"$(v "$SERVER_EXIT")" "$SERVER_LOG"
		printf '"sizes":{"sessions":%s,"workers":2,"duration_s":%s,"connect_hold_s":%s,"half_rate_per_s":%s,"half_rate_from":"%s","publisher_transport":"websocket"},' \
			"$N" "$D" "$HOLD" "$(v "$half_rate")" "${half_from:-}"
		printf '"scenarios":{%s},' "$SCENARIOS"
		printf '"longpoll":{%s},"websocket":{%s},' "$(lp_figs lp)" "$(lp_figs ws)"
		printf '"longpoll_over_websocket":{"server_bytes_per_session":%s,"peak_deliveries_per_s":%s,"half_latency_ms_p50":%s,"half_latency_ms_p99":%s}}\n' \
			"$r_mem" "$r_peak" "$r_p50" "$r_p99"
	} >"$RESULTS/longpoll.json"
	charts=""
	[ -n "$PLOT" ] && charts=", charts in $RESULTS/lp-<scenario>/ and ws-<scenario>/"
	echo "  results written to $RESULTS/longpoll.json (per scenario: $RESULTS/lp-<scenario>.json and ws-<scenario>.json$charts)"
	return $failed
}

# ------------------------------------------------------------------ main

status=0
ran=""
for s in $SECTIONS; do
	case " $ALL_SECTIONS " in
	*" $s "*) ;;
	*)
		echo "bench: unknown section $s (known: $ALL_SECTIONS)" >&2
		status=1
		continue
		;;
	esac
	echo "== bench: $s (load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null))"
	rm -f "$RESULTS/$s.json"
	if ! "section_$s"; then
		echo "bench: section $s FAILED" >&2
		status=1
	fi
	[ -s "$RESULTS/$s.json" ] && ran="$ran $s"
done
# The combined result, as the last line.
sep=""
printf '{'
for s in $ran; do
	printf '%s"%s":%s' "$sep" "$s" "$(cat "$RESULTS/$s.json")"
	sep=","
done
printf '}\n'
exit $status
