#!/bin/sh
# Runs every libFuzzer target of BUILD (make fuzz-build) for SECONDS each,
# one at a time, with its committed corpus, and fails when any of them
# crashes (a sanitizer report, a failed FUZZ_CHECK, a leak, a timeout).
# New inputs go to a scratch directory, not into fuzz/corpus/.
#   sh fuzz/run.sh [BUILD [SECONDS [TARGET...]]]
BUILD=${1:-build-fuzz}
SECONDS_EACH=${2:-60}
cd "$(dirname "$0")/.."
[ $# -ge 2 ] && shift 2 || shift $#
targets=$*
[ -n "$targets" ] || targets=$(cd fuzz && ls fuzz_*.c | sed 's/\.c$//')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=""
for t in $targets; do
	name=${t#fuzz_}
	mkdir -p "$work/$name" "$work/crash-$name"
	seeds=""
	[ -d "fuzz/corpus/$name" ] && seeds="fuzz/corpus/$name"
	echo "== $t (${SECONDS_EACH}s)"
	if ! "$BUILD/$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$work/crash-$name/" \
		"$work/$name" $seeds >"$work/$name.log" 2>&1; then
		tail -n 60 "$work/$name.log"
		for a in "$work/crash-$name"/*; do
			[ -f "$a" ] || continue
			mkdir -p fuzz/crashes && cp "$a" "fuzz/crashes/$name-$(basename "$a")"
			echo "FAIL $t: input saved as fuzz/crashes/$name-$(basename "$a")"
		done
		failed="$failed $t"
		continue
	fi
	grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::average_exec_per_sec)' "$work/$name.log" | tr '\n' ' '
	echo
done
if [ -n "$failed" ]; then
	echo "fuzz: crashes in:$failed"
	exit 1
fi
echo "fuzz: every target ran ${SECONDS_EACH}s without a crash"
