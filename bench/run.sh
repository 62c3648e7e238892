#!/bin/sh
# Runs the benchmarks (called by `make bench` as `sh bench/run.sh BUILD_DIR`).
#
#   sh bench/run.sh [BUILD_DIR [SECTION...]]
#
# Each section is a shell function section_NAME below: it runs its binaries,
# prints a human summary and writes results/NAME.json.  Sections run in the
# order of SECTIONS (default: all known ones); to add one, write its function
# and append its name to ALL_SECTIONS.  BENCH_QUICK=1 passes --quick (10x
# smaller sizes) to every benchmark; BENCH_REPEAT=N runs each timed scenario
# N times (default 3) and reports the best.  The last line printed is one JSON
# object {"SECTION": <results/SECTION.json>, ...} of the sections that ran.
# The exit status is 0 when everything ran, non-zero when a benchmark crashed
# or printed no result (a missed performance target is reported, not an error).
set -u
BUILD=${1:-build}
[ $# -gt 0 ] && shift
cd "$(dirname "$0")/.."

ALL_SECTIONS="runtime"
SECTIONS=${*:-$ALL_SECTIONS}
QUICK=""
[ -n "${BENCH_QUICK:-}" ] && [ "${BENCH_QUICK}" != 0 ] && QUICK="--quick"
REPEAT=${BENCH_REPEAT:-3}
RESULTS=results
mkdir -p "$RESULTS"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM

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
