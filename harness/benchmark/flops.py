"""The arithmetic a decoder's forward pass needs, counted from its configuration.

Model FLOPs of one token position (a multiply-add counts 2):

    2 x (matrix parameters of the body + the head's)            the weight products
  + 4 x n_heads x head_dim x (positions it attends), per layer  q·kᵀ and the weighted sum of v

The body's matrices per layer are q (dim x n_heads·head_dim), k and v (dim x n_kv_heads·head_dim
each), the output projection (n_heads·head_dim x dim) and the gated MLP's gate, up and down
(dim x ffn_dim each); the head is dim x vocab and runs only where a position is scored. A
position p of a causal pass (0-based) attends p + 1 positions, or the layer's sliding window
if that is shorter. This is the useful work: what a pass must compute whatever its kernels,
not counting the masked half of an attention matrix that some kernels compute anyway, the
embedding lookup (no arithmetic), norms, rotary, softmax and activations (a few percent at
most), nor biases. Work that a runner skips by sharing a prefix is still counted: the figure is
the task's, not a runner's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from harness.models.scratch.config import ModelConfig


@dataclass(frozen=True)
class ForwardFlops:
    """Model FLOPs of a set of causal passes (windows) of one model."""

    windows: int
    positions: int  # token positions run through the body
    scored: int  # positions whose next-token distribution the head computes
    n_layers: int
    body_matrix_params: int
    head_matrix_params: int
    attended: int  # Σ over layers and positions of the positions each attends
    matrix_flops: int
    attention_flops: int

    @property
    def total(self) -> int:
        return self.matrix_flops + self.attention_flops

    @property
    def per_position(self) -> float:
        return self.total / self.positions if self.positions else 0.0

    @property
    def mean_attended(self) -> float:
        """Positions attended per position and layer, on average."""
        return self.attended / (self.positions * self.n_layers) if self.positions else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total, "per_position": self.per_position,
                "mean_attended": self.mean_attended}


def matrix_parameters(config: ModelConfig) -> tuple[int, int]:
    """(body, head): the weights of every matrix product of one position, biases left out."""
    q_width, kv_width = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
    attention = config.dim * q_width + 2 * config.dim * kv_width + q_width * config.dim
    mlp = 3 * config.dim * config.ffn_dim  # gate, up and down of the gated MLP
    return config.n_layers * (attention + mlp), config.dim * config.vocab_size


def attended_positions(length: int, window: int | None = None) -> int:
    """Σ over the positions p < length of a causal pass of what p attends: min(p + 1, window)."""
    if window is None or window >= length:
        return length * (length + 1) // 2
    return window * (window + 1) // 2 + (length - window) * window


def forward_flops(config: ModelConfig, windows: Iterable[tuple[int, int]]) -> ForwardFlops:
    """Model FLOPs of causal passes of (positions, scored) each: every position runs the body,
    the last `scored` of them the head too (the formula in the module docstring)."""
    body, head = matrix_parameters(config)
    n_windows = positions = scored = attended = 0
    for length, n_scored in windows:
        if not 0 <= n_scored <= length:
            raise ValueError(f"a window of {length} positions cannot score {n_scored}")
        n_windows += 1
        positions += length
        scored += n_scored
        attended += sum(attended_positions(length, config.window(layer)) for layer in range(config.n_layers))
    return ForwardFlops(windows=n_windows, positions=positions, scored=scored, n_layers=config.n_layers,
                        body_matrix_params=body, head_matrix_params=head, attended=attended,
                        matrix_flops=2 * (body * positions + head * scored),
                        attention_flops=4 * config.n_heads * config.head_dim * attended)
