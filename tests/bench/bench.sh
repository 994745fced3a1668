#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Performance benchmark of deltachat-push against its reference commands.
#
#   tests/bench/bench.sh BINARY [--quick] [--update-baseline] [--keep]
#
# Full mode measures every row (hyperfine, GNU time, callgrind) and exits
# non-zero when a target is missed; --quick runs every row a few times and
# only checks that everything works (for CI).  See bench.py for the rows.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec python3 "$here/bench.py" "$@"
