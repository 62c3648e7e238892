#!/bin/sh
# Installs the library into a temporary prefix, builds examples/external/app.c
# against it with pkg-config (as an application outside the tree would), runs
# it and checks one join and one reply over a real WebSocket.
# Prints "install: N passed, N failed".
cd "$(dirname "$0")/.."
BUILD=${1:-build}
tmp=$(mktemp -d)
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   install: $1"; }
ko() { fail=$((fail + 1)); echo "FAIL install: $1"; }
san="" sanitizer=""
case "$BUILD" in
*-address) san="-fsanitize=address,undefined" sanitizer=address ;;
*-thread) san="-fsanitize=thread" sanitizer=thread ;;
esac
if make --no-print-directory install PREFIX="$tmp/prefix" SANITIZER="$sanitizer" >"$tmp/install.log" 2>&1; then
	ok "make install"
else
	ko "make install"; cat "$tmp/install.log"
fi
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
if cc -std=gnu11 -Wall -Wextra -Werror $san examples/external/app.c \
	$(pkg-config --cflags --libs --static phx) -o "$tmp/echo-app" 2>"$tmp/cc.log"; then
	ok "an external app builds with pkg-config"
else
	ko "an external app builds with pkg-config"; cat "$tmp/cc.log"
fi
if [ -x "$tmp/echo-app" ]; then
	port=$(node -e 'const s=require("net").createServer().listen(0,()=>{console.log(s.address().port);s.close()})')
	"$tmp/echo-app" --port "$port" --log-level warning >"$tmp/app.log" 2>&1 &
	pid=$!
	if (cd test/integration && PORT=$port node -e '
const WebSocket = require("ws")
const ws = new WebSocket(`ws://127.0.0.1:${process.env.PORT}/socket/websocket?vsn=2.0.0`)
const want = ["[\"1\",\"1\",\"echo:x\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]",
  "[\"1\",\"2\",\"echo:x\",\"phx_reply\",{\"response\":{\"n\":12345678901234567890},\"status\":\"ok\"}]"]
const timer = setTimeout(() => { console.error("timeout"); process.exit(1) }, 5000)
ws.on("error", (e) => { console.error(e.message); process.exit(1) })
ws.on("open", () => {
  ws.send(JSON.stringify(["1", "1", "echo:x", "phx_join", {}]))
  ws.send("[\"1\",\"2\",\"echo:x\",\"hi\",{\"n\":12345678901234567890}]")
})
ws.on("message", (d) => {
  const w = want.shift()
  if (d.toString() !== w) { console.error(`got ${d} want ${w}`); process.exit(1) }
  if (!want.length) { clearTimeout(timer); ws.close(); process.exit(0) }
})' 2>"$tmp/ws.log"); then
		ok "the external app answers over WebSocket"
	else
		ko "the external app answers over WebSocket"; cat "$tmp/ws.log" "$tmp/app.log"
	fi
	kill -TERM "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
fi
rm -rf "$tmp"
echo "install: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
