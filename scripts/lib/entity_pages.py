#!/usr/bin/env python3
"""Times pages of entity history through a running sequencer's HTTP API, as issue 15's benchmarks read them.

`GET /api/v1/ves/entities/InventoryItem/SKU-nnnnn?limit=5` for random SKUs of the load generator's 10,000
(every stream it writes holds the same ones): a page of 5, the same work at every size of the log, where
the default page of up to 100 would measure the growth of an entity's history in the response size rather
than any growth in the cost of finding it.

Used by scripts/bench-growth (imported) and scripts/bench-growth-ab (run):

    entity_pages.py URL API_KEY TENANT STORE [N [SEED]]

prints {"page_5_p99_ms": ..., "page_5_p50_ms": ..., "events_mean": ...} for N pages (default 2,000, so
that the p99 is the 20th slowest and not one stall) of entities drawn with SEED (default 1). No dependency
beyond Python 3.
"""

import json
import random
import statistics
import sys
import time
import urllib.parse
import urllib.request


def get(url, key, path, **query):
    """(seconds, parsed body) of one GET with the API key."""
    req = urllib.request.Request(f"{url}{path}?{urllib.parse.urlencode(query)}",
                                 headers={"authorization": f"ApiKey {key}"})
    t = time.perf_counter()
    with urllib.request.urlopen(req) as r:
        body = r.read()
    return time.perf_counter() - t, json.loads(body)


def percentile_ms(xs, q):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 2)


def entity_pages(url, key, tenant, store, n=2000, rng=random):
    """The seconds of each of `n` pages of 5 of random entities of the stream, and each entity's total."""
    times, totals = [], []
    for _ in range(n):
        sku = f"SKU-{rng.randint(0, 9999):05}"
        t, body = get(url, key, f"/api/v1/ves/entities/InventoryItem/{sku}", tenant_id=tenant, store_id=store,
                      limit=5)
        times.append(t)
        totals.append(body["total"])
    return times, totals


def main():
    url, key, tenant, store = sys.argv[1:5]
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 2000
    seed = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    times, totals = entity_pages(url, key, tenant, store, n, random.Random(seed))
    print(json.dumps({"page_5_p99_ms": percentile_ms(times, 0.99), "page_5_p50_ms": percentile_ms(times, 0.5),
                      "events_mean": round(statistics.mean(totals), 1)}))


if __name__ == "__main__":
    main()
