"""The batch job's record of what is finished and what failed, kept beside the outputs."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from enlighten_ray.io.storage import Location, stored

MANIFEST = "_manifest.jsonl"
FAILURES = "_failures.jsonl"
# Remote manifests cannot be appended to: the driver re-uploads its local copy this often (seconds).
REMOTE_LEDGER_UPLOAD_S = 30.0


class Ledger:
    """OUTPUT/_manifest.jsonl (one line per finished output) and OUTPUT/_failures.jsonl, written
    only by the driver. Local files are appended line by line; on object stores, which cannot
    append, a local copy is uploaded every REMOTE_LEDGER_UPLOAD_S seconds and at the end."""

    def __init__(self, output: Location, weights_id: str) -> None:
        self.output = output
        self.weights_id = weights_id
        self.run = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self._tmp = None if output.is_local else tempfile.TemporaryDirectory(prefix="enlighten-ledger-")
        self._files = {name: self._open(name) for name in (MANIFEST, FAILURES)}
        self._uploaded = time.monotonic()
        self.versions: dict[str, str] = {}  # source -> size:mtime when planned, recorded with its output

    def _local(self, name: str) -> Path:
        return Path(self.output.path(name)) if self._tmp is None else Path(self._tmp.name) / name

    def _open(self, name: str) -> Any:
        local = self._local(name)
        remote = self.output.path(name)
        if self._tmp is not None and self.output.exists(remote):
            with self.output.fs.open_input_stream(remote) as src:
                local.write_bytes(src.read())
        local.parent.mkdir(parents=True, exist_ok=True)
        f = open(local, "a+", encoding="utf-8")
        f.seek(0, os.SEEK_END)
        if f.tell():  # a driver killed mid-line leaves no newline: start on a fresh line
            f.seek(f.tell() - 1)
            if f.read(1) != "\n":
                f.write("\n")
        return f

    def completed(self) -> dict[str, dict]:
        """output -> its latest manifest entry made with these weights."""
        f = self._files[MANIFEST]
        f.flush()
        entries: dict[str, dict] = {}
        with open(self._local(MANIFEST), encoding="utf-8") as lines:
            for line in lines:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if entry.get("weights") == self.weights_id:
                    entries[entry["output"]] = entry
        return entries

    def done(self, kind: str, source: str, output: str, frames: int, header_frames: int | None = None) -> None:
        """An output finished; `header_frames` (a video cut short: the count its header gave, 0
        when none) records a source enhanced only as far as it decodes."""
        self._append(
            MANIFEST,
            {
                "source": source,
                "output": output,
                "kind": kind,
                "frames": frames,
                "truncated": header_frames is not None,
                **({"header_frames": header_frames or None} if header_frames is not None else {}),
                "source_version": self.versions.get(source),
                "weights": self.weights_id,
                "run": self.run,
            },
        )

    def failed(self, source: str, stage: str, error: str) -> None:
        self._append(FAILURES, {"path": source, "stage": stage, "error": error, "run": self.run})
        print(f"enlighten-ray: error: {error}", file=sys.stderr)

    def _append(self, name: str, entry: dict) -> None:
        f = self._files[name]
        f.write(json.dumps(entry) + "\n")
        f.flush()
        if self._tmp is not None and time.monotonic() - self._uploaded > REMOTE_LEDGER_UPLOAD_S:
            self.upload()

    def upload(self) -> None:
        if self._tmp is None:
            return
        for name, f in self._files.items():
            f.flush()
            with stored(self.output, self.output.path(name)) as tmp:
                shutil.copyfile(self._local(name), tmp)
        self._uploaded = time.monotonic()

    def close(self) -> None:
        self.upload()
        for f in self._files.values():
            f.close()
        if self._tmp is not None:
            self._tmp.cleanup()
