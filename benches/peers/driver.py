#!/usr/bin/env python3
"""cairn side by side with joblib, flytekit and Prefect, in one run (`./localstack/bench peers`).

Runs the same workloads on cairn (the `peers` bench binary, benches/benches/peers.rs)
and on each peer (peer_<name>.py in a virtual environment made by ./install), one
process per workload and tool, alternating cairn, joblib, flytekit, prefect, cairn, ...
on the same disk, and prints one table: medians (p95 where it makes sense) and the
ratio peer / cairn of each figure. A peer that cannot be installed or fails a workload
is shown in the table with the reason.

    driver.py CAIRN_BINARY

Environment (defaults are modest, for a run of under ~10 minutes; CAIRN_PEERS_FULL=1
sets the full counts given in brackets):
    CAIRN_BENCH_DIR            the disk: a temporary directory is made under it
                               (default: the system's temporary directory)
    CAIRN_PEERS_DIR            the peers' virtual environments (~/.cache/cairn-peers)
    CAIRN_PEERS_ONLY           a comma list of peers to run (default joblib,flytekit,prefect)
    CAIRN_PEERS_ROUNDS         alternating rounds of each workload: 2 [5]
    CAIRN_PEERS_CALLS          timed hits per round: 300 [5000]
    CAIRN_PEERS_MISSES         timed misses per round: 50 [500]
    CAIRN_PEERS_FRESH          fresh processes per tool per round: 2 [10]
    CAIRN_PEERS_HIT_KEYS       entries present for the in-process and fresh-process hits: 300 [1000]
    CAIRN_PEERS_MB             the large value, in MB: 100
    CAIRN_PEERS_ENTRIES        entries present for the hit-latency rows: 1000,10000,50000
    CAIRN_PEERS_SLOW_MAX       the most entries filled through flytekit and Prefect,
                               whose misses cost milliseconds each: 1000 [no limit]
    CAIRN_PEERS_FLOW_REPS      timed runs of the 1,000-call flow per round: 1 [5]
    CAIRN_PEERS_FLOW_CALLS     the calls of that flow: 1000
    CAIRN_PEERS_TIMEOUT        seconds one workload process may take: 900
    CAIRN_PEERS_KEEP=1         keep the temporary directory
"""

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
FULL = os.environ.get("CAIRN_PEERS_FULL") == "1"


def env_int(name, default, full):
    return int(os.environ.get(name, full if FULL else default))


ROUNDS = env_int("CAIRN_PEERS_ROUNDS", 2, 5)
CALLS = env_int("CAIRN_PEERS_CALLS", 300, 5000)
MISSES = env_int("CAIRN_PEERS_MISSES", 50, 500)
FRESH = env_int("CAIRN_PEERS_FRESH", 2, 10)
MBS = env_int("CAIRN_PEERS_MB", 100, 100)
FLOW_REPS = env_int("CAIRN_PEERS_FLOW_REPS", 1, 5)
SLOW_MAX = env_int("CAIRN_PEERS_SLOW_MAX", 1_000, 1 << 62)
TIMEOUT = env_int("CAIRN_PEERS_TIMEOUT", 900, 3600)
ENTRIES = [int(n) for n in os.environ.get("CAIRN_PEERS_ENTRIES", "1000,10000,50000").split(",")]
HIT_KEYS = env_int("CAIRN_PEERS_HIT_KEYS", 300, 1000)
FLOW_CALLS = env_int("CAIRN_PEERS_FLOW_CALLS", 1000, 1000)
PEERS_DIR = os.environ.get("CAIRN_PEERS_DIR", os.path.expanduser("~/.cache/cairn-peers"))

# What each tool does to make a cached result durable, read from their sources (joblib
# 1.6.0 _store_backends.py and backports.py; flytekit 1.16 core/local_cache.py and
# diskcache; Prefect 3.8 filesystems.py and results.py; cairn's LocalBackend).
FSYNC = {
    "cairn": "yes: record file fsync'd, then linked/renamed into place, then its directory fsync'd",
    "joblib": "no: output.pkl and metadata.json written to temp names, os.replace'd; no fsync",
    "flytekit": "diskcache (sqlite, WAL, synchronous=NORMAL): no fsync per commit, only at WAL "
    "checkpoints; values > 32 KB are files written in place, no fsync",
    "prefect": "no: result record (JSON, pickled value in base64) written in place "
    "(open 'wb'), no rename, no fsync; run state in the server's sqlite",
}

VERSIONS = {
    "joblib": "import joblib; print('joblib', joblib.__version__)",
    "flytekit": "import flytekit; print('flytekit', flytekit.__version__)",
    "prefect": "import prefect, sys; print('Prefect', prefect.__version__)",
}


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return f.read().strip()
    except OSError:
        return "unavailable"


def say(msg):
    print(f"peers: {msg}", file=sys.stderr, flush=True)


class Tool:
    def __init__(self, name, command, env=None):
        self.name = name
        self.command = command
        self.env = env or {}
        self.failed = None  # the reason, when the tool cannot run at all
        self.version = ""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class PrefectServer:
    """One Prefect server on loopback for the whole run, sqlite in a temporary PREFECT_HOME."""

    def __init__(self, venv, root):
        self.home = os.path.join(root, "prefect-home")
        os.makedirs(self.home, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.proc = None
        self.log = os.path.join(self.home, "server.log")
        self.env = {
            "PREFECT_HOME": self.home,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
            "DO_NOT_TRACK": "1",
        }
        self.venv = venv

    def start(self):
        env = dict(os.environ, **self.env)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [os.path.join(self.venv, "bin", "prefect"), "server", "start",
                 "--host", "127.0.0.1", "--port", str(self.port)],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.time() + 240
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return f"the server exited ({self.proc.returncode}): {tail(self.log)}"
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return None
            except OSError:
                pass
            time.sleep(1)
        return "the server did not answer /api/health within 240 s"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass

    def client_env(self):
        return dict(self.env, PREFECT_API_URL=self.url)


def tail(path, n=400):
    try:
        with open(path, "rb") as f:
            data = f.read()
        return " ".join(data[-n:].decode(errors="replace").split())
    except OSError:
        return ""


def invoke(tool, workload, directory, **args):
    """Runs one workload in a new process of `tool`; returns its JSON line (plus the
    wall-clock of the process), or a failure line with the reason."""
    argv = list(tool.command) + [workload, "--dir", directory]
    for k, v in args.items():
        if v is True:
            argv.append("--" + k.replace("_", "-"))
        else:
            argv += ["--" + k.replace("_", "-"), str(v)]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **tool.env)
    t = time.perf_counter()
    try:
        p = subprocess.run(argv, env=env, capture_output=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {TIMEOUT} s"}
    wall = (time.perf_counter() - t) * 1e6
    line = None
    for raw in reversed(p.stdout.decode(errors="replace").splitlines()):
        raw = raw.strip()
        if raw.startswith("{"):
            try:
                line = json.loads(raw)
                break
            except ValueError:
                continue
    if line is None:
        err = " ".join(p.stderr.decode(errors="replace").split())[-300:]
        return {"ok": False, "error": f"exit {p.returncode}, no result line; stderr: {err}"}
    line["wall_us"] = wall
    return line


# ---------------------------------------------------------------------------------
# Collected figures: results[(row, tool)] = list of samples, or a failure reason

class Results:
    def __init__(self):
        self.samples = {}
        self.errors = {}
        self.notes = {}

    def add(self, row, tool, values):
        self.samples.setdefault((row, tool), []).extend(values)

    def fail(self, row, tool, reason):
        self.errors.setdefault((row, tool), reason)

    def get(self, row, tool):
        return self.samples.get((row, tool)), self.errors.get((row, tool))


def pct(values, q):
    v = sorted(values)
    return v[min(int(len(v) * q), len(v) - 1)]


def run_all(tools, cairn, root, results):
    alive = [t for t in tools if not t.failed]

    def each(row, workload, directory_of, on_line, **args):
        for tool in alive:
            if (row, tool.name) in results.errors:
                continue  # failed before: do not retry every round
            line = invoke(tool, workload, directory_of(tool), **args)
            if line.get("ok"):
                on_line(tool, line)
            else:
                results.fail(row, tool.name, line.get("error", "failed"))

    d = lambda name: (lambda tool: os.path.join(root, tool.name, name))  # noqa: E731

    say(f"1/6 trivial-task hits in process ({HIT_KEYS} entries, {CALLS} calls x {ROUNDS} rounds)")
    for _ in range(ROUNDS):
        each("hit", "hit", d("hit"),
             lambda t, l: results.add("hit", t.name, l["samples_us"]),
             keys=HIT_KEYS, calls=CALLS)
        line = invoke(cairn, "hit", os.path.join(root, "cairn", "hit-memory-tier"),
                      keys=HIT_KEYS, calls=CALLS, memory_tier=True)
        if line.get("ok"):
            results.add("hit-memory-tier", "cairn", line["samples_us"])
        else:
            results.fail("hit-memory-tier", "cairn", line.get("error"))

    say(f"2/6 trivial-task hit from a fresh process ({FRESH} processes x {ROUNDS} rounds)")
    for r in range(ROUNDS):
        for i in range(FRESH):
            x = (r * FRESH + i) * 37 % HIT_KEYS

            def fresh(t, line):
                results.add("fresh-first-call", t.name, [line["first_call_us"]])
                results.add("fresh-setup", t.name, [line["setup_us"]])
                results.add("fresh-start", t.name, [line["wall_us"] - line["in_main_us"]])

            each("fresh-first-call", "fresh-hit", d("hit"), fresh, x=x)

    say(f"3/6 miss + persist ({MISSES} calls x {ROUNDS} rounds)")
    for r in range(ROUNDS):
        each("miss", "miss", d("miss"),
             lambda t, l: results.add("miss", t.name, l["samples_us"]),
             first=(1 << 40) + r * MISSES, calls=MISSES)

    say(f"4/6 {MBS} MB value: persist, then load in a fresh process ({ROUNDS} rounds)")
    for r in range(ROUNDS):
        def persisted(t, line):
            results.add("big-persist", t.name, [line["us"]])
            if "raw_write_fsync_us" in line:
                results.add("big-raw-write", t.name, [line["raw_write_fsync_us"]])

        def loaded(t, line):
            results.add("big-load", t.name, [line["us"]])
            if line.get("raw_read_us") is not None:
                results.add("big-raw-read", t.name, [line["raw_read_us"]])

        each("big-persist", "big-persist", d(f"big-{r}"), persisted, x=r + 1, mb=MBS)
        each("big-load", "big-load", d(f"big-{r}"), loaded, x=r + 1, mb=MBS)
        # Free the disk between rounds (a few hundred MB per round).
        for tool in alive:
            shutil.rmtree(os.path.join(root, tool.name, f"big-{r}"), ignore_errors=True)
    # cairn's default serializer (no `.serializer`) on the same value, once: what a
    # `Bytes` output costs when no serializer is chosen.
    jdir = os.path.join(root, "cairn", "big-json")
    line = invoke(cairn, "big-persist", jdir, x=1, mb=MBS, serializer="default")
    if line.get("ok"):
        results.add("big-persist-json", "cairn", [line["us"]])
        line = invoke(cairn, "big-load", jdir, x=1, mb=MBS, serializer="default")
        if line.get("ok"):
            results.add("big-load-json", "cairn", [line["us"]])
        else:
            results.fail("big-load-json", "cairn", line.get("error"))
    else:
        results.fail("big-persist-json", "cairn", line.get("error"))
    shutil.rmtree(jdir, ignore_errors=True)
    # cairn without fsync, as the peers write: the like-for-like persist figure.
    ndir = os.path.join(root, "cairn", "big-nofsync")
    for r in range(ROUNDS):
        line = invoke(cairn, "big-persist", ndir, x=r + 1, mb=MBS, no_fsync=True)
        if line.get("ok"):
            results.add("big-persist-nofsync", "cairn", [line["us"]])
        else:
            results.fail("big-persist-nofsync", "cairn", line.get("error"))
    shutil.rmtree(ndir, ignore_errors=True)

    say(f"5/6 hit latency with {', '.join(map(str, ENTRIES))} entries present ({CALLS} calls each)")
    previous = 0
    for n in ENTRIES:
        row = f"scale-{n}"
        for tool in alive:
            if tool.name in ("flytekit", "prefect") and n > SLOW_MAX:
                results.fail(row, tool.name,
                             f"not filled: above CAIRN_PEERS_SLOW_MAX={SLOW_MAX} (CAIRN_PEERS_FULL=1)")
                continue
            if any(k[1] == tool.name and k[0].startswith("scale-") for k in results.errors):
                results.fail(row, tool.name, "a smaller size failed")
                continue
            line = invoke(tool, "scale", os.path.join(root, tool.name, "scale"),
                          **{"from": previous, "to": n, "calls": CALLS})
            if line.get("ok"):
                results.add(row, tool.name, line["samples_us"])
            else:
                results.fail(row, tool.name, line.get("error", "failed"))
        previous = n

    say(f"6/6 a {FLOW_CALLS}-call fully cached flow ({FLOW_REPS} timed runs x {ROUNDS} rounds)")
    for _ in range(ROUNDS):
        each("flow", "flow", d("flow"),
             lambda t, l: results.add("flow", t.name, l["samples_us"]),
             calls=FLOW_CALLS, reps=FLOW_REPS)
        line = invoke(cairn, "flow", os.path.join(root, "cairn", "flow-memory-tier"),
                      calls=FLOW_CALLS, reps=FLOW_REPS, memory_tier=True)
        if line.get("ok"):
            results.add("flow-memory-tier", "cairn", line["samples_us"])
        else:
            results.fail("flow-memory-tier", "cairn", line.get("error"))


# ---------------------------------------------------------------------------------
# The table

def fmt_time(us_value):
    if us_value >= 1e6:
        return f"{us_value / 1e6:.2f} s"
    if us_value >= 1e3:
        return f"{us_value / 1e3:.2f} ms"
    return f"{us_value:.1f} µs"


def fmt_rate(us_value):
    return f"{MBS * 1e6 / (us_value / 1e6) / 1e6:,.0f} MB/s"


ROWS = [
    # (key, label, kind)  kind: time (median, p95), time1 (median only), rate
    ("hit", f"trivial-task hit, in process ({HIT_KEYS} entries)", "time"),
    ("fresh-first-call", "trivial-task hit, fresh process: the first call", "time1"),
    ("fresh-setup", "  fresh process: import + set-up before it", "time1"),
    ("fresh-start", "  fresh process: exec to main (interpreter start)", "time1"),
    ("miss", "miss + persist (trivial task)", "time"),
    ("big-persist", f"{MBS} MB bytes value, persist (miss)", "rate"),
    ("big-load", f"{MBS} MB bytes value, load in a fresh process (hit)", "rate"),
] + [(f"scale-{n}", f"hit with {n:,} entries present", "time") for n in ENTRIES] + [
    ("flow", f"{FLOW_CALLS:,}-call fully cached flow (wall)", "time1"),
]

EXTRA = [
    ("hit-memory-tier", "cairn: hit, in process, memory tier on", "time"),
    ("flow-memory-tier", f"cairn: {FLOW_CALLS:,}-call cached flow, memory tier on", "time1"),
    ("big-raw-write", f"raw staged write + fsync + rename of {MBS} MB, same dir", "rate"),
    ("big-persist-nofsync", f"cairn: {MBS} MB bytes value, persist, fsync off (as the peers)", "rate"),
    ("big-raw-read", f"raw read of that {MBS} MB file, fresh process", "rate"),
    ("big-persist-json", f"cairn: {MBS} MB Bytes, default serializer, persist", "rate"),
    ("big-load-json", f"cairn: {MBS} MB Bytes, default serializer, load", "rate"),
]


def cell(results, key, tool, kind, base):
    samples, error = results.get(key, tool)
    if not samples:
        return "FAILED: " + (error or "no figure") if error else "—"
    med = statistics.median(samples)
    if kind == "rate":
        text = fmt_rate(med)
    elif kind == "time":
        text = f"{fmt_time(med)} (p95 {fmt_time(pct(samples, 0.95))})"
    else:
        text = fmt_time(med)
    if tool != "cairn" and base:
        text += f"  x{med / base:.2f}"
    if error:
        text += " (some runs failed: " + error + ")"
    return text


def print_table(tools, results, load_start, load_end, uptime_start, uptime_end, root):
    names = [t.name for t in tools]
    header = ["workload"] + [
        f"{t.name} {t.version}".strip() if not t.failed else t.name for t in tools
    ]
    lines = []
    for key, label, kind in ROWS:
        base_samples, _ = results.get(key, "cairn")
        base = statistics.median(base_samples) if base_samples else None
        lines.append([label] + [cell(results, key, n, kind, base) for n in names])
    install = ["peer status"] + [
        ("FAILED: " + t.failed) if t.failed else "ran" for t in tools
    ]
    fsync = ["fsync of a cached result"] + [FSYNC.get(n, "") for n in names]
    width = [max(len(r[i]) for r in [header] + lines + [install]) for i in range(len(header))]
    width = [min(w, 48) for w in width]

    def fit(text, w):
        return text if len(text) <= w else text[: w - 1] + "…"

    def row(cells):
        return "| " + " | ".join(fit(c, w).ljust(w) for c, w in zip(cells, width)) + " |"

    print()
    print(f"cairn side by side with its peers, one run, alternating; disk: {root}")
    print(f"load at start: {load_start}   ({uptime_start})")
    print("medians (p95); 'xN' = the peer's median / cairn's (above 1: cairn is faster);")
    print(f"rates are {MBS} MB / median time. rounds {ROUNDS}, hits {CALLS}/round, "
          f"misses {MISSES}/round, fresh processes {FRESH}/round")
    print()
    print(row(header))
    print("|" + "|".join("-" * (w + 2) for w in width) + "|")
    for cells in lines + [install]:
        print(row(cells))
    print()
    print("fsync of a cached result (read from each tool's source):")
    for n, text in zip(names, fsync[1:]):
        print(f"  {n:<9} {text}")
    print()
    print("cairn alone, and the limits in the same run:")
    for key, label, kind in EXTRA:
        print(f"  {label:<62} {fit(cell(results, key, 'cairn', kind, None), 100)}")
    if results.errors:
        print()
        print("failures (tool, workload: reason):")
        for (k, n), e in sorted(results.errors.items()):
            print(f"  {n}, {k}: {e}")
    print()
    print(f"load at end:   {load_end}   ({uptime_end})")


def uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def _stop(signum, _frame):
    # SystemExit unwinds through `finally`: the Prefect server is stopped, the peer
    # process running is killed by subprocess.run, and the table printed so far.
    sys.exit(128 + signum)


def main():
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary = os.path.abspath(sys.argv[1])
    only = os.environ.get("CAIRN_PEERS_ONLY", "joblib,flytekit,prefect").split(",")
    base = os.environ.get("CAIRN_BENCH_DIR") or None
    if base is not None and not os.path.isdir(base):
        print(f"cairn: CAIRN_BENCH_DIR={base} is not a directory; make it first", file=sys.stderr)
        return 2
    root = tempfile.mkdtemp(prefix="cairn-peers-", dir=base)
    py313 = os.path.join(PEERS_DIR, "py313-venv")
    venvs = {"joblib": py313, "prefect": py313, "flytekit": os.path.join(PEERS_DIR, "flytekit-venv")}

    cairn = Tool("cairn", [binary])
    tools = [cairn]
    for name in ("joblib", "flytekit", "prefect"):
        if name not in only:
            continue
        python = os.path.join(venvs[name], "bin", "python")
        tool = Tool(name, [python, os.path.join(HERE, f"peer_{name}.py")])
        failed_file = os.path.join(PEERS_DIR, f"{name}.failed")
        if os.path.exists(failed_file):
            with open(failed_file) as f:
                tool.failed = "not installed: " + f.read().strip()
        elif not os.path.exists(python):
            tool.failed = f"not installed: no {python} (benches/peers/install)"
        else:
            # In the run's directory: importing flytekit makes temporary directories.
            p = subprocess.run([python, "-c", VERSIONS[name]], capture_output=True, text=True,
                               env=dict(os.environ, TMPDIR=root, PYTHONDONTWRITEBYTECODE="1"))
            if p.returncode != 0:
                tool.failed = "does not import: " + " ".join(p.stderr.split())[-300:]
            else:
                tool.version = p.stdout.strip().split()[-1]
        tools.append(tool)
    parts = binary.split(os.sep)
    cairn.version = "(release build)" if "release" in parts else "(DEBUG build: not comparable)"

    server = None
    prefect = next((t for t in tools if t.name == "prefect"), None)
    load_start, uptime_start = loadavg(), uptime()
    results = Results()
    try:
        if prefect and not prefect.failed:
            say("starting a Prefect server on 127.0.0.1 (sqlite in a temporary PREFECT_HOME)")
            server = PrefectServer(venvs["prefect"], root)
            error = server.start()
            if error:
                prefect.failed = "its server did not start: " + error
            else:
                prefect.env = server.client_env()
        for tool in tools:
            if tool.name == "flytekit" and not tool.failed:
                home = os.path.join(root, "flytekit-home")
                os.makedirs(home, exist_ok=True)
                tool.env = {"HOME": home}
        run_all(tools, cairn, root, results)
    finally:
        if server:
            server.stop()
        load_end, uptime_end = loadavg(), uptime()
        print_table(tools, results, load_start, load_end, uptime_start, uptime_end, root)
        if os.environ.get("CAIRN_PEERS_KEEP") != "1":
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
