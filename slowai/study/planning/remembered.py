"""This machine's last answer to each planning question, so a rerun keeps its preset (see `plan.HYSTERESIS`).

Why a per-user file and not the study: `--plan-only` must leave the study untouched, yet two `--plan-only` runs of
the same command on the same machine should print the same plan. The file is only a hint: unreadable, corrupt or
unwritable, it is ignored, and writes are atomic (a temporary file renamed over it) so concurrent runs never read
half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import tempfile
from dataclasses import asdict, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from slowai.data import cache_dir
from slowai.study.planning.probe import Throughput
from slowai.study.spec import Budget

FILE_NAME = "plans.json"
MAX_ENTRIES = 200  # oldest answers are dropped: the file stays small however many studies a machine plans
PROBES_KEPT = 5  # throughput probes remembered per question: their median plans the study


def path() -> Path:
    """Where the answers live ($XDG_CACHE_HOME/slowai/plans.json or ~/.cache/slowai/plans.json)."""
    return cache_dir() / FILE_NAME


def question_key(**parts: Any) -> str:
    """A short stable key for everything that decides the answer (study, candidates, data, device, target, ...)."""
    text = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def previous(key: str) -> Budget | None:
    """The budget chosen last time for `key` on this machine, if any and still valid."""
    entry = _read().get(key)
    try:
        return Budget(**entry["budget"]) if isinstance(entry, dict) else None
    except (TypeError, ValueError, KeyError):
        return None


def remember(key: str, budget: Budget) -> None:
    """Record `budget` as this machine's answer for `key`; silently skipped where the cache cannot be written."""
    entries = _read()
    entries.pop(key, None)
    entries[key] = {"budget": asdict(budget), "at": _now()}
    _write(entries)


def smoothed(key: str, measured: dict[str, Throughput]) -> dict[str, Throughput]:
    """The median of this machine's last `PROBES_KEPT` probes of the same candidates (this one included).

    Why: one probe on a shared machine moves by 10-30% from run to run; the median of several does not, so the
    estimate (and the preset and last look chosen from it) stays put between reruns of the same command."""
    entries = _read()
    old = entries.pop(key, {}).get("probes", []) if isinstance(entries.get(key), dict) else []
    probes = [*old, {k: asdict(v) for k, v in measured.items()}][-PROBES_KEPT:]
    entries[key] = {"probes": probes, "at": _now()}
    _write(entries)
    out = {}
    for name, now in measured.items():
        seen = [p[name] for p in probes if isinstance(p.get(name), dict)]
        try:
            out[name] = Throughput(*(_median(seen, f.name) for f in fields(Throughput)))
        except (KeyError, TypeError, ValueError):  # a corrupt entry: this probe alone
            out[name] = now
    return out


def _median(probes: list[dict[str, Any]], name: str) -> float | None:
    """The median of one field over the probes that measured it (None where none did: an optional figure)."""
    values = [float(p[name]) for p in probes if p.get(name) is not None]
    return statistics.median(values) if values else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write(entries: dict[str, Any]) -> None:
    """Atomically replace the file with `entries` (newest last, at most MAX_ENTRIES); skipped where unwritable."""
    entries = dict(list(entries.items())[-MAX_ENTRIES:])
    target = path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{FILE_NAME}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(entries, f, indent=1)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        return


def _read() -> dict[str, Any]:
    try:
        data = json.loads(path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
