"""Utility metrics on plain text: perplexity and next-token KL between two models.

The one definition of perplexity in safetydrift (the guard's perplexity filter uses :func:`perplexities`)::

    nll_t   = −log p(x_{t+1} | x_{≤t})              (row t of a sequence's logits predicts token t+1)
    PPL     = exp(mean_t nll_t)                      pooled over every token of every text (:func:`perplexity`)
    PPL(x)  = exp(mean_t nll_t) per text, or the max over windows of w tokens (:func:`perplexities`)
    KL      = mean_t Σ_v p_t(v) (log p_t(v) − log q_t(v))   in nats (:func:`next_token_kl`)

Both read full next-token logits through a *scorer*: :class:`HFScorer` (a transformers model, batched,
right-padded, pad positions masked out) or :class:`LlamaCppScorer` (a GGUF file through llama.cpp, so a
quantized build is measured as it is served, not dequantized back). The two models of a KL must share the
vocabulary (a variant and its parent); both see the *same token ids*, encoded once by one tokenizer, so
the comparison is position by position. :func:`perplexity` and :func:`next_token_kl` keep the simple
"two transformers models and a tokenizer" call; :func:`open_scorer` picks the scorer for a resolved model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

#: A fixed benign sample for perplexity/KL checks of a variant (``safetydrift inspect``). Kept in code,
#: not read from a data file, so that numbers stay comparable across versions of the shipped data.
BENIGN_TEXTS: tuple[str, ...] = (
    "The old lighthouse stood at the edge of the cliff, and every evening the keeper climbed the stairs "
    "to light the lamp so that ships could find their way home.",
    "Bread is made by mixing flour, water, salt and yeast into a dough, letting it rise, shaping it and "
    "baking it until the crust is golden.",
    "A library offers quiet places to study, computers for people who do not have one at home, and "
    "librarians who know how to find almost anything.",
    "Regular exercise supports both physical and mental health. Even a brisk walk most days can improve "
    "sleep, mood and heart health.",
    "Honeybees live in colonies of thousands of workers and tell each other where flowers are through a "
    "movement called the waggle dance.",
    "When learning a new programming language, it helps to build something small and useful, such as a "
    "to-do list or a simple calculator.",
    "In autumn the trees stop producing chlorophyll, and the yellow and orange pigments that were in the "
    "leaves all along become visible.",
    "To make a cup of tea, boil fresh water, pour it over the leaves, wait three to five minutes and then "
    "remove the leaves before drinking.",
)


class Scorer(Protocol):
    """Full next-token logits of a model for given token ids."""

    vocab_size: int

    def logits(self, ids: Sequence[Sequence[int]]) -> list[Any]:
        """One float32 tensor per sequence, (len(seq), vocab): row t predicts token t+1."""
        ...


def encode(tok: Any, texts: Sequence[str], max_len: int = 256) -> list[list[int]]:
    """Token ids of each text as the tokenizer's plain call makes them (special tokens as the model adds
    them), truncated to ``max_len``. Encoded once and given to every scorer of a comparison."""
    return [list(tok(t, truncation=True, max_length=max_len)["input_ids"]) for t in texts]


class HFScorer:
    """A loaded transformers model; sequences are run in right-padded batches."""

    def __init__(self, model: Any, *, batch: int = 8, pad_id: int = 0) -> None:
        self.model = model
        self.batch = batch
        self.pad_id = pad_id
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])

    def logits(self, ids: Sequence[Sequence[int]]) -> list[Any]:
        import torch

        dev = _device(self.model)
        out: list[Any] = []
        with torch.no_grad():
            for i in range(0, len(ids), self.batch):
                chunk = [list(x) for x in ids[i : i + self.batch]]
                width = max((len(x) for x in chunk), default=0)
                if width == 0:
                    out.extend(torch.zeros(0, self.vocab_size) for _ in chunk)
                    continue
                input_ids = torch.tensor([x + [self.pad_id] * (width - len(x)) for x in chunk], device=dev)
                mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in chunk], device=dev)
                z = self.model(input_ids=input_ids, attention_mask=mask).logits.float().cpu()
                out.extend(z[j, : len(x)] for j, x in enumerate(chunk))
        return out


class LlamaCppScorer:
    """A GGUF file through llama.cpp with logits for every position (``logits_all``)."""

    def __init__(self, path: Path, *, n_ctx: int = 512, n_threads: int | None = None) -> None:
        from safetydrift.llamacpp import LlamaCppModel

        self.llm = LlamaCppModel(Path(path), n_ctx=n_ctx, n_threads=n_threads, logits_all=True)
        self.vocab_size = self.llm.n_vocab

    def logits(self, ids: Sequence[Sequence[int]]) -> list[Any]:
        import torch

        return [torch.from_numpy(self.llm.token_logits(list(x))) for x in ids]

    def encode(self, texts: Sequence[str], max_len: int = 256) -> list[list[int]]:
        """Token ids by the GGUF's own tokenizer, BOS added where its vocabulary asks for one."""
        return [self.llm.tokenize_text(t)[:max_len] for t in texts]

    def close(self) -> None:
        self.llm.close()


def open_scorer(model: Any, device: str | None = None, *, max_len: int = 256) -> tuple[Scorer, Any]:
    """(scorer, its HF tokenizer or None) for a resolved hf or gguf model. Endpoint models return no
    full-vocabulary logits, so they have no perplexity/KL here."""
    from safetydrift.errors import UnsupportedError

    if model.path is None or model.kind not in ("hf", "gguf"):
        raise UnsupportedError(f"perplexity/KL need full next-token logits; a {model.kind} model has none")
    if model.kind == "gguf":
        return LlamaCppScorer(Path(model.path), n_ctx=max(max_len, 64)), None
    from safetydrift.backends.transformers_backend import load_hf

    m, tok = load_hf(Path(model.path), device)
    return HFScorer(m, pad_id=int(tok.pad_token_id or 0)), tok


def _shared_vocab(zp: Any, zq: Any) -> tuple[Any, Any]:
    """Cut both logit rows to the vocabulary they share: converters and checkpoints may pad the
    embedding matrix past the tokenizer with never-predicted rows, which carry (almost) no mass."""
    v = min(zp.shape[-1], zq.shape[-1])
    if zp.shape[0] != zq.shape[0]:
        raise ValueError(f"next_token_kl: {zp.shape[0]} vs {zq.shape[0]} positions for the same ids")
    return zp[:, :v], zq[:, :v]


def token_nll(seq: Sequence[int], z: Any) -> Any:
    """nll_t = −log softmax(z_t)[seq[t+1]] for t = 0 … len(seq)−2: a 1-D float tensor (row t of ``z``
    predicts token t+1; the last row predicts past the text and is not used)."""
    import torch

    logp = torch.log_softmax(z[: len(seq) - 1].float(), -1)
    target = torch.tensor(list(seq[1:]))
    return -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)


def perplexity_of(ids: Sequence[Sequence[int]], logits: Sequence[Any]) -> float:
    """exp(mean next-token negative log-likelihood) over every predicted token of ``ids``, given each
    sequence's logits (row t predicts token t+1)."""
    nll, count = 0.0, 0
    for seq, z in zip(ids, logits, strict=True):
        if len(seq) < 2:
            continue
        nll += float(token_nll(seq, z).sum())
        count += len(seq) - 1
    return math.exp(nll / count) if count else float("nan")


def kl_of(logits_p: Sequence[Any], logits_q: Sequence[Any]) -> float:
    """Mean over every position of KL(p ‖ q) = Σ_v p(v) (log p(v) − log q(v)) in nats, p and q being
    the two models' next-token distributions on the same ids (p: e.g. the parent, q: the variant)."""
    import torch

    total, count = 0.0, 0
    for zp, zq in zip(logits_p, logits_q, strict=True):
        zp, zq = _shared_vocab(zp, zq)
        logp, logq = torch.log_softmax(zp.float(), -1), torch.log_softmax(zq.float(), -1)
        total += float((logp.exp() * (logp - logq)).sum())
        count += int(zp.shape[0])
    return total / count if count else float("nan")


def model_max_len(model: Any, wanted: int) -> int:
    """``wanted``, capped at the model's context size (GPT-2-style position tables index out of range)."""
    cfg = getattr(model, "config", None)
    limits = [getattr(cfg, k, None) for k in ("max_position_embeddings", "n_positions")]
    limits = [int(x) for x in limits if isinstance(x, int) and x > 1]
    return min([wanted, *limits])


def _device(model: Any) -> Any:
    return next(model.parameters()).device


def perplexity(model: Any, tok: Any, texts: Sequence[str] = BENIGN_TEXTS, *, batch: int = 8,
               max_len: int = 256) -> float:
    """Perplexity of a transformers model on ``texts`` (see :func:`perplexity_of`)."""
    ids = encode(tok, texts, model_max_len(model, max_len))
    return perplexity_of(ids, HFScorer(model, batch=batch, pad_id=int(tok.pad_token_id or 0)).logits(ids))


def perplexities(model: Any, tok: Any, texts: Sequence[str], *, batch_size: int = 16,
                 window: int = 0) -> list[float]:
    """Perplexity of each text on its own under a loaded transformers (model, tokenizer), e.g. a guard
    flagging gibberish prompts (Jain et al. 2023; Alon & Kamfonas 2023).

    Each text is encoded without special tokens and with the BOS token prepended (if the vocabulary has
    one), so its first token is scored too, whatever the tokenizer adds by default; it is cut at the
    model's ``max_position_embeddings`` (2048 if unset). ``window=w`` > 0 gives the maximum, over windows
    of w consecutive predicted tokens, of exp(mean nll): a short gibberish suffix stands out of a long
    prompt. A text with fewer than 2 tokens has perplexity 1.0 (nothing to predict). Texts are run in
    batches of ``batch_size`` sorted by length, so padding is small; the result is in input order.
    """
    import torch

    limit = getattr(model.config, "max_position_embeddings", 2048) or 2048
    seqs = []
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        if tok.bos_token_id is not None:
            ids = [tok.bos_token_id, *ids]
        seqs.append(ids[:limit])
    out = [1.0] * len(texts)
    order = sorted((i for i in range(len(seqs)) if len(seqs[i]) >= 2), key=lambda i: len(seqs[i]))
    scorer = HFScorer(model, batch=batch_size, pad_id=tok.pad_token_id if tok.pad_token_id is not None else 0)
    for start in range(0, len(order), batch_size):  # one batch of logits in memory at a time
        idx = order[start : start + batch_size]
        for i, z in zip(idx, scorer.logits([seqs[i] for i in idx]), strict=True):
            v = token_nll(seqs[i], z)
            if window and v.numel() > window:
                out[i] = float(torch.exp(v.unfold(0, window, 1).mean(dim=1).max()))
            else:
                out[i] = float(torch.exp(v.mean()))
    return out


def next_token_kl(model_p: Any, model_q: Any, tok: Any, texts: Sequence[str] = BENIGN_TEXTS, *,
                  batch: int = 8, max_len: int = 256) -> float:
    """Mean next-token KL(p ‖ q) of two transformers models sharing ``tok`` (see :func:`kl_of`)."""
    max_len = min(model_max_len(model_p, max_len), model_max_len(model_q, max_len))
    ids = encode(tok, texts, max_len)
    pad = int(tok.pad_token_id or 0)
    return kl_of(HFScorer(model_p, batch=batch, pad_id=pad).logits(ids), HFScorer(model_q, batch=batch, pad_id=pad).logits(ids))


def drift_metrics(variant: Any, reference: Any | None, texts: Sequence[str] = BENIGN_TEXTS, *,
                  device: str | None = None, max_len: int = 256) -> dict[str, Any]:
    """``ppl`` of a resolved variant, and with a ``reference`` also ``reference_ppl`` and
    ``kl_to_reference`` = KL(reference ‖ variant), for any mix of hf and gguf models.

    The texts are encoded once, by the variant's HF tokenizer, else the reference's (a GGUF built from
    an HF parent shares its vocabulary), else llama.cpp's own; ``tokenizer`` in the result says which.
    """
    import gc

    q, q_tok = open_scorer(variant, device, max_len=max_len)
    p: Scorer | None = None
    p_tok = None
    try:
        if reference is not None:
            p, p_tok = open_scorer(reference, device, max_len=max_len)
        tok, which = (q_tok, "variant") if q_tok is not None else (p_tok, "reference")
        if tok is not None:
            ids = encode(tok, texts, max_len)
        else:  # two GGUF files: llama.cpp's own tokenizer
            which = "llama.cpp"
            ids = q.encode(texts, max_len)  # type: ignore[attr-defined]
        zq = q.logits(ids)  # each model's logits are computed once and serve both ppl and KL
        out: dict[str, Any] = {"ppl": perplexity_of(ids, zq), "tokenizer": which,
                               "texts": len(texts), "tokens": sum(len(x) for x in ids)}
        if p is not None:
            zp = p.logits(ids)
            out["reference_ppl"] = perplexity_of(ids, zp)
            out["kl_to_reference"] = kl_of(zp, zq)
        return out
    finally:
        for scorer in (p, q):
            if scorer is not None and hasattr(scorer, "close"):
                scorer.close()
        gc.collect()
