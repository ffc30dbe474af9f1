"""The shared half of a local backend: context checks and per-conversation seeds, written once.

A backend that generates on this machine (transformers, llama.cpp, vLLM) only says how to count a prompt
(``fit``) and how to generate a list of conversations that fit (``_generate_all``); this base turns a
prompt too long for the context into one per-sample error and keeps each conversation's seed attached to
it, so a batch's composition never changes what one conversation samples.

It also memoises answers within a process: a conversation asked again with the same settings and the same
seed (or greedily) gets the answer it got the first time, without generating. The guarded variant of a
model asks exactly the questions its guard lets through, so its answers cost nothing when the unguarded
variant ran first. Unseeded sampling is never memoised (two samples must differ), nor is a failed answer.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import ClassVar

from safetydrift.types import Conversation, Generation, GenerationConfig, PromptFit

#: answers remembered per backend (least recently used dropped first): a TAP run of 300 trees asks ~5,000
MEMO_SIZE = 50_000


class LocalBackend:
    context_length: int | None = None
    #: pass seeds to ``_generate_all`` only when sampling (greedy decoding needs none)
    seeds_only_when_sampling: ClassVar[bool] = False

    def fit(self, conversations: list[Conversation], config: GenerationConfig, reserve: int = 1) -> list[PromptFit]:
        raise NotImplementedError

    def _generate_all(self, conversations: list[Conversation], config: GenerationConfig,
                      seeds: list[int] | None = None) -> list[Generation]:
        raise NotImplementedError

    def generate(self, conversations: list[Conversation], config: GenerationConfig) -> list[Generation]:
        return self._generate(conversations, config, None)

    def generate_seeded(self, conversations: list[Conversation], config: GenerationConfig,
                        seeds: list[int]) -> list[Generation]:
        """Conversation i sampled from ``seeds[i]`` alone, whatever else shares its batch."""
        if len(seeds) != len(conversations):
            raise ValueError(f"{len(seeds)} seeds for {len(conversations)} conversations")
        sampling = config.temperature > 0 or not self.seeds_only_when_sampling
        return self._generate(conversations, config, list(seeds) if sampling else None)

    def forget(self) -> None:
        """Drop the remembered answers (a timing run must generate, not recall)."""
        self.__dict__.pop("_memo", None)

    def _generate(self, conversations: list[Conversation], config: GenerationConfig,
                  seeds: list[int] | None) -> list[Generation]:
        if seeds is None and config.temperature > 0:
            return self._generate_new(conversations, config, seeds)
        memo: OrderedDict[str, Generation] = self.__dict__.setdefault("_memo", OrderedDict())
        keys = [_memo_key(c, config, None if seeds is None else seeds[i]) for i, c in enumerate(conversations)]
        todo = [i for i, k in enumerate(keys) if k not in memo]
        for k in keys:
            if k in memo:
                memo.move_to_end(k)  # least recently used first out
        fresh: dict[int, Generation] = {}
        if todo:
            made = self._generate_new([conversations[i] for i in todo], config,
                                      None if seeds is None else [seeds[i] for i in todo])
            for i, g in zip(todo, made, strict=True):
                fresh[i] = g
                if g.ok:  # a failure is returned, never remembered: the next request tries again
                    memo[keys[i]] = replace(g, meta=dict(g.meta))  # a copy: callers may annotate theirs
        out = [fresh[i] if i in fresh else replace(memo[k], meta={**memo[k].meta, "memo": True})
               for i, k in enumerate(keys)]
        while len(memo) > MEMO_SIZE:  # bounded: a long-lived server must not grow without end
            memo.popitem(last=False)
        return out

    def _generate_new(self, conversations: list[Conversation], config: GenerationConfig,
                      seeds: list[int] | None) -> list[Generation]:
        from safetydrift.backends.context_window import fit_or_errors, generate_fitting

        fits = None
        if self.context_length is not None and conversations:
            fits = fit_or_errors(lambda convs: self.fit(convs, config), conversations)
        if seeds is not None and fits is not None:
            seeds = [s for s, f in zip(seeds, fits, strict=True) if f.ok]  # the conversations generated
        return generate_fitting(conversations, fits, lambda convs: self._generate_all(convs, config, seeds))


def _memo_key(conversation: Conversation, config: GenerationConfig, seed: int | None) -> str:
    import json
    from dataclasses import asdict

    return json.dumps([conversation, asdict(config), seed], sort_keys=True, default=str)
