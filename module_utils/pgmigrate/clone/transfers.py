"""How a table part's rows reach the target's COPY: a small table through the worker's source session,
a larger one streamed from a psql process on the source through an OS pipe."""

import fcntl
import os
import subprocess

from ..common.connection import libpq_environment
from . import source_sessions
from .errors import MigrationError, SourceStreamError

PIPE_SIZE = 1 << 20
CHUNK_SIZE = 1 << 20
F_SETPIPE_SZ = 1031


class InProcessTransfer:
    """A small table through the worker's source session (source_sessions.copy_through_spool)."""

    def __init__(self, copy_run, worker, table_name, copy_out_sql):
        self.copy_run, self.worker, self.table_name, self.copy_out_sql = copy_run, worker, table_name, copy_out_sql
        self.streamed = 0

    def run(self, target_cur, copy_in_sql):
        if self.copy_run.abort.is_set():
            raise MigrationError("aborted")
        session = self.copy_run.source_sessions.get(self.worker)
        self.streamed = source_sessions.copy_through_spool(session, self.copy_out_sql, target_cur, copy_in_sql)
        self.copy_run.progress.add_bytes(self.table_name, self.streamed)
        return self.streamed

    def failed(self):
        self.copy_run.source_sessions.discard(self.worker)

    def close(self):
        pass


class StreamingTransfer:
    """A table (or a part of one) streamed from a psql process on the source into the target's COPY."""

    def __init__(self, copy_run, worker, table_name, qualname, source_command, fmt):
        """source_command: the psql command line that writes the part's COPY to its standard output."""
        self.copy_run, self.table_name, self.qualname = copy_run, table_name, qualname
        self.streamed = 0
        env = libpq_environment(copy_run.source, f"pgmigrate worker {worker}")
        if fmt == "text":
            env["PGCLIENTENCODING"] = "UTF8"
        self.proc = subprocess.Popen(source_command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     bufsize=0)
        try:
            fcntl.fcntl(self.proc.stdout.fileno(), F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass

    def read(self, size=-1):
        if self.copy_run.abort.is_set():
            raise MigrationError("aborted")
        data = os.read(self.proc.stdout.fileno(), CHUNK_SIZE if size is None or size < 0 else size)
        self.streamed += len(data)
        self.copy_run.progress.add_bytes(self.table_name, len(data))
        return data

    readline = read

    def run(self, target_cur, copy_in_sql):
        target_cur.copy_expert(copy_in_sql, self, size=CHUNK_SIZE)
        if self.proc.wait() != 0:
            message = self.proc.stderr.read().decode(errors="replace").strip()
            raise SourceStreamError(f"reading {self.qualname} from the source failed: {message}")
        return self.streamed

    def failed(self):
        pass

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
