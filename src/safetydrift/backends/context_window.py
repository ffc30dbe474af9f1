"""Context-window checks shared by the local backends (transformers, llama.cpp, vLLM) and ``serve``.

A prompt longer than the model's context used to reach the model anyway: with transformers a 1 MB prompt
padded its whole batch to a million tokens and the batch failed on a 1 TB allocation, and ``serve`` spent
minutes on one 3 MiB request. Each backend now measures its prompts first (:func:`fit_prompts`) and
generates only those that fit (:func:`generate_fitting`); the others become per-sample errors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from safetydrift.types import CONTEXT_EXCEEDED, Conversation, Generation, PromptFit

#: A prompt longer than this many characters per context token is first counted on such a prefix only:
#: if even the prefix overflows, the multi-megabyte rest is never tokenized (milliseconds instead of
#: seconds, and a bounded cost for a hostile request). Real tokenizers average 3-5 characters per token.
PREFIX_CHARS_PER_TOKEN = 16


def fit_prompts(texts: Sequence[str], count: Callable[[list[str]], list[int]], context_length: int | None,
                reserve: int = 1) -> list[PromptFit]:
    """Whether each rendered prompt leaves ``reserve`` new tokens of room in ``context_length`` tokens.

    ``count`` is the backend's own tokenizer on the exact text the model sees. Without a known context
    every prompt fits (with its exact count).
    """
    counts: dict[int, int] = {}  # exact counts
    bounds: dict[int, int] = {}  # lower bounds of prompts whose prefix alone overflows
    if context_length is not None:
        cut = PREFIX_CHARS_PER_TOKEN * (context_length + reserve)
        long_ = [i for i, t in enumerate(texts) if len(t) > cut]
        if long_:
            for i, n in zip(long_, count([texts[i][:cut] for i in long_]), strict=True):
                if n - 1 > context_length:  # -1: the cut may split what the full text has as one token
                    bounds[i] = n - 1
    rest = [i for i in range(len(texts)) if i not in bounds]
    if rest:
        for i, n in zip(rest, count([texts[i] for i in rest]), strict=True):
            counts[i] = n
    out = []
    for i in range(len(texts)):
        exact = i not in bounds
        n = counts[i] if exact else bounds[i]
        if context_length is not None and n + reserve > context_length:
            out.append(PromptFit(n, exact, overflow_message(n, context_length, reserve, exact), CONTEXT_EXCEEDED))
        else:
            out.append(PromptFit(n, exact))
    return out


def overflow_message(tokens: int, context_length: int, reserve: int = 1, exact: bool = True) -> str:
    size = f"{tokens}" if exact else f"over {tokens}"
    plus = f" plus {reserve} new tokens" if reserve > 1 else ""
    return f"prompt of {size} tokens{plus} does not fit the context of {context_length} tokens"


def fit_or_errors(fit: Callable[[list[Conversation]], list[PromptFit]],
                  conversations: list[Conversation]) -> list[PromptFit]:
    """``fit(conversations)``, where a conversation that cannot even be measured (its chat template raises)
    becomes an error for that sample only, so the batch goes on without it rather than failing whole."""
    try:
        fits = fit(conversations)
    except Exception:  # find the culprit(s): one at a time, each failure its own error
        return [_fit_one(fit, c) for c in conversations]
    if len(fits) != len(conversations):
        raise RuntimeError(f"fit returned {len(fits)} results for {len(conversations)} prompts")
    return fits


def _fit_one(fit: Callable[[list[Conversation]], list[PromptFit]], conv: Conversation) -> PromptFit:
    try:
        return fit([conv])[0]
    except Exception as e:  # tokenizer/template failures have many types; the sample carries the message
        return PromptFit(0, error=f"{type(e).__name__}: {e}", error_kind="invalid_prompt")


def generate_fitting(conversations: list[Conversation], fits: list[PromptFit] | None,
                     generate: Callable[[list[Conversation]], list[Generation]]) -> list[Generation]:
    """One Generation per conversation, in order: an error for each prompt that does not fit, the others
    generated together by ``generate`` (which sees exactly the batch it would have seen without them)."""
    if fits is None or all(f.ok for f in fits):
        return generate(conversations)
    keep = [i for i, f in enumerate(fits) if f.ok]
    gens = generate([conversations[i] for i in keep]) if keep else []
    out: list[Generation] = [_error(f) for f in fits]
    for i, g in zip(keep, gens, strict=True):
        out[i] = g
    return out


def _error(fit: PromptFit) -> Generation:
    meta: dict[str, Any] = {"prompt_tokens": fit.tokens, "error_kind": fit.error_kind}
    return Generation(error=fit.error, meta=meta)
