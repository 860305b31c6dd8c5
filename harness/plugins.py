"""Plugins: other packages add backends, metrics, filters and task folders through entry points.

A package declares, in its pyproject.toml, an entry point in the group `harness.<kind>` whose
value is a module (or an object in it); loading it runs the package's registration decorators.
The harness loads each group once, the first time it needs that kind. For a backend:

    # my_backend/__init__.py
    from harness.models import register_backend
    from harness.models.base import LanguageModel

    @register_backend("echo")          # specs `echo:NAME` now load EchoModel(NAME, **options)
    class EchoModel(LanguageModel):
        accepted_options = frozenset({"batch_size"})
        ...                            # loglikelihood, loglikelihood_rolling, generate,
                                       # fingerprint (harness.models.base.make_fingerprint), info

    # pyproject.toml
    [project.entry-points."harness.backends"]
    echo = "my_backend"

An entry point whose object is a LanguageModel subclass that did not register itself is
registered under the entry point's name. In the group `harness.tasks` an entry point names a
package whose folder holds task YAML files: they load as if given with --include-path.
"""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

from harness.errors import HarnessError

log = logging.getLogger(__name__)

KINDS = ("backends", "metrics", "filters", "tasks", "adapters")
_loaded: set[str] = set()
_filled: set[str] = set()  # registries whose built-ins are imported


def entry_point_group(kind: str) -> str:
    """The entry-point group of a kind of plugin: `harness.backends`, `harness.metrics`, ..."""
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}; kinds: {', '.join(KINDS)}")
    return f"harness.{kind}"


def load_plugins(kind: str) -> None:
    """Load every entry point of the group `harness.{kind}` (once per process); a plugin that
    fails to import is an error naming it and its package."""
    group = entry_point_group(kind)
    if kind in _loaded:
        return
    _loaded.add(kind)
    for ep in importlib.metadata.entry_points(group=group):
        try:
            obj = ep.load()
        except Exception as err:  # noqa: BLE001 - a plugin can fail in any way; name it
            dist = getattr(ep.dist, "name", "?")
            raise HarnessError(f"plugin {ep.name!r} = {ep.value!r} (package {dist}, group {group}) failed to "
                               f"load: {type(err).__name__}: {err}; fix or uninstall that package") from None
        if kind == "backends":
            _adopt_backend(ep.name, obj)
        log.debug("loaded plugin %s from %s", ep.name, group)


def task_folders() -> list[Path]:
    """Folders of task files that packages contribute through the `harness.tasks` group: the
    entry point names a package (its folder is used) or an object holding a folder path."""
    folders = []
    for ep in importlib.metadata.entry_points(group=entry_point_group("tasks")):
        try:
            obj = ep.load()
        except Exception as err:  # noqa: BLE001 - a plugin can fail in any way; name it
            raise HarnessError(f"task plugin {ep.name!r} = {ep.value!r} failed to load: {type(err).__name__}: "
                               f"{err}; fix or uninstall that package") from None
        where = Path(obj.__file__).parent if hasattr(obj, "__file__") else Path(str(obj))
        if not where.is_dir():
            raise HarnessError(f"task plugin {ep.name!r} = {ep.value!r} names {where}, which is not a folder")
        folders.append(where)
    return folders


def load_registry(kind: str, package: str, builtin: tuple[str, ...]) -> None:
    """Fill a registry once: import its built-in modules (their decorators register them), then
    the plugins of its kind."""
    if package in _filled:
        return
    _filled.add(package)
    for module in builtin:
        importlib.import_module(f"{package}.{module}")
    load_plugins(kind)


def _adopt_backend(name: str, obj: object) -> None:
    from harness.models import BACKENDS, register_backend
    from harness.models.base import LanguageModel

    if isinstance(obj, type) and issubclass(obj, LanguageModel) and name not in BACKENDS:
        register_backend(name)(obj)
