"""The from-scratch LLaMA-family decoder (`scratch:` backend): config, model, weights, generation."""

from harness.models.scratch.backend import ScratchLanguageModel

__all__ = ["ScratchLanguageModel"]
