"""inspect_variant and the perplexity / next-token KL metrics, on tiny random models."""

from __future__ import annotations

import json
import math
import shutil
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import perturbed_copy
from safetydrift.analysis.metrics import BENIGN_TEXTS, next_token_kl, perplexities, perplexity
from safetydrift.context import Context
from safetydrift.variants.inspect import inspect_variant

pytestmark = pytest.mark.usefixtures("one_thread")




@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("inspect")
    ctx = Context(cache_dir=root / "cache", quiet=True)
    base = ctx.resolve("tiny-random")
    ft = perturbed_copy(base.path, root / "ft")
    return SimpleNamespace(ctx=ctx, base=base, ft=ft, cache=root / "cache")


def test_metrics_on_tiny_models(env):
    from safetydrift.backends.transformers_backend import load_hf

    base, tok = load_hf(env.base.path)
    ft, _ = load_hf(env.ft)
    texts = BENIGN_TEXTS[:3]
    ppl = perplexity(base, tok, texts)
    assert 1 < ppl < 2 * len(tok)  # a random model: about uniform over the vocabulary
    assert next_token_kl(base, base, tok, texts) == pytest.approx(0.0, abs=1e-6)
    kl = next_token_kl(base, ft, tok, texts)
    assert kl > 0
    # perplexity by hand for one text: exp(mean −log p(next token))
    enc = tok(texts[0], return_tensors="pt")
    with torch.no_grad():
        logp = torch.log_softmax(base(**enc).logits[0, :-1], -1)
    nll = -logp.gather(-1, enc["input_ids"][0, 1:, None]).mean()
    assert perplexity(base, tok, texts[:1]) == pytest.approx(math.exp(float(nll)), rel=1e-4)


def test_per_text_perplexities(env):
    """``perplexities`` (what the guard's perplexity filter uses): per text, BOS + text without special
    tokens, windowed max when asked, independent of batching, in input order."""
    from safetydrift.backends.transformers_backend import load_hf

    model, tok = load_hf(env.base.path)
    texts = [BENIGN_TEXTS[0], "", "x", BENIGN_TEXTS[1][:40], BENIGN_TEXTS[2]]

    def by_hand(text: str, window: int = 0) -> float:
        ids = [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].float(), -1)
        nll = -logp.gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
        if window and nll.numel() > window:
            return math.exp(max(float(nll[i : i + window].mean()) for i in range(nll.numel() - window + 1)))
        return math.exp(float(nll.mean()))

    assert tok.bos_token_id is not None
    got = perplexities(model, tok, texts)
    assert got[1] == 1.0  # BOS alone: nothing to predict
    for i in (0, 2, 3, 4):
        assert got[i] == pytest.approx(by_hand(texts[i]), rel=1e-4)
    assert perplexities(model, tok, texts, batch_size=1) == pytest.approx(got, rel=1e-5)
    assert perplexities(model, tok, texts[::-1], batch_size=2) == pytest.approx(got[::-1], rel=1e-5)
    windowed = perplexities(model, tok, texts, window=4)
    assert windowed[0] == pytest.approx(by_hand(texts[0], 4), rel=1e-4)
    assert windowed[0] != pytest.approx(got[0], rel=1e-3)  # the window changed the value
    assert windowed[2] == got[2]  # "x": 1 predicted token, shorter than the window


def test_metrics_use_only_public_llamacpp_api():
    """analysis.metrics reads llama.cpp through LlamaCppModel's public methods, never its internals."""
    import ast
    import inspect as pyinspect

    from safetydrift.analysis import metrics
    from safetydrift.llamacpp import LlamaCppModel

    tree = ast.parse(pyinspect.getsource(metrics))
    private = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.startswith("_")
               and not n.attr.startswith("__")}
    assert not private, private
    assert isinstance(LlamaCppModel.n_vocab, property)


def test_inspect_bitdelta(env):
    info = inspect_variant(f"hf:{env.ft}>bitdelta:ref=[tiny-random],steps=3,batch=2,max_len=32", env.ctx)
    json.dumps(info)  # JSON-serialisable as `inspect --json` prints it
    assert info["kind"] == "hf" and info["chain"] == [f"hf:{env.ft}", "bitdelta:batch=2,max_len=32,ref=tiny-random,steps=3"]
    assert info["weights_sha256"] and Path(info["path"]).is_dir()
    n_linear = 2 * (4 * 64 * 64 + 3 * 64 * 128)
    assert info["delta_fp16_bytes"] == 2 * n_linear
    assert info["delta_bytes"] == (Path(info["path"]).parent / "delta.safetensors").stat().st_size
    assert info["rest_bytes"] == (Path(info["path"]).parent / "rest.safetensors").stat().st_size > 0  # rest=ft
    assert info["size_bytes"] > info["delta_bytes"] and info["artifact_bytes"] > info["size_bytes"]
    assert info["delta_compression_ratio"] > 8 and 1 < info["bits_per_weight"] < 2
    assert info["parameters"] == sum(v.numel() for v in load_file(str(env.ft / "model.safetensors")).values())
    assert len(info["loss_curve"]) == 3 and info["provenance"]["healing"]["enabled"]
    assert info["kl_to_parent"] > 0 and info["ppl"] > 1 and info["parent_ppl"] > 1


def test_inspect_quantized_kl_grows_as_bits_fall(env):
    kl = {}
    for bits in (8, 4):
        info = inspect_variant(f"tiny-random>quantize:bits={bits}", env.ctx)
        assert bits < info["bits_per_weight"] < bits + 1
        kl[bits] = info["kl_to_parent"]
    assert 0 < kl[8] < kl[4]


def test_inspect_source_has_no_parent(env):
    info = inspect_variant("tiny-random", env.ctx)
    assert info["kl_to_parent"] is None and "no parent" in info["metrics_note"]
    assert "bits_per_weight" not in info and info["provenance"] == {"source": "tiny-random"}
    assert "ppl" not in inspect_variant("tiny-random", env.ctx, metrics=False)


def test_inspect_gguf_sizes(env, monkeypatch):
    from gguf import GGUFWriter

    def convert_hf_to_gguf(hf_dir, out_path, outtype="f16"):
        w = GGUFWriter(str(out_path), "llama")
        w.add_tensor("blk.0.attn_q.weight", np.zeros((8, 16), dtype=np.float16))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    def quantize_gguf(src, dst, qtype):
        shutil.copy(src, dst)

    fake = types.ModuleType("safetydrift.llamacpp")
    fake.convert_hf_to_gguf, fake.quantize_gguf = convert_hf_to_gguf, quantize_gguf
    monkeypatch.setitem(sys.modules, "safetydrift.llamacpp", fake)
    info = inspect_variant("tiny-random>quantize:method=gguf,type=Q8_0", env.ctx, metrics=False)
    assert info["kind"] == "gguf" and "ppl" not in info
    assert info["parameters"] == 128 and info["bits_per_weight"] == pytest.approx(16)


def test_cli_inspect_json(env, capsys):
    from safetydrift.cli import main

    rc = main(["--cache", str(env.cache), "inspect", "tiny-random>quantize:bits=8", "--json", "--no-metrics"])
    assert rc == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "hf" and 8 < info["bits_per_weight"] < 9 and "ppl" not in info
