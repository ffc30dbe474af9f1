"""The utility readings memo (experiments/readings.py): a re-run looks readings up instead of reading models
again, gives the same numbers, and never memoises what it cannot identify."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safetydrift.context import Context
from safetydrift.experiments.readings import Readings, model_key
from safetydrift.types import ResolvedModel


def test_roundtrip_and_what_is_never_memoised(tmp_path: Path) -> None:
    memo = Readings(tmp_path)
    key = {"model": {"kind": "hf", "weights": "abc"}, "items": "h1"}
    assert memo.get("mc", key) is None
    memo.put("mc", key, {"lls": [[0.5, -1.0]]})
    assert memo.get("mc", key) == {"lls": [[0.5, -1.0]]}
    assert memo.get("mc", {**key, "items": "h2"}) is None  # other items: another key
    assert memo.get("margins", key) is None  # another kind
    memo.put("mc", None, {"x": 1})  # None material (a model without a weights hash): nothing is written
    assert len(list(tmp_path.rglob("*.json"))) == 1
    assert Readings(None).get("mc", key) is None
    Readings(None).put("mc", key, {"x": 1})
    # a torn file is a miss, not an error
    path = next(tmp_path.rglob("*.json"))
    path.write_text('{"format": 1, "val', encoding="utf-8")
    assert memo.get("mc", key) is None


def test_each_kind_is_keyed_by_its_own_readers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A change to the MC engine is a new MC key and leaves the margins memo valid (and the other way round)."""
    from safetydrift.experiments import readings

    key = {"model": {"kind": "hf", "weights": "abc"}}
    memo = Readings(tmp_path)
    memo.put("mc", key, {"x": 1})
    memo.put("margins", key, {"y": 2})
    real = readings._code

    def edited(kind: str) -> str:  # as if analysis/mc.py had changed
        return real(kind) + ("-edited" if "analysis/mc.py" in readings._READERS.get(kind, ()) else "")

    monkeypatch.setattr(readings, "_code", edited)
    after = Readings(tmp_path)
    assert after.get("mc", key) is None
    assert after.get("margins", key) == {"y": 2}
    assert readings._code("margins") != readings._code("mc")
    assert set(readings._READERS) == {"mc", "ppl_kl", "margins", "kl_harmful"}
    src = Path(readings.__file__).resolve().parents[1]
    assert all((src / f).is_file() for f in readings._ALL_READERS)  # a renamed module is not silently unkeyed


def test_model_key_needs_a_weights_hash() -> None:
    assert model_key(ResolvedModel(spec="x", kind="hf", path=Path("x"), weights_sha256=None)) is None
    assert model_key(ResolvedModel(spec="x", kind="hf", path=Path("x"), weights_sha256="ab")) == {
        "kind": "hf", "weights": "ab"}
    # a guard leaves the logits alone: the same key as its model
    guarded = ResolvedModel(spec="y", kind="hf", path=Path("x"), weights_sha256="ab", wrappers=({"g": 1},))
    assert model_key(guarded) == model_key(ResolvedModel(spec="x", kind="hf", path=Path("x"), weights_sha256="ab"))
    assert model_key(None) == {"model": None}


EXP = {
    "name": "memo",
    "generation": {"max_new_tokens": 2, "seed": 0},
    "variants": {
        "base": "tiny-random",
        "twin": {"recipe": "tiny-random:seed=1", "reference": "base"},
    },
    "datasets": ["advbench50:n=3"],
    "attacks": ["direct"],
    "judges": ["keyword"],
    "utility": {"benign_task": 0, "benign": 0, "ppl_texts": 2, "margin": True, "mc": 8},
}


def test_a_rerun_reads_no_model_and_gives_the_same_utility(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetydrift.analysis import margin, mc, metrics
    from safetydrift.experiments import parse_experiment
    from safetydrift.experiments.run import run_experiment

    ctx = Context(cache_dir=tmp_path / "cache", quiet=True)  # its own memo: nothing read by other tests
    exp = parse_experiment(EXP, "memo.yaml")
    first = run_experiment(exp, tmp_path / "a", ctx)
    twin = {u.variant: u for u in first.utility}["twin"]
    assert twin.mc_acc is not None and twin.ppl is not None and twin.refusal_margin is not None
    assert twin.kl_harmful is not None and twin.margin_p is not None
    kinds = {p.parent.name for p in (tmp_path / "cache" / "readings").rglob("*.json")}
    assert kinds == {"mc", "ppl_kl", "margins", "kl_harmful"}

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("a memoised reading was computed again")

    monkeypatch.setattr(mc, "score_mc", boom)
    monkeypatch.setattr(margin, "refusal_margins", boom)
    monkeypatch.setattr(metrics, "drift_metrics", boom)
    second = run_experiment(exp, tmp_path / "b", ctx)
    strip = [{k: v for k, v in u.to_json().items() if k not in ("mc_meta",)} for u in first.utility]
    again = [{k: v for k, v in u.to_json().items() if k not in ("mc_meta",)} for u in second.utility]
    assert again == strip
    assert {u.variant: u for u in second.utility}["twin"].mc_meta["memo"] is True

    # a model whose margins are memoised but whose pair's KL_h is not is read again (KL needs both sides' logits)
    for p in (tmp_path / "cache" / "readings" / "kl_harmful").glob("*.json"):
        p.unlink()
    with pytest.raises(AssertionError, match="computed again"):
        run_experiment(exp, tmp_path / "c", ctx)
    monkeypatch.undo()
    third = run_experiment(exp, tmp_path / "d", ctx)
    assert {u.variant: u for u in third.utility}["twin"].kl_harmful == pytest.approx(twin.kl_harmful)
    doc = json.loads(next((tmp_path / "cache" / "readings" / "kl_harmful").glob("*.json")).read_text())
    assert doc["key"]["variant"] != doc["key"]["reference"]


def test_a_gguf_margin_key_names_the_tokenizer_its_token_sets_come_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GGUF's margins take their refusal/compliance token sets from the nearest HF tokenizer up its recipe,
    so that tokenizer's files are in the key: an edited tokenizer is a new reading, an HF model's key is as
    before (its own side files are already in :func:`model_key`)."""
    from safetydrift.analysis import margin
    from safetydrift.experiments.utility import margin_model_key

    tok = tmp_path / "hf"
    tok.mkdir()
    (tok / "tokenizer_config.json").write_text('{"a": 1}')
    found: list[Path | None] = [tok]
    monkeypatch.setattr(margin, "nearest_hf_tokenizer", lambda model, ctx: found[0])
    gguf = ResolvedModel(spec="m>gguf", kind="gguf", path=tmp_path / "m.gguf", weights_sha256="ab")
    before = margin_model_key(gguf, None)
    assert before is not None and before["token_sets_from"][0][0] == "tokenizer_config.json"
    (tok / "tokenizer_config.json").write_text('{"a": 2}')
    assert margin_model_key(gguf, None) != before
    found[0] = None
    assert margin_model_key(gguf, None) == {**model_key(gguf), "token_sets_from": None}
    hf = ResolvedModel(spec="x", kind="hf", path=tmp_path / "nope", weights_sha256="ab")
    assert margin_model_key(hf, None) == model_key(hf)
    assert margin_model_key(ResolvedModel(spec="y", kind="gguf", path=None, weights_sha256=None), None) is None


def test_nearest_hf_tokenizer_walks_up_the_recipe_without_resolving_the_gguf_itself(tmp_path: Path) -> None:
    from safetydrift.analysis.margin import nearest_hf_tokenizer

    kinds = {"tiny-random": "hf", "tiny-random>align": "hf", "tiny-random>align>quantize:method=gguf": "gguf"}
    asked: list[str] = []

    class FakeCtx:
        def resolve(self, recipe: object) -> ResolvedModel:
            asked.append(str(recipe))
            return ResolvedModel(spec=str(recipe), kind=kinds[str(recipe)], path=tmp_path / str(recipe),
                                 weights_sha256="ab")

    spec = "tiny-random>align>quantize:method=gguf"
    gguf = ResolvedModel(spec=spec, kind="gguf", path=tmp_path / "m.gguf", weights_sha256="cd")
    assert nearest_hf_tokenizer(gguf, FakeCtx()) == tmp_path / "tiny-random>align"
    assert asked == ["tiny-random>align"]  # the GGUF's own recipe is never resolved again
