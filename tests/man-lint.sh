#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# man-lint.sh MANPAGE [BINARY]
#
# TAP test for the hand-written mdoc page:
#   1-6. groff -mandoc -ww -z prints no warning at all, on the default
#      device (ps), -Tutf8 and -Tascii (what man(1) uses in a UTF-8 and in
#      the C locale), each with LC_ALL=C and LC_ALL=C.UTF-8: groff 1.22
#      and 1.23 break lines differently per device, and 1.22 has no ASCII
#      fallback for some characters (groff exits 0 even when it warns, so
#      any output on stderr or stdout is a failure);
#   7. mandoc -Tlint is clean at its default level (-Wall, down to style
#      and base-system notes such as an argument to .Os), except for the
#      notes that depend on which other pages are installed ("referenced
#      manual not found", "outdated mandoc.db"); only this point may be
#      skipped, when mandoc is not installed;
#   8. if BINARY is given, every option that `BINARY --help` lists
#      (long and short) appears in the rendered page, so an option cannot
#      be added without being documented.
#
# groff, troff and the an/doc/mandoc macro packages come from the Debian
# package groff-base (which man-db depends on, so it is nearly always there);
# the full `groff` package is not needed for -Tutf8 or -Tascii.

set -u

page=${1:-}
bin=${2:-}

if [ -z "$page" ]; then
	echo "usage: man-lint.sh MANPAGE [BINARY]" >&2
	exit 2
fi

# A build with only the build dependencies may have no groff: say so and
# skip (CI installs groff-base and fails on any skip).
if ! command -v groff >/dev/null 2>&1; then
	echo "1..0 # SKIP groff not installed (apt install groff-base)"
	exit 0
fi

echo "1..8"
failed=0

fail() {
	failed=1
	echo "not ok $1"
}

diag() {
	sed 's/^/# /'
}

# silent N WHAT COMMAND...: test N passes when COMMAND exits 0 and prints
# nothing on stdout or stderr
silent() {
	n=$1 what=$2
	shift 2
	out=$("$@" 2>&1)
	rc=$?
	if [ "$rc" -eq 0 ] && [ -z "$out" ]; then
		echo "ok $n - $* $what"
	else
		fail "$n - $* (exit $rc)"
		printf '%s\n' "$out" | diag
	fi
}

# 1-6. groff warnings
n=0
for locale in C C.UTF-8; do
	for device in "" -Tutf8 -Tascii; do
		n=$((n + 1))
		if [ ! -r "$page" ]; then
			fail "$n - groff -ww ($page not readable)"
		else
			silent $n "is silent" env LC_ALL=$locale \
				groff -mandoc -ww -z $device "$page"
		fi
	done
done

# 7. mandoc lint; its output, less the notes about other pages, must be
# empty (mandoc's exit status counts those notes too)
mandoc_lint() {
	mandoc -Tlint "$1" 2>&1 |
		grep -v -e 'STYLE: referenced manual not found' \
			-e 'outdated mandoc.db'
	return 0
}
if ! command -v mandoc >/dev/null 2>&1; then
	echo "ok 7 # SKIP mandoc not installed"
else
	silent 7 "(mandoc -Tlint) is clean" mandoc_lint "$page"
fi

# 8. every option of --help is documented
if [ -z "$bin" ]; then
	echo "ok 8 # SKIP no binary given"
elif ! help=$("$bin" --help 2>&1) || [ -z "$help" ]; then
	fail "8 - options documented ($bin --help failed)"
	printf '%s\n' "$help" | diag
else
	# Plain ASCII rendering: no SGR, bold or underline, ASCII hyphens, and
	# long lines so that nothing of interest is broken across lines.
	text=$(groff -mandoc -Tascii -P-cbu -rLL=400n "$page" 2>/dev/null)
	missing=""
	# Long options as GOption prints them ("  -t, --token-file=FILE  ...").
	# --help-all and --help-GROUP are GOption's own and not documented.
	longs=$(printf '%s\n' "$help" |
		grep -oE -- '(^|[^A-Za-z0-9-])--[A-Za-z0-9][A-Za-z0-9-]*' |
		sed 's/^[^-]*//' | grep -v -- '^--help-' | sort -u)
	# Short options: "-t," at the start of an option line.
	shorts=$(printf '%s\n' "$help" |
		sed -n 's/^[[:space:]]*\(-[A-Za-z0-9]\),.*/\1/p' | sort -u)
	for opt in $longs $shorts; do
		if ! printf '%s\n' "$text" |
			grep -qE -- "(^|[^A-Za-z0-9-])$opt([^A-Za-z0-9-]|\$)"; then
			missing="$missing $opt"
		fi
	done
	if [ -z "$longs" ]; then
		fail "8 - options documented (no long option found in --help)"
		printf '%s\n' "$help" | diag
	elif [ -n "$missing" ]; then
		fail "8 - options documented (missing from the page:$missing)"
	else
		n=$(printf '%s\n' $longs $shorts | wc -l)
		echo "ok 8 - all $n options of --help are in the page"
	fi
fi

exit $failed
