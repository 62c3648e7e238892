#!/bin/sh
# Integration run: sh test/integration/run.sh BUILD_DIR
#
# Starts BUILD_DIR/phx-chat on a free port (log: BUILD_DIR/integration-server.log),
# waits until it answers HTTP, then runs with node's test runner:
#   (a) the conformance suite of ../shared/conformance (files 01-11: 11 is
#       long polling with phoenix.js's own LongPoll; 12, the cluster, in (c)),
#   (b) test/integration/*.test.js (bad input, presence keys, launcher, HTTPS and wss
#       with a certificate it makes (tls.test.js), the chat page in
#       headless Chromium, long polling (longpoll.test.js and the browser
#       tests skip while /socket/longpoll answers 404), clusters:
#       cluster.test.js starts its own nodes and
#       redis-server on free ports; drain.test.js, the drain at SIGTERM and
#       rolling restarts of a 3-node cluster it starts),
#   (c) the conformance suite's 12_cluster against nodes 1 and 2 (PHX_URL,
#       PHX_URL2) of a 3-node cluster started by `phx-chat cluster --nodes 3`
#       (log: BUILD_DIR/integration-cluster.log), stopped with SIGTERM (exit 0).
# Then stops the server with SIGTERM (it must exit 0 within 10 s, with no
# sanitizer report in its log) and prints one last line
# "integration: N passed, N failed".  Exits non-zero on any failure.
set -u
BUILD=${1:-build}
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
case $BUILD in
/*) BUILD_ABS=$BUILD ;;
*) BUILD_ABS=$ROOT/$BUILD ;;
esac
BIN=$BUILD_ABS/phx-chat
CONF=$(cd "$ROOT/.." && pwd)/shared/conformance
CONF_FILES="01_join 02_broadcast 03_replies 04_crash_slow 05_binary 06_intercept 07_auth 08_presence 09_v1 10_leave 11_longpoll"
LOG=$BUILD_ABS/integration-server.log
CLOG=$BUILD_ABS/integration-cluster.log

pass=0
fail=0
summary() {
	echo "integration: $pass passed, $fail failed"
	[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
	exit $?
}
failed() {
	echo "FAIL integration: $*"
	fail=$((fail + 1))
}

if [ ! -x "$BIN" ]; then
	failed "$BIN is missing (make all)"
	summary
fi
if ! command -v node >/dev/null 2>&1; then
	failed "node is missing (sh scripts/setup.sh test)"
	summary
fi

# npm dependencies (scripts/setup.sh installs them; this catches a bare checkout).
npm_ci() {
	if [ -f "$1/package.json" ] && [ ! -d "$1/node_modules" ]; then
		echo "== npm ci in $1"
		(cd "$1" && npm ci --no-audit --no-fund --loglevel=error >&2) || failed "npm ci in $1"
	fi
}
npm_ci "$ROOT/test/integration"
npm_ci "$ROOT/examples/chat"
if [ ! -d "$CONF" ]; then
	failed "conformance suite not found at $CONF"
elif [ ! -d "$CONF/node_modules" ] &&
	! (cd "$CONF" && npm ci --no-audit --no-fund --loglevel=error >&2); then
	# A read-only shared/: run a copy of the suite from the build directory.
	echo "== npm ci failed in $CONF; using a copy in $BUILD_ABS/conformance"
	rm -rf "$BUILD_ABS/conformance"
	mkdir -p "$BUILD_ABS/conformance"
	cp -R "$CONF/lib" "$CONF/test" "$CONF/package.json" "$CONF/package-lock.json" "$BUILD_ABS/conformance/"
	CONF=$BUILD_ABS/conformance
	(cd "$CONF" && npm ci --no-audit --no-fund --loglevel=error >&2) || failed "npm ci in $CONF"
fi

free_port() {
	node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
PORT=$(free_port)
URL=http://127.0.0.1:$PORT

# Waits up to 20 s for URL to answer HTTP (and, with a second argument N,
# for its /api/cluster to list N members up besides itself).
await_http() {
	node -e '
	const url = process.argv[1], want = Number(process.argv[2] || 0), deadline = Date.now() + 20000;
	(async () => {
		for (;;) {
			try {
				const r = await fetch(want ? url + "/api/cluster" : url + "/", { signal: AbortSignal.timeout(1000) });
				const text = await r.text();
				if (!want) process.exit(0);
				const j = JSON.parse(text);
				if ((j.members || []).filter((m) => m.up !== false && m.name !== j.name).length >= want) process.exit(0);
			} catch (_) {}
			if (Date.now() > deadline) process.exit(1);
			await new Promise((r) => setTimeout(r, 100));
		}
	})()' "$@"
}

echo "== starting $BIN --port $PORT (log: $LOG)"
"$BIN" --port "$PORT" --log-level info >"$LOG" 2>&1 &
PID=$!
if ! await_http "$URL"; then
	failed "the server did not answer HTTP on $URL within 20 s"
	kill -KILL "$PID" 2>/dev/null
	tail -n 40 "$LOG"
	summary
fi

# Runs node --test in directory $1 on files $2...; adds its TAP counts.
TAP=$(mktemp)
node_tests() {
	dir=$1
	shift
	echo "== node --test in $dir: $*"
	(cd "$dir" && PHX_URL=${NODE_URL:-$URL} PHX_URL2=${NODE_URL2:-} PHX_BIN=$BIN \
		timeout 170 node --test --test-concurrency=1 \
		--test-reporter=tap "$@") >"$TAP" 2>&1
	rc=$?
	cat "$TAP"
	p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$TAP" | tail -n 1)
	f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$TAP" | tail -n 1)
	c=$(sed -n 's/^# cancelled \([0-9]*\)$/\1/p' "$TAP" | tail -n 1)
	pass=$((pass + ${p:-0}))
	fail=$((fail + ${f:-0} + ${c:-0}))
	if [ -z "$p" ]; then
		failed "node --test in $dir ended without a summary (exit $rc)"
	elif [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ] && [ "${c:-0}" -eq 0 ]; then
		failed "node --test in $dir exited $rc"
	fi
}

if [ -d "$CONF" ]; then
	files=""
	for f in $CONF_FILES; do files="$files test/$f.test.js"; done
	# shellcheck disable=SC2086
	node_tests "$CONF" $files
fi
node_tests "$ROOT/test/integration" bad_input.test.js presence.test.js pubsub.test.js launcher.test.js browser.test.js cluster.test.js tls.test.js
# Long polling on its own time budget: a session expiry takes up to 30 s with
# Phoenix's window.
node_tests "$ROOT/test/integration" longpoll.test.js
# The drain at SIGTERM: batches on one node, then rolling restarts of a
# 3-node cluster with and without the drain.
node_tests "$ROOT/test/integration" drain.test.js

# (c) 12_cluster against two nodes of a cluster of three.  Ports: HTTP
# CP..CP+2 and mesh CC..CC+2, all free (checked here).
cluster_ports() {
	node -e '
	const net = require("net");
	const free = (p) => new Promise((res) => { const s = net.createServer(); s.once("error", () => res(false)); s.listen(p, "127.0.0.1", () => s.close(() => res(true))) });
	(async () => {
		for (let i = 0; i < 200; i++) {
			const p = 20000 + Math.floor(Math.random() * 30000), c = p + 1000;
			let ok = true;
			for (const q of [p, p + 1, p + 2, c, c + 1, c + 2]) if (!(ok = await free(q))) break;
			if (ok) { console.log(p + " " + c); return }
		}
		process.exit(1);
	})()'
}
if [ -d "$CONF" ]; then
	if ! ports=$(cluster_ports); then
		failed "no free ports for the 3-node cluster"
	else
		CP=${ports% *}
		CC=${ports#* }
		echo "== starting $BIN cluster --nodes 3 --port $CP --cluster-port $CC (log: $CLOG)"
		"$BIN" cluster --nodes 3 --port "$CP" --cluster-port "$CC" --heartbeat-ms 200 \
			--down-after-ms 1000 --log-level info >"$CLOG" 2>&1 &
		CPID=$!
		if await_http "http://127.0.0.1:$CP" 2 && await_http "http://127.0.0.1:$((CP + 1))" 2; then
			NODE_URL=http://127.0.0.1:$CP
			NODE_URL2=http://127.0.0.1:$((CP + 1))
			node_tests "$CONF" test/12_cluster.test.js
			NODE_URL=
			NODE_URL2=
		else
			failed "the 3-node cluster did not form within 20 s"
		fi
		kill -TERM "$CPID" 2>/dev/null
		(sleep 15 && kill -KILL "$CPID") >/dev/null 2>&1 &
		WATCHDOG=$!
		wait "$CPID"
		rc=$?
		kill "$WATCHDOG" 2>/dev/null
		if [ "$rc" -ne 0 ]; then
			failed "the cluster command exited $rc after SIGTERM"
			tail -n 40 "$CLOG"
		else
			pass=$((pass + 1))
		fi
		if grep -Eq 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: ThreadSanitizer' "$CLOG"; then
			failed "sanitizer report in $CLOG"
			grep -E -A 30 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: ThreadSanitizer' "$CLOG" | head -n 80
		fi
	fi
fi
rm -f "$TAP"

# Stop the server: SIGTERM, exit 0 within 10 s.
echo "== stopping the server (SIGTERM)"
kill -TERM "$PID" 2>/dev/null
(sleep 10 && kill -KILL "$PID") >/dev/null 2>&1 &
WATCHDOG=$!
wait "$PID"
rc=$?
kill "$WATCHDOG" 2>/dev/null
if [ "$rc" -eq 137 ]; then
	failed "the server did not exit within 10 s of SIGTERM"
elif [ "$rc" -ne 0 ]; then
	failed "the server exited $rc after SIGTERM"
else
	pass=$((pass + 1))
fi
if grep -Eq 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: ThreadSanitizer' "$LOG"; then
	failed "sanitizer report in $LOG"
	grep -E -A 30 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: ThreadSanitizer' "$LOG" | head -n 80
fi
if [ "$fail" -ne 0 ]; then
	echo "== last lines of $LOG"
	tail -n 40 "$LOG"
fi
summary
