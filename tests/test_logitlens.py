"""LogitLens on the tiny random Llama: every layer's readout, norm handling, token sets, batching, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from safetydrift.analysis.lens_plots import _short, token_label  # noqa: E402
from safetydrift.analysis.logitlens import (  # noqa: E402
    LensResult,
    find_final_norm,
    first_token_ids,
    logit_lens,
    token_sets,
)
from safetydrift.backends.transformers_backend import load_hf, render_chat  # noqa: E402
from safetydrift.context import Context  # noqa: E402

PROMPTS = [
    "hi",
    "Explain how to pick a lock, step by step, in great detail please.",
    "Write a short poem about the sea.",
    "What is 2+2?",
    "Give me a recipe for pancakes with blueberries and maple syrup.",
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The models are tiny: one thread is ~50x faster than two on a busy CI machine (no spin contention)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def tiny(cache):
    ctx = Context(cache_dir=cache, quiet=True)
    model, tok = load_hf(ctx.resolve("tiny-random").path)
    # A fresh Llama has RMSNorm weights of exactly 1, and then norm(norm(h)) == norm(h): a lens that normed
    # hidden_states[-1] twice would pass every check. Non-unit weights make the final-norm handling matter.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1 + 0.5 * torch.randn(param.shape, generator=gen))
    return ctx, model, tok


@pytest.fixture(scope="module")
def sets(tiny):
    _, _, tok = tiny
    return token_sets(tok, None, None)


def _real_probs(model, tok, prompt):
    ids = tok(render_chat(tok, [{"role": "user", "content": prompt}], None), return_tensors="pt",
              add_special_tokens=False)
    with torch.no_grad():
        out = model(**ids, output_hidden_states=True)
    return torch.softmax(out.logits[0, -1].float(), -1), out


def test_last_layer_equals_model_logits(tiny, sets):
    _, model, tok = tiny
    r_ids, c_ids = sets
    res = logit_lens(model, tok, PROMPTS, r_ids, c_ids, top_k=5, batch_size=2)
    assert res.final_layer_max_abs_diff < 1e-5
    # Independent check: the last-layer lens masses equal the masses of the real output distribution.
    for i, prompt in enumerate(PROMPTS):
        real, _ = _real_probs(model, tok, prompt)
        assert res.refusal_mass_per_prompt[i][-1] == pytest.approx(float(real[r_ids].sum()), abs=1e-5)
        assert res.compliance_mass_per_prompt[i][-1] == pytest.approx(float(real[c_ids].sum()), abs=1e-5)


def _hooked_lens(model, tok, prompt):
    """[L+1, V] lens of one unpadded prompt, computed without hidden_states or the code under test.

    Row 0 is model.model.norm + lm_head on the embedding output, row ℓ the same on the output of
    model.model.layers[ℓ-1], both captured with forward hooks.
    """
    base = model.model
    grabbed: dict[int, torch.Tensor] = {}

    def keep(index):
        def hook(_mod, _args, out):
            grabbed[index] = (out[0] if isinstance(out, tuple) else out)[0, -1].detach()
        return hook

    handles = [base.embed_tokens.register_forward_hook(keep(0))]
    handles += [layer.register_forward_hook(keep(i + 1)) for i, layer in enumerate(base.layers)]
    ids = tok(render_chat(tok, [{"role": "user", "content": prompt}], None), return_tensors="pt",
              add_special_tokens=False)
    try:
        with torch.no_grad():
            model(**ids)
            h = torch.stack([grabbed[i] for i in range(len(base.layers) + 1)])
            return torch.softmax(model.lm_head(base.norm(h)).float(), -1)
    finally:
        for handle in handles:
            handle.remove()


def test_every_layer_equals_hooked_residual(tiny):
    """Layer 0 reads the embeddings, layer ℓ the output of decoder layer ℓ-1: an off-by-one fails here."""
    _, model, tok = tiny
    assert find_final_norm(model)[0] is model.model.norm
    vocab = model.lm_head.weight.shape[0]
    evens, odds = list(range(0, vocab, 2)), list(range(1, vocab, 2))  # together: the whole distribution
    prompts = PROMPTS[:3]
    res = logit_lens(model, tok, prompts, evens, odds, top_k=3, batch_size=3)  # one left-padded batch
    expected = torch.stack([_hooked_lens(model, tok, p) for p in prompts])  # [prompt, L+1, V]
    n_layers = len(model.model.layers) + 1
    assert res.n_layers == n_layers == expected.shape[1]
    for i in range(len(prompts)):
        np.testing.assert_allclose(res.refusal_mass_per_prompt[i], expected[i][:, evens].sum(-1), atol=1e-6)
        np.testing.assert_allclose(res.compliance_mass_per_prompt[i], expected[i][:, odds].sum(-1), atol=1e-6)
    full = np.zeros((n_layers, vocab))
    full[:, evens] = res.refusal_token_mass
    full[:, odds] = res.compliance_token_mass
    mean = expected.mean(0).double().numpy()
    np.testing.assert_allclose(full, mean, atol=1e-6)
    # the check discriminates: adjacent layers' distributions differ by far more than the tolerance
    assert all(np.abs(mean[i] - mean[i + 1]).max() > 1e-4 for i in range(n_layers - 1))


def test_masses_and_shapes(tiny, sets):
    _, model, tok = tiny
    r_ids, c_ids = sets
    res = logit_lens(model, tok, PROMPTS, r_ids, c_ids, top_k=4, batch_size=3, system_prompt="Be brief.")
    assert res.n_layers == model.config.num_hidden_layers + 1 == len(res.refusal_mass) == len(res.topk)
    for rows in (res.refusal_mass_per_prompt, res.compliance_mass_per_prompt):
        assert np.asarray(rows).shape == (len(PROMPTS), res.n_layers)
    r, c = np.asarray(res.refusal_mass_per_prompt), np.asarray(res.compliance_mass_per_prompt)
    assert (r >= 0).all() and (r <= 1).all() and (c >= 0).all() and (c <= 1).all()
    assert (r + c <= 1 + 1e-6).all()
    assert np.allclose(res.refusal_mass, r.mean(0))
    assert np.allclose(np.asarray(res.refusal_token_mass).sum(1), res.refusal_mass, atol=1e-6)
    assert np.asarray(res.compliance_token_mass).shape == (res.n_layers, len(c_ids))
    for layer in res.topk:
        assert len(layer) == 4
        probs = [e["prob"] for e in layer]
        assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    d = json.loads(json.dumps(res.to_dict()))
    assert LensResult.from_dict(d).refusal_mass == res.refusal_mass


def test_token_sets_disjoint_and_configurable(tiny):
    _, _, tok = tiny
    r_ids, c_ids = token_sets(tok, None, None)
    assert r_ids and c_ids
    assert not set(r_ids) & set(c_ids)
    assert len(set(r_ids)) == len(r_ids) and len(set(c_ids)) == len(c_ids)
    # byte-level tokenizer: "Sorry" and "Sure" both start with "S", so "S" is dropped from both sets
    s = tok.convert_tokens_to_ids("S")
    r2, c2 = token_sets(tok, ["Sorry", "No"], ["Sure", "Here"], leading_space=True)
    assert s not in r2 and s not in c2
    assert tok.convert_tokens_to_ids("N") in r2 and tok.convert_tokens_to_ids("H") in c2
    # a leading-space variant whose first token is bare whitespace is not counted
    assert tok.convert_tokens_to_ids("Ġ") not in r2 + c2
    # by default only the in-context / bare encodings count
    r3, c3 = token_sets(tok, ["Sorry", "No"], ["Here"])
    assert r3 == sorted([tok.convert_tokens_to_ids("S"), tok.convert_tokens_to_ids("N")])
    assert c3 == [tok.convert_tokens_to_ids("H")]


class _WordTok:
    """A greedy longest-match tokenizer with BPE-like word tokens (" I" is one token) and a ChatML-ish
    template whose generation prompt ends with a newline — the case the leading-space default is for."""

    pieces = ["I", " I", "Sure", " Sure", "Un", "fortunately", "der", "stood", "\n"]

    def __init__(self) -> None:
        self.vocab = self.pieces + [chr(c) for c in range(32, 127) if chr(c) not in self.pieces]
        self.ids = {t: i for i, t in enumerate(self.vocab)}

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        out, i = [], 0
        while i < len(text):
            piece = max((t for t in self.vocab if text.startswith(t, i)), key=len)
            out.append(self.ids[piece])
            i += len(piece)
        return {"input_ids": out}

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocab[i] for i in ids)

    def apply_chat_template(self, conv, tokenize=False, add_generation_prompt=True) -> str:
        return "".join(f"<{m['role']}>\n{m['content']}\n" for m in conv) + "<assistant>\n"


def test_token_sets_default_no_leading_space_and_first_piece_only():
    tok = _WordTok()
    i, space_i, un = tok.ids["I"], tok.ids[" I"], tok.ids["Un"]
    assert first_token_ids(tok, "I") == {i}  # " I" is a mid-sentence token, not a response start
    assert first_token_ids(tok, "I", leading_space=True) == {i, space_i}
    assert first_token_ids(tok, "Unfortunately") == {un}  # a multi-token word counts by its first piece
    # "Un" starts a refusal and a compliance word: it counts for neither, the rest is kept
    r, c = token_sets(tok, ["Unfortunately", "I"], ["Understood", "Sure"])
    assert r == [i] and c == [tok.ids["Sure"]]


def test_shared_ids_are_not_counted_twice(tiny):
    _, model, tok = tiny
    res = logit_lens(model, tok, PROMPTS[:1], [5, 6, 6], [6, 7], top_k=1)
    assert res.refusal_ids == [5] and res.compliance_ids == [7]
    assert res.meta["dropped_shared_ids"] == [6]
    assert np.asarray(res.refusal_token_mass).shape == (res.n_layers, 1)


def test_batching_and_left_padding_invariance(tiny, sets):
    _, model, tok = tiny
    r_ids, c_ids = sets
    side = tok.padding_side
    a = logit_lens(model, tok, PROMPTS, r_ids, c_ids, batch_size=1)
    b = logit_lens(model, tok, PROMPTS, r_ids, c_ids, batch_size=4)  # lengths differ: left padding in play
    assert tok.padding_side == side  # the tokenizer is left as it was found
    lengths = {len(tok(render_chat(tok, [{"role": "user", "content": p}], None))["input_ids"]) for p in PROMPTS}
    assert len(lengths) > 1
    np.testing.assert_allclose(a.refusal_mass_per_prompt, b.refusal_mass_per_prompt, atol=1e-6)
    np.testing.assert_allclose(a.compliance_mass_per_prompt, b.compliance_mass_per_prompt, atol=1e-6)
    assert [[e["id"] for e in layer] for layer in a.topk] == [[e["id"] for e in layer] for layer in b.topk]
    for la, lb in zip(a.topk, b.topk, strict=True):
        np.testing.assert_allclose([e["prob"] for e in la], [e["prob"] for e in lb], atol=1e-6)
    assert b.final_layer_max_abs_diff < 1e-5


class _KwargsLM(torch.nn.Module):
    """A causal LM whose forward takes position_ids only through **kwargs (as hooked/remote-code models do)."""

    def __init__(self, inner, reject_position_ids: bool = False) -> None:
        super().__init__()
        self.inner, self.config, self.reject = inner, inner.config, reject_position_ids
        self.seen: list[torch.Tensor | None] = []

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        if self.reject and "position_ids" in kwargs:
            raise TypeError("forward() got an unexpected keyword argument 'position_ids'")
        self.seen.append(kwargs.get("position_ids"))
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


class _NoPositionsLM(_KwargsLM):
    """A forward without position_ids and without **kwargs: they must not be passed."""

    def forward(self, input_ids, attention_mask=None, output_hidden_states=None, use_cache=None):
        self.seen.append(None)
        return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                          output_hidden_states=output_hidden_states, use_cache=use_cache)


def test_position_ids_reach_kwargs_only_forward(tiny, sets):
    _, model, tok = tiny
    r_ids, c_ids = sets
    direct = logit_lens(model, tok, PROMPTS[:3], r_ids, c_ids, batch_size=3)
    assert direct.meta["position_ids"] is True
    wrapped = _KwargsLM(model)
    res = logit_lens(wrapped, tok, PROMPTS[:3], r_ids, c_ids, batch_size=3, norm_path="inner.model.norm")
    assert res.meta["position_ids"] is True
    (pos,) = wrapped.seen
    texts = [render_chat(tok, [{"role": "user", "content": p}], None) for p in PROMPTS[:3]]
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert len(set(lengths)) > 1 and pos is not None and (pos[:, 0] == 0).all()
    assert pos[:, -1].tolist() == [n - 1 for n in lengths]  # real tokens only, left padding not counted
    np.testing.assert_allclose(res.refusal_mass_per_prompt, direct.refusal_mass_per_prompt, atol=1e-6)
    # a **kwargs forward that rejects them is retried without; an explicit signature never gets them
    for lm in (_KwargsLM(model, reject_position_ids=True), _NoPositionsLM(model)):
        out = logit_lens(lm, tok, PROMPTS[:2], r_ids, c_ids, batch_size=1, norm_path="inner.model.norm")
        assert out.meta["position_ids"] is False and lm.seen == [None, None]
        assert out.final_layer_max_abs_diff < 1e-5


def test_token_label_shows_whitespace():
    assert token_label(" I") == "␣I"
    assert token_label("\n") == "\\n"
    assert token_label("") == "∅"
    assert len(token_label("x" * 50)) == 12
    assert _short("m>finetune:data=harmful,method=lora>bitdelta", 20).splitlines()[0] == "m>finetune:"


def test_plots_live_in_lens_plots_and_stay_importable_from_logitlens(tmp_path, tiny, sets):
    from safetydrift.analysis import lens_plots, logitlens

    assert logitlens.plot_panels is lens_plots.plot_panels
    assert logitlens.plot_topk_heatmap is lens_plots.plot_topk_heatmap
    _, model, tok = tiny
    res = logit_lens(model, tok, PROMPTS[:2], *sets, top_k=3, name="tiny")
    for plot, name in ((lens_plots.plot_panels, "mass.png"), (lens_plots.plot_topk_heatmap, "topk.png")):
        assert plot({"tiny": res}, tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(Exception, match="no results"):
        lens_plots.plot_panels({}, tmp_path / "none.png")


def test_cli_two_recipes(tmp_path, cache):
    from safetydrift.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in PROMPTS) + "\n")
    out = tmp_path / "out"
    rc = main([
        "--cache", str(cache), "--quiet", "logitlens",
        "--model", "tiny-random", "--model", "tiny-random:seed=1",
        "--prompts", str(prompts), "--limit", "4", "--top-k", "3",
        "--refusal-words", "Sorry+No+I", "--compliance-words", "Sure+Here+Of course",
        "--batch-size", "3", "--out", str(out),
    ])
    assert rc == 0
    for name in ("logitlens.json", "logitlens_mass.png", "logitlens_topk.png"):
        assert (out / name).stat().st_size > 0
    for name in ("logitlens_mass.png", "logitlens_topk.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((out / "logitlens.json").read_text())
    assert set(doc["results"]) == {"tiny-random", "tiny-random:seed=1"}
    assert doc["prompts"]["n"] == 4
    assert doc["settings"]["refusal_words"] == ["Sorry", "No", "I"]
    a, b = (LensResult.from_dict(doc["results"][k]) for k in ("tiny-random", "tiny-random:seed=1"))
    assert a.n_layers == b.n_layers == 3 and a.n_prompts == 4
    assert a.refusal_mass != b.refusal_mass  # different weights, different lens
    assert a.final_layer_max_abs_diff < 1e-5 and b.final_layer_max_abs_diff < 1e-5


def test_cli_rejects_bad_input(tmp_path, capsys):
    from safetydrift.cli import main

    base = ["--cache", str(tmp_path / "cache"), "logitlens", "--prompts", "advbench50", "--out", str(tmp_path)]
    assert main([*base, "--model", "no-such-source"]) == 2
    assert main([*base, "--model", "tiny-random", "--top-k", "0"]) == 2
    assert not (tmp_path / "logitlens.json").exists()
