#!/usr/bin/env python3
"""Splits a sequencer's CPU per event into the areas of its code, from `perf script` call stacks.

Reads `perf script -F comm,ip,sym,dso` of a `perf record --call-graph dwarf` of the sequencer on stdin; the
sequencer's CPU per event (µs, from loadgen's /proc figures) is the first argument. Each sample is put in
the FIRST area of AREAS whose pattern matches any frame of its stack (so an area named earlier owns
everything beneath it: Ed25519 inside the request handler counts as Ed25519, not as the handler), and
each area's share of the samples is multiplied by the CPU per event. `--leaves N` also prints each
area's N commonest innermost functions.

Used by scripts/cpu-areas and scripts/cpu-split; no dependency beyond Python 3.
"""

import argparse
import collections
import re
import sys

# The functions that are Ed25519's (scripts/cpu-split takes its share with the same pattern, --ed25519-shares).
ED25519 = r"curve25519_dalek|ed25519_dalek|sha2::sha512|subtle::|ves::verify"

# (area, pattern over one frame's symbol or the thread's name). Order matters: see the docstring.
AREAS = [
    ("Ed25519 (verify + receipt signature)", ED25519),
    ("transparency log integrator thread", r"^thread:tlog-integrator$"),
    ("PostgreSQL connection I/O (sqlx, TLS)", r"^sqlx_|^rustls::|RustlsSocket"),
    ("request body JSON parse", r"serde_json::de::from_slice|ApiJson|^sequencer::api::parse_json"),
    ("per-event checks (hashes, timestamps)", r"sequencer::ingest::Ingest::validate"),
    ("rows, leaves, receipts", r"sequencer::sequencing::Sequencer::rows|VesEventRow|tlog_tiles::"),
    ("response JSON", r"Serialize for sequencer::ingest::IngestResponse|axum::json::|Json<T>"),
    ("sequencing: queue, decide, outcomes", r"^sequencer::sequencing::"),
    ("ingest: keys, policies, answer", r"^sequencer::ingest::"),
    ("HTTP socket write", r"write_vectored|__GI___writev|poll_flush"),
    ("HTTP read and parse", r"poll_read|h1::role|Buffered<T,B>::parse"),
    ("auth, limits, middleware", r"^sequencer::api::|^sequencer::auth::|^sequencer::limits::|^sequencer::validate::"),
    ("hyper, axum, tower", r"^hyper::|^hyper_util::|^axum|^tower"),
    ("Tokio scheduling and parking", r"^tokio::runtime::|^mio::|epoll_wait|futex|^parking_lot::"),
]


def stacks(lines):
    """Yields (thread name, [(symbol, object) innermost first]) per sample."""
    comm, frames = None, []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if comm is not None:
                yield comm, frames
            comm, frames = None, []
        elif line[0] not in " \t":
            if comm is not None:
                yield comm, frames
            comm, frames = line.split()[0], []
        else:
            m = re.match(r"\s*[0-9a-f]+ (.*?)(?:\+0x[0-9a-f]+)? \((.*)\)$", line)
            if m:
                frames.append((m.group(1), m.group(2)))
    if comm is not None:
        yield comm, frames


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("us_per_event", type=float, nargs="?")
    ap.add_argument("--leaves", type=int, default=0)
    ap.add_argument(
        "--ed25519-shares",
        action="store_true",
        help="print Ed25519's share of the samples (%%) counted two ways and exit: by the innermost frame only, "
        "and by any frame of the stack (a memcpy that Ed25519 calls is Ed25519's)",
    )
    args = ap.parse_args()
    if args.ed25519_shares:
        rx = re.compile(ED25519)
        total = leaf = stack = 0
        for _, frames in stacks(sys.stdin):
            total += 1
            leaf += bool(frames) and bool(rx.search(frames[0][0]))
            stack += any(rx.search(sym) for sym, _ in frames)
        if total == 0:
            sys.exit("cpu_areas: no samples")
        print(f"{100 * leaf / total:.1f} {100 * stack / total:.1f}")
        return
    if args.us_per_event is None:
        ap.error("us_per_event is required")
    compiled = [(name, re.compile(rx)) for name, rx in AREAS]
    total = 0
    count = collections.Counter()
    leaves = collections.defaultdict(collections.Counter)
    for comm, frames in stacks(sys.stdin):
        total += 1
        names = ["thread:" + comm] + [sym for sym, _ in frames]
        area = next((a for a, rx in compiled if any(rx.search(f) for f in names)), None)
        if area is None:
            in_kernel = frames and frames[0][1] == "[kernel.kallsyms]"
            area = "kernel, other" if in_kernel else "other"
        count[area] += 1
        leaves[area][(frames[0][0] if frames else "?")[:100]] += 1
    if total == 0:
        sys.exit("cpu_areas: no samples")
    print(f"{'area':42s} {'share':>7s} {'us/event':>9s}")
    for area, n in count.most_common():
        print(f"{area:42s} {100 * n / total:6.1f}% {args.us_per_event * n / total:9.1f}")
        for leaf, m in leaves[area].most_common(args.leaves):
            print(f"    {100 * m / total:5.1f}%  {leaf}")
    ed = count[AREAS[0][0]]
    print(f"{'not Ed25519':42s} {100 * (total - ed) / total:6.1f}% {args.us_per_event * (total - ed) / total:9.1f}")
    print(f"({total} samples)")


if __name__ == "__main__":
    main()
