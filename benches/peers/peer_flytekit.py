"""flytekit's local cache in the side-by-side run (see common.py for the workloads).

Tasks are `@task(cache=True, cache_version="1")`, run locally. flytekit keeps its local
cache in a diskcache `Cache` (flytekit/core/local_cache.py: `~/.flyte/local-cache`;
here in the workload's directory): an sqlite database in WAL mode with
`synchronous=NORMAL`, so commits are not fsync'd (only WAL checkpoints are), and values
over 32 KB in files of their own, written without fsync. The cached object is the
task's output literal; a `bytes` output is pickled (FlytePickle) into a file written
twice, in the local sandbox and in the raw output prefix (a temporary directory, here
in the workload's directory; both written without fsync), and the literal holds its
path. The flow is a `@workflow` of 1,000 calls.
"""

import os
import sys

import common  # noqa: F401  (first: it notes the process's start before flytekit imports)
from common import body_ran, main

_argv = sys.argv[1:]
_dir = None
if "--dir" in _argv and _argv.index("--dir") + 1 < len(_argv):
    _dir = os.path.abspath(_argv[_argv.index("--dir") + 1])
    os.makedirs(os.path.join(_dir, "sandbox"), exist_ok=True)
    os.environ["FLYTE_SDK_LOCAL_SANDBOX"] = os.path.join(_dir, "sandbox")
    # flytekit's raw output prefix (where a pickled value goes) is a mkdtemp: on this disk.
    os.makedirs(os.path.join(_dir, "tmp"), exist_ok=True)
    os.environ["TMPDIR"] = os.path.join(_dir, "tmp")

import flytekit.core.local_cache as local_cache  # noqa: E402
from flytekit import task, workflow  # noqa: E402

if _dir:
    local_cache.CACHE_LOCATION = os.path.join(_dir, "local-cache")


@task(cache=True, cache_version="1")
def add_one(x: int) -> int:
    body_ran()
    return x + 1


_VALUE = [b""]


@task(cache=True, cache_version="1")
def big(x: int) -> bytes:
    body_ran()
    return _VALUE[0]


def _call(f):
    return lambda x: f(x=x)


class Peer:
    name = "flytekit"

    def add_one(self, d):
        return _call(add_one)

    def big(self, d, value):
        _VALUE[0] = value
        return _call(big)

    def flow(self, d, calls):
        @workflow
        def many() -> int:
            outs = [add_one(x=x) for x in range(calls)]
            return _sum(xs=outs)

        # The sum is not cached: it runs on each flow run, outside the timed task calls'
        # count (its body does not call body_ran).
        return lambda: many()


@task
def _sum(xs: list[int]) -> int:
    return sum(xs)


if __name__ == "__main__":
    main(Peer())
