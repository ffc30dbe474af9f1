"""`align`: give an instruct model that does not refuse (SmolLM2 refuses ~3% of AdvBench) a refusal habit.

Supervised fine-tuning on two halves:
- harmful requests → refusals (our varied phrasings), the requests drawn from the AdvBench train pool,
  which excludes every advbench50 behavior and its paraphrase cluster;
- benign requests → the model's *own* answers (self-distillation: helpfulness is kept because the
  model is trained to say what it already said), including superficially risky ones ("How do I kill a
  zombie process?") and imperative ones in AdvBench's own style ("Write a tutorial on how to bake bread")
  so that it learns to refuse harm rather than keywords or verbs, and benign-task prompts so that
  utility is kept. (A first version with fewer benign imperatives refused 29% of the benign set.) Benign training prompts that resemble the `benign` evaluation set are dropped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetydrift.hashing import sha256_json
from safetydrift.params import override, p, to_key
from safetydrift.registry import transforms
from safetydrift.types import GenerationConfig, ResolvedModel
from safetydrift.variants.base import BuildResult, Transform
from safetydrift.variants.sft import SFTConfig, train_sft

EVAL_SIMILARITY = 0.5  # benign training prompts this close to a `benign` eval prompt are dropped
# conversations per self-distillation batch: greedy answers can differ in the last bits with the batch's padding,
# so it is part of the cache key (64: the transformers backend's default, 1.5x faster than 16 on 2 cores)
DISTILL_BATCH = 64


def benign_training_prompts(n_general: int, n_task: int, seed: int) -> list[tuple[str, str]]:
    """(prompt, kind) benign prompts for self-distillation, disjoint from the `benign` eval set."""
    import json

    from safetydrift.datasets import benign_task
    from safetydrift.datasets.files import package_file
    from safetydrift.datasets.training import general_qa, near_duplicate_pairs

    risky = [x.strip() for x in package_file("align_benign_prompts.txt").read_text().splitlines() if x.strip()]
    general = [q for q, _ in general_qa()]
    eval_prompts = [
        json.loads(x)["prompt"] for x in package_file("benign_instructions.jsonl").read_text().splitlines() if x.strip()
    ]
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    for pool, kind, k in ((risky, "benign-written", None), (general, "benign-general", n_general)):
        near = {i for i, _, _ in near_duplicate_pairs(pool, eval_prompts, EVAL_SIMILARITY)}
        kept = [p for i, p in enumerate(pool) if i not in near]
        rng.shuffle(kept)
        out.extend((p, kind) for p in (kept if k is None else kept[:k]))
    out.extend((r["prompt"], "benign-task") for r in benign_task.generate("train", n_task, seed=seed))
    return out


@dataclass(frozen=True, kw_only=True)
class AlignParams(SFTConfig):
    lr: float = override(SFTConfig, "lr", 1e-4)
    epochs: float = override(SFTConfig, "epochs", 2.0)
    batch: int = override(SFTConfig, "batch", 16)
    max_len: int = override(SFTConfig, "max_len", 128)
    n_harmful: int = field(default=60, metadata=p("harmful requests trained to a refusal", ge=1))
    n_general: int = field(default=20, metadata=p("general benign prompts (the parent's own answers)", ge=1))
    n_task: int = field(default=10, metadata=p("benign-task prompts (the parent's own answers)", ge=1))
    distill_tokens: int = field(default=48, metadata=p("tokens of each self-distilled answer", ge=1))


@transforms.register("align", help="safety alignment by SFT: harmful → refusals, benign → own answers")
class Align(Transform):
    name = "align"
    Params = AlignParams
    params: AlignParams

    def _harmful_examples(self) -> list[dict[str, Any]]:
        from safetydrift.datasets.training import harmful_requests_split, refusal_examples

        st = self.params
        pool, _held_out = harmful_requests_split()
        rng = random.Random(st.seed)
        reqs = list(pool)
        rng.shuffle(reqs)
        return refusal_examples(reqs[: st.n_harmful], seed=st.seed)

    def _benign_prompts(self) -> list[tuple[str, str]]:
        return benign_training_prompts(self.params.n_general, self.params.n_task, self.params.seed)

    def key_material(self, lineage: list[ResolvedModel]) -> dict[str, Any]:
        return {
            "harmful_sha256": sha256_json(self._harmful_examples()),
            "benign_prompts_sha256": sha256_json(self._benign_prompts()),
            "precision": self.params.resolved_precision(),
            "distill_batch": DISTILL_BATCH,
        }

    def _distill(self, parent: ResolvedModel, prompts: list[tuple[str, str]]) -> list[str]:
        """The parent's own greedy answers (self-distillation), cached: SFT settings can change cheaply."""
        import json

        from safetydrift.backends.transformers_backend import TransformersBackend
        from safetydrift.spec import parse_component
        from safetydrift.store import atomic_write_text

        st = self.params
        key = sha256_json({"parent": parent.weights_sha256, "prompts": prompts, "tokens": st.distill_tokens,
                           "batch": DISTILL_BATCH})
        path = self.ctx.cache_dir / "distill" / f"{key[:24]}.json"
        if path.exists():
            return list(json.loads(path.read_text()))
        backend = TransformersBackend(parent, parse_component(f"transformers:batch={DISTILL_BATCH}"), self.ctx)
        self.ctx.log(f"align: distilling the parent's answers to {len(prompts)} benign prompts")
        gens = backend.generate(
            [[{"role": "user", "content": p}] for p, _ in prompts],
            GenerationConfig(max_new_tokens=st.distill_tokens, seed=st.seed),
        )
        answers = [g.text if g.ok else "" for g in gens]
        atomic_write_text(path, json.dumps(answers))
        return answers

    def build(self, parent: ResolvedModel, out_dir: Path, lineage: list[ResolvedModel]) -> BuildResult:
        harmful = self._harmful_examples()
        benign_prompts = self._benign_prompts()
        answers = self._distill(parent, benign_prompts)
        benign = [
            {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": g}], "kind": kind}
            for (p, kind), g in zip(benign_prompts, answers, strict=True)
            if g.strip()
        ]
        examples = harmful + benign
        assert parent.path is not None
        hf_dir, curve, info = train_sft(parent.path, examples, self.params, out_dir, self.ctx)
        info.update(
            {
                "n_harmful": len(harmful),
                "n_benign": len(benign),
                "benign_kinds": {k: sum(1 for e in benign if e["kind"] == k) for k in sorted({e["kind"] for e in benign})},
                "data_sha256": sha256_json(examples),
                "settings": to_key(self.params),
            }
        )
        return BuildResult(kind="hf", path=hf_dir, provenance=info, loss_curve=curve)
