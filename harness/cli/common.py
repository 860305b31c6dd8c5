"""What the commands share: the parser class and argument types."""

from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other error the CLI prints."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def positive_or_auto(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch size must be a positive integer or 'auto', not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("batch size must be at least 1")
    return value
