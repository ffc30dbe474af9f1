"""Resolve a recipe to a ResolvedModel, building each missing step into the artifact cache.

Each built variant lives in ``<cache>/artifacts/<recipe-hash>/`` with a ``manifest.json`` (provenance,
settings, loss curve, sizes). The hash covers the parent's weights hash, the transform and every
setting, the transform's data hashes and the seed, so the same recipe is built once and reused, and a
changed input can never be served from a stale artifact. Builds go to a temporary directory that is
renamed into place only when complete: a crash leaves nothing half-written behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from safetydrift import registry
from safetydrift.errors import UnsupportedError
from safetydrift.guards.spec import GUARD_STEP, parse_guard_step
from safetydrift.hashing import sha256_dir_weights, sha256_file, sha256_json
from safetydrift.params import to_key
from safetydrift.provenance import library_versions
from safetydrift.spec import Recipe, parse_recipe
from safetydrift.types import ResolvedModel
from safetydrift.variants.artifacts import (
    build_dir_prefix,
    file_table,
    quarantine,
    sweep_stale_builds,
    verify_artifact,
)
from safetydrift.variants.base import Transform

if TYPE_CHECKING:
    from safetydrift.context import Context

MANIFEST = "manifest.json"


def resolve_source(recipe: Recipe, ctx: Context) -> ResolvedModel:
    factory = registry.sources.get(recipe.model.name)
    return factory(recipe.model, ctx)


def make_transform(step: Any, ctx: Context) -> Transform:
    cls = registry.transforms.get(step.name)
    return cls(step, ctx)


def weights_hash(model: ResolvedModel) -> str:
    if model.weights_sha256:
        return model.weights_sha256
    if model.path is None:
        return sha256_json({"spec": model.spec, "url": model.url, "model": model.model_name})
    p = Path(model.path)
    return sha256_file(p) if p.is_file() else sha256_dir_weights(p)


def resolve_recipe(recipe: str | Recipe, ctx: Context) -> ResolvedModel:
    if isinstance(recipe, str):
        recipe = parse_recipe(recipe)
    model = resolve_source(recipe, ctx)
    lineage = [model]
    for i, step in enumerate(recipe.transforms):
        spec_str = str(Recipe(recipe.model, recipe.transforms[: i + 1]))
        if step.name == GUARD_STEP:  # a serving wrapper, not a transform: nothing to build
            model = replace(model, spec=spec_str, wrappers=(*model.wrappers, parse_guard_step(step).to_dict()))
        else:
            transform = make_transform(step, ctx)
            if model.wrappers:
                raise UnsupportedError(
                    f"'{step.name}' cannot follow a guard: guards wrap serving, put them last in the chain"
                )
            if model.kind not in transform.needs_kind:
                raise UnsupportedError(
                    f"transform '{step.name}' needs a {' or '.join(transform.needs_kind)} model, "
                    f"but '{model.spec}' is {model.kind}"
                )
            model = _build_step(transform, model, spec_str, lineage, ctx)
        lineage.append(model)
    return model


def resolved_settings(transform: Transform) -> dict[str, Any]:
    """The transform's settings after defaults were applied: ``to_key(transform.params)``.

    Hashed so that changing a *default* can never serve an artifact built with the old one, while two
    spellings of the same settings (``lr=1e-4`` and ``lr=0.0001``, a default written out) share one.
    """
    return to_key(transform.params)


def _recipe_key(transform: Transform, parent: ResolvedModel, lineage: list[ResolvedModel]) -> str:
    return sha256_json(
        {
            "parent_weights": weights_hash(parent),
            "transform": transform.spec.name,
            "resolved": resolved_settings(transform),
            "material": transform.key_material(lineage),
            "format": 3,  # 3: the settings are hashed as typed Params (to_key), no longer as spec strings
        }
    )


def _build_step(
    transform: Transform, parent: ResolvedModel, spec_str: str, lineage: list[ResolvedModel], ctx: Context
) -> ResolvedModel:
    key = _recipe_key(transform, parent, lineage)
    final = ctx.artifacts_dir / key[:20]
    manifest_path = final / MANIFEST
    if manifest_path.exists():
        problem = verify_artifact(final, json.loads(manifest_path.read_text()), ctx)
        if problem is not None:  # never measure weights other than the ones the manifest names
            ctx.log(f"[yellow]cached variant {escape(spec_str)} is corrupted ({escape(problem)}): rebuilding[/]")
            quarantine(final)
    if not manifest_path.exists():
        sweep_stale_builds(ctx.artifacts_dir)
        ctx.log(f"[bold]building[/] {escape(spec_str)}  →  {escape(str(final))}")
        tmp = Path(tempfile.mkdtemp(prefix=build_dir_prefix(key), dir=ctx.artifacts_dir))
        try:
            t0 = time.time()
            result = transform.build(parent, tmp, lineage)
            elapsed = time.time() - t0
            rel = result.path.relative_to(tmp)
            built_path = tmp / rel
            manifest = {
                "recipe": spec_str,
                "key": key,
                "kind": result.kind,
                "path": str(rel),
                "weights_sha256": ctx.hash_weights(built_path),
                "files": file_table(tmp, ctx),
                "parent": {"spec": parent.spec, "weights_sha256": weights_hash(parent)},
                "transform": transform.spec.to_dict(),
                "provenance": result.provenance,
                "loss_curve": result.loss_curve,
                "extra_files": result.extra_files,
                "build_seconds": round(elapsed, 2),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "libraries": library_versions(),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
            try:
                tmp.rename(final)
            except OSError:  # another process finished the same recipe first: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    manifest = json.loads(manifest_path.read_text())
    return ResolvedModel(
        spec=spec_str,
        kind=manifest["kind"],
        path=final / manifest["path"],
        weights_sha256=manifest["weights_sha256"],
        provenance={"manifest": str(manifest_path), "transform": manifest["transform"], "parent": manifest["parent"]},
    )


def load_manifest(model: ResolvedModel) -> dict[str, Any] | None:
    """The manifest of a built variant (None for a plain source)."""
    m = model.provenance.get("manifest")
    return json.loads(Path(m).read_text()) if m else None
