"""Runs LocalStack (`python -m localstack.runtime.main`) with its gateway bound to the
host named in GATEWAY_LISTEN, e.g. 127.0.0.1, instead of every interface.

LocalStack's default HTTP server (twisted) takes only the port from GATEWAY_LISTEN and
listens on 0.0.0.0 (localstack/runtime/server/twisted.py: "TODO: interface = host?").
Its other server, hypercorn, binds the host but now and then hangs on SIGTERM. So this
gives twisted's IPv4 server endpoints the host as their default interface, then runs
LocalStack.

It also makes an overwrite whole again, as S3 makes it: LocalStack 2026.3.0 writes a
PutObject into the object's existing file in place, truncating it before it reads the
request's body. A writer that goes away after sending its request (a killed process)
leaves twisted to close that body, the read fails ("I/O operation on closed file",
500), and the object keeps its old length and ETag over an empty file: a GET then
answers 200 and never sends the body. S3 keeps the old object whole when a PUT fails,
and cairn's crash tests rely on it. So an overwrite reads the body into a spooled
buffer first and truncates only once it has all of it.
"""

import os
import runpy
import tempfile

from localstack.services.s3.constants import S3_CHUNK_SIZE
from localstack.services.s3.storage import ephemeral
from twisted.internet import endpoints

_host = os.environ.get("GATEWAY_LISTEN", "").split(",")[0].rpartition(":")[0]
_TCP4ServerEndpoint = endpoints.TCP4ServerEndpoint


class _BoundTCP4ServerEndpoint(_TCP4ServerEndpoint):
    def __init__(self, reactor, port, backlog=50, interface=""):
        super().__init__(reactor, port, backlog, interface or _host)


if _host:
    endpoints.TCP4ServerEndpoint = _BoundTCP4ServerEndpoint

_write = ephemeral.EphemeralS3StoredObject.write


def _write_whole(self, stream):
    """Reads a body meant to replace existing data completely before touching it."""
    if stream is None or isinstance(stream, ephemeral.EphemeralS3StoredObject):
        return _write(self, stream)
    with self.file.position_lock:
        existing = self.file.seek(0, 2)
    if not existing:
        return _write(self, stream)
    with tempfile.SpooledTemporaryFile(max_size=8 * S3_CHUNK_SIZE) as body:
        while data := stream.read(S3_CHUNK_SIZE):
            body.write(data)
        body.seek(0)
        return _write(self, body)


ephemeral.EphemeralS3StoredObject.write = _write_whole

runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)
