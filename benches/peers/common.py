"""The workloads of `./localstack/bench peers`, written once for every Python peer.

A peer module (peer_joblib.py, peer_flytekit.py, peer_prefect.py) defines a `Peer`
with three factories, each cached by its input on a store in the directory it is given:

    add_one(dir)     -> f(x: int) -> int, returning x + 1
    big(dir, value)  -> f(x: int) -> bytes, returning `value`
    flow(dir, calls) -> g() -> int, a flow (or a plain loop where the tool has none)
                        of `calls` sequential add_one(0..calls) calls, returning their sum

and calls `main(peer)`. The command line and the JSON lines printed are the same as
cairn's bench binary (benches/benches/peers.rs); times are in microseconds. Every body
counts its runs in `RUNS`, so a hit row proves no body ran and a miss row that each did.
Standard library only.
"""

import json
import os
import sys
import time

STARTED = time.perf_counter()  # the peer module imports this first, before its tool

RUNS = [0]
MB = 1_000_000


def body_ran():
    RUNS[0] += 1


def data(length):
    """`length` pseudo-random bytes, the same in every process (xorshift, as cairn's)."""
    out = bytearray(length)
    x = 0x9E3779B97F4A7C15
    mask = (1 << 64) - 1
    # A 1 MB block repeated: generating 100 MB in Python, 8 bytes at a time, takes
    # minutes. The value is the same in every process; it is not compressed by anyone.
    block = bytearray()
    while len(block) < min(length, MB):
        x ^= (x << 13) & mask
        x ^= x >> 7
        x ^= (x << 17) & mask
        block += x.to_bytes(8, "little")
    block = bytes(block[: min(length, MB)])
    for i in range(0, length, len(block)):
        out[i : i + len(block)] = block[: length - i]
    return bytes(out)


def cycling(keys, n):
    return [(i * 7919) % max(keys, 1) for i in range(n)]


class Failure(Exception):
    pass


def check(ok, reason):
    if not ok:
        raise Failure(reason)


def parse(argv):
    workload = argv[0] if argv else ""
    opts, flags = {}, set()
    i = 1
    while i < len(argv):
        name = argv[i].lstrip("-")
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            opts[name] = argv[i + 1]
            i += 2
        else:
            flags.add(name)
            i += 1
    return workload, opts, flags


def time_calls(f, inputs):
    times = []
    for x in inputs:
        t = time.perf_counter()
        v = f(x)
        elapsed = time.perf_counter() - t
        check(v == x + 1, f"add_one({x}) returned {v!r}")
        times.append(elapsed * 1e6)
    return times


def fill(f, start, stop):
    for x in range(start, stop):
        check(f(x) == x + 1, f"add_one({x}) while populating")


def hits(f, keys, calls):
    time_calls(f, cycling(keys, max(calls // 10, 50)))
    before = RUNS[0]
    times = time_calls(f, cycling(keys, calls))
    ran = RUNS[0] - before
    check(ran == 0, f"the body ran {ran} times during {calls} hits")
    return times


def run(peer, workload, opts, flags):
    d = opts.get("dir")
    check(d is not None, "--dir is required")
    os.makedirs(d, exist_ok=True)
    num = lambda name, default: int(opts.get(name, default))  # noqa: E731
    if workload == "hit":
        f = peer.add_one(d)
        keys, calls = num("keys", 1000), num("calls", 2000)
        fill(f, 0, keys)
        return {"keys": keys, "samples_us": hits(f, keys, calls)}
    if workload == "populate":
        f = peer.add_one(d)
        t = time.perf_counter()
        fill(f, num("from", 0), num("to", 1000))
        return {"entries": num("to", 1000), "us": (time.perf_counter() - t) * 1e6}
    if workload == "fresh-hit":
        f = peer.add_one(d)
        setup = time.perf_counter() - STARTED
        x = num("x", 7)
        first = time_calls(f, [x])[0]
        check(RUNS[0] == 0, f"add_one({x}) ran its body: not a hit")
        return {
            "setup_us": setup * 1e6,
            "first_call_us": first,
            "in_main_us": (time.perf_counter() - STARTED) * 1e6,
        }
    if workload == "miss":
        f = peer.add_one(d)
        first, calls = num("first", 1 << 40), num("calls", 300)
        before = RUNS[0]
        samples = time_calls(f, range(first, first + calls))
        ran = RUNS[0] - before
        check(ran == calls, f"the body ran {ran} times for {calls} misses")
        return {"samples_us": samples}
    if workload in ("big-persist", "big-load"):
        length = num("mb", 100) * MB
        x = num("x", 1)
        f = peer.big(d, data(length))
        setup = time.perf_counter() - STARTED
        t = time.perf_counter()
        v = f(x)
        elapsed = time.perf_counter() - t
        check(isinstance(v, bytes) and len(v) == length,
              f"big({x}) returned {type(v).__name__} of {len(v)} bytes")
        want = 1 if workload == "big-persist" else 0
        check(RUNS[0] == want, f"big({x}) ran its body {RUNS[0]} times (expected {want})")
        return {"bytes": length, "us": elapsed * 1e6, "setup_us": setup * 1e6}
    if workload == "scale":
        f = peer.add_one(d)
        start, stop, calls = num("from", 0), num("to", 1000), num("calls", 2000)
        fill(f, start, stop)
        return {"entries": stop, "samples_us": hits(f, stop, calls)}
    if workload == "flow":
        calls, reps = num("calls", 1000), num("reps", 5)
        g = peer.flow(d, calls)
        want = sum(range(1, calls + 1))

        def once():
            t = time.perf_counter()
            total = g()
            elapsed = time.perf_counter() - t
            check(total == want, f"the flow returned {total!r}, not {want}")
            return elapsed * 1e6

        first = once()
        before = RUNS[0]
        samples = [once() for _ in range(reps)]
        ran = RUNS[0] - before
        check(ran == 0, f"the body ran {ran} times in fully cached flows")
        return {"calls": calls, "first_run_us": first, "samples_us": samples}
    raise Failure(f"unknown workload {workload!r}")


def main(peer):
    workload, opts, flags = parse(sys.argv[1:])
    line = {"tool": peer.name, "workload": workload}
    try:
        line.update(run(peer, workload, opts, flags))
        line["ok"] = True
    except Exception as e:  # reported in the table, never dropped
        line["ok"] = False
        line["error"] = f"{type(e).__name__}: {e}"[:400]
    # The tools may print to stdout; the driver reads the last line that parses.
    sys.stdout.write("\n" + json.dumps(line) + "\n")
    sys.stdout.flush()
    sys.exit(0 if line["ok"] else 1)
