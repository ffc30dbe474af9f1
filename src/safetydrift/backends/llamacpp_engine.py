"""Thin wrapper around llama.cpp (through ``llama-cpp-python``): HF -> GGUF conversion, quantization, chat.

Nothing heavy is imported at module import time; ``llama_cpp`` is imported by the functions that need it.
The route and the numbers behind it are in ``docs/llamacpp.md``.

* :func:`convert_hf_to_gguf` runs llama.cpp's own ``convert_hf_to_gguf.py`` in a subprocess. That script is
  not installed by any wheel: it is taken from the ``llama-cpp-python`` sdist (``vendor/llama.cpp``), which
  is fetched with ``pip download --no-deps`` into a cache directory the caller passes in, once. The sdist
  also vendors the matching ``gguf-py``, which the script puts first on ``sys.path`` (the PyPI ``gguf``
  0.19 package is too old for it).
* :func:`quantize_gguf` calls ``llama_model_quantize`` from the C API (same mixes as ``llama-quantize``).
* :class:`LlamaCppModel` renders the GGUF's chat template itself (Jinja, like transformers does), tokenizes
  the result with special tokens parsed and no extra BOS, and generates until an end-of-generation token.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from safetydrift.errors import ModelLoadError, UnsupportedError

#: The quantization types :func:`quantize_gguf` accepts, mapped to llama.cpp's ``enum llama_ftype``.
QUANT_TYPES: dict[str, int] = {
    "Q2_K": 10,
    "Q3_K_M": 12,
    "Q4_K_M": 15,
    "Q5_K_M": 17,
    "Q6_K": 18,
    "Q8_0": 7,
}
#: What ``convert_hf_to_gguf.py --outtype`` accepts that is useful here.
CONVERT_OUTTYPES = ("f32", "f16", "bf16", "q8_0")
#: The llama-cpp-python release whose sdist provides the converter when none is installed.
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
#: Same fallback as the transformers backend, for a GGUF without ``tokenizer.chat_template``.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

_log = logging.getLogger(__name__)
_INSTALL_HINT = "pip install llama-cpp-python==0.3.36 sentencepiece (see docs/llamacpp.md)"


class LlamaCppUnavailableError(UnsupportedError, RuntimeError):
    """llama-cpp-python (or its native library) cannot be imported on this machine."""


class ConverterUnavailableError(UnsupportedError, RuntimeError):
    """llama.cpp's convert_hf_to_gguf.py cannot be fetched or cannot run here."""


class ConversionError(ModelLoadError, RuntimeError):
    """convert_hf_to_gguf.py ran and failed on this checkpoint."""


class QuantizationError(ModelLoadError, RuntimeError):
    """llama_model_quantize failed."""


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except (ImportError, OSError, RuntimeError) as e:  # OSError/RuntimeError: the .so failed to load
        raise LlamaCppUnavailableError(
            f"llama.cpp is not usable here ({type(e).__name__}: {e}); {_INSTALL_HINT}"
        ) from e
    return llama_cpp


def default_threads() -> int:
    """The cores no other process is using right now (at least 1), sampled over a quarter second.

    llama.cpp's threads spin at barriers: on a machine where something else runs, using every core is 3-4x
    *slower* than using the free ones (docs/llamacpp.md), while on an idle 2-core machine 2 threads are
    1.7x faster than 1. Where the load cannot be read (no /proc), half the logical CPUs, as
    llama-cpp-python does.
    """
    n = os.cpu_count() or 2
    busy = _others_busy_cores()
    if busy is None:
        return max(1, n // 2)
    return max(1, min(n, int(n - busy + 0.3)))


def _others_busy_cores(interval: float = 0.25) -> float | None:
    """Cores kept busy by *other* processes over ``interval`` seconds: machine-wide busy time from
    /proc/stat minus this process's own CPU time."""
    import time

    def sample() -> tuple[float, float, float]:
        with open("/proc/stat") as f:
            vals = [float(x) for x in f.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0.0)  # idle + iowait
        return sum(vals) - idle, time.monotonic(), time.process_time()

    try:
        tick = float(os.sysconf("SC_CLK_TCK"))
        b0, w0, p0 = sample()
        time.sleep(interval)
        b1, w1, p1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    wall = w1 - w0
    if wall <= 0:
        return None
    return max(0.0, ((b1 - b0) / tick - (p1 - p0)) / wall)


def llama_cpp_python_version() -> str | None:
    """The installed llama-cpp-python version, or None (read from metadata; the library is not loaded)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------- conversion


def ensure_converter(cache_dir: Path, version: str | None = None, *, timeout: float = 600.0) -> Path:
    """Path to ``convert_hf_to_gguf.py`` from the llama-cpp-python ``version`` sdist, fetched into ``cache_dir``.

    ``version`` defaults to the installed llama-cpp-python (so converter and runtime come from one llama.cpp
    commit), else :data:`LLAMA_CPP_PYTHON_VERSION`. An sdist already in ``cache_dir`` or in
    ``context.tools_dir()/llamacpp`` (where ``scripts/setup-llamacpp.sh`` downloads the sdist it builds
    llama-cpp-python from) is used without touching the network.
    """
    version = version or llama_cpp_python_version() or LLAMA_CPP_PYTHON_VERSION
    cache_dir = Path(cache_dir).expanduser()
    target = cache_dir / f"llama-cpp-python-{version}-convert"
    script = target / "convert_hf_to_gguf.py"
    if script.is_file():
        return script
    cache_dir.mkdir(parents=True, exist_ok=True)
    from safetydrift.context import tools_dir

    sdist = _find_sdist(cache_dir, version) or _find_sdist(tools_dir() / "llamacpp", version)
    if sdist is None:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(cache_dir),
            f"llama-cpp-python=={version}",
        ]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ConverterUnavailableError(
                f"cannot fetch llama.cpp's converter: {type(e).__name__}: {e}"
            ) from e
        sdist = _find_sdist(cache_dir, version)
        if res.returncode != 0 or sdist is None:
            raise ConverterUnavailableError(
                f"cannot fetch llama.cpp's converter (pip download llama-cpp-python=={version} into {cache_dir} "
                f"failed: {_last_line(res.stderr) or f'exit {res.returncode}'})"
            )
    _extract_converter(sdist, target)
    if not script.is_file():
        raise ConverterUnavailableError(f"{sdist.name} has no vendor/llama.cpp/convert_hf_to_gguf.py")
    return script


def _find_sdist(cache_dir: Path, version: str) -> Path | None:
    for name in (f"llama_cpp_python-{version}.tar.gz", f"llama-cpp-python-{version}.tar.gz"):
        if (cache_dir / name).is_file():
            return cache_dir / name
    return None


def _extract_converter(sdist: Path, target: Path) -> None:
    """Unpack only the converter, its ``conversion`` package and the vendored ``gguf-py`` (atomically)."""
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        with tarfile.open(sdist, "r:gz") as tf:
            members = []
            for m in tf.getmembers():
                parts = m.name.split("/", 3)  # <root>/vendor/llama.cpp/<rest>
                if len(parts) == 4 and parts[1:3] == ["vendor", "llama.cpp"] and parts[3].startswith(wanted):
                    if not (m.isfile() or m.isdir()):
                        continue
                    m.name = parts[3]
                    members.append(m)
            if not members:
                raise ConverterUnavailableError(f"{sdist.name} does not vendor llama.cpp's converter")
            tf.extractall(tmp, members=members, filter="data")
        try:
            tmp.rename(target)
        except OSError:  # another process won the race
            if not (target / "convert_hf_to_gguf.py").is_file():
                raise
    except (tarfile.TarError, OSError) as e:
        raise ConverterUnavailableError(f"cannot unpack the converter from {sdist}: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def convert_hf_to_gguf(
    hf_dir: Path,
    out_path: Path,
    outtype: str = "f16",
    *,
    cache_dir: Path | None = None,
    version: str | None = None,
    timeout: float | None = None,
) -> Path:
    """Convert a transformers checkpoint directory into one GGUF file with llama.cpp's converter.

    ``cache_dir`` holds the fetched converter (default: ``<safetydrift cache>/llamacpp``). The conversion
    runs in a subprocess (it needs torch, transformers and sentencepiece, not llama_cpp).
    """
    hf_dir, out_path = Path(hf_dir), Path(out_path)
    if outtype not in CONVERT_OUTTYPES:
        raise ValueError(f"outtype must be one of {', '.join(CONVERT_OUTTYPES)}, not {outtype!r}")
    if not (hf_dir / "config.json").is_file():
        raise ModelLoadError(f"{hf_dir} is not a transformers checkpoint (no config.json)")
    if importlib.util.find_spec("sentencepiece") is None:
        # the converter imports it for every Llama-family vocabulary, even when there is no tokenizer.model
        raise ConverterUnavailableError(
            "llama.cpp's converter needs the sentencepiece package: pip install sentencepiece"
        )
    if cache_dir is None:
        from safetydrift.context import default_cache_dir

        cache_dir = default_cache_dir() / "llamacpp"
    script = ensure_converter(Path(cache_dir), version)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # the vendored gguf-py must win
    cmd = [sys.executable, str(script), str(hf_dir), "--outfile", str(partial), "--outtype", outtype]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        partial.unlink(missing_ok=True)
        raise ConversionError(f"converting {hf_dir} to GGUF timed out after {timeout}s") from e
    if res.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise ConversionError(
            f"converting {hf_dir} to GGUF failed: {_error_line(res.stderr) or f'exit {res.returncode}'}"
        )
    os.replace(partial, out_path)
    return out_path


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _error_line(text: str) -> str:
    """The exception line of a Python traceback if there is one, else the last line."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) and " " not in head:
            return ln
    return lines[-1] if lines else ""


# -------------------------------------------------------------------------------------------- quantization


def quantize_gguf(src: Path, dst: Path, qtype: str, *, n_threads: int | None = None) -> Path:
    """Quantize a f32/f16/bf16 GGUF file to ``qtype`` (one of :data:`QUANT_TYPES`, any case) with llama.cpp's mixes.

    K-quants need rows a multiple of 256 wide; llama.cpp quantizes other tensors to a fallback type
    (Q4_K -> Q5_0, Q6_K -> Q8_0, ...). How many did is logged once at WARNING; llama.cpp's own per-tensor log
    is captured, and its failure line becomes the :class:`QuantizationError` message.
    """
    qtype = qtype.upper() if isinstance(qtype, str) else qtype
    if qtype not in QUANT_TYPES:
        raise ValueError(
            f"unsupported GGUF quantization type {qtype!r}; choose one of {', '.join(QUANT_TYPES)}"
        )
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ModelLoadError(f"GGUF file not found: {src}")
    llama_cpp = _import_llama_cpp()
    import ctypes

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[qtype]
    params.nthread = n_threads or default_threads()
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(dst.name + ".partial")
    with _captured_llama_log(llama_cpp) as log:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(partial).encode(), ctypes.byref(params))
    if rc != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        why = next(
            (ln.split("failed to quantize:", 1)[1].strip() for ln in log if "failed to quantize:" in ln), ""
        )
        raise QuantizationError(f"llama.cpp could not quantize {src} to {qtype}: {why or f'code {rc}'}")
    os.replace(partial, dst)
    fallbacks = sum("falling back to" in ln for ln in log)
    if fallbacks:
        _log.warning(
            "%s: %d tensor(s) are not a multiple of 256 wide and use llama.cpp's fallback types",
            dst.name,
            fallbacks,
        )
    return dst


@contextlib.contextmanager
def _captured_llama_log(llama_cpp: Any) -> Iterator[list[str]]:
    """Collect llama.cpp's log lines instead of printing them; restore llama-cpp-python's handler after."""
    import ctypes

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def _collect(level: int, text: bytes, user_data: Any) -> None:
        lines.append(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(_collect, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        previous = getattr(getattr(llama_cpp, "_logger", None), "llama_log_callback", None)
        llama_cpp.llama_log_set(previous, ctypes.c_void_p(0))


# ------------------------------------------------------------------------------------------------ inference


def _jinja_env() -> Any:
    """A Jinja environment with the settings and helpers transformers gives chat templates."""
    import json
    from datetime import datetime

    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        from jinja2.exceptions import TemplateError

        raise TemplateError(message)

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


class LlamaCppModel:
    """A GGUF model on CPU through llama.cpp, with the chat template of the file (or ``chat_template``).

    ``seed`` is the default sampling seed of :meth:`chat`; ``temperature=0`` is greedy decoding.
    ``n_threads`` defaults to :func:`default_threads`.
    """

    def __init__(
        self,
        path: Path,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        seed: int = 0,
        *,
        chat_template: str | None = None,
        verbose: bool = False,
        logits_all: bool = False,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        llama_cpp = _import_llama_cpp()
        self._lib = llama_cpp
        self.path = path
        self.n_ctx = n_ctx
        self.seed = seed
        self.n_threads = n_threads or default_threads()
        self.logits_all = logits_all
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                n_gpu_layers=0,
                seed=seed,
                verbose=verbose,
                logits_all=logits_all,
            )
        except (ValueError, RuntimeError, OSError) as e:
            raise ModelLoadError(f"llama.cpp cannot load {path}: {e}") from e
        self.metadata: dict[str, str] = dict(self._llm.metadata or {})
        self.chat_template = (
            chat_template or self.metadata.get("tokenizer.chat_template") or FALLBACK_TEMPLATE
        )
        self._template = _jinja_env().from_string(self.chat_template)
        self._vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self.bos_token = self._token_text(self._llm.token_bos())
        self.eos_token = self._token_text(self._llm.token_eos())

    def _token_text(self, token: int) -> str:
        if token is None or token < 0:
            return ""
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def render(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The prompt text exactly as the model sees it (generation prompt added)."""
        return self._template.render(
            messages=list(messages),
            add_generation_prompt=True,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )

    def tokenize(self, text: str) -> list[int]:
        """Token ids of already-templated text: special tokens parsed, no BOS added (the template has it)."""
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def tokenize_text(self, text: str) -> list[int]:
        """Token ids of plain text, with a BOS where the vocabulary asks for one (as for perplexity)."""
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        *,
        top_k: int = 0,
    ) -> tuple[str, int]:
        """Generate one reply: (text without special tokens, stripped; number of tokens before EOS).

        ``temperature <= 0`` is greedy. Otherwise the sampler applies temperature, then top-k (0 = off), then
        top-p, then draws with ``seed`` (default: the model's ``seed``) — transformers' order, so the two
        backends sample from the same distribution; llama-cpp-python's own chain applies top-p first.
        """
        if max_new_tokens <= 0:
            return "", 0
        lib, llm = self._lib, self._llm
        prompt = self.tokenize(self.render(messages))
        room = self.n_ctx - len(prompt)
        if room <= 0:
            raise ValueError(f"prompt is {len(prompt)} tokens, the context holds {self.n_ctx}")
        sampler = self._sampler(temperature, top_p, top_k, self.seed if seed is None else int(seed))
        out: list[int] = []
        try:
            llm.reset()
            llm.eval(prompt)
            for _ in range(min(max_new_tokens, room)):
                token = lib.llama_sampler_sample(sampler, llm.ctx, -1)
                if lib.llama_vocab_is_eog(self._vocab, token):
                    break
                out.append(token)
                if len(out) < max_new_tokens and len(out) < room:
                    llm.eval([token])
        finally:
            lib.llama_sampler_free(sampler)
        text = llm.detokenize(out).decode("utf-8", errors="replace") if out else ""
        return text.strip(), len(out)

    def chat_batch(
        self,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        *,
        top_k: int = 0,
    ) -> list[tuple[str, int]]:
        """:meth:`chat` for several conversations at once: one llama.cpp context with a sequence per
        conversation (unified KV cache), so each decoding step is one batched forward pass instead of one per
        conversation. Each sequence has its own sampler (same chain and seed as :meth:`chat`).

        Greedy outputs equal :meth:`chat`'s up to floating-point differences between batched and single
        kernels (as with batched transformers generation).
        """
        if len(conversations) <= 1 or max_new_tokens <= 0:
            return [self.chat(c, max_new_tokens, temperature, top_p, seed, top_k=top_k) for c in conversations]
        lib = self._lib
        most = int(lib.llama_max_parallel_sequences())  # llama.cpp's cap on sequences per context
        if len(conversations) > most:
            head = self.chat_batch(conversations[:most], max_new_tokens, temperature, top_p, seed, top_k=top_k)
            return head + self.chat_batch(conversations[most:], max_new_tokens, temperature, top_p, seed, top_k=top_k)
        prompts = [self.tokenize(self.render(c)) for c in conversations]
        for p in prompts:
            if len(p) >= self.n_ctx:
                raise ValueError(f"prompt is {len(p)} tokens, the context holds {self.n_ctx}")
        caps = [min(max_new_tokens, self.n_ctx - len(p)) for p in prompts]
        n_seq = len(prompts)
        total = sum(len(p) + c for p, c in zip(prompts, caps, strict=True))
        # a prefill chunk holds the longest prompt; a decoding step holds one token per sequence
        n_batch = max(512, max(len(p) for p in prompts), n_seq)
        params = lib.llama_context_default_params()
        params.n_ctx = total + 64
        params.n_batch = n_batch
        params.n_ubatch = min(n_batch, 512)
        params.n_seq_max = n_seq
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = self.n_threads
        ctx = lib.llama_init_from_model(self._llm.model, params)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not create a context for {n_seq} sequences of {total} tokens")
        batch = lib.llama_batch_init(n_batch, 0, 1)
        base_seed = self.seed if seed is None else int(seed)
        samplers = [self._sampler(temperature, top_p, top_k, base_seed) for _ in range(n_seq)]
        out: list[list[int]] = [[] for _ in range(n_seq)]
        done = [c <= 0 for c in caps]

        def decode(entries: list[tuple[int, int, int, bool]]) -> None:
            """entries: (token, position, sequence, wants logits)."""
            batch.n_tokens = len(entries)
            for k, (tok, pos, sid, want) in enumerate(entries):
                batch.token[k], batch.pos[k], batch.n_seq_id[k] = tok, pos, 1
                batch.seq_id[k][0] = sid
                batch.logits[k] = want
            rc = lib.llama_decode(ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")

        def take(sid: int, idx: int) -> None:
            token = lib.llama_sampler_sample(samplers[sid], ctx, idx)
            if lib.llama_vocab_is_eog(self._vocab, token):
                done[sid] = True
                return
            out[sid].append(token)
            done[sid] = len(out[sid]) >= caps[sid]

        try:
            # prefill: whole prompts packed into batches of at most n_batch tokens
            pending: list[tuple[int, int, int, bool]] = []
            last_of: list[tuple[int, int]] = []  # (sequence, index in the batch) of each prompt's last token
            for sid, p in enumerate(prompts):
                if pending and len(pending) + len(p) > n_batch:
                    decode(pending)
                    for s_, i_ in last_of:
                        take(s_, i_)
                    pending, last_of = [], []
                last_of.append((sid, len(pending) + len(p) - 1))
                pending.extend((t, i, sid, i == len(p) - 1) for i, t in enumerate(p))
            if pending:
                decode(pending)
                for s_, i_ in last_of:
                    take(s_, i_)
            # decode: one new token per unfinished sequence per step
            while True:
                live = [sid for sid in range(n_seq) if not done[sid]]
                if not live:
                    break
                decode([(out[sid][-1], len(prompts[sid]) + len(out[sid]) - 1, sid, True) for sid in live])
                for k, sid in enumerate(live):
                    take(sid, k)
        finally:
            for smp in samplers:
                lib.llama_sampler_free(smp)
            lib.llama_batch_free(batch)
            lib.llama_free(ctx)
        return [
            ((self._llm.detokenize(o).decode("utf-8", errors="replace") if o else "").strip(), len(o)) for o in out
        ]

    def token_logits(self, ids: Sequence[int]) -> Any:
        """Next-token logits at every position of ``ids`` (a float32 array, len(ids) × n_vocab).

        Row t is the distribution over token t+1 given ids[:t+1], as transformers' ``logits[0, t]``, so the
        two can be compared position by position (perplexity, KL to an HF parent). Needs ``logits_all=True``.
        """
        import numpy as np

        if not self.logits_all:
            raise ValueError("token_logits needs a model opened with logits_all=True")
        if not ids:
            return np.zeros((0, self._llm.n_vocab()), dtype=np.float32)
        if len(ids) > self.n_ctx:
            raise ValueError(f"{len(ids)} tokens do not fit the context of {self.n_ctx}")
        llm = self._llm
        llm.reset()
        llm.eval(list(ids))
        return np.array(llm.scores[: len(ids)], dtype=np.float32, copy=True)

    def _sampler(self, temperature: float, top_p: float, top_k: int, seed: int) -> Any:
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if temperature <= 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
            return chain
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(float(temperature)))
        if top_k > 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(int(top_k)))
        if top_p < 1.0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(float(top_p), 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def close(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is not None:
            llm.close()
            self._llm = None

    def __enter__(self) -> LlamaCppModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
