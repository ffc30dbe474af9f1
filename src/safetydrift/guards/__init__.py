"""Guards: serving-time guardrails. A guard is a generator around a generator, not a weight transform.

``model>guard:input=keyword+classifier,output=llm,judge=[qwen2.5-coder-0.5b-instruct]``

A ``guard:`` step is the last step of a recipe; it builds nothing. :func:`spec.parse_guard_step` turns it
into a :class:`spec.GuardConfig` (kept in ``ResolvedModel.wrappers`` as its JSON dict), and
``backends.open_backend`` puts a :class:`backend.GuardedBackend` around the model's backend. Input
filters look at the last user message before the model is called; a flagged request is answered with the
guard's refusal text ("I'm sorry, but I can't help with that request.") *without calling the model*, and
``Generation.meta["blocked_by"]`` names the filter (``"input:classifier"``). Output filters look at the
model's answer and replace a flagged one with the same refusal (``"output:keyword"``). So a blocked attack
reads as a refusal to every judge, i.e. a failed attack.

Each filter is one module (``registry.guards``): a :class:`base.GuardFilter` subclass that declares the
sides it works on, what it needs (the inner backend, the model, the context) and its settings.

Input filters (``input=a+b``, applied in order; the first that flags wins):

``keyword``     harmful-request cue regexes (case-insensitive; the default list is ``data/keyword_cues.txt``;
                ``keywords=<file>``: one regex a line, ``#`` comments). Crude: it also flags benign
                requests that use alarming words.
``classifier``  the request-harmfulness head of ``judges.classifier`` (MiniLM embeddings + logistic
                regression, trained on the AdvBench train pool vs the train half of our benign
                instructions); flags when p(harmful) >= ``threshold`` (0.5).
``perplexity``  perplexity of the prompt under a small LM (Jain et al. 2023; Alon & Kamfonas 2023):
                the guarded model itself, or ``ppl_model=<recipe>``. Flags gibberish adversarial suffixes
                (GCG). ``ppl_window=w`` uses the maximum over windows of w tokens (0 = whole prompt).
                ``ppl_threshold=auto`` (default) is the largest perplexity of our calibration prompts
                (the AdvBench train pool and the benign train half), computed once per model and cached,
                so ordinary harmful and benign requests pass and only outliers are flagged.
``smoothllm``   SmoothLLM (Robey et al. 2023): ``q`` (5) copies of the prompt with a fraction ``p`` (0.1)
                of characters swapped for random printable ones are sent to the model (at most
                ``smooth_tokens`` (32) new tokens each); if most answers are refusals (the keyword
                judge's strings), the request is refused. Otherwise the original prompt is answered.

Output filters (``output=a+b``):

``keyword``     judges the answer's content: no refusal string and a harmful cue in the answer itself.
                ``openers=project`` also flags a compliance opener ("Sure, here is", "Step 1") to a request
                with a cue: that is TAP's target string and our own fine-tuning template, so it is off by
                default (it made a guarded harmful fine-tune read 0% ASR before anything was measured).
``classifier``  the ``classifier`` judge (p(answer complies) >= ``out_threshold``, 0.5).
``llm``         an LLM judge on any backend, ``judge=<recipe>`` (e.g. ``judge=[openai:http://...#m]``),
                asked with a Llama-Guard-style prompt written for safetydrift (``data/llm_guard_prompt.txt``)
                to answer "safe" or "unsafe"; an answer that is neither counts as ``on_unparsed``
                (``safe``; or ``unsafe``).

Each filter's settings are its typed ``Params`` (``safetydrift guards --params``): one rule for types,
ranges and defaults. ``safetydrift guard-eval`` (:mod:`evaluate`) measures every configuration on material
no filter was built from (:mod:`heldout`: Do-Not-Answer, in-the-wild jailbreak templates, benign
look-alikes).

Every generation records the time the guard added in ``meta["guard_latency_s"]`` (batch costs split
evenly over the batch) and ``latency_s`` includes it. Filter models, heads and an ``auto`` perplexity
threshold are loaded when the guard is opened, so this is the per-request cost, not a one-time load. A
filter that fails turns its requests into ``Generation(error=...)``, never an exception.
"""
