"""Prefect 3 in the side-by-side run (see common.py for the workloads).

Tasks are cached with `cache_policy=INPUTS + TASK_SOURCE` (the default policy adds the
flow run's id, which would make every flow run miss) and persist their results on the
local filesystem (`PREFECT_LOCAL_STORAGE_PATH`, set to the workload's directory).
Prefect's `LocalFileSystem.write_path` opens the record file in place and writes it:
no temporary name, no rename, no fsync. The record is JSON holding the pickled value
in base64. Every task run is also recorded through the API: the driver starts one
Prefect server on 127.0.0.1 (sqlite under a temporary PREFECT_HOME) and points
PREFECT_API_URL at it.
"""

import os
import sys

import common  # noqa: F401  (first: it notes the process's start before Prefect imports)
from common import body_ran, main

# The results directory is a setting read when Prefect is imported: take it from the
# command line first.
_argv = sys.argv[1:]
if "--dir" in _argv and _argv.index("--dir") + 1 < len(_argv):
    _dir = os.path.abspath(_argv[_argv.index("--dir") + 1])
    os.makedirs(_dir, exist_ok=True)
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = _dir
os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "true")

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import INPUTS, TASK_SOURCE  # noqa: E402

_POLICY = INPUTS + TASK_SOURCE


@task(cache_policy=_POLICY, persist_result=True)
def add_one(x: int) -> int:
    body_ran()
    return x + 1


_VALUE = [b""]


@task(cache_policy=_POLICY, persist_result=True)
def big(x: int) -> bytes:
    body_ran()
    return _VALUE[0]


@flow(persist_result=True)
def many(calls: int) -> int:
    return sum(add_one(x) for x in range(calls))


class Peer:
    name = "prefect"

    def add_one(self, d):
        return add_one

    def big(self, d, value):
        _VALUE[0] = value
        return big

    def flow(self, d, calls):
        return lambda: many(calls)


if __name__ == "__main__":
    main(Peer())
