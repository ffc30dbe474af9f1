"""``tiny-random``: a tiny randomly initialised Llama with a byte-level tokenizer, built offline.

For unit tests and for trying a pipeline in seconds: every stage (transforms, backends, LogitLens)
runs on it exactly as on a real model, only the numbers mean nothing.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from safetydrift.context import Context
from safetydrift.errors import SpecError
from safetydrift.params import Params, from_spec, p, with_params
from safetydrift.registry import sources
from safetydrift.spec import ComponentSpec
from safetydrift.types import ResolvedModel

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|im_start|>", "<|im_end|>", "<pad>"]


def byte_tokenizer():  # -> PreTrainedTokenizerFast
    """A byte-level BPE tokenizer with no merges: 256 byte tokens + ChatML specials, no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny(out: Path, layers: int = 2, hidden: int = 64, seed: int = 0, heads: int = 4) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = byte_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@dataclass(frozen=True, kw_only=True)
class TinyParams(Params):
    layers: int = field(default=2, metadata=p("transformer layers", ge=1))
    hidden: int = field(default=64, metadata=p("hidden size (a multiple of heads)", ge=1))
    heads: int = field(default=4, metadata=p("attention heads", ge=1))
    seed: int = field(default=0, metadata=p("initialisation seed", ge=0))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden % self.heads:
            raise SpecError(f"tiny-random: hidden={self.hidden} is not a multiple of heads={self.heads}")


@sources.register("tiny-random", help="tiny-random[:layers=2,hidden=64,seed=0] — a tiny random Llama (tests)")
@with_params(TinyParams)
def tiny_random(spec: ComponentSpec, ctx: Context) -> ResolvedModel:
    params = from_spec(TinyParams, spec)
    layers, hidden, heads, seed = params.layers, params.hidden, params.heads, params.seed
    out = ctx.cache_dir / "sources" / f"tiny-random-l{layers}-h{hidden}-a{heads}-s{seed}"
    if not (out / "done.json").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=out.parent))
        try:
            build_tiny(tmp, layers, hidden, seed, heads)
            (tmp / "done.json").write_text(json.dumps({"layers": layers, "hidden": hidden, "seed": seed}))
            if out.exists():
                shutil.rmtree(out)
            tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return ResolvedModel(
        spec=str(spec), kind="hf", path=out, weights_sha256=ctx.hash_weights(out), provenance={"source": "tiny-random"}
    )
