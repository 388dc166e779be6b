"""Runs LocalStack (`python -m localstack.runtime.main`) with its gateway bound to the
host named in GATEWAY_LISTEN, e.g. 127.0.0.1, instead of every interface.

LocalStack's default HTTP server (twisted) takes only the port from GATEWAY_LISTEN and
listens on 0.0.0.0 (localstack/runtime/server/twisted.py: "TODO: interface = host?").
Its other server, hypercorn, binds the host but now and then hangs on SIGTERM. So this
gives twisted's IPv4 server endpoints the host as their default interface, then runs
LocalStack unchanged.
"""

import os
import runpy

from twisted.internet import endpoints

_host = os.environ.get("GATEWAY_LISTEN", "").split(",")[0].rpartition(":")[0]
_TCP4ServerEndpoint = endpoints.TCP4ServerEndpoint


class _BoundTCP4ServerEndpoint(_TCP4ServerEndpoint):
    def __init__(self, reactor, port, backlog=50, interface=""):
        super().__init__(reactor, port, backlog, interface or _host)


if _host:
    endpoints.TCP4ServerEndpoint = _BoundTCP4ServerEndpoint

runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)
