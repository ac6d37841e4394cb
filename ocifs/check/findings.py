"""What a check found, and how it is printed (one line per finding, then a summary)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

PROBLEM = "problem"
WARNING = "warning"
UNREFERENCED = "unreferenced"


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # PROBLEM, WARNING or UNREFERENCED
    #: what it is about: `blob sha256:…`, `ref 'v1'`, `blobs/sha256/x`, `index.json`…
    subject: str
    message: str

    def line(self) -> str:
        prefix = "" if self.kind == PROBLEM else f"{self.kind}: "
        return f"{prefix}{self.subject}: {self.message}" if self.subject else prefix + self.message


@dataclass
class Report:
    """Findings and counters; `add` is thread-safe (layer jobs report from a pool)."""

    source: str
    kind: str = ""
    quick: bool = False
    findings: list[Finding] = field(default_factory=list)
    blobs: int = 0
    documents: int = 0
    layers: int = 0
    bytes_hashed: int = 0
    unreferenced_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, kind: str, subject: str, message: str) -> None:
        with self._lock:
            self.findings.append(Finding(kind, subject, message))

    def hashed(self, n: int) -> None:
        with self._lock:
            self.bytes_hashed += n

    def count(self, kind: str) -> int:
        return sum(1 for f in self.findings if f.kind == kind)

    @property
    def clean(self) -> bool:
        return self.count(PROBLEM) == 0

    def summary(self) -> str:
        problems, warnings = self.count(PROBLEM), self.count(WARNING)
        unref = self.count(UNREFERENCED)
        what = (
            f"{self.blobs} blob(s), {self.documents} document(s), {self.layers} layer(s)"
            f"{' (quick: layers not decoded, only documents hashed)' if self.quick else ''}"
        )
        verdict = "clean" if problems == 0 else f"{problems} problem(s)"
        extra = []
        if warnings:
            extra.append(f"{warnings} warning(s)")
        if unref:
            extra.append(f"{unref} unreferenced blob(s), {self.unreferenced_bytes} bytes")
        tail = f" ({'; '.join(extra)})" if extra else ""
        return f"{self.source}: {verdict}{tail}; checked {what}, {self.bytes_hashed} bytes hashed"

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "clean": self.clean,
            "quick": self.quick,
            "findings": [
                {"kind": f.kind, "object": f.subject, "message": f.message}
                for f in self.findings
            ],
            "counts": {
                "problems": self.count(PROBLEM),
                "warnings": self.count(WARNING),
                "unreferenced": self.count(UNREFERENCED),
                "unreferenced_bytes": self.unreferenced_bytes,
                "blobs": self.blobs,
                "documents": self.documents,
                "layers": self.layers,
                "bytes_hashed": self.bytes_hashed,
            },
        }
