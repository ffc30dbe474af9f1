"""LogitLens at the first response position: at which layer does a model decide to refuse?

Following Liu et al. (2024, "Quantized delta weight is safety keeper"), every layer's residual stream
is read out through the model's own final norm and unembedding:

    x            prompt, rendered with the model's chat template (``render_chat``, add_generation_prompt)
    t            the last prompt position; its next-token distribution is the first response token
    h_ℓ          residual stream at position t after ℓ decoder layers (ℓ = 0 is the embeddings, ℓ = L the
                 last layer's output, *before* the final norm)
    p_ℓ          softmax(W_U · norm_final(h_ℓ))                   (+ the model's logit soft-capping, if any)
    m_R(ℓ)       Σ_{v ∈ R} p_ℓ[v]     refusal mass     (R = first tokens of "I", "Sorry", "As", …)
    m_C(ℓ)       Σ_{v ∈ C} p_ℓ[v]     compliance mass  (C = first tokens of "Sure", "Here", "Step", …)

reported as the mean over prompts (per-prompt values are kept), together with the top-k tokens of the
prompt-averaged distribution  p̄_ℓ = mean_x p_ℓ(x)  for a heatmap.

Which residual is h_ℓ. For ℓ < L, h_ℓ = ``hidden_states[ℓ]``: the embedding output (ℓ = 0), then the
output of decoder layer ℓ (the tests check each against a forward hook on ``model.model.layers[ℓ-1]``).
The number of readouts is ``len(hidden_states)``, not the config's ``num_hidden_layers`` (multimodal
configs nest it in ``text_config``); where the (text) config states a layer count it is only cross-checked.
The final layer: transformers usually overwrites ``hidden_states[-1]`` with ``last_hidden_state``, which
has already been through the final norm (unless ``config.tie_last_hidden_states`` is off), so norming it
would apply the norm twice or not, depending on the model. We therefore never use ``hidden_states[-1]``:
a forward hook on the final norm module captures its *input* (the raw residual h_L), and h_L goes through
the same ``norm_final`` → ``W_U`` path as every other layer. Hence p_L is, by construction, the model's
real next-token distribution; each run checks this against the model's actual logits and records the
largest difference (``final_layer_max_abs_diff``), and the tests require it to be < 1e-5.

Caveat on the token sets: a first token is only a proxy for what the answer does. "I" starts "I'm sorry"
and also "I'd be happy to help", "As" starts "As an AI…" and "As a first step…", "No" starts "No problem".
Only a word's first token counts ("Unfortunately" → "Un" in many BPE vocabularies, and "Un" also starts
"Understood"). The sets are configurable, a token in both sets is dropped from both (so no mass is
counted twice), and a tokenizer that splits words into bytes (the tiny test tokenizer) collapses many
words onto one token. Leading-space variants (" I") are off by default: the generation prompt of the
usual chat templates ends with a newline, so a response's first token has no leading space, while
" I"/" To"/" As" are frequent mid-sentence tokens (see ``first_token_ids``).

Here: the token sets (``token_sets``), final-norm discovery (``find_final_norm``), the lens of one loaded
model (``logit_lens``) and of several recipes, one model in memory at a time (``run_logitlens``). The
figures are in :mod:`safetydrift.analysis.lens_plots`.
"""

from __future__ import annotations

import gc
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

# the figures, re-exported for existing importers (``from safetydrift.analysis.logitlens import plot_panels``)
from rich.markup import escape

from safetydrift.analysis.lens_plots import plot_panels, plot_topk_heatmap, token_label  # noqa: F401
from safetydrift.errors import SafetyDriftError, UnsupportedError
from safetydrift.types import Conversation, Item, text_id

if TYPE_CHECKING:
    from safetydrift.context import Context

DEFAULT_REFUSAL_WORDS: tuple[str, ...] = (
    "I", "I'm", "Sorry", "As", "Unfortunately", "No", "Cannot", "Apologies", "My apologies",
)
DEFAULT_COMPLIANCE_WORDS: tuple[str, ...] = (
    "Sure", "Here", "Certainly", "Of course", "Step", "1", "To", "Absolutely", "Okay", "Yes", "First", "Great",
)
# Where the final norm lives in common architectures, relative to the base model (or the causal-LM wrapper).
NORM_ATTRS: tuple[str, ...] = ("norm", "final_layernorm", "ln_f", "final_layer_norm", "norm_f")

PromptLike = str | Item | Conversation


# ------------------------------------------------------------------------------------------- result
@dataclass
class LensResult:
    """LogitLens of one model on a set of prompts. Layer index ℓ = 0 (embeddings) … L (last layer)."""

    model: str
    n_prompts: int
    n_layers: int  # L + 1 readouts
    refusal_mass: list[float]  # mean over prompts, per layer
    compliance_mass: list[float]
    refusal_mass_per_prompt: list[list[float]]  # [prompt][layer]
    compliance_mass_per_prompt: list[list[float]]
    topk: list[list[dict[str, Any]]]  # [layer] -> [{"token", "id", "prob"}] of the prompt-averaged p_ℓ
    refusal_ids: list[int]
    compliance_ids: list[int]
    refusal_tokens: list[str]
    compliance_tokens: list[str]
    refusal_token_mass: list[list[float]]  # [layer][i]: mean p_ℓ of refusal_ids[i] — which tokens carry the mass
    compliance_token_mass: list[list[float]]
    prompt_ids: list[str]
    final_layer_max_abs_diff: float  # max |p_L − softmax(model logits)| over prompts and vocabulary
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return list(range(self.n_layers))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LensResult:
        return cls(**d)


# ---------------------------------------------------------------------------------------- token sets
def _response_prefix(tok: Any) -> str | None:
    from safetydrift.backends.transformers_backend import render_chat

    try:
        return render_chat(tok, [{"role": "user", "content": "Hi"}], None)
    except Exception:  # no usable chat template: fall back to bare encodings
        return None


def first_token_ids(tok: Any, word: str, leading_space: bool = False) -> set[int]:
    """First token ids of ``word`` as a response may start with it.

    Only the *first* token of each encoding is kept, because the lens reads one next-token distribution:
    a multi-token word stands for its first piece ("Unfortunately" → "Un"), which may also start other
    words. ``token_sets`` drops a piece claimed by both the refusal and compliance sets.

    Encodings: in context (right after the generation prompt — what the model actually emits) and bare
    ``word``; SentencePiece tokenizers (Llama 2, Mistral) usually mark a word start ("▁I") even bare.
    ``leading_space=True`` adds ``" " + word``, for chat templates whose response follows a space. It is
    off by default: the usual templates end the generation prompt with a newline, so with byte-level BPE
    (Llama 3, SmolLM, Qwen) a response never starts with a space, and " I" is a frequent mid-sentence
    token whose intermediate-layer mass is not a refusal signal. A first token that is only whitespace is
    skipped: it says nothing about refusal or compliance.
    """
    ids: set[int] = set()

    def take(seq: list[int]) -> None:
        if seq and tok.decode([seq[0]]).strip():
            ids.add(int(seq[0]))

    prefix = _response_prefix(tok)
    if prefix is not None:
        p = tok(prefix, add_special_tokens=False)["input_ids"]
        full = tok(prefix + word, add_special_tokens=False)["input_ids"]
        if full[: len(p)] == p:
            take(full[len(p):])
    for variant in (word, " " + word) if leading_space else (word,):
        take(tok(variant, add_special_tokens=False)["input_ids"])
    return ids


def token_sets(
    tok: Any,
    refusal_words: Sequence[str] | None = None,
    compliance_words: Sequence[str] | None = None,
    leading_space: bool = False,
) -> tuple[list[int], list[int]]:
    """(refusal ids, compliance ids): sorted, deduplicated, and disjoint (shared ids dropped from both)."""
    rw = DEFAULT_REFUSAL_WORDS if refusal_words is None else refusal_words
    cw = DEFAULT_COMPLIANCE_WORDS if compliance_words is None else compliance_words
    r = set().union(*(first_token_ids(tok, w, leading_space) for w in rw if w)) if rw else set()
    c = set().union(*(first_token_ids(tok, w, leading_space) for w in cw if w)) if cw else set()
    both = r & c
    return sorted(r - both), sorted(c - both)


# ------------------------------------------------------------------------------ norm and unembedding
def _resolve_path(root: Any, dotted: str) -> Any:
    obj = root
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def find_final_norm(model: Any, norm_path: str | None = None) -> tuple[Any, str]:
    """The final norm module and where it was found.

    ``norm_path`` (dotted, relative to the causal-LM model, e.g. ``"model.norm"``) overrides the search;
    otherwise the base model (``get_decoder()``, ``base_model_prefix``, ``model``, ``transformer``) is
    searched for ``norm``/``final_layernorm``/``ln_f``/``final_layer_norm``/``norm_f``.
    """
    if norm_path:
        try:
            return _resolve_path(model, norm_path), norm_path
        except AttributeError:
            raise UnsupportedError(f"logitlens: model has no module {norm_path!r}") from None
    bases: list[tuple[str, Any]] = []
    prefix = getattr(model, "base_model_prefix", "") or ""
    for name in (prefix, "model", "transformer", "gpt_neox", "decoder"):
        if name and hasattr(model, name):
            bases.append((name, getattr(model, name)))
    if hasattr(model, "get_decoder"):
        try:
            dec = model.get_decoder()
            if dec is not None and dec is not model:
                bases.append(("get_decoder()", dec))
        except Exception:
            pass
    bases.append(("", model))
    # encoder-decoder style nesting, e.g. model.decoder.final_layer_norm
    bases += [(f"{n}.decoder" if n else "decoder", b.decoder) for n, b in list(bases) if hasattr(b, "decoder")]
    for base_name, base in bases:
        for attr in NORM_ATTRS:
            mod = getattr(base, attr, None)
            if mod is not None and callable(mod):
                return mod, f"{base_name}.{attr}" if base_name else attr
    raise UnsupportedError(
        f"logitlens: cannot find the final norm of {type(model).__name__} (tried {', '.join(NORM_ATTRS)}); "
        "pass norm_path='dotted.path.to.norm'"
    )


def _softcap(model: Any) -> float | None:
    cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    return float(cap) if cap else None


# -------------------------------------------------------------------------------------------- lens
def _conversation(p: PromptLike) -> Conversation:
    if isinstance(p, Item):
        return [{"role": "user", "content": p.prompt}]
    if isinstance(p, str):
        return [{"role": "user", "content": p}]
    return list(p)


def _prompt_id(p: PromptLike) -> str:
    if isinstance(p, Item):
        return p.id
    if isinstance(p, str):
        return text_id(p)
    return text_id("\n".join(f"{m['role']}: {m['content']}" for m in p))


def _position_ids_support(model: Any) -> bool | None:
    """Whether ``model.forward`` takes ``position_ids``: True if named, None if it may via ``**kwargs``.

    Decorated, hooked (accelerate) and remote-code forwards often take everything through ``**kwargs``;
    such a model is tried with position ids first (see ``logit_lens``), since without them positions
    count left padding and results depend on the batch.
    """
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # no introspectable signature
        return None
    if "position_ids" in params:
        return True
    return None if any(q.kind is inspect.Parameter.VAR_KEYWORD for q in params.values()) else False


def _declared_layers(model: Any) -> int | None:
    """The decoder layer count the (text) config declares, if any — only a cross-check of hidden_states."""
    cfg = getattr(model, "config", None)
    get_text = getattr(cfg, "get_text_config", None)
    if callable(get_text):
        try:
            cfg = get_text(decoder=True)
        except TypeError:
            cfg = get_text()
    n = getattr(cfg, "num_hidden_layers", None)
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def logit_lens(
    model: Any,
    tok: Any,
    prompts: Sequence[PromptLike],
    refusal_ids: Sequence[int],
    compliance_ids: Sequence[int],
    top_k: int = 5,
    system_prompt: str | None = None,
    batch_size: int = 8,
    *,
    norm_path: str | None = None,
    name: str = "",
    progress: Callable[[int], None] | None = None,
) -> LensResult:
    """LogitLens of ``model`` at the first response position of each prompt (see the module docstring).

    Prompts are rendered with ``render_chat`` (as generation does), left-padded and batched; position ids
    are computed from the attention mask and passed whenever ``forward`` accepts them (named, or through
    ``**kwargs`` unless that raises), so the result does not depend on ``batch_size``; ``meta`` records
    whether they were passed. An id in both ``refusal_ids`` and ``compliance_ids`` is dropped from both
    (as ``token_sets`` does), so no probability is counted as refusal and compliance at once. ``progress``
    is called with the number of prompts done after each batch.
    """
    import torch

    from safetydrift.backends.transformers_backend import render_chat

    if not prompts:
        raise SafetyDriftError("logitlens: no prompts")
    if top_k < 1 or batch_size < 1:
        raise SafetyDriftError("logitlens: top_k and batch_size must be at least 1")
    norm, norm_where = find_final_norm(model, norm_path)
    unembed = model.get_output_embeddings()
    if unembed is None:
        raise UnsupportedError(f"logitlens: {type(model).__name__} has no output embeddings (LM head)")
    cap = _softcap(model)
    device = next(model.parameters()).device
    dtype = next(unembed.parameters()).dtype
    vocab = int(unembed.weight.shape[0])
    r_set, c_set = {int(i) for i in refusal_ids}, {int(i) for i in compliance_ids}
    shared = sorted(r_set & c_set)
    r_idx = torch.tensor(sorted(r_set - c_set), dtype=torch.long)
    c_idx = torch.tensor(sorted(c_set - r_set), dtype=torch.long)
    if any(i < 0 or i >= vocab for i in r_set | c_set):
        raise SafetyDriftError("logitlens: a token id is outside the LM head's vocabulary")
    accepts_pos = _position_ids_support(model)  # None: only **kwargs, settled by the first call
    declared = _declared_layers(model)
    n_layers: int | None = None  # len(hidden_states), known after the first batch

    def lens(h: torch.Tensor) -> torch.Tensor:
        """p = softmax(W_U · norm_final(h)) for h of shape [..., hidden]."""
        logits = unembed(norm(h.to(dtype))).float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return torch.softmax(logits, dim=-1)

    captured: dict[str, torch.Tensor] = {}

    def grab_norm_input(_mod: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = args[0] if args else next(iter(kwargs.values()))
        captured["h_L"] = x[:, -1, :].detach()

    texts = [render_chat(tok, _conversation(p), system_prompt) for p in prompts]
    r_rows: list[list[float]] = []
    c_rows: list[list[float]] = []
    p_sum: torch.Tensor | None = None
    max_diff = 0.0
    old_side = tok.padding_side
    tok.padding_side = "left"  # the last column is every prompt's last token
    handle = norm.register_forward_pre_hook(grab_norm_input, with_kwargs=True)
    try:
        for start in range(0, len(texts), batch_size):
            enc = tok(texts[start : start + batch_size], return_tensors="pt", padding=True,
                      add_special_tokens=False)
            ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            kw: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "output_hidden_states": True}
            if accepts_pos is not False:  # as generate() does: positions count real tokens only
                kw["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
            captured.clear()
            with torch.no_grad():
                try:
                    out = model(**kw, use_cache=False)
                except TypeError as e:
                    if accepts_pos is not None or "position_ids" not in str(e):
                        raise
                    accepts_pos = False  # **kwargs did not reach a parameter of that name
                    del kw["position_ids"]
                    captured.clear()
                    out = model(**kw, use_cache=False)
                accepts_pos = "position_ids" in kw
                hs = out.hidden_states
                if n_layers is None:
                    n_layers = len(hs)
                    # a model that does not record the embeddings would shift every layer by one
                    if n_layers < 2 or (declared is not None and n_layers != declared + 1):
                        raise UnsupportedError(
                            f"logitlens: got {n_layers} hidden states for {declared} declared layers "
                            "(expected the embeddings plus one per layer)"
                        )
                    p_sum = torch.zeros(n_layers, vocab, dtype=torch.float64)
                elif len(hs) != n_layers:
                    raise UnsupportedError(f"logitlens: got {len(hs)} hidden states, then {n_layers}")
                if "h_L" not in captured:
                    raise UnsupportedError(f"logitlens: the final norm ({norm_where}) was not called")
                # h_0 … h_{L-1} from hidden_states; h_L is the norm input (hidden_states[-1] may be normed)
                h = torch.stack([x[:, -1, :] for x in hs[:-1]] + [captured["h_L"]])  # [L+1, B, H]
                p = lens(h)  # [L+1, B, V]
                real = torch.softmax(out.logits[:, -1, :].float(), dim=-1)
                max_diff = max(max_diff, float((p[-1] - real).abs().max()))
            r_mass = p[:, :, r_idx.to(p.device)].sum(-1) if len(r_idx) else torch.zeros(p.shape[:2])
            c_mass = p[:, :, c_idx.to(p.device)].sum(-1) if len(c_idx) else torch.zeros(p.shape[:2])
            r_rows.extend(r_mass.T.tolist())
            c_rows.extend(c_mass.T.tolist())
            assert p_sum is not None
            p_sum += p.sum(1).double().cpu()
            del out, hs, h, p
            if progress is not None:
                progress(min(start + batch_size, len(texts)))
    finally:
        handle.remove()
        tok.padding_side = old_side

    assert n_layers is not None and p_sum is not None
    n = len(texts)
    p_mean = p_sum / n
    top_p, top_i = p_mean.topk(min(top_k, vocab), dim=-1)
    topk = [
        [{"token": tok.decode([int(i)]), "id": int(i), "prob": float(q)} for q, i in zip(ps, is_, strict=True)]
        for ps, is_ in zip(top_p.tolist(), top_i.tolist(), strict=True)
    ]
    mean = lambda rows: [math.fsum(col) / n for col in zip(*rows, strict=True)]  # noqa: E731
    return LensResult(
        model=name or type(model).__name__,
        n_prompts=n,
        n_layers=n_layers,
        refusal_mass=mean(r_rows),
        compliance_mass=mean(c_rows),
        refusal_mass_per_prompt=r_rows,
        compliance_mass_per_prompt=c_rows,
        topk=topk,
        refusal_ids=[int(i) for i in r_idx.tolist()],
        compliance_ids=[int(i) for i in c_idx.tolist()],
        refusal_tokens=[tok.decode([int(i)]) for i in r_idx.tolist()],
        compliance_tokens=[tok.decode([int(i)]) for i in c_idx.tolist()],
        refusal_token_mass=p_mean[:, r_idx].tolist(),
        compliance_token_mass=p_mean[:, c_idx].tolist(),
        prompt_ids=[_prompt_id(p) for p in prompts],
        final_layer_max_abs_diff=max_diff,
        meta={
            "final_norm": norm_where,
            "final_norm_type": type(norm).__name__,
            "lm_head_type": type(unembed).__name__,
            "logit_softcapping": cap,
            "top_k": top_k,
            "system_prompt": system_prompt,
            "position_ids": bool(accepts_pos),  # False: positions may count left padding (batch-dependent)
            "dropped_shared_ids": shared,
            "position": "last prompt token (first response token's distribution)",
            "last_layer": "input of the final norm (hook), not hidden_states[-1] (usually already normed)",
        },
    )


# ------------------------------------------------------------------------------------ many variants
def run_logitlens(
    recipes: Sequence[str],
    prompts: Sequence[PromptLike],
    ctx: Context,
    *,
    refusal_words: Sequence[str] | None = None,
    compliance_words: Sequence[str] | None = None,
    top_k: int = 5,
    system_prompt: str | None = None,
    batch_size: int = 8,
    dtype: str = "float32",
    norm_path: str | None = None,
    leading_space: bool = False,
    show_progress: bool = True,
) -> dict[str, LensResult]:
    """LogitLens for each recipe in turn (resolved/built via ``ctx.resolve``), one model in memory at a time.

    Token sets are derived from each variant's own tokenizer.
    """
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from safetydrift.backends.transformers_backend import load_hf

    results: dict[str, LensResult] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=ctx.console, disable=ctx.quiet or not show_progress, transient=False) as bar:
        models_task = bar.add_task("logitlens: models", total=len(recipes))
        for recipe in recipes:
            resolved = ctx.resolve(recipe)
            if resolved.kind != "hf" or resolved.path is None:
                raise UnsupportedError(
                    f"logitlens needs a local transformers checkpoint; '{recipe}' is {resolved.kind}"
                )
            if resolved.wrappers:
                raise UnsupportedError(
                    f"logitlens reads the weights; '{recipe}' ends in a serving guard, which it cannot see — "
                    "drop the guard from the recipe"
                )
            model, tok = load_hf(resolved.path, ctx.device, dtype)
            try:
                r_ids, c_ids = token_sets(tok, refusal_words, compliance_words, leading_space)
                task = bar.add_task(f"  {escape(str(recipe))}", total=len(prompts))
                res = logit_lens(
                    model, tok, prompts, r_ids, c_ids, top_k=top_k, system_prompt=system_prompt,
                    batch_size=batch_size, norm_path=norm_path, name=str(recipe),
                    progress=lambda done, t=task: bar.update(t, completed=done),
                )
                res.meta.update(path=str(resolved.path), weights_sha256=resolved.weights_sha256, dtype=dtype,
                                leading_space=leading_space)
                if not res.meta["position_ids"] and batch_size > 1:
                    ctx.log(
                        f"[yellow]logitlens: '{recipe}' does not take position_ids: with left padding its "
                        "positions may count pad tokens, so results can depend on --batch-size[/yellow]"
                    )
                if res.final_layer_max_abs_diff > 1e-3:
                    ctx.log(
                        f"[yellow]logitlens: '{recipe}': last-layer lens differs from the model's logits by "
                        f"{res.final_layer_max_abs_diff:.2e} (an unhandled output transform?)[/yellow]"
                    )
                results[str(recipe)] = res
            finally:
                del model, tok
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            bar.advance(models_task)
    return results

