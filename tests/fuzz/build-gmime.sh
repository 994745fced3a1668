#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Build Debian's GMime with ASan, UBSan and libFuzzer coverage into PREFIX,
# so that fuzz-message sees (and checks) the parser it mostly exercises.
# The system GMime is not instrumented: without this, libFuzzer is guided
# by libdcp's few branches only and ASan cannot see overflows inside GMime.
#
#   tests/fuzz/build-gmime.sh PREFIX
#   GMIME_PREFIX=PREFIX BUILDDIR=/tmp/build-fuzz-gmime tests/fuzz/run-fuzz.sh 600
#
# gmime-*.patch here fix GMime bugs the fuzzers already found (see each).
# Needs: clang, autoconf, automake, libtool, gtk-doc-tools, libidn2-dev,
# zlib1g-dev.  The source comes through apt with a private deb-src list;
# the system's apt configuration is not touched.
set -eu

prefix=${1:?usage: build-gmime.sh PREFIX}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/gmime-src.XXXXXX")
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/lists/partial"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" \
  >"$work/src.list"
apt_opts="-o Dir::Etc::SourceList=$work/src.list -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists=$work/lists"
# shellcheck disable=SC2086
apt-get $apt_opts update >&2
# shellcheck disable=SC2086
(cd "$work" && apt-get $apt_opts source --download-only gmime >&2)

# Unpack and patch by hand: dpkg-dev need not be installed.
(cd "$work" && tar xf gmime_*.orig.tar.* && mkdir deb && tar xf gmime_*.debian.tar.* -C deb)
src=$(find "$work" -maxdepth 1 -type d -name 'gmime-3*' | head -n 1)
cd "$src"
if [ -f "$work/deb/debian/patches/series" ]; then
  grep -v '^#' "$work/deb/debian/patches/series" | while read -r p; do
    [ -n "$p" ] && patch -p1 <"$work/deb/debian/patches/$p" >&2
  done
fi
# Known GMime leaks the fuzzers found; fixed here so that they find new ones.
for p in "$here"/gmime-*.patch; do
  patch -p1 <"$p" >&2
done
[ -f configure ] || NOCONFIGURE=1 ./autogen.sh >&2
CC=clang \
CFLAGS="-g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined,fuzzer-no-link" \
LDFLAGS="-fsanitize=address,undefined" \
  ./configure --prefix="$prefix" --disable-shared --enable-static --disable-crypto \
    --with-libidn --disable-introspection --disable-vala --disable-gtk-doc >&2
make -C util >&2
make -C gmime >&2
make -C gmime install >&2
make install-pkgconfigDATA >&2
# A static libgmime needs its private libraries on every link.
sed -i 's/^Libs: -L${libdir} -lgmime-3.0$/Libs: -L${libdir} -lgmime-3.0 -lz -lidn2/' \
  "$prefix/lib/pkgconfig/gmime-3.0.pc"
echo "build-gmime: installed into $prefix (PKG_CONFIG_PATH=$prefix/lib/pkgconfig)" >&2
