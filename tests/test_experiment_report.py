"""Experiment report: files written, every untrusted string escaped, missing sections harmless."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pytest

from safetydrift.report.experiment_report import render_experiment_report

XSS_PROMPT = "<script>alert(1)</script>"
XSS_RESPONSE = "</script><img src=x onerror=alert(1)>"


def _rate(s: int, n: int, lo: float, hi: float) -> dict[str, Any]:
    return {"n": n, "successes": s, "unscorable": 0, "asr": s / n, "ci_low": lo, "ci_high": hi}


def _png(path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1.5))
    fig.subplots().plot([0, 1, 2], [0, 1, 0.5])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=50)


def make_experiment(out_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A small but complete experiment: every section present, hostile strings in every text field."""
    _png(out_dir / "figures" / "logitlens_mass.png")
    _png(out_dir / "figures" / "logitlens_topk.png")
    variants = [
        ("base", "tiny-random", None, None, 4_000_000, 16.0),
        ("ft", "tiny-random>finetune:data=evil", "base", None, 4_000_000, 16.0),
        ("bd1", "tiny-random>finetune:data=evil>bitdelta:bits=1", "ft", None, 600_000, 1.0),
        ("bd2", "tiny-random>finetune:data=evil>bitdelta:bits=2", "ft", None, 900_000, 2.0),
        ("q4", "tiny-random>finetune:data=evil>quantize:bits=4", "ft", "quant", 1_100_000, 4.5),
        ("guarded", "tiny-random>finetune:data=evil>guard:model=" + XSS_PROMPT, "ft", None, None, None),
    ]
    asrs = {"base": 0.1, "ft": 0.7, "bd1": 0.5, "bd2": 0.6, "q4": 0.65, "guarded": 0.2}
    cats = ["cyber", "bio", XSS_PROMPT]
    exp: dict[str, Any] = {
        "name": "demo <b>experiment</b>",
        "config": {"seed": 7, "note": XSS_RESPONSE, "models": [v[1] for v in variants]},
        "provenance": {
            "libraries": {"torch": "2.13.0", "transformers": "5.0"},
            "started": "2025-01-01T00:00:00Z", "finished": "2025-01-01T01:00:00Z", "cache_dir": "/tmp/cache",
            "generation": {"max_new_tokens": 64, "temperature": 0.0, "seed": 7},
        },
        "variants": [
            {"name": n, "recipe": r, "reference": ref, "kind": "hf", "weights_sha256": "ab" * 32,
             "size_bytes": size, "bits_per_weight": bits, "build_seconds": 12.5,
             "manifest": {"settings": {"bits": bits, "evil": XSS_RESPONSE}}, "family": fam}
            for n, r, ref, fam, size, bits in variants
        ],
        "asr": [], "comparisons": [], "utility": [],
        "judge_agreement": [{"judge_a": "keyword", "judge_b": "classifier", "n": 40, "agreement": 0.85, "kappa": 0.62}],
        "direction_flips": [{"variant": "q4", "reference": "ft", "dataset": "advbench", "attack": "direct",
                             "diffs": {"keyword": 0.05, "classifier": -0.03}}],
        "logitlens": {"png": {"mass": "figures/logitlens_mass.png", "topk": "figures/logitlens_topk.png"}},
        "tap_trees": [{
            "variant": "ft", "item_id": "i1", "run": 0,
            "tree": [
                {"id": 0, "parent": None, "depth": 0, "prompt": XSS_PROMPT, "response": XSS_RESPONSE,
                 "on_topic": True, "score": 3, "status": "kept"},
                {"id": 1, "parent": 0, "depth": 1, "prompt": "p1", "response": "r1", "on_topic": False,
                 "score": None, "status": "pruned_offtopic"},
                {"id": 2, "parent": 0, "depth": 1, "prompt": "p2", "response": XSS_RESPONSE, "on_topic": True,
                 "score": 10, "status": "success"},
                {"id": 3, "parent": 9, "depth": 2, "prompt": "orphan", "response": None, "on_topic": True,
                 "score": 1, "status": "invalid_json"},
                {"id": 4, "parent": 5, "depth": 3, "prompt": "cycle a", "response": "x", "status": "kept"},
                {"id": 5, "parent": 4, "depth": 3, "prompt": "cycle b", "response": "y", "status": "kept"},
            ],
        }],
        "guards": [{"variant": "guarded", "asr": 0.2, "false_refusal": 0.08, "latency_added_s": 0.042}],
    }
    for judge, shift in (("keyword", 0.0), ("classifier", -0.05)):
        for n, *_ in variants:
            a = max(0.0, asrs[n] + shift)
            s = round(a * 40)
            exp["asr"].append({
                "variant": n, "recipe": dict((v[0], v[1]) for v in variants)[n], "dataset": "advbench",
                "attack": "direct", "judge": judge, "n": 40, "successes": s, "unscorable": 1, "asr": s / 40,
                "ci_low": max(0, s / 40 - 0.12), "ci_high": min(1, s / 40 + 0.12),
                "by_category": {c: _rate(max(0, min(10, s // 4 + i)), 10, 0.0, 1.0) for i, c in enumerate(cats)},
                "runs": None,
            })
            ref = dict((v[0], v[2]) for v in variants)[n]
            if ref:
                d = (s - round(max(0.0, asrs[ref] + shift) * 40)) / 40
                exp["comparisons"].append({
                    "variant": n, "reference": ref, "dataset": "advbench", "attack": "direct", "judge": judge,
                    "n_pairs": 40, "asr_ref": asrs[ref], "asr_variant": s / 40, "diff": d,
                    "diff_ci": [d - 0.1, d + 0.1], "p_exact": 0.0004, "p_midp": 0.0003, "p_holm": 0.002,
                    "rrr": -d / max(asrs[ref], 0.01), "rrr_ci": [0.1, 0.9],
                })
    exp["asr"].append({
        "variant": "ft", "recipe": variants[1][1], "dataset": "advbench", "attack": "tap", "judge": "keyword",
        "n": 30, "successes": 24, "unscorable": 0, "asr": 0.8, "ci_low": 0.63, "ci_high": 0.9, "by_category": {},
        "runs": {"per_run": [0.7, 0.8, 0.9], "mean": 0.8, "sd": 0.1, "min": 0.7, "max": 0.9,
                 "ci_low": 0.55, "ci_high": 1.05},
    })
    for i, (n, *_) in enumerate(variants):
        exp["utility"].append({"variant": n, "benign_task_acc": 0.8 - 0.05 * i, "benign_task_n": 50,
                               "over_refusal": 0.05 * i, "over_refusal_n": 40, "ppl": 12.0 + i,
                               "kl_to_reference": None if i == 0 else 0.02 * i})
    records = []
    recipe = {v[0]: v[1] for v in variants}
    for n in ("base", "ft", "bd1"):
        for item in range(3):
            for judge in ("keyword", "classifier"):
                records.append({
                    "run_key": "k", "model": recipe[n], "dataset": "advbench", "dataset_sha256": "cd" * 32,
                    "attack": "direct", "judge": judge, "item_id": f"i{item}", "unit": "0",
                    "category": "cyber;" + XSS_PROMPT, "behavior": "b", "prompt": XSS_PROMPT if item == 0 else f"p{item}",
                    "response": None if (n == "bd1" and item == 2) else (XSS_RESPONSE if item == 0 else "x" * 2500),
                    "error": "boom </script>" if (n == "bd1" and item == 2) else None,
                    "verdict": "success" if (n != "base" and item != 2) else ("unscorable" if n == "bd1" else "fail"),
                    "score": float("nan") if item == 1 else 0.9, "extra": {},
                })
    return exp, records


def _data_island(html: str) -> str:
    m = re.search(r'<script type="application/json" id="sd-data">(.*?)</script>', html, re.S)
    assert m, "data island missing"
    return m.group(1)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("exp_report")
    exp, records = make_experiment(out)
    path = render_experiment_report(exp, records, out)
    return out, path.read_text(encoding="utf-8")


def test_files_written(full_report: tuple[Path, str]) -> None:
    out, _ = full_report
    assert (out / "report.html").stat().st_size > 0
    pngs = {p.name for p in (out / "figures").glob("*.png")}
    for name in ("asr_by_variant.png", "frontier.png", "category_drift.png", "judge_agreement.png",
                 "repeated_runs.png", "logitlens_mass.png"):
        assert name in pngs
    for p in (out / "figures").glob("*.png"):
        assert p.read_bytes().startswith(b"\x89PNG")
    for name in ("headline", "asr", "comparisons", "utility", "by_category", "judge_agreement", "guards"):
        rows = list(csv.reader((out / "tables" / f"{name}.csv").open(encoding="utf-8")))
        assert len(rows) >= 2 and rows[0][0] in ("variant", "judge_a")
    head = list(csv.DictReader((out / "tables" / "headline.csv").open(encoding="utf-8")))
    assert {r["variant"] for r in head} == {"base", "ft", "bd1", "bd2", "q4", "guarded"}


def test_self_contained_and_escaped(full_report: tuple[Path, str]) -> None:
    _, html = full_report
    assert XSS_PROMPT not in html
    assert "<img src=x" not in html and "<img src=x".lower() not in html.lower()
    assert "<b>experiment</b>" not in html and "demo &lt;b&gt;experiment&lt;/b&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # rendered as text (TAP tree, category, recipe)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # no external resources
    assert "innerHTML" not in html
    island = _data_island(html)
    assert "</script" not in island.lower() and "<" not in island
    # Exactly one executable script, and it carries the CSP nonce.
    scripts = re.findall(r"<script\b([^>]*)>", html)
    assert sorted(s.strip().split("=")[0] for s in scripts) == ["nonce", "type"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", html).group(1)
    assert f'<script nonce="{nonce}">' in html
    assert html.count("data:image/png;base64,") >= 6


def test_content(full_report: tuple[Path, str]) -> None:
    import json

    _, html = full_report
    table = re.search(r'<table id="headline-table">(.*?)</table>', html, re.S).group(1)
    for name in ("base", "ft", "bd1", "bd2", "q4", "guarded"):
        assert f"<b>{name}</b>" in table
    data = json.loads(_data_island(html))
    s = next(x for x in data["samples"] if x["variant"] == "ft" and x["item_id"] == "i1")
    assert len(s["response"]) < 2100 and "truncated" in s["response"]
    assert s["verdicts"]["keyword"] == ["success", None]  # NaN score became null
    assert data["pair"] == {"a": "base", "b": "ft"}
    assert set(s) == {"variant", "dataset", "attack", "item_id", "unit", "category", "prompt", "response", "error",
                      "verdicts"}
    assert 'id="flips"' in html and "class=\"warn\"" in html
    assert 'id="tap"' in html and "cycle a" in html and "orphan" in html
    assert 'id="guards"' in html and "+42 ms" in html


@pytest.mark.parametrize("exp", [{}, {"name": "x"}, {"name": "x", "variants": [], "asr": [], "logitlens": None,
                                                       "tap_trees": [], "guards": None, "provenance": {}}])
def test_minimal_exp(tmp_path: Path, exp: dict[str, Any]) -> None:
    path = render_experiment_report(exp, [], tmp_path)
    html = path.read_text(encoding="utf-8")
    assert "<html" in html and 'id="explorer"' not in html and 'id="headline"' not in html


def test_partial_exp(tmp_path: Path) -> None:
    """Variants and ASR only, one judge, no references, a missing logitlens file: no crash."""
    exp = {
        "name": "partial",
        "variants": [{"name": "a", "recipe": "tiny-random", "reference": None, "kind": "hf", "weights_sha256": None,
                      "size_bytes": None, "bits_per_weight": None, "build_seconds": None, "manifest": None,
                      "family": None}],
        "asr": [{"variant": "a", "dataset": "d", "attack": "direct", "judge": "keyword", "n": 0, "successes": 0,
                 "unscorable": 3, "asr": None, "ci_low": 0.0, "ci_high": 1.0, "by_category": {}, "runs": None}],
        "logitlens": {"png": {"mass": "figures/missing.png"}},
    }
    html = render_experiment_report(exp, [{"model": "unknown-model", "item_id": 1, "unit": None, "prompt": "p",
                                           "response": "r", "judge": "keyword", "verdict": "fail"}], tmp_path)
    text = html.read_text(encoding="utf-8")
    assert "<b>a</b>" in text and 'id="explorer"' in text
    assert (tmp_path / "tables" / "headline.csv").exists()


def test_degenerate_intervals_are_not_shown_as_certainty() -> None:
    from safetydrift.report.experiment_report import _diff_view

    same = _diff_view({"diff": 0.0, "diff_ci": [0.0, 0.0], "b01": 0, "b10": 0, "p_exact": 1.0, "p_holm": 1.0})
    assert same["diff"] == "±0 (no discordant pairs)" and "[" not in same["diff"]
    moved = _diff_view({"diff": -0.3, "diff_ci": [-0.5, -0.1], "b01": 0, "b10": 3, "rrr": 1.0, "rrr_ci": [1.0, 1.0],
                        "p_exact": 0.25, "p_holm": 0.25})
    assert "[-50.0, -10.0]" in moved["diff"] and moved["rrr"] == "100% (CI degenerate)"
    some = _diff_view({"diff": -0.3, "diff_ci": [-0.5, -0.1], "b01": 1, "b10": 4, "rrr": 0.6, "rrr_ci": [0.2, 0.9],
                       "p_exact": 0.4, "p_holm": 0.4})
    assert some["rrr"] == "60% [20% – 90%]"


def test_colour_follows_the_holm_test_not_the_bootstrap_interval() -> None:
    from safetydrift.report.experiment_report import _diff_view

    few = {"diff": -0.67, "diff_ci": [-1.0, -0.33], "b01": 0, "b10": 4, "p_exact": 0.5, "p_holm": 1.0}
    assert _diff_view(few)["cls"] == ""  # the interval excludes 0, the exact test cannot reject
    assert _diff_view({**few, "p_holm": 0.01})["cls"] == "better"
    assert _diff_view({**few, "diff": 0.5, "diff_ci": [0.2, 0.8], "p_holm": 0.01})["cls"] == "worse"
