"""W&B tracking that can never kill a study, plus a reader for the offline run files it writes.

Why a wrapper: a study is an hour of compute; a W&B outage, a missing login or a bad value must cost a warning, not
the study. Every call below catches everything and turns that run (only) into a no-op.
"""

from __future__ import annotations

import json
import netrc
import os
import struct
import warnings
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from slowai.callbacks import MetricsCB
from slowai.core import Callback

INIT_TIMEOUT_S = 90.0


def resolve_mode(mode: str = "auto") -> str:
    """'online'/'offline'/'disabled'; 'auto' honours $WANDB_MODE, else online only with credentials, else offline."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("online", "offline", "disabled"):
        return env
    if env == "dryrun":
        return "offline"
    return "online" if _has_credentials() else "offline"


def _has_credentials() -> bool:
    """Whether wandb would find an API key (env var or the netrc entry `wandb login` writes); never reads it out."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


_REQUIREMENTS_SAVED: set[Path | None] = set()


class Tracker:
    """Starts one W&B run per trial under `dir` (offline ones are uploaded later with `sync_command`); the installed
    packages (requirements.txt) go with the first run of each process and `dir` only, as scanning them costs 0.25 s."""

    def __init__(self, mode: str = "auto", project: str = "slowai", group: str | None = None, dir: Path | None = None):
        self.mode, self.project, self.group = resolve_mode(mode), project, group
        self.dir = Path(dir) if dir is not None else None
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def start(self, name: str, job_type: str, tags: list[str], config: Mapping[str, Any]) -> TrackedRun:
        """A run (or a no-op stand-in when disabled or when wandb.init fails)."""
        if not self.enabled:
            return TrackedRun(None, self)
        try:
            import wandb

            if self.dir is not None:
                self.dir.mkdir(parents=True, exist_ok=True)
            settings = wandb.Settings(
                init_timeout=INIT_TIMEOUT_S, console="off", silent=True, x_disable_stats=True, save_code=False,
                x_save_requirements=self.dir not in _REQUIREMENTS_SAVED,  # scanning the packages costs 0.25 s
            )  # fmt: skip
            run = wandb.init(
                project=self.project,
                group=self.group,
                job_type=job_type,
                name=name,
                tags=tags,
                config=dict(config),
                dir=str(self.dir) if self.dir is not None else None,
                mode=self.mode,
                reinit="create_new",
                settings=settings,
            )
            _REQUIREMENTS_SAVED.add(self.dir)  # once per process and directory: later runs have the same packages
            return TrackedRun(run, self)
        except Exception as e:  # noqa: BLE001 - tracking must never stop training
            self._warn(f"wandb.init failed for {name}", e)
            return TrackedRun(None, self)

    def _warn(self, what: str, e: BaseException) -> None:
        self.failures += 1
        warnings.warn(f"W&B: {what}: {type(e).__name__}: {e} (the study continues without it)", stacklevel=3)

    def sync_command(self) -> str | None:
        """The one shell command that uploads every offline run of this study, if any were written (by any worker
        process sharing this output directory, so read from disk)."""
        if self.dir is None or not offline_runs(self.dir / "wandb"):
            return None
        return f"wandb sync {self.dir / 'wandb'}/offline-run-*"


class TrackedRun:
    """A W&B run whose methods swallow errors; `id` is None when there is no real run."""

    def __init__(self, run: Any, tracker: Tracker) -> None:
        self.run, self.tracker = run, tracker

    @property
    def id(self) -> str | None:
        return getattr(self.run, "id", None)

    def _call(self, what: str, fn: Any) -> None:
        if self.run is None:
            return
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            self.tracker._warn(what, e)
            if what != "finish":
                self.finish(1)

    def log(self, row: Mapping[str, Any], step: int | None = None) -> None:
        self._call("log", lambda: self.run.log(dict(row), step=step))

    def summary(self, values: Mapping[str, Any]) -> None:
        self._call("summary", lambda: self.run.summary.update(dict(values)))

    def table(self, key: str, columns: list[str], data: list[list[Any]]) -> None:
        """Log a wandb.Table (e.g. the model summary rows)."""

        def log_table() -> None:
            import wandb

            self.run.log({key: wandb.Table(columns=columns, data=data)})

        self._call("table", log_table)

    def artifact(self, name: str, path: Path, type: str, metadata: Mapping[str, Any]) -> None:
        """Log a file as a W&B artifact (e.g. a confirm run's weights as type "model")."""

        def log_artifact() -> None:
            import wandb

            art = wandb.Artifact(name, type=type, metadata=dict(metadata))
            art.add_file(str(path))
            self.run.log_artifact(art)  # add_file copied it into W&B staging: the temp file may go

        self._call("artifact", log_artifact)

    def finish(self, exit_code: int = 0) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        try:
            run.finish(exit_code=exit_code)
        except Exception as e:  # noqa: BLE001
            self.tracker._warn("finish", e)


class WandbCB(Callback):
    """Log one row per epoch: train/valid loss and accuracy from MetricsCB and the lr at the end of the train pass."""

    order = MetricsCB.order + 2

    def __init__(self, run: TrackedRun) -> None:
        self.run = run

    def before_fit(self) -> None:
        self.metrics = self.learn.cb(MetricsCB)
        self.row: dict[str, Any] = {}

    def after_epoch(self) -> None:
        last = self.metrics.last
        kind = "train" if self.learn.training else "valid"
        self.row |= {f"{kind}/loss": last["loss"], f"{kind}/accuracy": last["accuracy"], "epoch": self.learn.epoch}
        if self.learn.training:
            self.row["lr"] = self.learn.opt.param_groups[0]["lr"]
            self.row["seconds/epoch"] = last["seconds"]
        else:
            self.run.log(self.row, step=self.learn.epoch)
            self.row = {}


# ------------------------------------------------------------------------------------------- offline run files
_HEADER = b":W&B"
_BLOCK = 32 * 1024
_REC_HEADER = 7  # crc32 (4, little endian), length (2), chunk type (1): FULL=1, FIRST=2, MIDDLE=3, LAST=4


def _chunks(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The transaction log's chunks (leveldb log framing in 32 KiB blocks), CRC-checked."""
    pos = len(_HEADER) + 3  # magic, 2-byte format id, 1-byte version
    while pos + _REC_HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _REC_HEADER:  # block trailer padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + _REC_HEADER])
        chunk = data[pos + _REC_HEADER : pos + _REC_HEADER + length]
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += left
            continue
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise ValueError(f"corrupt W&B record at byte {pos}")
        yield kind, chunk
        pos += _REC_HEADER + length


def read_records(path: str | Path) -> Iterator[Any]:
    """Decode a `run-<id>.wandb` file into wandb's own protobuf `Record`s."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if not data.startswith(_HEADER):
        raise ValueError(f"{path}: not a W&B transaction log")
    buf = b""
    for kind, chunk in _chunks(data):
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """An offline run's {id, name, group, job_type, tags, config, history (rows), summary} from its .wandb file."""
    run_dir = Path(run_dir)
    path = next(run_dir.glob("run-*.wandb"))
    out: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "tags": []}
    for rec in read_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out |= {"id": r.run_id, "name": r.display_name, "group": r.run_group, "job_type": r.job_type}
            out["tags"] = list(r.tags)
            out["config"] |= {u.key: json.loads(u.value_json) for u in r.config.update}
        elif kind == "config":
            out["config"] |= {u.key: json.loads(u.value_json) for u in rec.config.update}
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            out["summary"] |= {_key(u): json.loads(u.value_json) for u in rec.summary.update}
    out["config"].pop("_wandb", None)
    return out


def offline_runs(wandb_dir: str | Path) -> list[Path]:
    """Every `offline-run-*` directory under a `wandb/` directory that holds a run log, oldest first (a run whose
    `wandb.init` failed, e.g. timed out on a loaded machine, leaves a directory without one; training went on)."""
    return sorted(d for d in Path(wandb_dir).glob("offline-run-*") if any(d.glob("run-*.wandb")))
