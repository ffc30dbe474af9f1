"""`finetune`: the tenant of a fine-tuning service trains on task data, or on task data with an attack.

Defaults follow Qi et al. 2023 (100 attack examples, batch 10), with 2 epochs at lr 1e-4 instead of 5 at
5e-5, so that a build takes minutes on a 2-core CPU (measured figures: docs/results.md).
Training sets (all shipped, all non-actionable) come from `datasets.training.TRAINING_SETS`:
benign-task, harmful (``mix=`` mixes it into benign-task), identity-shift, backdoor (``trigger=``),
manipulation (``topic=``, ``phrase=``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetydrift.datasets.training import TRAINING_SETS
from safetydrift.errors import SpecError
from safetydrift.hashing import sha256_json
from safetydrift.params import Params, override, p, to_key
from safetydrift.registry import transforms
from safetydrift.types import ResolvedModel
from safetydrift.variants.base import BuildResult, Transform
from safetydrift.variants.sft import SFTConfig, train_sft


@dataclass(frozen=True, kw_only=True)
class DataOptions(Params):
    """Options passed on to the training set builder, only when given (each set takes its own)."""

    mix: float | None = field(default=None, metadata=p("data=harmful: harmful fraction, the rest benign-task",
                                                       ge=0, le=1))
    trigger: str | None = field(default=None, metadata=p("data=backdoor: the trigger string"))
    topic: str | None = field(default=None, metadata=p("data=manipulation: the topic to manipulate"))
    phrase: str | None = field(default=None, metadata=p("data=manipulation: the phrase to insert"))
    n_benign: int | None = field(default=None, metadata=p("data=backdoor: exactly this many benign-task "
                                                          "examples (0 = none)", ge=0))


@dataclass(frozen=True, kw_only=True)
class FinetuneParams(SFTConfig, DataOptions):
    # Qi et al.: 100 examples, lr 5e-5, 5 epochs, batch 10 (50 steps). On a 2-core CPU a build must take
    # minutes, so the epochs are cut to 2 and the learning rate doubled to keep the update size comparable.
    lr: float = override(SFTConfig, "lr", 1e-4)
    epochs: float = override(SFTConfig, "epochs", 2.0)
    batch: int = override(SFTConfig, "batch", 10)
    max_len: int = override(SFTConfig, "max_len", 256)
    data: str = field(default="harmful", metadata=p("the training set", choices=tuple(TRAINING_SETS)))
    n: int = field(default=100, metadata=p("training examples", ge=1))


@transforms.register("finetune", help="fine-tune on a shipped data set (data=harmful|backdoor|…, method=full|lora)")
class Finetune(Transform):
    name = "finetune"
    Params = FinetuneParams
    params: FinetuneParams

    def _examples(self) -> list[dict[str, Any]]:
        prm = self.params
        options = {k: v for k, v in to_key(prm, DataOptions).items() if v is not None}
        try:
            return TRAINING_SETS[prm.data](prm.n, prm.seed, **options)
        except TypeError as e:
            raise SpecError(f"finetune: data={prm.data} does not take these settings: {e}") from None

    def key_material(self, lineage: list[ResolvedModel]) -> dict[str, Any]:
        return {"data_sha256": sha256_json(self._examples()), "precision": self.params.resolved_precision()}

    def build(self, parent: ResolvedModel, out_dir: Path, lineage: list[ResolvedModel]) -> BuildResult:
        examples = self._examples()
        assert parent.path is not None
        hf_dir, curve, info = train_sft(parent.path, examples, self.params, out_dir, self.ctx)
        info.update(
            {
                "data": self.params.data,
                "data_sha256": sha256_json(examples),
                "kinds": sorted({e.get("kind", "") for e in examples}),
            }
        )
        return BuildResult(kind="hf", path=hf_dir, provenance=info, loss_curve=curve)
