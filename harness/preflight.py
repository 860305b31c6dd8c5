"""Checks made before any model loads: every model spec, and a results file this run owns.

A run that would fail on its second model, or on writing its results, should fail before it
spends minutes on the first: the specs are checked without loading anything, and the results
file is created (exclusively: two runs never share one) before the first model loads.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError
from harness.storage import atomic_write_text, create_exclusive, safe_join, slug, to_json, unique_slug


# Backends that read weights named the same way (built-in name, .gguf file, model folder, hub id).
WEIGHT_BACKENDS = ("hf", "scratch", "llamacpp")


def check_model_spec(spec: str) -> None:
    """Raise a HarnessError for a spec that cannot load: an unknown backend prefix, no model name,
    a missing local file or folder, a name that is neither built-in, local nor a hub id."""
    from harness.models import BACKENDS, split_spec

    if not isinstance(spec, str) or not spec.strip():
        raise HarnessError(f"model spec {spec!r} is empty; give e.g. smollm2-135m or scratch:FILE.gguf")
    prefix, sep, _ = spec.partition(":")
    if sep and prefix not in BACKENDS and len(prefix) > 1 and prefix.isidentifier() and not Path(spec).exists():
        raise HarnessError(f"model spec {spec!r}: unknown backend {prefix!r}; known: {', '.join(BACKENDS)}")
    backend, name = split_spec(spec)
    if not name:
        raise HarnessError(f"model spec {spec!r} names no model after the backend prefix")
    if backend not in WEIGHT_BACKENDS:
        return  # a server address (api:) or another package's backend: only loading tells
    from harness.models.zoo import ZOO

    if name in ZOO:
        return  # whether its weights are installed is said when it loads
    from harness.models.source import resolve_source

    try:
        resolve_source(name)
    except HarnessError as err:
        raise HarnessError(f"model spec {spec!r}: {err}") from None


def check_model_specs(specs: list[str]) -> None:
    for spec in specs:
        check_model_spec(spec)


@dataclass
class RunFolder:
    """The results file and samples folder of one run, reserved in `--output` before any model loads.

    The samples folder, made with an exclusive mkdir, is the reservation; the results file is
    created exclusively at the first save (so a run killed before its first task leaves no
    results file) and replaced atomically after that."""

    root: Path
    run_id: str
    used: set[str] = field(default_factory=set)
    created: list[Path] = field(default_factory=list)  # folders this run made, outermost first
    written: bool = False

    @property
    def results_path(self) -> Path:
        return self.root / f"{self.run_id}.json"

    @property
    def samples_dir(self) -> Path:
        return self.root / self.run_id

    def samples_file(self, model_spec: str, task: str) -> str:
        """The samples file of (model, task), relative to the results folder: built from sanitized
        names (unique within the run) and checked to stay inside the run's samples folder."""
        name = unique_slug(f"{slug(model_spec)}__{slug(task, 120)}", self.used, 180) + ".jsonl"
        safe_join(self.samples_dir, name)
        return f"{self.run_id}/{name}"

    def save(self, data: dict) -> None:
        """Write the results file: created exclusively the first time, atomically replaced after."""
        text = to_json(data)
        if self.written:
            atomic_write_text(self.results_path, text)
            return
        if not create_exclusive(self.results_path, text):
            raise HarnessError(f"{self.results_path} appeared during the run (not written by it); "
                               "refusing to overwrite it")
        self.written = True

    def discard(self) -> None:
        """Remove what this run made, when it stopped before any result: its results file, its
        samples folder (if empty), and the output folders it created (if empty)."""
        if self.written:
            self.results_path.unlink(missing_ok=True)
        for folder in [self.samples_dir, *reversed(self.created)]:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty or not ours: leave it and everything above


def reserve_run(output_dir: str | os.PathLike, base_id: str) -> RunFolder:
    """Reserve a run id in the output folder: `base_id`, or `base_id-2`, `-3`, ... when another
    run has it (same second, same models), by creating its samples folder; checks on the way that
    the output folder is usable, before any model loads."""
    root = Path(output_dir).expanduser()
    if root.exists() and not root.is_dir():
        raise HarnessError(f"--output {root} is a file, not a folder; choose a folder for the results")
    created = [p for p in [*reversed(root.parents), root] if not p.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            run_id = base_id if n == 1 else f"{base_id}-{n}"
            folder = RunFolder(root, run_id, created=created)
            safe_join(root, folder.results_path.name)
            if folder.results_path.exists():
                continue
            try:
                folder.samples_dir.mkdir()
            except FileExistsError:
                continue
            probe = folder.samples_dir / ".write-check"
            probe.write_text("")  # the folder is there, but can this process write into it?
            probe.unlink()
            return folder
    except OSError as err:
        why = "permission denied" if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else (err.strerror or str(err))
        raise HarnessError(f"--output {root}: cannot write results there ({why}); choose a writable folder") from None
    raise HarnessError(f"--output {root}: no free run id for {base_id} (999 runs of it exist)")
