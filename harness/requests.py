"""Request and response types shared by the runner, the backends and the metrics."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

# loglikelihood request: (context, continuation) -> (logprob, is_greedy)
LoglikelihoodRequest = tuple[str, str]
LoglikelihoodResponse = tuple[float, bool]
# rolling request: a whole text -> (logprob, number of scored tokens)
RollingResponse = tuple[float, int]


@dataclass(frozen=True)
class GenerateRequest:
    """One prompt to continue. `prompt` is the exact text the model sees (chat template applied)."""

    prompt: str
    until: tuple[str, ...] = ()
    max_gen_toks: int = 256
    temperature: float = 0.0
    do_sample: bool = False
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int = 1234

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature <= 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["until"] = list(self.until)
        return d


def request_key(kind: str, payload: Any) -> str:
    """A stable content hash of one request, used as the cache key beside the model fingerprint."""
    if isinstance(payload, GenerateRequest):
        payload = payload.to_dict()
    blob = json.dumps([kind, payload], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class ModelInfo:
    """What a results file records about a model."""

    name: str
    backend: str
    spec: str
    n_params: int | None = None
    dtype: str | None = None
    device: str | None = None
    max_length: int | None = None
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
