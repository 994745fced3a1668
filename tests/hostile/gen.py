#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Write the hostile inputs that are too big or too binary to commit.

    gen.py [--max-size BYTES] [--list] OUTDIR

Every case is deterministic (a fixed seed), so a failure reproduces from
its name alone.  Expected decisions live in EXPECTED next to this file,
beside those of the committed *.eml cases.  --max-size skips cases bigger
than BYTES (run-fuzz.sh uses it to seed the fuzzer with the small ones).
"""

import argparse
import os
import random
import sys

MiB = 1024 * 1024

HEAD = (b"From: Bob <bob@example.net>\n"
        b"To: alice@example.org\n"
        b"Subject: hostile\n"
        b"Message-ID: <gen-%s@example.net>\n"
        b"Chat-Version: 1.0\n")


def head(name):
    return HEAD % name.encode()


def rand_bytes(seed, n):
    return random.Random(seed).randbytes(n)


def chunks(*parts):
    """Join byte strings and (count, bytes) repeats without holding 40 MiB."""
    for p in parts:
        if isinstance(p, tuple):
            count, piece = p
            block = piece * max(1, (1 << 20) // max(1, len(piece)))
            per = len(block) // len(piece)
            while count >= per:
                yield block
                count -= per
            if count:
                yield piece * count
        else:
            yield p


# name -> (size in bytes, function returning an iterable of byte strings)
CASES = {}


def case(name, size):
    def register(fn):
        CASES[name] = (size, fn)
        return fn
    return register


@case("empty.bin", 0)
def _():
    return [b""]


@case("nul-in-subject.bin", 200)
def _():
    return [head("nul-subject").replace(b"Subject: hostile",
                                        b"Subject: a\x00b\x00\x00c"), b"\nbody\x00\n"]


@case("nul-then-auto.bin", 200)
def _():
    return [head("nul-auto"), b"X-Junk: \x00\x00\x00\n",
            b"Auto-Submitted: auto-replied\n\nbody\n"]


@case("auto-replied-nul-junk.bin", 200)
def _():
    return [head("auto-nul"), b"Auto-Submitted: auto-replied\x00junk\n\nbody\n"]


@case("auto-no-nul-junk.bin", 200)
def _():
    return [head("no-nul"), b"Auto-Submitted: no\x00auto-replied\n\nbody\n"]


@case("nul-in-header-name.bin", 200)
def _():
    return [head("nul-name"), b"Auto-Sub\x00mitted: auto-replied\n\nbody\n"]


@case("invalid-utf8.bin", 300)
def _():
    return [b"From: \xff\xfe\xc3\x28 Bob \xe2\x82 <bob@example.net>\n"
            b"To: \xf0\x28\x8c\xbc <alice@example.org>\n"
            b"Subject: \xc0\xaf\xed\xa0\x80 \xf8\x88\x80\x80\x80\n"
            b"Chat-Version: 1.0\n"
            b"X-Encoded: =?utf-8?q?=FF=FE=C3=28?=\n"
            b"\n\xff\xff\xff body\n"]


@case("invalid-utf8-auto.bin", 300)
def _():
    return [b"From: \xff\xfe Bob <bob@example.net>\n"
            b"Subject: \xc3\x28\xa0\xa1\n"
            b"Auto-Submitted: auto-replied \xff(\xfe)\n"
            b"\nbody\n"]


@case("auto-8bit.bin", 200)
def _():
    return [head("auto-8bit"), b"Auto-Submitted: n\xf6\n\nbody\n"]


@case("crlf-mixed.bin", 300)
def _():
    return [b"From: Bob <bob@example.net>\r\n"
            b"To: alice@example.org\n"
            b"Subject: mixed\r\n"
            b"Auto-Submitted:\r\n auto-replied\n"
            b"\r\nbody\r\n"]


@case("cr-only.bin", 300)
def _():
    return [head("cr-only").replace(b"\n", b"\r"), b"\rbody\r"]


@case("random-64k.bin", 65536)
def _():
    return [rand_bytes(1, 65536)]


@case("from-line-then-random.bin", 65536 + 50)
def _():
    return [b"From bob@example.net Sun Nov 22 04:00:00 2026\n", rand_bytes(2, 65536)]


@case("random-body.bin", 2 * MiB + 200)
def _():
    return [head("random-body"), b"\n", rand_bytes(3, 2 * MiB)]


@case("random-no-blank-4m.bin", 4 * MiB)
def _():
    # random bytes without any blank line: the 1 MiB cap must hold
    data = b"X" + rand_bytes(4, 4 * MiB - 1)
    data = data.replace(b"\n\n", b"\n ").replace(b"\n\r", b"\n ")
    assert b"\n\n" not in data and b"\n\r\n" not in data
    return [data]


@case("one-line-10m.bin", 10 * MiB + 9)
def _():
    return [b"Subject: ", (10 * MiB, b"A")]


@case("auto-then-one-line-10m.bin", 10 * MiB + 100)
def _():
    return [b"Auto-Submitted: auto-replied\n", b"Subject: ", (10 * MiB, b"A")]


@case("one-line-10m-then-auto.bin", 10 * MiB + 100)
def _():
    return [b"Subject: ", (10 * MiB, b"A"), b"\nAuto-Submitted: auto-replied\n\nbody\n"]


@case("long-name-10m.bin", 10 * MiB + 100)
def _():
    return [(10 * MiB, b"X"), b": value\n\nbody\n"]


@case("headers-100k-auto-last.bin", 100000 * 7 + 100)
def _():
    # 700 kB of tiny headers, the Auto-Submitted still inside the cap
    return [(100000, b"X-H: v\n"), b"Auto-Submitted: auto-replied\n\nbody\n"]


@case("headers-tiny-349k.bin", 349000 * 3 + 10)
def _():
    # the smallest field there is, as many as fit under the 1 MiB cap:
    # the worst case for memory per header byte
    return [(349000, b"a:\n"), b"\nbody\n"]


@case("headers-100k-big.bin", 100000 * 32 + 200)
def _():
    # 3.2 MB of headers: the Auto-Submitted at the end lies beyond the cap
    return [head("hdr-big"), (100000, b"X-Filler-Header: some value xyz\n"),
            b"Auto-Submitted: auto-replied\n\nbody\n"]


@case("headers-100k-auto-first.bin", 100000 * 32 + 200)
def _():
    return [b"Auto-Submitted: auto-generated\n", head("hdr-first"),
            (100000, b"X-Filler-Header: some value xyz\n"), b"\nbody\n"]


@case("received-many-old.bin", 25000 * 48 + 200)
def _():
    # ~1.2 MB of Received fields, all from 1990: each one parsed as a date
    return [head("rcv-many"),
            (25000, b"Received: from a by b; 1 Jan 1990 00:00:00 +0000\n"),
            b"\nbody\n"]


@case("received-many-one-new.bin", 20000 * 48 + 200)
def _():
    line = b"Received: from a by b; 1 Jan 1990 00:00:00 +0000\n"
    return [head("rcv-new"), (10000, line),
            b"Received: from a by b; 1 Jan 2099 00:00:00 +0000\n",
            (9000, line), b"\nbody\n"]


@case("folded-300k.bin", 300000 * 3 + 100)
def _():
    return [head("folded"), b"X-Folded: a\n", (300000, b"\tb\n"),
            b"Auto-Submitted: auto-replied\n\nbody\n"]


@case("auto-deep-comment.bin", 500000 + 100)
def _():
    return [head("deep"), b"Auto-Submitted: ", (500000, b"("), b"auto-replied\n\nbody\n"]


@case("auto-many-no.bin", 50000 * 19 + 100)
def _():
    return [head("many-no"), (50000, b"Auto-Submitted: no\n"), b"\nbody\n"]


@case("from-100k-addresses.bin", 100000 * 18 + 200)
def _():
    return [b"From: ", (100000, b"a@b.example.net, "), b"alice@example.org\n",
            b"Chat-Version: 1.0\n\nbody\n"]


@case("from-tiny-addresses.bin", 262000 * 4 + 50)
def _():
    # as many mailboxes as fit under the cap: memory per From byte
    return [b"From: ", (262000, b"a@b,"), b"\nChat-Version: 1.0\n\nbody\n"]


@case("from-tiny-groups.bin", 149000 * 7 + 50)
def _():
    # the same with a group around every mailbox
    return [b"From: ", (149000, b"g:a@b;,"), b"\nChat-Version: 1.0\n\nbody\n"]


@case("from-100k-fields.bin", 100000 * 10 + 50)
def _():
    # only the first From field counts; the others must cost nothing
    return [(100000, b"From: a@b\n"), b"Chat-Version: 1.0\n\nbody\n"]


@case("from-brackets.bin", 300000 + 100)
def _():
    return [b"From: ", (100000, b'<"('), b"\nChat-Version: 1.0\n\nbody\n"]


@case("encoded-words-100k.bin", 100000 * 13 + 100)
def _():
    return [head("ew"), b"X-Words: ", (100000, b"=?utf-8?q?a?= "), b"\n\nbody\n"]


@case("big-body-40m.bin", 40 * MiB + 200)
def _():
    return [head("big-body"), b"Content-Type: text/plain\n\n",
            (40 * MiB // 64, b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n")]


def write_case(outdir, name):
    size, fn = CASES[name]
    path = os.path.join(outdir, name)
    with open(path, "wb") as f:
        for piece in chunks(*fn()):
            f.write(piece)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-size", type=int, default=None)
    ap.add_argument("--list", action="store_true", help="print the case names")
    ap.add_argument("outdir", nargs="?")
    a = ap.parse_args()
    names = [n for n, (size, _) in CASES.items()
             if a.max_size is None or size <= a.max_size]
    if a.list:
        print("\n".join(names))
        return 0
    if not a.outdir:
        ap.error("OUTDIR is required")
    os.makedirs(a.outdir, exist_ok=True)
    for n in names:
        print(write_case(a.outdir, n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
