"""Log-likelihood multiple choice (analysis/mc.py) and its data (datasets/data/mc_utility.jsonl): the harness's
token split, the sum of continuation log-probs against a hand computation, acc vs acc_norm, batch invariance on
tiny-random, the data's invariants, and the experiment's utility row, CSV and page."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from conftest import load_script
from safetydrift.analysis.mc import (
    McItem,
    continuation_loglik,
    encode_pair,
    load_items,
    loglikelihoods,
    pick,
    requests,
    score_mc,
)
from safetydrift.context import Context
from safetydrift.errors import SafetyDriftError

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------- the maths
def char_encode(text: str) -> list[int]:
    """A toy tokenizer: one id per character, no special tokens."""
    return [ord(c) for c in text]


def test_encode_pair_moves_trailing_spaces_to_the_continuation() -> None:
    ctx, cont = encode_pair(char_encode, "Answer: ", "Paris")
    assert ctx == char_encode("Answer:") and cont == char_encode(" Paris")
    ctx, cont = encode_pair(char_encode, "Q\nAnswer:", " no")
    assert ctx == char_encode("Q\nAnswer:") and cont == char_encode(" no")


def test_encode_pair_falls_back_when_the_boundary_merges() -> None:
    def merging(text: str) -> list[int]:  # a BOS (999), and "ab" is one token: enc("a") is no prefix of enc("ab")
        ids, i = [999], 0
        while i < len(text):
            step = 2 if text[i : i + 2] == "ab" else 1
            ids.append(1000 if step == 2 else ord(text[i]))
            i += step
        return ids

    ctx, cont = encode_pair(merging, "a", "b")
    assert ctx == [999, ord("a")] and cont == [ord("b")]  # the BOS (999) of a bare encoding is dropped


def constant_logits(favoured: int, vocab: int = 10, boost: float = 3.0):
    """A 'model' whose next-token distribution is the same everywhere: logit ``boost`` for ``favoured``."""
    row = torch.zeros(vocab)
    row[favoured] = boost

    def logits(seqs: list[list[int]], keep: int) -> list[torch.Tensor]:
        return [row.repeat(len(s), 1)[-keep:] for s in seqs]

    return logits


def test_loglikelihood_is_the_sum_over_continuation_tokens() -> None:
    vocab, boost = 10, 3.0
    log_fav = boost - math.log(math.exp(boost) + vocab - 1)
    log_other = -math.log(math.exp(boost) + vocab - 1)
    reqs = [([1, 2, 3], [7]), ([1, 2, 3], [4]), ([1], [7, 7]), ([5, 5, 5, 5, 5], [7, 4])]
    lls = loglikelihoods(constant_logits(7, vocab, boost), reqs, batch_size=2)
    assert lls == pytest.approx([log_fav, log_other, 2 * log_fav, log_fav + log_other])
    # the context does not count, only the continuation; the order of the requests is kept
    assert loglikelihoods(constant_logits(7, vocab, boost), reqs[::-1], batch_size=3) == pytest.approx(lls[::-1])


def test_continuation_loglik_reads_the_rows_that_predict_the_continuation() -> None:
    z = torch.full((4, 5), -50.0)
    z[1, 3] = z[2, 4] = 50.0  # row t predicts token t+1: rows 1 and 2 predict seq[2], seq[3]
    assert continuation_loglik([0, 1, 3, 4], 2, z) == pytest.approx(0.0, abs=1e-6)
    assert continuation_loglik([0, 1, 3, 4], 2, z[-3:]) == pytest.approx(0.0, abs=1e-6)  # a tail is enough
    assert continuation_loglik([0, 1, 4, 4], 2, z) < -50


def test_the_scorer_picks_the_highest_likelihood_and_acc_norm_divides_by_bytes() -> None:
    assert pick([-2.0, -1.0, -3.0], ["a", "b", "c"]) == (1, 1)
    # "Paris" is likelier in total, but the long choice is likelier per byte: acc and acc_norm disagree
    lls, choices = [-3.0, -4.0], ["Paris", "the capital city of France"]
    raw, norm = pick(lls, choices)
    assert (raw, norm) == (0, 1)
    assert -4.0 / len(choices[1].encode()) > -3.0 / 5
    assert pick([-1.0, -1.0], ["x", "y"]) == (0, 0)  # ties go to the first choice, as argmax does


def test_acc_and_acc_norm_counted_per_item() -> None:
    from safetydrift.analysis.mc import McResult

    items = (McItem("a", "s1", "q1", ("no", "a long answer"), 1), McItem("b", "s2", "q2", ("x", "y", "z", "w"), 0))
    res = McResult(items, ((-2.0, -5.0), (-1.0, -2.0, -3.0, -4.0)), "test", "plain", 1.0)
    assert res.correct() == [False, True] and res.correct(norm=True) == [True, True]
    s = res.summary()
    assert s["acc"] == 0.5 and s["acc_norm"] == 1.0 and s["chance"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert s["skills"]["s1"] == {"n": 1, "acc": 0.0, "acc_norm": 1.0} and s["items_per_s"] == 2.0
    lo, hi = s["acc_ci"]
    assert 0 < lo < 0.5 < hi < 1


def test_plain_requests_use_the_harness_context() -> None:
    it = McItem("r", "reading", "Who?", ("Ann", "Bo"), 0, passage="Ann ran.")
    (ctx, cont), _ = requests([it], "plain", char_encode, None)
    assert ctx == char_encode("Ann ran.\nQuestion: Who?\nAnswer:") and cont == char_encode(" Ann")
    (ctx, cont), _ = requests([it], "chat", char_encode, lambda p: f"<u>{p}</u><a>")
    assert ctx == char_encode("<u>Ann ran.\nWho?</u><a>") and cont == char_encode("Ann")


# ---------------------------------------------------------------------------------------- tiny-random
ITEMS = [McItem(f"i{k}", "s", q, ch, 0) for k, (q, ch) in enumerate([
    ("What is 2 plus 2?", ("4", "5", "22", "four hundred")),
    ("What color is snow?", ("white", "black", "green", "red")),
    ("Opposite of hot?", ("cold", "warm", "table", "seven")),
    ("Where do fish live?", ("in water", "in trees", "in the desert", "in the clouds")),
    ("What is 9 times 9?", ("81", "18", "72", "99")),
])]


@pytest.mark.parametrize("fmt", ["chat", "plain"])
def test_tiny_random_matches_a_hand_computation_at_any_batch_size(ctx: Context, fmt: str) -> None:
    from safetydrift.backends.transformers_backend import load_hf, render_chat

    m = ctx.resolve("tiny-random")
    one = score_mc(m, ITEMS, fmt=fmt, system_prompt="Be brief.", batch_size=1, shared_prefix=False)
    many = score_mc(m, ITEMS, fmt=fmt, system_prompt="Be brief.", batch_size=7, shared_prefix=False)  # left padding
    shared = score_mc(m, ITEMS, fmt=fmt, system_prompt="Be brief.", shared_prefix=True)  # each context once
    assert one.engine == "transformers" and one.fmt == fmt
    assert shared.meta["shared_prefix"] and not one.meta["shared_prefix"]
    model, tok = load_hf(m.path)
    for it, a, b, c in zip(ITEMS, one.lls, many.lls, shared.lls, strict=True):
        assert a == pytest.approx(b, abs=1e-3) and c == pytest.approx(a, abs=1e-4)
        for choice, ll in zip(it.choices, a, strict=True):  # unpadded, full logits, by hand
            if fmt == "plain":
                context, cont = f"Question: {it.question}\nAnswer:", f" {choice}"
                whole, ctx_ids = tok(context + cont)["input_ids"], tok(context)["input_ids"]
            else:
                context = render_chat(tok, [{"role": "user", "content": it.prompt}], "Be brief.")
                whole = tok(context + choice, add_special_tokens=False)["input_ids"]
                ctx_ids = tok(context, add_special_tokens=False)["input_ids"]
            assert whole[: len(ctx_ids)] == ctx_ids
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].double(), -1)
            want = sum(float(logp[t - 1, whole[t]]) for t in range(len(ctx_ids), len(whole)))
            assert ll == pytest.approx(want, abs=1e-3)
    assert one.correct() == [pick(ll, it.choices)[0] == 0 for it, ll in zip(ITEMS, one.lls, strict=True)]


def test_prefix_scorer_edges_match_full_sequences(ctx: Context) -> None:
    """A one-token context (no cache), choices of 1 to 12 tokens in one right-padded batch, a long context: the
    same sums as one unpadded full-sequence pass; a model that ignores the cache is an error, not a wrong ll."""
    from safetydrift.analysis.mc import hf_prefix_scorer
    from safetydrift.backends.transformers_backend import load_hf

    model, tok = load_hf(ctx.resolve("tiny-random").path)
    run = hf_prefix_scorer(model, int(tok.pad_token_id or 0))
    conts = [[5], [7, 8, 9, 10, 11, 12, 13], [21, 22, 23], list(range(30, 42))]
    for context in ([3], [3, 4], list(range(50, 90))):
        got = run(context, conts)
        for c, ll in zip(conts, got, strict=True):
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([context + c])).logits[0].double(), -1)
            want = sum(float(logp[len(context) + j - 1, t]) for j, t in enumerate(c))
            assert ll == pytest.approx(want, abs=1e-4)

    class Forgetful:  # takes a cache argument and ignores it, as a renamed argument would be ignored
        def __init__(self) -> None:
            self.inner = model

        def parameters(self):  # noqa: ANN202
            return model.parameters()

        def forward(self, input_ids, position_ids=None, use_cache=False, cache=None, **kw):  # noqa: ANN001, ANN003, ANN202
            return model(input_ids=input_ids, use_cache=use_cache, **kw)

        __call__ = forward

    with pytest.raises(SafetyDriftError, match="cache"):
        hf_prefix_scorer(Forgetful(), 0)([3, 4, 5], conts)


def test_gguf_is_scored_as_served(tmp_path: Path, ctx: Context) -> None:
    """A GGUF (f16) through llama.cpp: its own template and token ids, whose log-likelihoods under the fp32
    transformers weights are the same up to f16 noise."""
    llama = pytest.importorskip("test_llamacpp_engine")
    if llama._SKIP is not None or llama._NO_SPM:
        pytest.skip("the llama.cpp route (or its converter) is unavailable")
    from safetydrift import llamacpp as eng
    from safetydrift.analysis.mc import hf_tail_logits
    from safetydrift.backends.transformers_backend import load_hf
    from safetydrift.types import ResolvedModel, with_system_prompt

    llama._build_tiny_llama(tmp_path / "hf", rigged=False)
    f16 = eng.convert_hf_to_gguf(tmp_path / "hf", tmp_path / "m-f16.gguf", "f16", cache_dir=llama._converter_cache())
    model, _ = load_hf(tmp_path / "hf")
    for fmt in ("chat", "plain"):
        gg = score_mc(ResolvedModel(spec="gguf", kind="gguf", path=f16), ITEMS[:3], fmt=fmt, system_prompt="Hi.",
                      batch_size=2)
        assert gg.engine == "llama.cpp" and len(gg.lls) == 3
        with eng.LlamaCppModel(f16, n_ctx=256) as llm:
            enc = llm.tokenize_text if fmt == "plain" else llm.tokenize
            reqs = requests(ITEMS[:3], fmt, enc, lambda p: llm.render(with_system_prompt(
                [{"role": "user", "content": p}], "Hi.")))
        want = loglikelihoods(hf_tail_logits(model, 0), reqs)
        assert [x for ll in gg.lls for x in ll] == pytest.approx(want, abs=0.02)


def test_endpoints_have_no_multiple_choice(ctx: Context) -> None:
    from safetydrift.errors import SafetyDriftError, UnsupportedError
    from safetydrift.types import ResolvedModel

    with pytest.raises(UnsupportedError):
        score_mc(ResolvedModel(spec="openai:x", kind="openai", path=None), ITEMS)
    with pytest.raises(SafetyDriftError, match="format"):
        score_mc(ctx.resolve("tiny-random"), ITEMS, fmt="fancy")


# ---------------------------------------------------------------------------------------- the data
def test_packaged_data_has_500_unique_valid_items_over_several_skills() -> None:
    items = load_items()
    assert len(items) >= 500
    assert len({it.id for it in items}) == len(items)
    keys = [" ".join(((it.passage or "") + " " + it.question).lower().split()) for it in items]
    assert len(set(keys)) == len(keys), "a question (with its passage) appears twice"
    skills = Counter(it.skill for it in items)
    assert len(skills) >= 5 and min(skills.values()) >= 50, skills
    for it in items:
        assert len(it.choices) == 4 and len(set(it.choices)) == 4 and 0 <= it.answer < 4, it
        assert all(c.strip() and c == c.strip() for c in it.choices), it
    positions = Counter(it.answer for it in items)  # the correct choice is not always in one place
    assert min(positions.values()) > len(items) / 8
    assert Counter(it.skill for it in items[:60]).keys() == skills.keys()  # the first n sample every skill


def test_no_question_is_one_the_align_step_trains_on() -> None:
    from safetydrift.datasets.files import package_file

    def norm(q: str) -> str:
        return " ".join("".join(c if c.isalnum() else " " for c in q.lower()).split())

    taught = {norm(json.loads(x)["question"]) for x in package_file("general_qa.jsonl").read_text().splitlines()
              if x.strip()}
    assert not [it.question for it in load_items() if norm(it.question) in taught]


def test_the_generator_reproduces_the_packaged_file() -> None:
    assert load_script("make_mc_utility").main(["--check"]) == 0


def test_dataset_registration(ctx: Context) -> None:
    from safetydrift.datasets import load_dataset
    from safetydrift.errors import SafetyDriftError

    ds = load_dataset("mc-utility:n=30,skill=reading", ctx)
    assert ds.name == "mc-utility:n=30,skill=reading" and len(ds) == 30
    assert {it.category for it in ds.items} == {"reading"}
    it = ds.items[0]
    assert it.target == it.meta["choices"][it.meta["answer"]] and "\n" in it.prompt  # passage, then question
    assert len(load_dataset("mc-utility", ctx)) == len(load_items())
    with pytest.raises(SafetyDriftError):
        load_dataset("mc-utility:skill=poetry", ctx)


# ---------------------------------------------------------------------------------------- experiment
EXP = {
    "name": "mc",
    "generation": {"max_new_tokens": 2, "seed": 0},
    "variants": {
        "base": "tiny-random",
        "twin": {"recipe": "tiny-random:seed=1", "reference": "base"},
        "guarded": {"recipe": "tiny-random>guard:input=keyword", "reference": "base"},
    },
    "datasets": ["advbench50:n=2"],
    "attacks": ["direct"],
    "judges": ["keyword"],
    "utility": {"benign_task": 0, "benign": 0, "ppl_texts": 0, "margin": False, "mc": 24},
}


def test_experiment_utility_row_has_multiple_choice(tmp_path: Path, ctx: Context) -> None:
    from safetydrift.experiments import parse_experiment
    from safetydrift.experiments.run import run_experiment
    from safetydrift.records import ExperimentResult

    out = tmp_path / "out"
    result = run_experiment(parse_experiment(EXP, "mc.yaml"), out, ctx)
    data = json.loads((out / "experiment.json").read_text())
    assert ExperimentResult.from_json(data).utility == result.utility
    util = {u["variant"]: u for u in data["utility"]}
    for u in util.values():
        assert u["mc_n"] == 24 and u["mc_chance"] == 0.25 and 0 <= u["mc_acc"] <= 1 and 0 <= u["mc_acc_norm"] <= 1
        lo, hi = u["mc_acc_ci"]
        assert lo <= u["mc_acc"] <= hi
        assert u["mc_meta"]["format"] == "plain" and u["mc_meta"]["engine"] == "transformers"
        assert sum(s["n"] for s in u["mc_meta"]["skills"].values()) == 24
    assert "mc_diff" not in util["base"]  # no reference
    twin, guarded = util["twin"], util["guarded"]
    assert twin["mc_diff"] == pytest.approx(twin["mc_acc"] - util["base"]["mc_acc"]) and 0 < twin["mc_p"] <= 1
    # a guard leaves the logits alone: its model's score, no change
    assert guarded["mc_acc"] == util["base"]["mc_acc"] and guarded["mc_diff"] == 0.0 and guarded["mc_p"] == 1.0
    assert guarded["mc_meta"]["unguarded"] is True

    rows = {r["variant"]: r for r in csv.DictReader((out / "tables" / "utility.csv").open(encoding="utf-8"))}
    assert float(rows["twin"]["mc_acc"]) == twin["mc_acc"] and rows["base"]["mc_diff"] == ""
    head = {r["variant"]: r for r in csv.DictReader((out / "tables" / "headline.csv").open(encoding="utf-8"))}
    assert float(head["base"]["mc_acc_norm"]) == util["base"]["mc_acc_norm"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "multiple choice:" in html and "(n=24, chance 25%)" in html

    # off (the default): no mc keys at all, as in files written before it existed
    exp_off = parse_experiment({**EXP, "utility": {**EXP["utility"], "mc": 0}}, "off.yaml")
    off = run_experiment(exp_off, tmp_path / "off", ctx)
    assert all(u.mc_acc is None for u in off.utility)
    assert not any(k.startswith("mc_") for u in json.loads((tmp_path / "off" / "experiment.json").read_text())[
        "utility"] for k in u)


@pytest.mark.parametrize("bad", [{"mc": -1}, {"mc": "lots"}, {"mc": True}, {"mc_format": "fancy"}])
def test_bad_mc_settings_fail_at_parse_time(bad: dict) -> None:
    from safetydrift.errors import DataError
    from safetydrift.experiments import parse_experiment

    with pytest.raises(DataError, match="utility.mc"):
        parse_experiment({**EXP, "utility": bad}, "m.yaml")


def test_mc_in_yaml_parses() -> None:
    from safetydrift.experiments import parse_experiment

    exp = parse_experiment({**EXP, "utility": {"mc": 200}}, "m.yaml")
    assert exp.utility is not None and exp.utility.mc == 200 and exp.utility.mc_format == "plain"
    exp = parse_experiment({**EXP, "utility": {"mc": 50, "mc_format": "chat"}}, "m.yaml")
    assert exp.utility is not None and exp.utility.mc_format == "chat"
