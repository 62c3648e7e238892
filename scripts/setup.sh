#!/bin/sh
# Installs what the project needs on a Debian 12 machine, only what is missing.
#   setup.sh build   compiler and libraries, Node.js/npm for the chat page's phoenix.js
#   setup.sh test    + npm packages for the integration tests, Chromium, redis-server,
#                    the openssl command (the TLS tests make their certificate)
#   setup.sh bench   + Erlang (the reference ring benchmark), gnuplot
#   setup.sh fuzz    + clang and its libFuzzer runtime (make fuzz)
#   setup.sh bench-phoenix  + Erlang and Elixir, git (to build the real Phoenix
#                    reference for make bench-phoenix)
set -e
level=${1:-build}
cd "$(dirname "$0")/.."

pkgs="gcc make pkg-config libev-dev libmsgpack-dev libnng-dev libcjson-dev libssl-dev libhiredis-dev nodejs npm"
case $level in
test) pkgs="$pkgs chromium redis-server openssl" ;;
bench) pkgs="$pkgs erlang-base gnuplot-nox" ;;
fuzz) pkgs="$pkgs clang libclang-rt-dev" ;;
bench-phoenix) pkgs="$pkgs erlang-base gnuplot-nox erlang elixir git" ;;
esac
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
# Node.js may come from outside Debian's packages (the image ships it): accept a working one.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
	missing=$(echo "$missing" | sed -e 's/ nodejs//' -e 's/ npm//')
fi
if [ -n "$(echo $missing)" ]; then
	echo "setup: installing$missing" >&2
	SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >&2
fi

# The chat page serves the official phoenix.js from examples/chat/node_modules.
if [ -f examples/chat/package.json ] && [ ! -d examples/chat/node_modules ]; then
	(cd examples/chat && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

if [ "$level" = test ] && [ -f test/integration/package.json ]; then
	if [ ! -d test/integration/node_modules ] || [ test/integration/package-lock.json -nt test/integration/node_modules ]; then
		(cd test/integration && npm ci --no-audit --no-fund --loglevel=error >&2)
	fi
fi
