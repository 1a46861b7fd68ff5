"""An in-memory Lease with the API server's optimistic concurrency, for election unit tests."""

from __future__ import annotations

from dataclasses import replace

from climatik.kube.leaderelection import LeaseConflictError, LeaseRecord


class MemoryLease:
    """A Lease with resourceVersion checks, like the API server's (409 on a stale write)."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0
        self.writes: list[LeaseRecord] = []
        self.fail = False

    async def get(self) -> LeaseRecord | None:
        if self.fail:
            raise OSError("apiserver unreachable")
        return self.record

    async def create(self, record: LeaseRecord) -> LeaseRecord:
        if self.fail:
            raise OSError("apiserver unreachable")
        if self.record is not None:
            raise LeaseConflictError("already exists")
        return self._store(record)

    async def update(self, record: LeaseRecord) -> LeaseRecord:
        if self.fail:
            raise OSError("apiserver unreachable")
        if self.record is None or record.resource_version != self.record.resource_version:
            raise LeaseConflictError("conflict")
        return self._store(record)

    def _store(self, record: LeaseRecord) -> LeaseRecord:
        self.version += 1
        self.record = replace(record, resource_version=str(self.version))
        self.writes.append(self.record)
        return self.record
