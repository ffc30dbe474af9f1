"""Experiment report: files written, every untrusted string escaped, empty sections harmless, typed input."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from safetydrift.records import Comparison, EvalSummary, ExperimentResult, Record
from safetydrift.report.experiment_report import render_experiment_report
from safetydrift.report.sections import diff_view

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


def make_experiment_json(out_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A small but complete experiment as experiment.json / results.jsonl data: every section present,
    hostile strings in every text field."""
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
            "timings_s": {"build:base": 1.5, "report": 0.2},
            "datasets": [["advbench", "cd" * 32]],
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
        "logitlens": {"png": {"mass": "figures/logitlens_mass.png", "topk": "figures/logitlens_topk.png"},
                      "variants": ["base", "ft"], "prompts": "advbench50", "limit": 4},
        "tap_trees": [{
            "variant": "ft", "item_id": "i1", "run": "0", "behavior": "b",
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
    recipes = {v[0]: v[1] for v in variants}
    refs = {v[0]: v[2] for v in variants}
    for judge, shift in (("keyword", 0.0), ("classifier", -0.05)):
        for n, *_ in variants:
            a = max(0.0, asrs[n] + shift)
            s = round(a * 40)
            exp["asr"].append({
                "variant": n, "recipe": recipes[n], "dataset": "advbench",
                "attack": "direct", "judge": judge, "n": 40, "successes": s, "unscorable": 1, "asr": s / 40,
                "ci_low": max(0, s / 40 - 0.12), "ci_high": min(1, s / 40 + 0.12),
                "by_category": {c: _rate(max(0, min(10, s // 4 + i)), 10, 0.0, 1.0) for i, c in enumerate(cats)},
                "runs": None,
            })
            ref = refs[n]
            if ref:
                d = (s - round(max(0.0, asrs[ref] + shift) * 40)) / 40
                exp["comparisons"].append({
                    "variant": n, "reference": ref, "dataset": "advbench", "attack": "direct", "judge": judge,
                    "kind": "reference", "n_pairs": 40, "n_items": 40, "test": "mcnemar-exact",
                    "asr_ref": asrs[ref], "asr_variant": s / 40, "diff": d,
                    "diff_ci": [d - 0.1, d + 0.1], "p_exact": 0.0004, "p_midp": 0.0003,
                    "rrr": -d / max(asrs[ref], 0.01), "rrr_ci": [0.1, 0.9], "b01": 1, "b10": 9, "p_holm": 0.002,
                })
    exp["asr"].append({
        "variant": "ft", "recipe": variants[1][1], "dataset": "advbench", "attack": "tap", "judge": "keyword",
        "n": 30, "successes": 24, "unscorable": 0, "asr": 0.8, "ci_low": 0.63, "ci_high": 0.9, "by_category": {},
        "runs": {"per_run": [0.7, 0.8, 0.9], "n": 3, "mean": 0.8, "sd": 0.1, "min": 0.7, "max": 0.9,
                 "ci_low": 0.55, "ci_high": 1.05},
    })
    for i, (n, *_) in enumerate(variants):
        exp["utility"].append({"variant": n, "benign_task_acc": 0.8 - 0.05 * i, "benign_task_n": 50,
                               "over_refusal": 0.05 * i, "over_refusal_n": 40, "ppl": 12.0 + i,
                               "kl_to_reference": None if i == 0 else 0.02 * i})
    records = []
    for n in ("base", "ft", "bd1"):
        for item in range(3):
            for judge in ("keyword", "classifier"):
                records.append({
                    "run_key": "k", "model": recipes[n], "dataset": "advbench", "dataset_sha256": "cd" * 32,
                    "attack": "direct", "judge": judge, "item_id": f"i{item}", "unit": "0",
                    "category": "cyber;" + XSS_PROMPT, "behavior": "b",
                    "prompt": XSS_PROMPT if item == 0 else f"p{item}",
                    "response": None if (n == "bd1" and item == 2) else (XSS_RESPONSE if item == 0 else "x" * 2500),
                    "error": "boom </script>" if (n == "bd1" and item == 2) else None,
                    "verdict": "success" if (n != "base" and item != 2) else ("unscorable" if n == "bd1" else "fail"),
                    "score": float("nan") if item == 1 else 0.9, "extra": {},
                })
    return exp, records


def make_experiment(out_dir: Path) -> tuple[ExperimentResult, list[Record]]:
    """The same experiment as the typed records the report takes (read the way a stored run is read)."""
    exp, records = make_experiment_json(out_dir)
    return ExperimentResult.from_json(exp), [Record.from_json(r) for r in records]


def _comparison(**kw: Any) -> Comparison:
    """A comparison with neutral defaults, for the cell-formatting tests."""
    base: dict[str, Any] = {
        "variant": "v", "reference": "r", "dataset": "d", "attack": "a", "judge": "j", "n_pairs": 10,
        "n_items": 10, "test": "mcnemar-exact", "asr_ref": 0.5, "asr_variant": 0.5, "diff": 0.0, "diff_ci": None,
        "p_exact": 1.0, "p_midp": 1.0, "rrr": None, "rrr_ci": None, "b01": 0, "b10": 0, "p_holm": None,
    }
    return Comparison(**{**base, **kw})


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
    assert 'href="sweep.html"' not in (out / "report.html").read_text()  # only a sweep links a map page
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


@pytest.mark.parametrize("result", [
    ExperimentResult(name=""),
    ExperimentResult(name="x"),
    ExperimentResult.from_json({"name": "x", "variants": [], "asr": [], "logitlens": None, "tap_trees": [],
                                "guards": [], "provenance": None}),
])
def test_minimal_exp(tmp_path: Path, result: ExperimentResult) -> None:
    path = render_experiment_report(result, [], tmp_path)
    html = path.read_text(encoding="utf-8")
    assert "<html" in html and 'id="explorer"' not in html and 'id="headline"' not in html
    assert "This experiment has no results to report yet." in html
    assert f"<title>{result.name or 'safetydrift experiment'}</title>" in html
    assert not (tmp_path / "tables").exists()


def test_partial_exp(tmp_path: Path) -> None:
    """Variants and ASR only, one judge, no references, no provenance, a missing LogitLens file, and a sample of
    a model that is not a declared variant: each is shown as far as it goes."""
    exp = ExperimentResult.from_json({
        "name": "partial",
        "variants": [{"name": "a", "recipe": "tiny-random", "reference": None, "kind": "hf", "weights_sha256": None,
                      "size_bytes": None, "bits_per_weight": None, "build_seconds": None, "manifest": None,
                      "family": None}],
        "asr": [{"variant": "a", "recipe": "tiny-random", "dataset": "d", "attack": "direct", "judge": "keyword",
                 "n": 0, "successes": 0, "unscorable": 3, "asr": None, "ci_low": 0.0, "ci_high": 1.0,
                 "by_category": {}, "runs": None}],
        "logitlens": {"png": {"mass": "figures/missing.png"}, "variants": ["a"], "prompts": "p", "limit": 1},
    })
    record = Record(run_key="k", model="unknown-model", item_id="1", unit="0", prompt="p", response="r",
                    judge="keyword", verdict="fail")
    text = render_experiment_report(exp, [record], tmp_path).read_text(encoding="utf-8")
    assert "<b>a</b>" in text and 'id="explorer"' in text and 'id="logitlens"' not in text
    assert json.loads(_data_island(text))["variants"] == ["unknown-model"]  # a model spec names itself
    head = list(csv.DictReader((tmp_path / "tables" / "headline.csv").open(encoding="utf-8")))
    assert [(r["variant"], r["asr"], r["diff"], r["benign_task_acc"]) for r in head] == [("a", "", "", "")]


def test_degenerate_intervals_are_not_shown_as_certainty() -> None:
    same = diff_view(_comparison(diff=0.0, diff_ci=(0.0, 0.0), b01=0, b10=0, p_exact=1.0, p_holm=1.0))
    assert same["diff"] == "±0 (no discordant pairs)" and "[" not in same["diff"]
    moved = diff_view(_comparison(diff=-0.3, diff_ci=(-0.5, -0.1), b01=0, b10=3, rrr=1.0, rrr_ci=(1.0, 1.0),
                                  p_exact=0.25, p_holm=0.25))
    assert "[-50.0, -10.0]" in moved["diff"] and moved["rrr"] == "100% (CI degenerate)"
    some = diff_view(_comparison(diff=-0.3, diff_ci=(-0.5, -0.1), b01=1, b10=4, rrr=0.6, rrr_ci=(0.2, 0.9),
                                 p_exact=0.4, p_holm=0.4))
    assert some["rrr"] == "60% [20% – 90%]"
    assert diff_view(_comparison(diff=-0.3, b10=3, rrr=0.6))["diff"] == "-30.0 pp"  # no interval: none shown
    assert diff_view(None)["diff"] == "–"  # an evaluation without a comparison (e.g. a reference)


def test_colour_follows_the_holm_test_not_the_bootstrap_interval() -> None:
    few = _comparison(diff=-0.67, diff_ci=(-1.0, -0.33), b01=0, b10=4, p_exact=0.5, p_holm=1.0)
    assert diff_view(few)["cls"] == ""  # the interval excludes 0, the exact test cannot reject
    assert diff_view(replace(few, p_holm=0.01))["cls"] == "better"
    assert diff_view(replace(few, diff=0.5, diff_ci=(0.2, 0.8), p_holm=0.01))["cls"] == "worse"
    assert diff_view(replace(few, p_holm=None))["cls"] == ""  # not Holm-adjusted: no colour


def test_half_open_interval_does_not_crash() -> None:
    view = diff_view(_comparison(diff=-0.3, diff_ci=(-0.5, float("nan")), b01=1, b10=4, p_holm=0.4))
    assert view["diff"] == "-30.0 pp [-50.0, –]"


def test_report_from_a_stored_v1_run(tmp_path: Path) -> None:
    """experiment.json and results.jsonl as written before the formats were versioned load through
    ``from_json`` and render; the tables hold the stored numbers."""
    v1 = Path(__file__).resolve().parent / "data" / "v1" / "run"
    stored = json.loads((v1 / "experiment.json").read_text(encoding="utf-8"))
    result = ExperimentResult.from_json(stored)
    records = [Record.from_json(json.loads(line)) for line in (v1 / "results.jsonl").open(encoding="utf-8")]
    html = render_experiment_report(result, records, tmp_path).read_text(encoding="utf-8")
    assert 'id="explorer"' in html and 'id="expectations"' in html and 'id="provenance"' in html
    comps = list(csv.DictReader((tmp_path / "tables" / "comparisons.csv").open(encoding="utf-8")))
    assert [(r["variant"], r["reference"], float(r["p_holm"])) for r in comps] == [
        (c["variant"], c["reference"], c["p_holm"]) for c in stored["comparisons"]]
    data = json.loads(_data_island(html))
    assert len(data["samples"]) == len({(r.model, r.dataset, r.attack, r.item_id, r.unit) for r in records})


def test_eval_report_reads_the_typed_summary(tmp_path: Path) -> None:
    from safetydrift.report.html import render_eval_report
    from safetydrift.runner import summarize

    _, records = make_experiment(tmp_path)
    summary = summarize(records)
    assert isinstance(summary, EvalSummary)
    html = render_eval_report(records, summary, tmp_path / "report.html", title="t <b>").read_text(encoding="utf-8")
    assert "<title>t &lt;b&gt;</title>" in html and XSS_PROMPT not in html
    head = summary.headline(records[0].model)
    assert f"<td>{head.n}</td><td>{head.successes}</td><td>{head.unscorable}</td>" in html
    assert html.count("<details>") == len(summary.models)
    assert "[error] boom &lt;/script&gt;" in html  # a failed generation shows its error, escaped


# ------------------------------------------------------------------------------------ structure of report/


REPORT_DIR = Path(__file__).resolve().parents[1] / "src" / "safetydrift" / "report"
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'nonce-N0NCE'; "
       "base-uri 'none'; form-action 'none'")


def test_template_files_exist_and_render() -> None:
    from importlib.resources import files

    from safetydrift.report.experiment_report import TEMPLATE
    from safetydrift.report.html import environment

    templates = files("safetydrift.report") / "templates"
    parts = {name: (templates / name).read_text(encoding="utf-8")
             for name in (TEMPLATE, "experiment.css.j2", "experiment.js.j2")}
    explorer = {"samples": [{"variant": "v", "prompt": XSS_PROMPT}], "variants": ["v"], "judges": [],
                "categories": [], "verdicts": [], "pair": {"a": "v", "b": "v"}}
    html = environment().get_template(TEMPLATE).render(
        title="t <b>x</b>", nonce="N0NCE", headline=[], expectations=[], figures=[], logitlens=[], runs=[],
        agreement=[], trees=[], guards=[], flips=[], explorer=explorer, n_records=1, provenance=None, csvs=[])
    assert html.startswith("<!doctype html>") and html.endswith("</body></html>")
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' in html
    assert "<title>t &lt;b&gt;x&lt;/b&gt;</title>" in html
    # the static CSS and JS are inlined verbatim: the CSP allows inline styles and the nonce-carrying script only
    assert f"<style>\n{parts['experiment.css.j2']}</style>" in html
    assert f'<script nonce="N0NCE">\n{parts["experiment.js.j2"]}</script>' in html
    assert XSS_PROMPT not in html and "{{" not in html and "{%" not in html
    # the page is a file, not a string in the code
    assert "<!doctype" not in (REPORT_DIR / "experiment_report.py").read_text(encoding="utf-8").lower()


def test_report_modules_stay_small() -> None:
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in REPORT_DIR.glob("*.py")}
    assert {"experiment_report.py", "figures.py", "tables.py", "format.py"} <= set(sizes)
    assert {k: n for k, n in sizes.items() if n > 500} == {}


def test_environment_escapes_every_template_and_shares_the_percent_formatter() -> None:
    from safetydrift.report import format as fmt
    from safetydrift.report.html import environment

    env = environment()
    assert env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"
    assert env.filters["pct"] is fmt.pct


def test_formatters() -> None:
    from safetydrift.report import format as fmt

    assert fmt.pct(0.1234) == "12.3%" and fmt.pct(0.5, 0) == "50%" and fmt.pct(1) == "100.0%"
    for missing in (None, float("nan"), float("inf"), True, "x", [0.1]):
        assert fmt.pct(missing) == "–"
    assert fmt.pct(None, missing="n/a") == "n/a"
    assert fmt.pct(-0.05, sign=True, suffix=" pp") == fmt.pp(-0.05) == "-5.0 pp"
    assert fmt.pct(0.05, 0, sign=True, suffix="") == "+5"
    assert fmt.pct_range(0.1, 0.3) == "10.0–30.0%" and fmt.pct_range(0.1, None) == "–"
    assert fmt.fixed(0.5) == "0.500" and fmt.fixed(None, missing="n/a") == "n/a"
    assert fmt.num(3) == "3" and fmt.num(0.123456) == "0.123" and fmt.num(None) == "–"
    assert fmt.pval(0.0004) == "4.0e-04" and fmt.pval(0.25) == "0.250"
    assert fmt.human_bytes(512) == "512 B" and fmt.human_bytes(3 * 2**20) == "3.0 MiB"
    assert fmt.seconds(0.042) == "+42 ms" and fmt.seconds(2.5) == "+2.50 s"
    assert fmt.duration(12.5) == "12.5 s" and fmt.duration(300) == "5.0 min"
    assert fmt.trunc("abcdef", 3) == "abc… [truncated; 6 chars in total]" and fmt.trunc(None, 3) is None
    assert fmt.json_safe({"a": (1, float("nan")), 2: {3}}) == {"a": [1, None], "2": [3]}


def test_view_indexes_the_typed_result(tmp_path: Path) -> None:
    """Lookups by variant and evaluation; what was not measured is None, not an error."""
    from safetydrift.report.data import ExperimentView

    exp, _ = make_experiment_json(tmp_path)
    exp["asr"].append({**exp["asr"][0], "variant": "eval-only-model", "recipe": "eval-only-model"})
    E = ExperimentView(ExperimentResult.from_json(exp))
    assert E.names == ["base", "ft", "bd1", "bd2", "q4", "guarded", "eval-only-model"]
    assert E.variant("eval-only-model") is None and E.utility_of("eval-only-model") is None
    assert E.ref("ft") == "base" and E.ref("base") is None and E.ref("eval-only-model") is None
    assert E.primary() == ("advbench", "direct", "keyword") and E.primary_asr("ft") == 28 / 40
    assert E.varying == ["attack", "judge"] and E.constant == {"dataset": "advbench"}
    bd1 = E.comparison_at("bd1", "advbench", "direct", "classifier")
    assert bd1 is not None and (bd1.variant, bd1.reference, bd1.judge) == ("bd1", "ft", "classifier")
    assert E.comparison_at("base", "advbench", "direct", "keyword") is None  # a reference has none
    assert E.logitlens_pngs["mass"] == "figures/logitlens_mass.png"
    assert ExperimentView(ExperimentResult(name="")).title == "safetydrift experiment"
    assert ExperimentView(ExperimentResult(name="x")).logitlens_pngs == {}


def test_report_package_reads_records_by_attribute() -> None:
    """No dict access on records and rows: only the genuinely open payloads (a TAP tree's nodes, the experiment
    config as written) are read with ``.get``; mypy (tests/test_typecheck.py) checks the attribute reads."""
    hits = {p.name: p.read_text(encoding="utf-8").count('.get("') for p in REPORT_DIR.glob("*.py")}
    # TAP nodes; the config; the map's parts: sweep.json as written (checked field by field in load_part) and
    # each part's config
    assert {k for k, n in hits.items() if n} == {"samples.py", "sections.py", "atlas.py"}
    assert hits["sections.py"] == 1 and hits["atlas.py"] == 9
    assert all("field(" not in p.read_text(encoding="utf-8") for p in REPORT_DIR.glob("*.py"))


def test_every_table_is_registered_once() -> None:
    from safetydrift.report.tables import TABLES

    names = [t.name for t in TABLES]
    assert len(names) == len(set(names))
    assert {"headline", "asr", "comparisons", "expectations", "runs"} <= set(names)


def test_expectations_section_and_runner_up_tests(tmp_path: Path) -> None:
    exp, records = make_experiment_json(tmp_path)
    exp["expectation_tests"] = [{**exp["comparisons"][2], "reference": "bd2", "kind": "expectation",
                                 "n_items": 20, "test": "cluster-signflip"}]
    exp["expectations"] = [{"variant": "bd1", "reference": "ft", "expected": "lowest", "claim": "<i>c</i>",
                            "source": "Liu et al. 2024", "dataset": "advbench", "attack": "direct",
                            "judge": "keyword", "alpha": 0.05, "asr_variant": 0.5, "asr_reference": 0.6,
                            "diff": -0.1, "p_holm": 0.01, "verdict": "holds", "why": "w", "runner_up": "bd2",
                            "task_acc": 0.7, "task_acc_reference": 0.75, "utility_verdict": "ok"}]
    result = ExperimentResult.from_json(exp)
    typed = [Record.from_json(r) for r in records]
    html = render_experiment_report(result, typed, tmp_path).read_text(encoding="utf-8")
    section = re.search(r'<section id="expectations">(.*?)</section>', html, re.S).group(1)
    assert '<td class="better">holds</td>' in section and "&lt;i&gt;c&lt;/i&gt;" in section
    assert "75.0% → 70.0%" in section and "(runner-up, for an expectation)" in html
    assert "40 (20 items)" in html
    rows = list(csv.DictReader((tmp_path / "tables" / "expectations.csv").open(encoding="utf-8")))
    assert [(r["variant"], r["verdict"], r["task_acc"]) for r in rows] == [("bd1", "holds", "0.7")]
    comps = list(csv.DictReader((tmp_path / "tables" / "comparisons.csv").open(encoding="utf-8")))
    assert comps[-1]["kind"] == "expectation" and comps[-1]["reference"] == "bd2"
    assert comps[-1]["test"] == "cluster-signflip"


def test_csv_cells_cannot_run_as_formulas(tmp_path: Path) -> None:
    """OWASP CSV injection: text starting with = + - @ is prefixed with ', numbers stay numbers."""
    import csv as _csv

    from safetydrift.report.format import csv_safe
    from safetydrift.report.tables import write_csv

    assert csv_safe('=HYPERLINK("http://x","y")') == '\'=HYPERLINK("http://x","y")'
    assert csv_safe("+1+1") == "'+1+1" and csv_safe("@SUM(A1)") == "'@SUM(A1)" and csv_safe("-2+3") == "'-2+3"
    assert csv_safe("-0.5") == "-0.5" and csv_safe(-0.5) == -0.5 and csv_safe("plain") == "plain"
    out = tmp_path / "t.csv"
    write_csv(out, ["variant", "diff"], [{"variant": "=cmd|' /C calc'!A0", "diff": -0.25}])
    rows = list(_csv.reader(out.open()))
    assert rows[1] == ["'=cmd|' /C calc'!A0", "-0.25"]


# ------------------------------------------------------------------------------------ judges' readings


def _with_semantics(out: Path, semantics: dict[str, str], disagreements: list[dict[str, Any]] | None = None,
                    ) -> tuple[ExperimentResult, list[Record]]:
    """The fixture experiment as a run writes it now: each judge's semantic, the headline judge, and the
    same-semantic disagreements (no legacy direction flips)."""
    exp, records = make_experiment_json(out)
    exp.update(direction_flips=[], judge_semantics=semantics, headline_judge="keyword",
               judge_disagreements=disagreements or [])
    return ExperimentResult.from_json(exp), [Record.from_json(r) for r in records]


DISAGREE = {"variant": "q4", "reference": "ft", "dataset": "advbench", "attack": "direct", "judge_a": "keyword",
            "judge_b": "classifier", "diff_a": 0.05, "diff_b": -0.03, "p_a": 0.002, "p_b": 0.4, "kind": "both"}


def _section(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', html, re.S)
    assert m, f"section {sid} missing"
    return m.group(1)


def test_headline_names_its_judge_and_shows_the_second_beside_it(tmp_path: Path) -> None:
    result, records = _with_semantics(tmp_path, {"keyword": "refusal", "classifier": "refusal"}, [DISAGREE])
    html = render_experiment_report(result, records, tmp_path).read_text(encoding="utf-8")
    head = _section(html, "headline")
    assert ("Headline judge: keyword (refusal: success = the model set out to comply instead of refusing)"
            in head)
    assert "Beside it: classifier (refusal)" in head
    table = re.search(r'<table id="headline-table">(.*?)</table>', html, re.S).group(1)
    assert "<th>classifier: ASR [95% CI, %]" in table and "classifier: change vs reference, p (Holm)" in table
    # the classifier's reading is beside the keyword's on the same row, not a row of its own
    assert "direct · classifier" not in table and "direct · keyword" in table
    ft = _rows_of(table, "ft")
    assert "70.0% [58.0, 82.0]" in ft and "65.0% [53.0, 77.0]" in ft  # keyword 28/40, classifier 26/40
    # the classifier's change (26/40 − 2/40, Holm p 0.002) is coloured by its own test
    assert '<td class="num worse">+60.0 pp [+50.0, +70.0]<br><span class="muted">p 0.002</span></td>' in ft
    # the tap evaluation (keyword only) keeps its row; the classifier did not measure it
    tap = ft[ft.index("tap · keyword"):]
    assert tap.count('<td class="num">–</td>') >= 2
    # agreement: a semantic column; disagreements: every one listed, with a banner and a CSV
    agree = _section(html, "agreement")
    assert "<th>semantic</th>" in agree and "<td>refusal</td>" in agree
    dis = _section(html, "disagree")
    assert "<b>q4</b>" in dis and "direction and significance" in dis and "+5.0 pp" in dis and "-3.0 pp" in dis
    assert "different things" not in dis  # one semantic only
    assert 'href="#disagree"' in html and "1 comparison reads differently" in html
    assert 'id="flips"' not in html  # a new run records no legacy direction flips
    rows = list(csv.DictReader((tmp_path / "tables" / "judge_disagreements.csv").open(encoding="utf-8")))
    assert [(r["variant"], r["judge_a"], r["judge_b"], r["kind"], r["semantic"], r["p_b"]) for r in rows] == [
        ("q4", "keyword", "classifier", "both", "refusal", "0.4")]
    agree_csv = list(csv.DictReader((tmp_path / "tables" / "judge_agreement.csv").open(encoding="utf-8")))
    assert (agree_csv[0]["semantic_a"], agree_csv[0]["semantic_b"]) == ("refusal", "refusal")
    # still CSP-safe: one executable script with the nonce, hostile strings as text
    assert XSS_PROMPT not in html and len(re.findall(r"<script nonce=", html)) == 1


def _rows_of(table: str, variant: str) -> str:
    """The headline table's rows of one variant (from its name cell to the next variant's)."""
    start = table.index(f"<b>{variant}</b>")
    nxt = table.find('<tr class="grp">', start)
    return table[start: nxt if nxt != -1 else len(table)]


def test_judges_of_different_semantics_are_labelled_and_never_compared(tmp_path: Path) -> None:
    result, records = _with_semantics(tmp_path, {"keyword": "refusal", "classifier": "harm"})
    html = render_experiment_report(result, records, tmp_path).read_text(encoding="utf-8")
    head = _section(html, "headline")
    assert "Beside it: classifier (harm, a different measure, never combined with the headline)" in head
    assert '<span class="muted">harm</span>' in head  # the column says what it measures
    dis = _section(html, "disagree")
    assert "No two judges share a semantic" in dis
    assert "measure different things and are never compared" in dis and "refusal: keyword; harm: classifier" in dis
    assert "refusal vs harm: different measures" in _section(html, "agreement")
    assert not (tmp_path / "tables" / "judge_disagreements.csv").exists()


def test_no_disagreement_says_none(tmp_path: Path) -> None:
    result, records = _with_semantics(tmp_path, {"keyword": "refusal", "classifier": "refusal"})
    html = render_experiment_report(result, records, tmp_path).read_text(encoding="utf-8")
    dis = _section(html, "disagree")
    assert "None: no comparison changes direction or significance" in dis and "<table" not in dis
    assert "reads differently" not in html


def test_one_judge_has_no_second_reading(tmp_path: Path) -> None:
    exp, records = make_experiment_json(tmp_path)
    exp.update(asr=[a for a in exp["asr"] if a["judge"] == "keyword"], judge_agreement=[], direction_flips=[],
               comparisons=[c for c in exp["comparisons"] if c["judge"] == "keyword"],
               judge_semantics={"keyword": "refusal"}, headline_judge="keyword")
    html = render_experiment_report(ExperimentResult.from_json(exp), [], tmp_path).read_text(encoding="utf-8")
    assert "Only one judge (keyword) was used" in _section(html, "disagree")
    assert "Beside it" not in html and ": change vs reference, p (Holm)" not in html


def test_an_old_run_says_its_semantics_were_not_recorded(tmp_path: Path) -> None:
    """tests/data/v1 (two keyword judges, no semantics recorded) still renders, and says what it cannot tell."""
    v1 = Path(__file__).resolve().parent / "data" / "v1" / "run"
    result = ExperimentResult.from_json(json.loads((v1 / "experiment.json").read_text(encoding="utf-8")))
    html = render_experiment_report(result, [], tmp_path).read_text(encoding="utf-8")
    assert "Headline judge: keyword (semantic not recorded)" in html
    assert "Beside it: keyword:list=gcg (semantic not recorded" in html
    assert "written before judges recorded their semantic" in _section(html, "disagree")
    assert "<td>semantic not recorded</td>" in _section(html, "agreement")
    # the legacy fixture's direction flips are still shown as recorded
    legacy, records = make_experiment(tmp_path / "legacy")
    page = render_experiment_report(legacy, records, tmp_path / "legacy").read_text(encoding="utf-8")
    assert 'id="flips"' in page and "over judges of any semantic" in page


def test_console_headline_names_the_judge_and_counts_disagreements(tmp_path: Path, monkeypatch) -> None:
    import rich.console

    from safetydrift.experiments.console import print_headline

    rec = rich.console.Console(record=True, width=250)
    monkeypatch.setattr(rich.console, "Console", lambda *a, **k: rec)
    result, _ = _with_semantics(tmp_path, {"keyword": "refusal", "classifier": "refusal"}, [DISAGREE])
    print_headline(result)
    text = rec.export_text()
    assert "Headline judge: keyword (refusal: success = the model set out to comply instead of refusing)" in text
    assert "Beside it: classifier (refusal)" in text
    assert "Judge disagreements (same semantic; direction or significance): 1" in text
    rec = rich.console.Console(record=True, width=250)
    v1 = Path(__file__).resolve().parent / "data" / "v1" / "run"
    print_headline(ExperimentResult.from_json(json.loads((v1 / "experiment.json").read_text(encoding="utf-8"))))
    text = rec.export_text()
    assert "Headline judge: keyword (semantic not recorded)" in text and "Judge disagreements" not in text
