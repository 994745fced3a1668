#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Fuzz the message reader, parser and decision for SECONDS (default 60)
# per target.
#
#   tests/fuzz/run-fuzz.sh [SECONDS] [extra libFuzzer flags...]
#
# The seed corpus (tests/corpus, the small files of tests/hostile and the
# small cases tests/hostile/gen.py writes) is copied to a scratch directory,
# so the source tree is never written to.  Exit status is libFuzzer's: 0 when
# the time ran out with no crash, leak, timeout or memory blow-up, non-zero
# otherwise; the reproducer and the scratch directory are then kept and named.
#
# Environment:
#   TARGETS   fuzzers to run, in turn (default: fuzz-message fuzz-read-header
#             fuzz-metadata)
#   BUILDDIR  build directory (default: ${TMPDIR:-/tmp}/build-fuzz), configured
#             with clang, ASan+UBSan and libFuzzer coverage on every target
#   GMIME_PREFIX  an instrumented GMime from build-gmime.sh, used when
#             BUILDDIR is configured (use a BUILDDIR of its own); without it
#             the system GMime is used, which libFuzzer cannot see into
#   MAX_LEN   longest input libFuzzer generates (default 16384; the 1 MiB
#             header cap is covered by tests/hostile)
#   KEEP      set to 1 to keep the scratch directory (and the grown corpus)
#             after a clean run too
set -eu

seconds=${1:-60}
[ $# -gt 0 ] && shift
here=$(cd "$(dirname "$0")" && pwd)
srcdir=$(cd "$here/../.." && pwd)
builddir=${BUILDDIR:-${TMPDIR:-/tmp}/build-fuzz}
targets=${TARGETS:-fuzz-message fuzz-read-header fuzz-metadata}

if [ -n "${GMIME_PREFIX:-}" ]; then
  PKG_CONFIG_PATH=$GMIME_PREFIX/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
  export PKG_CONFIG_PATH
fi
if [ ! -f "$builddir/build.ninja" ]; then
  CC=clang meson setup "$builddir" "$srcdir" \
    -Dfuzzing=true -Db_sanitize=address,undefined -Db_lundef=false \
    -Dc_args='-fsanitize=fuzzer-no-link -fno-omit-frame-pointer' \
    -Dc_link_args=-fsanitize=fuzzer-no-link >&2
fi
for t in $targets; do
  ninja -C "$builddir" "tests/fuzz/$t" >&2
done

work=$(mktemp -d "${TMPDIR:-/tmp}/run-fuzz.XXXXXX")
mkdir "$work/seeds"
cp "$srcdir"/tests/corpus/*.eml "$work/seeds/"
cp "$srcdir"/tests/hostile/*.eml "$work/seeds/"
cp "$here"/metadata-seeds/* "$work/seeds/"
python3 "$srcdir/tests/hostile/gen.py" --max-size 65536 "$work/seeds" >/dev/null

status=0
for t in $targets; do
  mkdir "$work/$t" "$work/$t.artifacts"
  cp "$work"/seeds/* "$work/$t/"
  echo "run-fuzz: $t for $seconds s" >&2
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
    "$builddir/tests/fuzz/$t" \
      -max_total_time="$seconds" -timeout=5 -rss_limit_mb=512 -detect_leaks=1 \
      -max_len="${MAX_LEN:-16384}" -print_final_stats=1 \
      -dict="$here/$([ "$t" = fuzz-metadata ] && echo metadata || echo message).dict" \
      -artifact_prefix="$work/$t.artifacts/" \
      "$@" "$work/$t" || status=$?
  if [ "$status" -ne 0 ] || [ -n "$(ls -A "$work/$t.artifacts")" ]; then
    echo "run-fuzz: $t FAILED (libFuzzer exit $status); reproducers:" >&2
    ls -l "$work/$t.artifacts" >&2
    echo "run-fuzz: kept $work" >&2
    [ "$status" -ne 0 ] || status=1
    exit "$status"
  fi
  echo "run-fuzz: $t ok, corpus of $(ls "$work/$t" | wc -l) inputs" >&2
done

if [ "${KEEP:-0}" = 1 ]; then
  echo "run-fuzz: kept $work" >&2
else
  rm -rf "$work"
fi
