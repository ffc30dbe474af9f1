"""``openai:<base_url>#<model>``: any OpenAI-compatible chat endpoint.

The API key is read from an environment variable (``key_env``, default ``OPENAI_API_KEY``) at request
time and never stored in results or provenance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from safetydrift.context import Context
from safetydrift.errors import SpecError
from safetydrift.params import Params, from_spec, p, with_params
from safetydrift.registry import sources
from safetydrift.spec import ComponentSpec
from safetydrift.types import ResolvedModel


@dataclass(frozen=True, kw_only=True)
class OpenAIParams(Params):
    endpoint: str = field(metadata=p("<base_url>#<model> (openai:http://127.0.0.1:8000/v1#local)", positional=True))
    key_env: str = field(default="OPENAI_API_KEY", metadata=p("environment variable holding the API key"))

    def __post_init__(self) -> None:
        super().__post_init__()
        url, sep, model = self.endpoint.rpartition("#")
        if not sep:
            raise SpecError("openai: needs <base_url>#<model>, e.g. openai:http://127.0.0.1:8000/v1#local")
        if not url.startswith(("http://", "https://")) or not model:
            raise SpecError(f"openai: bad endpoint {self.endpoint!r}: expected http(s)://host/v1#model")


@sources.register("openai", help="openai:<base_url>#<model>[,key_env=VAR] — an OpenAI-compatible endpoint")
@with_params(OpenAIParams)
def openai(spec: ComponentSpec, ctx: Context) -> ResolvedModel:
    params = from_spec(OpenAIParams, spec)
    url, _, model = params.endpoint.rpartition("#")
    return ResolvedModel(
        spec=str(spec),
        kind="openai",
        url=url.rstrip("/"),
        model_name=model,
        provenance={"source": "openai", "key_env": params.key_env},
    )
