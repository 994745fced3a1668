#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Show the exact request deltachat-push would send for examples/sample.eml,
# against a loopback endpoint (tests/httpd.py), without the internet and
# without touching your own cache: a throwaway HOME is used.
#   tests/demo.sh [BUILDDIR]        (default: build)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
bin="$build/mda/deltachat-push"
[ -x "$bin" ] || bin="$top/$bin"
tmp=$(mktemp -d)
srv=
trap 'if [ -n "$srv" ]; then kill "$srv" 2>/dev/null || true; fi; rm -rf "$tmp"' EXIT INT TERM

python3 "$top/tests/httpd.py" --once --port-file "$tmp/port" --max-seconds 20 > "$tmp/request" &
srv=$!
i=0
while [ ! -s "$tmp/port" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
url="http://127.0.0.1:$(cat "$tmp/port")/notify"
token="fcm-chat.delta:demo-token-not-real"

echo "\$ deltachat-push --url $url $token < examples/sample.eml"
rc=0
HOME=$tmp XDG_CACHE_HOME=$tmp/cache XDG_CONFIG_HOME=$tmp/config \
  "$bin" --verbose --url "$url" "$token" < "$top/examples/sample.eml" 2>&1 || rc=$?
wait "$srv" || true
echo "exit status: $rc"
echo "--- the request the endpoint received (the body is the token, nothing else):"
cat "$tmp/request"
echo "---"
[ "$rc" -eq 0 ]
