"""llama.cpp route: tiny HF Llama -> GGUF f16 -> Q8_0 / Q4_K_M -> chat, all offline except a one-time
fetch of llama.cpp's converter (the llama-cpp-python sdist) into the safetydrift cache.

The tiny model is rigged so greedy decoding is known in advance: every layer's output projections are zero,
so the last hidden state is the embedding of the last token; every ordinary token's embedding lives in the
first half of the dimensions, the token " Paris" lives in the second half, and the LM head maps the first
half to " Paris" and the second half to <|im_end|> (EOS). So any prompt yields " Paris", then EOS.
Hidden 256 / intermediate 512 keep every row a multiple of 256, so K-quants apply without fallback.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from safetydrift import llamacpp as eng


def _llama_cpp_import_error() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip line in docs/llamacpp.md)"
    try:
        import llama_cpp  # noqa: F401
    except Exception as e:  # the native library may fail to load
        return f"llama_cpp does not import: {type(e).__name__}: {e}"
    return None


_SKIP = _llama_cpp_import_error()
needs_llama = pytest.mark.skipif(_SKIP is not None, reason=f"llama.cpp route unavailable: {_SKIP}")
_NO_SPM = importlib.util.find_spec("sentencepiece") is None
needs_converter = pytest.mark.skipif(
    _NO_SPM, reason="sentencepiece is not installed; llama.cpp's converter imports it (docs/llamacpp.md)"
)

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def _converter_cache() -> Path:
    env = os.environ.get("SAFETYDRIFT_CACHE")
    if env:
        return Path(env).expanduser() / "llamacpp"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("safetydrift")) / "llamacpp"


def _build_tiny_llama(out: Path, rigged: bool = True) -> str:
    """Save the rigged tiny Llama (byte-fallback BPE tokenizer, ChatML template) and return its answer.
    ``rigged=False`` keeps the random weights (an arbitrary but deterministic model)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<|im_start|>", "<|im_end|>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    # a Llama-2 style byte-fallback BPE: llama.cpp's converter takes it as an SPM vocabulary ("llama"), so no
    # BPE pre-tokenizer hash is needed (an unknown hash would make convert_hf_to_gguf.py refuse the model)
    corpus = [
        "Paris is the capital of France.",
        "Hello world, a tiny tokenizer for tests.",
        "user assistant",
    ] * 4
    tok.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False)
    )
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        pad_token="<|im_end|>",
    )
    hf_tok.chat_template = CHATML
    hf_tok.save_pretrained(out)
    answer_id = hf_tok.convert_tokens_to_ids("▁Paris")
    assert answer_id != hf_tok.unk_token_id

    hidden, half = 256, 128
    cfg = LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=hidden,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    if not rigged:
        model.save_pretrained(out)
        return ""
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        emb.uniform_(0.5, 1.0)
        emb[:, half:] = 0.0
        emb[answer_id, :half] = 0.0
        emb[answer_id, half:] = torch.rand(hidden - half) * 0.5 + 0.5
        head = model.lm_head.weight
        head.zero_()
        head[answer_id, :half] = 1.0
        head[cfg.eos_token_id, half:] = 1.0
    model.save_pretrained(out)
    return hf_tok.decode([answer_id]).strip()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("llamacpp")
    answer = _build_tiny_llama(root / "hf")
    f16 = eng.convert_hf_to_gguf(root / "hf", root / "tiny-f16.gguf", "f16", cache_dir=_converter_cache())
    return f16, answer


def test_quantize_rejects_unknown_type(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Q4_K_M"):
        eng.quantize_gguf(tmp_path / "a.gguf", tmp_path / "b.gguf", "Q4_1")
    with pytest.raises(ValueError, match="unsupported"):
        eng.quantize_gguf(tmp_path / "a.gguf", tmp_path / "b.gguf", "IQ2_XS")


def test_convert_rejects_unknown_outtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outtype"):
        eng.convert_hf_to_gguf(tmp_path, tmp_path / "x.gguf", outtype="q4_k_m")


def test_converter_fetch_failure_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline: pip download must fail fast
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("SAFETYDRIFT_TOOLS", str(tmp_path / "no-tools"))  # and no sdist from the install step
    with pytest.raises(eng.ConverterUnavailableError, match="cannot fetch llama.cpp's converter") as err:
        eng.ensure_converter(tmp_path / "cache", version="0.3.36")
    assert isinstance(err.value, RuntimeError)
    assert "\n" not in str(err.value)


def test_converter_comes_from_the_install_steps_sdist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty artifact cache must not mean a new download: setup-llamacpp.sh keeps the sdist it built."""
    import io
    import tarfile

    tools = tmp_path / "tools"
    (tools / "llamacpp").mkdir(parents=True)
    root = "llama_cpp_python-9.9.9/vendor/llama.cpp"
    with tarfile.open(tools / "llamacpp" / "llama_cpp_python-9.9.9.tar.gz", "w:gz") as tf:
        for name, text in ((f"{root}/convert_hf_to_gguf.py", "print('converter')\n"),
                           (f"{root}/gguf-py/gguf/__init__.py", ""), (f"{root}/README.md", "not unpacked")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    monkeypatch.setenv("SAFETYDRIFT_TOOLS", str(tools))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # a download attempt would fail
    script = eng.ensure_converter(tmp_path / "cache", version="9.9.9")
    assert script.read_text() == "print('converter')\n"
    assert (script.parent / "gguf-py" / "gguf" / "__init__.py").is_file() and not (script.parent / "README.md").exists()
    assert script.is_relative_to(tmp_path / "cache")


@needs_llama
def test_quantize_failure_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(eng.QuantizationError, match="could not quantize") as err:
        eng.quantize_gguf(bad, tmp_path / "out.gguf", "Q8_0")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out.gguf").exists()


@pytest.fixture(scope="module")
def random_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("llamacpp-random")
    _build_tiny_llama(root / "hf", rigged=False)
    return eng.convert_hf_to_gguf(root / "hf", root / "random-f16.gguf", "f16", cache_dir=_converter_cache())


@needs_converter
def test_convert_writes_gguf_with_template_and_tokenizer(tiny_gguf: tuple[Path, str]) -> None:
    from gguf import GGUFReader

    f16, _ = tiny_gguf
    reader = GGUFReader(str(f16))
    fields = reader.fields
    assert fields["general.architecture"].contents() == "llama"
    assert fields["tokenizer.ggml.model"].contents() == "llama"
    assert "<|im_start|>" in fields["tokenizer.chat_template"].contents()
    assert fields["tokenizer.ggml.eos_token_id"].contents() == 2
    assert {t.tensor_type.name for t in reader.tensors} == {"F16", "F32"}


@needs_llama
@needs_converter
@pytest.mark.parametrize("qtype", [None, "Q8_0", "Q4_K_M"])
def test_quantize_and_chat(tiny_gguf: tuple[Path, str], qtype: str | None) -> None:
    from gguf import GGUFReader

    f16, answer = tiny_gguf
    path = f16
    if qtype is not None:
        path = eng.quantize_gguf(f16, f16.with_name(f"tiny-{qtype}.gguf"), qtype.lower(), n_threads=2)
        kinds = {t.tensor_type.name for t in GGUFReader(str(path)).tensors}
        assert (kinds & {"Q8_0"}) if qtype == "Q8_0" else (kinds & {"Q4_K", "Q6_K"}), kinds
        assert path.stat().st_size < f16.stat().st_size
    with eng.LlamaCppModel(path, n_ctx=256, n_threads=2) as model:
        assert (
            model.render(MESSAGES)
            == "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        )
        assert model.tokenize("<|im_start|>user")[0] == 1  # special tokens are parsed, no BOS is added
        text, n = model.chat(MESSAGES, max_new_tokens=8, temperature=0.0, top_p=1.0, seed=0)
        assert (text, n) == (answer, 1)  # " Paris", then EOS stops generation
        # sampling still honours the logits' ordering here (margins are large), and the cap is respected
        text, n = model.chat(MESSAGES, max_new_tokens=1, temperature=0.7, top_p=0.9, seed=3)
        assert (text, n) == (answer, 1)
        assert model.chat(MESSAGES, max_new_tokens=0) == ("", 0)


@needs_llama
@needs_converter
def test_gguf_logits_match_transformers_and_give_ppl_kl(tiny_gguf: tuple[Path, str]) -> None:
    """llama.cpp's per-position logits line up with transformers' (f16 vs fp32 weights), so perplexity and
    KL of a GGUF build against its HF parent measure the quantization, not an off-by-one or a tokenizer."""
    import torch

    from safetydrift.analysis.metrics import HFScorer, LlamaCppScorer, drift_metrics, encode
    from safetydrift.backends.transformers_backend import load_hf
    from safetydrift.types import ResolvedModel

    f16, _ = tiny_gguf
    hf_dir = f16.parent / "hf"
    model, tok = load_hf(hf_dir)
    texts = ["Paris is the capital of France.", "Hello world, a tiny tokenizer for tests."]
    ids = encode(tok, texts)
    z_hf = HFScorer(model, pad_id=2).logits(ids)
    gg = LlamaCppScorer(f16, n_ctx=128, n_threads=2)
    try:
        z_gg = gg.logits(ids)
    finally:
        gg.close()
    for a, b, seq in zip(z_hf, z_gg, ids, strict=True):
        assert a.shape == b.shape == (len(seq), len(tok))
        assert torch.allclose(a, b, atol=0.02 * float(a.abs().max()))

    hf = ResolvedModel(spec="tiny-hf", kind="hf", path=hf_dir)
    q4 = eng.quantize_gguf(f16, f16.with_name("tiny-ppl-Q4_K_M.gguf"), "q4_k_m", n_threads=2)
    d16 = drift_metrics(ResolvedModel(spec="f16", kind="gguf", path=f16), hf, texts)
    d4 = drift_metrics(ResolvedModel(spec="q4", kind="gguf", path=q4), hf, texts)
    assert d16["tokenizer"] == "reference" and d16["tokens"] == sum(len(x) for x in ids)
    assert d16["reference_ppl"] == pytest.approx(d4["reference_ppl"])
    assert d16["ppl"] == pytest.approx(d16["reference_ppl"], rel=0.02)
    assert 0 <= d16["kl_to_reference"] < 1e-3
    # a perturbed HF model is far from the GGUF: KL is a real distance, not a constant
    with torch.no_grad():
        model.lm_head.weight.mul_(-1.0)
    other = hf_dir.parent / "hf-flipped"
    model.save_pretrained(other)
    tok.save_pretrained(other)
    d_far = drift_metrics(ResolvedModel(spec="f16", kind="gguf", path=f16),
                          ResolvedModel(spec="flipped", kind="hf", path=other), texts)
    assert d_far["kl_to_reference"] > 100 * max(d16["kl_to_reference"], 1e-4)
    # two GGUF files: llama.cpp's own tokenizer
    assert drift_metrics(ResolvedModel(spec="q4", kind="gguf", path=q4),
                         ResolvedModel(spec="f16", kind="gguf", path=f16), texts)["tokenizer"] == "llama.cpp"


@needs_llama
@needs_converter
def test_chat_batch_matches_one_at_a_time(random_gguf: Path, tiny_gguf: tuple[Path, str]) -> None:
    """Parallel sequences in one context must not see each other: each conversation's greedy reply is the
    one it gets alone (prompts of different lengths, so positions differ per sequence)."""
    convs = [
        [{"role": "user", "content": "Paris is the capital of France."}],
        [{"role": "user", "content": "Hello"}],
        [{"role": "user", "content": "Hello world, a tiny tokenizer for tests. Paris is the capital."}],
        [{"role": "system", "content": "user assistant"}, {"role": "user", "content": "world"}],
    ]
    with eng.LlamaCppModel(random_gguf, n_ctx=256, n_threads=1) as model:
        alone = [model.chat(c, max_new_tokens=12) for c in convs]
        together = model.chat_batch(convs, max_new_tokens=12)
        assert together == alone and all(n == 12 for _, n in alone)  # random weights: no early EOS here
        assert model.chat_batch(convs[:2], max_new_tokens=3) == [model.chat(c, max_new_tokens=3) for c in convs[:2]]
    f16, answer = tiny_gguf
    with eng.LlamaCppModel(f16, n_ctx=256, n_threads=1) as model:  # EOS ends each sequence on its own
        assert model.chat_batch(convs, max_new_tokens=8) == [(answer, 1)] * len(convs)


@needs_llama
@needs_converter
def test_llamacpp_backend_batches_and_isolates_errors(tiny_gguf: tuple[Path, str], tmp_path: Path) -> None:
    from safetydrift.backends.llamacpp import LlamaCppBackend
    from safetydrift.context import Context
    from safetydrift.spec import parse_component
    from safetydrift.types import GenerationConfig, ResolvedModel

    f16, answer = tiny_gguf
    model = ResolvedModel(spec="tiny", kind="gguf", path=f16)
    be = LlamaCppBackend(model, parse_component("llamacpp:batch=3,n_ctx=64,threads=1"), Context(cache_dir=tmp_path))
    assert be.provenance()["batch"] == 3
    convs = [MESSAGES] * 4 + [[{"role": "user", "content": "Paris " * 80}]] + [MESSAGES]
    gens = be.generate(convs, GenerationConfig(max_new_tokens=4))
    assert [g.text for g in gens[:4]] == [answer] * 4 and gens[5].text == answer
    assert gens[4].error and "context" in gens[4].error and not gens[4].text  # too long: an error, not a reply


@needs_llama
@needs_converter
def test_chat_batch_beyond_one_context(tiny_gguf: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """More conversations than llama.cpp allows sequences per context are split, not failed."""
    f16, answer = tiny_gguf
    with eng.LlamaCppModel(f16, n_ctx=256, n_threads=1) as model:
        monkeypatch.setattr(model._lib, "llama_max_parallel_sequences", lambda: 3)
        assert model.chat_batch([MESSAGES] * 7, max_new_tokens=4) == [(answer, 1)] * 7


def test_backend_settings_are_typed_params(tmp_path: Path) -> None:
    """The backend's settings are a Params class: defaults, and bad values rejected before llama.cpp loads."""
    from safetydrift.backends.llamacpp import LlamaCppBackend, LlamaCppParams, llamacpp
    from safetydrift.context import Context
    from safetydrift.errors import SpecError
    from safetydrift.params import from_spec
    from safetydrift.spec import parse_component
    from safetydrift.types import ResolvedModel

    assert llamacpp.Params is LlamaCppParams
    assert from_spec(LlamaCppParams, parse_component("llamacpp")) == LlamaCppParams(n_ctx=2048, threads=None, batch=16)
    model = ResolvedModel(spec="missing", kind="gguf", path=tmp_path / "missing.gguf")
    for bad in ("llamacpp:batch=0", "llamacpp:n_ctx=lots", "llamacpp:threads=0", "llamacpp:typo=1"):
        with pytest.raises(SpecError):
            LlamaCppBackend(model, parse_component(bad), Context(cache_dir=tmp_path))


def test_extra_buffer_types_are_off_only_while_loading() -> None:
    """AMX extra buffers segfault in sandboxes without AMX state: the loader turns them off, and only for
    the construction (the library's default-params function is restored afterwards)."""
    import types

    from safetydrift.llamacpp.runtime import model_params_without_extra_buffers

    class P:
        use_extra_bufts = True

    inner = types.SimpleNamespace(llama_model_default_params=lambda: P())
    fake = types.SimpleNamespace(llama=types.SimpleNamespace(llama_cpp=inner))
    original = inner.llama_model_default_params
    with model_params_without_extra_buffers(fake, disable=True):
        assert inner.llama_model_default_params().use_extra_bufts is False
    assert inner.llama_model_default_params is original
    assert inner.llama_model_default_params().use_extra_bufts is True
    with model_params_without_extra_buffers(fake, disable=False):
        assert inner.llama_model_default_params().use_extra_bufts is True


def test_niced_work_does_not_count_as_busy_for_a_normal_priority_process():
    from safetydrift.llamacpp.runtime import busy_ticks

    line = [100.0, 50.0, 10.0, 800.0, 5.0, 1.0, 1.0]  # user nice system idle iowait irq softirq
    assert busy_ticks(line, skip_nice=False) == 100 + 50 + 10 + 1 + 1
    assert busy_ticks(line, skip_nice=True) == 100 + 10 + 1 + 1
