#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Performance benchmark of deltachat-push against its reference commands.
#
#   tests/bench/bench.sh BINARY [--quick] [--update-baseline] [--keep]
#
# Full mode measures every row (hyperfine, GNU time, callgrind) and exits
# non-zero when a target is missed; --quick runs every row a few times and
# only checks that everything works (for CI).  See bench.py for the rows.
#
# The output is TAP (the report as comments, one test line), so that under
# `meson test` a missing tool is a named skip: with DCP_MISSING_TOOLS=skip
# (meson's -Dbench_tests=auto) it prints "1..0 # SKIP ... not installed",
# otherwise (-Dbench_tests=enabled, or by hand) a missing tool fails.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

missing=()
for tool in hyperfine valgrind curl /usr/bin/time; do
	command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "${DCP_MISSING_TOOLS-fail}" = skip ]; then
		echo "1..0 # SKIP ${missing[*]} not installed"
		exit 0
	fi
	echo "1..1"
	echo "not ok 1 - benchmark: ${missing[*]} not installed"
	exit 1
fi

echo "1..1"
python3 "$here/bench.py" "$@" 2>&1 | sed -u 's/^/# /'
rc=${PIPESTATUS[0]}
if [ "$rc" -eq 0 ]; then
	echo "ok 1 - benchmark ($*)"
else
	echo "not ok 1 - benchmark ($*): exit $rc"
fi
exit "$rc"
