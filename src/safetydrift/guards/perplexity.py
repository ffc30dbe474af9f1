"""``perplexity``: flag requests whose perplexity under a small LM is an outlier (Jain et al. 2023;
Alon & Kamfonas 2023): gibberish adversarial suffixes such as GCG's.

The LM is the guarded model itself (sharing the transformers backend's weights when it has them), or
``ppl_model=<recipe>``. Perplexity is :func:`safetydrift.analysis.metrics.perplexities` (one definition in
the package); ``ppl_window=w`` takes the maximum over windows of w tokens (0 = whole prompt).
``ppl_threshold=auto`` (default) is the largest perplexity of our calibration prompts (the AdvBench train
pool and the benign train half), computed once per model and window and cached under
``<cache>/guard/``, so ordinary harmful and benign requests pass and only outliers are flagged.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from safetydrift.errors import SpecError, UnsupportedError
from safetydrift.guards.base import InputFilter, Side, user_text
from safetydrift.params import Params, p
from safetydrift.params import Params as ParamsBase  # the filter's attribute is called Params
from safetydrift.spec import parse_recipe

if TYPE_CHECKING:
    from safetydrift.context import Context
    from safetydrift.guards.base import Flags
    from safetydrift.guards.spec import GuardConfig
    from safetydrift.types import Backend, Conversation, GenerationConfig, ResolvedModel


@dataclass(frozen=True, kw_only=True)
class PerplexityParams(Params):
    ppl_model: str | None = field(default=None, metadata=p("the LM's recipe (default: the guarded model itself)"))
    ppl_threshold: str = field(default="auto", metadata=p(
        "flag above this perplexity: a positive number, or auto (the largest of the calibration prompts)"))
    ppl_window: int = field(default=0, metadata=p("max over windows of this many tokens (0 = whole prompt; "
                                                  "else at least 2)", ge=0))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ppl_model:
            parse_recipe(self.ppl_model)
        if self.ppl_threshold != "auto":
            try:
                t = float(self.ppl_threshold)
            except ValueError:
                t = math.nan
            if not (t > 0 and math.isfinite(t)):
                raise SpecError(f"guard perplexity: ppl_threshold must be a positive number or auto, "
                                f"got {self.ppl_threshold!r}")
        if self.ppl_window == 1:
            raise SpecError("guard perplexity: ppl_window must be 0 (whole prompt) or at least 2 tokens")

    def threshold(self) -> str | float:
        """The threshold as the serving configuration stores it: "auto" or a number."""
        return self.ppl_threshold if self.ppl_threshold == "auto" else float(self.ppl_threshold)


def _shared_lm(backend: Any) -> tuple[Any, Any] | None:
    """(model, tokenizer) of a transformers backend under any guards, to reuse its loaded weights."""
    from safetydrift.guards.backend import unwrap

    base = unwrap(backend)
    return (base.model, base.tok) if hasattr(base, "model") and hasattr(base, "tok") else None


class PerplexityFilter(InputFilter):
    """Perplexity of the request under a small LM, flagged above a threshold (auto: calibrated once)."""

    name = "perplexity"
    needs = frozenset({"inner", "model", "ctx"})
    Params = PerplexityParams

    @classmethod
    def configure(cls, params: ParamsBase, sides: frozenset[Side]) -> dict[str, Any]:
        assert isinstance(params, PerplexityParams)
        return {"ppl_model": params.ppl_model, "ppl_threshold": params.threshold(), "ppl_window": params.ppl_window}

    def __init__(self, side: Side, guard: GuardConfig, *, inner: Backend, model: ResolvedModel, ctx: Context) -> None:
        super().__init__(side, guard)
        s = guard.settings
        self.ctx = ctx
        self.window = int(s.get("ppl_window") or 0)
        self._threshold: float | None = None if s["ppl_threshold"] == "auto" else float(s["ppl_threshold"])
        # load the LM (and calibrate an auto threshold) now, not inside a request's latency
        self.lm, self._weights = self._load(s.get("ppl_model"), inner, model)
        self.threshold()

    def _load(self, recipe: str | None, inner: Backend, model: ResolvedModel) -> tuple[tuple[Any, Any], str]:
        """((model, tokenizer), what the calibration cache is keyed by)."""
        from safetydrift.backends.transformers_backend import load_hf

        if recipe:
            resolved = self.ctx.resolve(recipe)
            weights = resolved.weights_sha256 or resolved.spec
            shared = _shared_lm(self.ctx.backend(recipe)) if resolved.kind == "hf" else None
            if shared is not None:
                return shared, weights
            if resolved.kind == "hf" and resolved.path is not None:
                return load_hf(resolved.path, self.ctx.device), weights
            raise UnsupportedError(f"guard: ppl_model must be a local checkpoint, not {resolved.kind}")
        weights = model.weights_sha256 or model.spec
        shared = _shared_lm(inner)
        if shared is not None:  # the transformers backend: share it
            return shared, weights
        if model.kind == "hf" and model.path is not None:
            return load_hf(model.path, self.ctx.device), weights
        raise UnsupportedError(f"guard: input=perplexity on a {model.kind} model needs ppl_model=<local recipe>")

    def perplexities(self, texts: list[str]) -> list[float]:
        from safetydrift.analysis.metrics import perplexities

        model, tok = self.lm
        return perplexities(model, tok, texts, batch_size=16, window=self.window)

    def threshold(self) -> float:
        if self._threshold is None:
            key = hashlib.sha256(json.dumps([self._weights, self.window, "v1"]).encode()).hexdigest()[:20]
            path = self.ctx.cache_dir / "guard" / f"ppl-threshold-{key}.json"
            if path.is_file():
                self._threshold = float(json.loads(path.read_text())["threshold"])
            else:
                from safetydrift.judges.classifier import request_training_rows

                ppls = self.perplexities([t for t, _ in request_training_rows()])
                self._threshold = max(ppls)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps({"threshold": self._threshold, "n": len(ppls), "window": self.window,
                                           "model": self._weights, "median": sorted(ppls)[len(ppls) // 2]}))
                tmp.replace(path)
        return self._threshold

    def check_requests(self, convs: list[Conversation], config: GenerationConfig) -> Flags:
        thr = self.threshold()
        ppls = self.perplexities([user_text(c) for c in convs])
        return [f"perplexity {ppl:.1f} > {thr:.1f}" if ppl > thr else None for ppl in ppls]
