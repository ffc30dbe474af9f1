"""A backend answers a repeated greedy or seeded question from its memo; a guarded variant shares the
backend (and memo) of the model it guards, so its answers are generated once."""

from __future__ import annotations

from unittest import mock

from safetydrift.guards.backend import GuardedBackend
from safetydrift.types import GenerationConfig

GREEDY = GenerationConfig(max_new_tokens=4)
SAMPLED = GenerationConfig(max_new_tokens=4, temperature=1.0)


def conv(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_greedy_answers_are_memoised_and_sampled_ones_are_not(ctx) -> None:
    be = ctx.backend("tiny-random")
    first = be.generate([conv("a"), conv("b")], GREEDY)
    with mock.patch.object(type(be), "_generate_all", side_effect=AssertionError("generated again")):
        again = be.generate([conv("b"), conv("a")], GREEDY)
    assert [g.text for g in again] == [first[1].text, first[0].text]
    assert all(g.meta.get("memo") for g in again) and not any(g.meta.get("memo") for g in first)
    calls = []
    real = type(be)._generate_all

    def spy(self, convs, config, seeds=None):
        calls.append(len(convs))
        return real(self, convs, config, seeds)

    with mock.patch.object(type(be), "_generate_all", spy):
        be.generate([conv("a")], SAMPLED)
        be.generate([conv("a")], SAMPLED)  # two unseeded samples: both generated
        be.generate([conv("a"), conv("c")], GREEDY)  # only the new question is generated
        be.generate_seeded([conv("a")], SAMPLED, [7])
        be.generate_seeded([conv("a")], SAMPLED, [7])  # the same seed: memo
        be.generate_seeded([conv("a")], SAMPLED, [8])  # another seed: generated
    assert calls == [1, 1, 1, 1, 1]


def test_a_guarded_variant_reuses_the_answers_of_the_model_it_guards(ctx) -> None:
    plain = ctx.backend("tiny-random")
    guarded = ctx.backend("tiny-random>guard:output=keyword")
    assert isinstance(guarded, GuardedBackend) and guarded.inner is plain
    want = plain.generate([conv("tell me about tea")], GREEDY)[0]
    with mock.patch.object(type(plain), "_generate_all", side_effect=AssertionError("generated again")):
        got = guarded.generate([conv("tell me about tea")], GREEDY)[0]
    assert got.meta.get("memo") and (got.text == want.text or got.meta.get("guard"))


def test_failed_answers_are_not_memoised(ctx) -> None:
    be = ctx.backend("tiny-random")
    long_prompt = conv("word " * 100_000)  # longer than the context: an error, not an answer
    assert not be.generate([long_prompt], GREEDY)[0].ok
    assert not any(k for k in be.__dict__.get("_memo", {}) if "word word" in k)


def test_the_memo_is_bounded(ctx, monkeypatch) -> None:
    import safetydrift.backends.base as base

    monkeypatch.setattr(base, "MEMO_SIZE", 2)
    be = ctx.backend("tiny-random")
    be.forget()
    be.generate([conv("a"), conv("b"), conv("c")], GREEDY)
    assert len(be.__dict__["_memo"]) == 2  # the oldest answer was dropped
