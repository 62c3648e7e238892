#!/bin/sh
# Runs every test binary under BUILD/test (or only BUILD/test/FOLDER), then the
# integration suites when running everything; prints "N passed, N failed".
BUILD=${1:-build}
ONLY=${2:-}
cd "$(dirname "$0")/.."
total_pass=0
total_fail=0
log=$(mktemp)
for t in $(find "$BUILD/test/$ONLY" -type f -name 'test_*' ! -name '*.o' ! -name '*.d' 2>/dev/null | sort); do
	[ -x "$t" ] || continue
	echo "== $t"
	"$t" 2>&1 | tee "$log"
	line=$(grep -E '^[^ ]+: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
	if [ -z "$line" ]; then
		echo "FAIL $t: ended without a summary"
		total_fail=$((total_fail + 1))
		continue
	fi
	p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\1/')
	f=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\2/')
	total_pass=$((total_pass + p))
	total_fail=$((total_fail + f))
done
if [ -z "$ONLY" ]; then
	echo "== install"
	sh test/install.sh "$BUILD" 2>&1 | tee "$log"
	line=$(grep -E '^install: [0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
	if [ -z "$line" ]; then
		echo "FAIL install: ended without a summary"
		total_fail=$((total_fail + 1))
	else
		total_pass=$((total_pass + $(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')))
		total_fail=$((total_fail + $(echo "$line" | sed -E 's/.*, ([0-9]+) failed.*/\1/')))
	fi
fi
if [ -z "$ONLY" ] && [ -x test/integration/run.sh ]; then
	echo "== integration"
	sh test/integration/run.sh "$BUILD" 2>&1 | tee "$log"
	line=$(grep -E '^integration: [0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
	if [ -z "$line" ]; then
		echo "FAIL integration: ended without a summary"
		total_fail=$((total_fail + 1))
	else
		p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\1/')
		f=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\2/')
		total_pass=$((total_pass + p))
		total_fail=$((total_fail + f))
	fi
fi
rm -f "$log"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ] && [ "$total_pass" -gt 0 ]
