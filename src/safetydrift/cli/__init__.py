"""``safetydrift`` command line: one module per subcommand, wired here explicitly.

Library modules never import this package: a command is a thin layer that parses arguments, builds a
:class:`~safetydrift.context.Context` and calls the library. Each command module defines
``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from safetydrift.errors import SafetyDriftError
from safetydrift.hashing import VERIFY_POLICIES


@dataclass(frozen=True)
class Command:
    name: str
    module: str  # safetydrift.cli.<module>, with add_arguments(p) and run(args) -> int
    help: str
    verify: str = "fast"  # default artifact verification policy (see variants/artifacts.py)


_LIST = "list what is registered (with --params: each setting's type, default and doc)"
COMMANDS: tuple[Command, ...] = (
    Command("eval", "eval", "evaluate models/variants on a dataset with an attack and judges"),
    Command("run", "run", "build and evaluate an experiment grid from YAML, then compare and report", "full"),
    Command("sweep", "sweep", "the free-lunch map: an experiment's sweep: block cell by cell (resumable, progress "
            "over cells, --executor local|ray), then the decision rules per cell", "full"),
    Command("map", "map", "one free-lunch map from several finished sweep parts: figures and verdicts over "
            "every dose (reads their outputs; re-tests nothing)"),
    Command("demo", "demo", "the main job: base → align → harmful fine-tune → BitDelta / GGUF / guard, compared",
            "full"),
    Command("build", "build", "build a variant recipe into the artifact cache", "full"),
    Command("inspect", "inspect", "print a variant's provenance, sizes and loss curve"),
    Command("logitlens", "logitlens", "LogitLens: refusal vs compliance mass per layer at the first response token"),
    Command("judge", "judge", "judge utilities: `judge validate` compares a judge with human labels"),
    Command("serve", "serve", "serve a model or variant as an OpenAI-compatible endpoint (/v1/chat/completions)"),
    Command("guard-eval", "guards_eval", "every guard configuration on held-out material: block, false-refusal "
            "rates (Wilson CIs) and latency"),
    Command("models", "listing", "list model sources"),
    Command("transforms", "listing", "list variant transforms"),
    Command("guards", "listing", "list guard filters (used as guard:input=…,output=…)"),
    Command("backends", "listing", "list backends"),
    Command("datasets", "listing", "list datasets"),
    Command("attacks", "listing", "list attacks"),
    Command("judges", "listing", "list judges"),
)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog may be computed when help is shown (component settings tables),
    so building the parser never imports every component."""

    epilog_fn: Callable[[], str] | None = None

    def format_help(self) -> str:
        if self.epilog_fn is not None:
            self.epilog = self.epilog_fn()
            self.formatter_class = argparse.RawDescriptionHelpFormatter
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    from safetydrift import __version__

    parser = argparse.ArgumentParser(prog="safetydrift", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"safetydrift {__version__}")
    parser.add_argument("--cache", default=None, help="artifact cache (default $SAFETYDRIFT_CACHE or user cache)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for cmd in COMMANDS:
        module = importlib.import_module(f"safetydrift.cli.{cmd.module}")
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        module.add_arguments(p)
        p.add_argument("--verify", choices=VERIFY_POLICIES, default=cmd.verify,
                       help=f"check cached variants against their manifests: full re-hashes every file once per "
                            f"process, fast trusts an unchanged file's hash memo, off checks sizes only "
                            f"(default here: {cmd.verify})")
        p.set_defaults(_handler=module.run)
    return parser


def _quiet_environment() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never fetch weights at run time
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers' per-file load/save bars are noise next to our own stage progress (training keeps its bar)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # OpenMP threads that spin while waiting make torch 2-3x slower whenever anything else runs on a small
    # machine (measured: a SmolLM2 training step 114-148 s spinning vs 39-57 s passive under load).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # torchao (imported by transformers and peft on every model load once installed) logs that its CUDA
    # kernels cannot load on a CPU machine, and torch logs a deprecation for its enums: noise, not errors.
    for noisy in ("torchao", "torch.utils._pytree"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that finished samples are flushed on the way out."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    import signal

    _quiet_environment()
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args._handler(args)
    except SafetyDriftError as e:
        if args.debug:
            raise
        print(f"safetydrift: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # `safetydrift judges | head`: the reader left, which is not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as e:
        print("safetydrift: interrupted (finished samples are saved; run the same command to resume)", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except Exception as e:  # an unexpected failure still gets one line; --debug shows the traceback
        if args.debug:
            raise
        print(f"safetydrift: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
