"""Long inputs (issue 14): a prompt that cannot fit the model's context is one unscorable sample with the
reason, never a failed batch; CSV fields of any size load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli
from safetydrift.backends.context_window import (
    PREFIX_CHARS_PER_TOKEN,
    fit_or_errors,
    fit_prompts,
    generate_fitting,
)
from safetydrift.backends.llamacpp import LlamaCppBackend
from safetydrift.backends.openai_http import OpenAIHTTPBackend
from safetydrift.context import Context
from safetydrift.datasets import load_dataset
from safetydrift.types import CONTEXT_EXCEEDED, ContextAware, Generation, GenerationConfig, PromptFit

ONE_MB = 1024 * 1024


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def chars(texts: list[str]) -> list[int]:
    return [len(t) for t in texts]


# ------------------------------------------------------------------------------------------ fitting
def test_fit_prompts_exact_and_reserve() -> None:
    fits = fit_prompts(["a" * 10, "b" * 95, "c" * 100], chars, 100, reserve=5)
    assert [f.tokens for f in fits] == [10, 95, 100] and all(f.exact for f in fits)
    assert [f.ok for f in fits] == [True, True, False]
    assert fits[2].error == "prompt of 100 tokens plus 5 new tokens does not fit the context of 100 tokens"
    assert fits[2].error_kind == CONTEXT_EXCEEDED
    assert fit_prompts(["x" * 100], chars, 100)[0].error == "prompt of 100 tokens does not fit the context of 100 tokens"
    assert fit_prompts(["x" * 10**6], chars, None) == [PromptFit(10**6)]  # unknown window: everything fits


def test_fit_prompts_counts_only_a_prefix_of_a_huge_prompt() -> None:
    seen: list[int] = []

    def count(texts: list[str]) -> list[int]:
        seen.extend(len(t) for t in texts)
        return chars(texts)

    fits = fit_prompts(["x" * (3 * ONE_MB), "short"], count, 512)
    cut = PREFIX_CHARS_PER_TOKEN * (512 + 1)
    assert max(seen) == cut  # the 3 MiB text was never tokenized whole
    assert not fits[0].ok and not fits[0].exact and fits[0].tokens > 512
    assert fits[0].error.startswith(f"prompt of over {cut - 1} tokens does not fit the context of 512 tokens")
    assert fits[1] == PromptFit(5)
    # a long text of long tokens (prefix fits) is counted whole, exactly
    many_per_token = fit_prompts(["y" * cut * 2], lambda ts: [len(t) // 64 for t in ts], 512)
    assert many_per_token[0].exact and many_per_token[0].tokens == cut * 2 // 64


def test_generate_fitting_keeps_batch_mates() -> None:
    calls: list[list[str]] = []

    def gen(convs: list[Any]) -> list[Generation]:
        calls.append([c[0]["content"] for c in convs])
        return [Generation(text=c[0]["content"].upper()) for c in convs]

    convs = [user("a"), user("b"), user("c")]
    fits = [PromptFit(1), PromptFit(999, error="too long", error_kind=CONTEXT_EXCEEDED), PromptFit(1)]
    out = generate_fitting(convs, fits, gen)
    assert calls == [["a", "c"]]
    assert [g.text for g in out] == ["A", "", "C"]
    assert out[1].error == "too long" and out[1].meta == {"prompt_tokens": 999, "error_kind": CONTEXT_EXCEEDED}
    assert generate_fitting(convs, [fits[1]] * 3, gen)[0].error == "too long" and len(calls) == 1


def test_fit_or_errors_isolates_a_conversation_that_cannot_be_measured() -> None:
    def fit(convs: list[Any]) -> list[PromptFit]:
        if any(c[0]["content"] == "bad" for c in convs):
            raise ValueError("Conversation roles must alternate")  # as a strict chat template does
        return [PromptFit(len(c[0]["content"])) for c in convs]

    fits = fit_or_errors(fit, [user("ok"), user("bad"), user("fine")])
    assert [f.ok for f in fits] == [True, False, True] and fits[2].tokens == 4
    assert fits[1].error == "ValueError: Conversation roles must alternate" and fits[1].error_kind == "invalid_prompt"


# ----------------------------------------------------------------------------------------- backends
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return Context(cache_dir=tmp_path_factory.mktemp("long-cache"), quiet=True).backend("tiny-random")


def test_transformers_knows_its_context_and_isolates_the_long_prompt(tiny: Any) -> None:
    """A 1 MB prompt padded its whole batch to a million tokens: a 1 TB allocation, every sample lost."""
    assert isinstance(tiny, ContextAware) and tiny.context_length == 512  # tiny-random's max_position_embeddings
    cfg = GenerationConfig(max_new_tokens=6)
    small = [user("Hello there"), user("How do I bake bread?")]
    expected = tiny.generate(small, cfg)
    out = tiny.generate([small[0], user("z" * ONE_MB), small[1], user("q" * 600)], cfg)
    assert [g.ok for g in out] == [True, False, True, False]
    assert [g.text for g in (out[0], out[2])] == [g.text for g in expected]
    assert "does not fit the context of 512 tokens" in out[1].error and "over" in out[1].error
    assert out[3].error.startswith("prompt of 6") and out[3].error.endswith("does not fit the context of 512 tokens")
    assert out[1].meta["error_kind"] == CONTEXT_EXCEEDED
    fit = tiny.fit([small[0]], cfg, reserve=6)[0]
    assert fit.ok and fit.exact and 11 < fit.tokens < 60  # the chat template's tokens plus one per byte


def test_llamacpp_refuses_per_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wiring only (no GGUF needed): the engine's own tokenizer measures, the rest of the chunk is decoded."""
    decoded: list[list[str]] = []

    class FakeLlm:
        n_threads = 1

        def render(self, msgs: list[dict[str, str]]) -> str:
            return "<s>" + msgs[-1]["content"]

        def tokenize(self, text: str) -> list[int]:
            return list(range(len(text)))

        def chat_batch(self, chunk: list[Any], **kw: Any) -> list[tuple[str, int]]:
            decoded.append([m[-1]["content"] for m in chunk])
            return [("ok", 1) for _ in chunk]

    backend = LlamaCppBackend.__new__(LlamaCppBackend)
    backend.n_ctx, backend.batch_size, backend.llm = 64, 16, FakeLlm()
    assert backend.context_length == 64
    out = backend.generate([user("fine"), user("w" * 100), user("also fine")], GenerationConfig())
    assert decoded == [["fine", "also fine"]]
    assert [g.ok for g in out] == [True, False, True]
    assert out[1].error == "prompt of 103 tokens does not fit the context of 64 tokens"


def test_openai_backend_window_is_unknown() -> None:
    assert OpenAIHTTPBackend.context_length is None


# ------------------------------------------------------------------------------------------ datasets
def test_csv_field_of_2mb_loads(tmp_path: Path, ctx: Context) -> None:
    """csv's 128 KiB default was a raw 'field larger than field limit' error and exit 1."""
    p = tmp_path / "long.csv"
    long_prompt = "please " * (2 * ONE_MB // 7 + 1)
    p.write_text(f'prompt,category\n"{long_prompt}",x\nshort one,y\n', encoding="utf-8")
    ds = load_dataset(str(p), ctx)
    assert [len(it.prompt) for it in ds.items] == [len(long_prompt.strip()), len("short one")]
    assert len(ds.items[0].prompt) > 2 * ONE_MB - 10


def test_eval_with_a_1mb_prompt_scores_the_others(tmp_path: Path, cache_dir: Path) -> None:
    data = tmp_path / "mixed.jsonl"
    rows = [{"prompt": "Tell me a story"}, {"prompt": "y" * ONE_MB}, {"prompt": "Write a poem"}]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out"
    r = run_cli("eval", "--model", "tiny-random", "--dataset", str(data), "--max-new-tokens", "4",
                "--judge", "keyword", "--out", str(out), cache=cache_dir)
    assert r.returncode == 0, r.stderr
    recs = {len(rec["prompt"]): rec for rec in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert len(recs) == 3
    long_rec = recs[max(recs)]
    assert long_rec["verdict"] == "unscorable"
    assert "does not fit the context of 512 tokens" in (long_rec["error"] or "")
    for n in sorted(recs)[:2]:
        assert recs[n]["error"] is None and recs[n]["verdict"] in ("success", "fail")
