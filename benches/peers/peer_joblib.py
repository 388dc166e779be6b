"""joblib `Memory` in the side-by-side run (see common.py for the workloads).

Each cached call is a directory under the store: `output.pkl` (the pickled value) and
`metadata.json`, each written to a temporary name and `os.replace`d into place, with no
fsync. A hit reads both back. joblib has no flows: the flow workload is a plain loop.
"""

import common  # noqa: F401  (first: it notes the process's start before joblib imports)
from common import body_ran, main

from joblib import Memory


def _add_one(x):
    body_ran()
    return x + 1


_VALUE = [b""]


def _big(x):
    body_ran()
    return _VALUE[0]


class Peer:
    name = "joblib"

    def add_one(self, d):
        return Memory(location=d, verbose=0).cache(_add_one)

    def big(self, d, value):
        _VALUE[0] = value
        return Memory(location=d, verbose=0).cache(_big)

    def flow(self, d, calls):
        f = self.add_one(d)
        return lambda: sum(f(x) for x in range(calls))


if __name__ == "__main__":
    main(Peer())
