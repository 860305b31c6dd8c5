"""`harness models`: the built-in models and whether their weights are installed."""

from __future__ import annotations

import argparse

HELP = "list the built-in models and whether their weights are installed"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from harness.models.zoo import ZOO, is_installed
    from harness.report.table import text_table

    rows = []
    for z in ZOO.values():
        installed = is_installed(z.name)
        path = str(z.locate()) if installed and z.name != "gemma3-270m" else (z.package if installed else "-")
        rows.append([z.name, z.architecture, f"{z.n_params / 1e6:.0f}M", "yes" if installed else f"no: {z.install}", path, z.description])
    print(text_table(["name", "architecture", "params", "installed", "file", "description"], rows, "llrlll"))
    print("\nAny local HF directory, .gguf file or hub id works too; prefix a backend: hf: (default), scratch:, api:.")
    return 0
