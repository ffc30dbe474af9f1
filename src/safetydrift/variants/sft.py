"""Supervised fine-tuning on chat examples, shared by `align` and `finetune`.

Examples are rendered with the model's own chat template, the prompt tokens are masked out of the loss
(only the assistant turn is learned, as fine-tuning APIs do) and the answer ends with the EOS token so
the model learns to stop. Training runs through the transformers Trainer (full weights) or peft LoRA,
merged back into full weights so that delta compression applies to every fine-tune alike.

Speed (it decides how many fine-tunes a sweep can afford on a CPU): the LM head is applied only where a
label is learned (:func:`answer_only_loss`, the same mean cross-entropy as the model's own loss, without
the prompt positions' vocabulary-sized logits), and ``precision=auto`` trains with bf16 autocast where
the hardware computes bf16 natively (fp32 master weights and optimizer state; the loss in fp32), else in
fp32. The resolved precision is part of the cache key and the provenance.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from safetydrift.backends.transformers_backend import load_hf, render_chat
from safetydrift.context import Context
from safetydrift.errors import SpecError
from safetydrift.params import Params, p, to_key

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# fixed, not settings: recorded with every build so a future change shows in the manifest
SCHEDULER = "linear"
WARMUP = 0.0  # a fraction < 1 is a ratio of the total steps in transformers 5
WEIGHT_DECAY = 0.0


@dataclass(frozen=True, kw_only=True)
class SFTConfig(Params):
    """The SFT settings of `align` and `finetune`: their ``Params`` subclass this and ``override`` defaults,
    so the spec keys, the defaults and what ``train_sft`` reads are one declaration."""

    method: Literal["full", "lora"] = field(default="full", metadata=p("full weights, or LoRA merged back"))
    lr: float = field(default=5e-5, metadata=p("learning rate", gt=0))
    epochs: float = field(default=3.0, metadata=p("training epochs (fractions allowed)", gt=0))
    batch: int = field(default=10, metadata=p("examples per training step", ge=1))
    max_len: int = field(default=160, metadata=p("tokens per example (longer ones are truncated)", ge=1))
    seed: int = field(default=0, metadata=p("seed of the data, its order and the training", ge=0))
    rank: int = field(default=8, metadata=p("LoRA rank (method=lora)", ge=1))
    alpha: int = field(default=16, metadata=p("LoRA alpha (method=lora)", ge=1))
    targets: tuple[str, ...] = field(default=DEFAULT_LORA_TARGETS, metadata=p("LoRA target modules (method=lora)"))
    optim: Literal["adamw", "sgd"] = field(
        default="adamw",
        metadata=p("optimizer: AdamW, whose first step is lr·sign(g) (a 1-bit delta), or plain SGD (no sign "
                   "structure; give it a larger lr to match the loss)", keyed_unless="adamw"),
    )
    precision: Literal["auto", "fp32", "bf16"] = field(
        default="auto",
        metadata=p("matmul precision of training: bf16 autocast (fp32 master weights) or fp32; auto = bf16 "
                   "where the CPU/GPU computes bf16 natively"),
    )

    def resolved_precision(self) -> str:
        """``fp32`` or ``bf16``: ``auto`` resolved on this machine (it goes into the cache key)."""
        if self.precision != "auto":
            return self.precision
        return "bf16" if native_bf16() else "fp32"

    def to_dict(self) -> dict[str, Any]:
        """The training settings only (not a subclass's data settings), with the fixed schedule."""
        return {**to_key(self, SFTConfig), "precision": self.resolved_precision(), "scheduler": SCHEDULER,
                "warmup": WARMUP, "weight_decay": WEIGHT_DECAY}


def native_bf16() -> bool:
    """Whether bf16 matmuls run natively here: a CUDA device with bf16, or a CPU with AVX512-BF16 or AMX.
    Elsewhere bf16 autocast is emulated and slower than fp32, so ``auto`` keeps fp32 there."""
    try:
        import torch

        if torch.cuda.is_available():
            return bool(torch.cuda.is_bf16_supported())
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return False
    return False


def answer_only_loss(model: Any, batch: dict[str, Any], bf16: bool) -> Any:
    """Mean next-token cross-entropy over the labelled (answer) positions, with the LM head applied only
    there: ``mean_{t: y_t ≠ -100} −log softmax(W_head h_{t−1})[y_t]``, the model's own loss without the
    prompt positions' vocabulary-sized logits (most of a short example's head cost and memory)."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft: LoRA layers stay in
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    with torch.autocast("cpu" if batch["input_ids"].device.type == "cpu" else "cuda", dtype=torch.bfloat16,
                        enabled=bf16):
        hidden = base.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
        logits = base.get_output_embeddings()(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), labels[keep])


def encode_example(tok: Any, messages: list[dict[str, str]], max_len: int) -> dict[str, list[int]] | None:
    """input_ids/labels for one chat example; prompt tokens get label -100. None if nothing to learn."""
    prompt_msgs, answer = messages[:-1], messages[-1]
    if answer["role"] != "assistant":
        raise ValueError("the last message of a training example must be the assistant's")
    system = None
    prompt_text = render_chat(tok, prompt_msgs, system)
    prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids = tok(answer["content"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = (prompt_ids + answer_ids)[:max_len]
    labels = ([-100] * len(prompt_ids) + answer_ids)[:max_len]
    if all(x == -100 for x in labels):
        return None
    return {"input_ids": ids, "labels": labels}


class _Collator:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), n), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        for i, b in enumerate(batch):  # right padding for training
            L = len(b["input_ids"])
            ids[i, :L] = torch.tensor(b["input_ids"])
            labels[i, :L] = torch.tensor(b["labels"])
            mask[i, :L] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def train_sft(
    parent_path: Path, examples: list[dict[str, Any]], cfg: SFTConfig, out_dir: Path, ctx: Context
) -> tuple[Path, list[dict[str, float]], dict[str, Any]]:
    """Fine-tune the checkpoint at ``parent_path`` on ``examples``; save full weights to ``out_dir/hf``."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

    set_seed(cfg.seed)
    model, tok = load_hf(parent_path)
    tok.padding_side = "right"
    rows = [e for ex in examples if (e := encode_example(tok, ex["messages"], cfg.max_len)) is not None]
    if not rows:
        raise SpecError("no trainable examples (all empty after truncation)")
    random.Random(cfg.seed).shuffle(rows)
    model.train()
    trainable = sum(p.numel() for p in model.parameters())
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha,
            lora_dropout=0.0,
            target_modules=list(cfg.targets),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lcfg)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    curve: list[dict[str, float]] = []

    class _Curve(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                curve.append({"step": int(state.global_step), "epoch": float(logs.get("epoch", 0.0)),
                              "loss": float(logs["loss"])})

    steps_per_epoch = math.ceil(len(rows) / cfg.batch)
    args = TrainingArguments(
        output_dir=str(out_dir / "trainer"),
        per_device_train_batch_size=cfg.batch,
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr,
        lr_scheduler_type=SCHEDULER,
        warmup_steps=WARMUP,
        weight_decay=WEIGHT_DECAY,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=ctx.quiet,
        **({"optim": "sgd"} if cfg.optim == "sgd" else {}),  # AdamW: transformers' default, as before
    )
    bf16 = cfg.resolved_precision() == "bf16"

    class _AnswerOnlyTrainer(Trainer):
        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            loss = answer_only_loss(model, inputs, bf16)
            return (loss, None) if return_outputs else loss

    trainer = _AnswerOnlyTrainer(
        model=model, args=args, train_dataset=rows, data_collator=_Collator(tok.pad_token_id), callbacks=[_Curve()]
    )
    ctx.log(f"training ({cfg.method}, {cfg.resolved_precision()}) on {len(rows)} examples, "
            f"{steps_per_epoch} steps/epoch × {cfg.epochs:g} epochs")
    import time

    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    if cfg.method == "lora":
        model = model.merge_and_unload()
    model.eval()
    hf_dir = out_dir / "hf"
    with torch.no_grad():
        model.save_pretrained(hf_dir, safe_serialization=True)
    tok.padding_side = "left"
    tok.save_pretrained(hf_dir)
    import shutil

    shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    steps = int(trainer.state.global_step)
    info = {"examples": len(rows), "trainable_parameters": int(trainable), "sft": cfg.to_dict(),
            "train_seconds": round(train_s, 1), "steps": steps,
            "seconds_per_step": round(train_s / steps, 2) if steps else None,
            "optimizer": type(getattr(trainer.optimizer, "optimizer", trainer.optimizer)).__name__}
    return hf_dir, curve, info

