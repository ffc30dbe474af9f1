"""HF checkpoint → GGUF with llama.cpp's own ``convert_hf_to_gguf.py``, run in a subprocess.

That script is not installed by any wheel: it is taken from the ``llama-cpp-python`` sdist
(``vendor/llama.cpp``), which is fetched with ``pip download --no-deps`` into a cache directory, once (or
found where ``scripts/setup.sh`` left it, in ``paths.tools_dir()/llamacpp``). The sdist also vendors the
matching ``gguf-py``, which the script puts first on ``sys.path`` (the PyPI ``gguf`` 0.19 is too old for it).
The converter version follows the installed llama-cpp-python, so converter and runtime share one commit.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from safetydrift.errors import ModelLoadError
from safetydrift.llamacpp.runtime import ConversionError, ConverterUnavailableError, llama_cpp_python_version

#: What ``convert_hf_to_gguf.py --outtype`` accepts that is useful here.
CONVERT_OUTTYPES = ("f32", "f16", "bf16", "q8_0")
#: The llama-cpp-python release whose sdist provides the converter when none is installed.
LLAMA_CPP_PYTHON_VERSION = "0.3.36"


def ensure_converter(cache_dir: Path, version: str | None = None, *, timeout: float = 600.0) -> Path:
    """Path to ``convert_hf_to_gguf.py`` from the llama-cpp-python ``version`` sdist, fetched into ``cache_dir``.

    ``version`` defaults to the installed llama-cpp-python (so converter and runtime come from one llama.cpp
    commit), else :data:`LLAMA_CPP_PYTHON_VERSION`. An sdist already in ``cache_dir`` or in
    ``paths.tools_dir()/llamacpp`` (where ``scripts/setup-llamacpp.sh`` downloads the sdist it builds
    llama-cpp-python from) is used without touching the network.
    """
    version = version or llama_cpp_python_version() or LLAMA_CPP_PYTHON_VERSION
    cache_dir = Path(cache_dir).expanduser()
    target = cache_dir / f"llama-cpp-python-{version}-convert"
    script = target / "convert_hf_to_gguf.py"
    if script.is_file():
        return script
    cache_dir.mkdir(parents=True, exist_ok=True)
    from safetydrift.paths import tools_dir

    sdist = _find_sdist(cache_dir, version) or _find_sdist(tools_dir() / "llamacpp", version)
    if sdist is None:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(cache_dir),
            f"llama-cpp-python=={version}",
        ]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ConverterUnavailableError(
                f"cannot fetch llama.cpp's converter: {type(e).__name__}: {e}"
            ) from e
        sdist = _find_sdist(cache_dir, version)
        if res.returncode != 0 or sdist is None:
            raise ConverterUnavailableError(
                f"cannot fetch llama.cpp's converter (pip download llama-cpp-python=={version} into {cache_dir} "
                f"failed: {_last_line(res.stderr) or f'exit {res.returncode}'})"
            )
    _extract_converter(sdist, target)
    if not script.is_file():
        raise ConverterUnavailableError(f"{sdist.name} has no vendor/llama.cpp/convert_hf_to_gguf.py")
    return script


def _find_sdist(cache_dir: Path, version: str) -> Path | None:
    for name in (f"llama_cpp_python-{version}.tar.gz", f"llama-cpp-python-{version}.tar.gz"):
        if (cache_dir / name).is_file():
            return cache_dir / name
    return None


def _extract_converter(sdist: Path, target: Path) -> None:
    """Unpack only the converter, its ``conversion`` package and the vendored ``gguf-py`` (atomically)."""
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        with tarfile.open(sdist, "r:gz") as tf:
            members = []
            for m in tf.getmembers():
                parts = m.name.split("/", 3)  # <root>/vendor/llama.cpp/<rest>
                if len(parts) == 4 and parts[1:3] == ["vendor", "llama.cpp"] and parts[3].startswith(wanted):
                    if not (m.isfile() or m.isdir()):
                        continue
                    m.name = parts[3]
                    members.append(m)
            if not members:
                raise ConverterUnavailableError(f"{sdist.name} does not vendor llama.cpp's converter")
            tf.extractall(tmp, members=members, filter="data")
        try:
            tmp.rename(target)
        except OSError:  # another process won the race
            if not (target / "convert_hf_to_gguf.py").is_file():
                raise
    except (tarfile.TarError, OSError) as e:
        raise ConverterUnavailableError(f"cannot unpack the converter from {sdist}: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def convert_hf_to_gguf(
    hf_dir: Path,
    out_path: Path,
    outtype: str = "f16",
    *,
    cache_dir: Path | None = None,
    version: str | None = None,
    timeout: float | None = None,
) -> Path:
    """Convert a transformers checkpoint directory into one GGUF file with llama.cpp's converter.

    ``cache_dir`` holds the fetched converter (default: ``<safetydrift cache>/llamacpp``). The conversion
    runs in a subprocess (it needs torch, transformers and sentencepiece, not llama_cpp).
    """
    hf_dir, out_path = Path(hf_dir), Path(out_path)
    if outtype not in CONVERT_OUTTYPES:
        raise ValueError(f"outtype must be one of {', '.join(CONVERT_OUTTYPES)}, not {outtype!r}")
    if not (hf_dir / "config.json").is_file():
        raise ModelLoadError(f"{hf_dir} is not a transformers checkpoint (no config.json)")
    if importlib.util.find_spec("sentencepiece") is None:
        # the converter imports it for every Llama-family vocabulary, even when there is no tokenizer.model
        raise ConverterUnavailableError(
            "llama.cpp's converter needs the sentencepiece package: pip install sentencepiece"
        )
    if cache_dir is None:
        from safetydrift.paths import default_cache_dir

        cache_dir = default_cache_dir() / "llamacpp"
    script = ensure_converter(Path(cache_dir), version)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # the vendored gguf-py must win
    cmd = [sys.executable, str(script), str(hf_dir), "--outfile", str(partial), "--outtype", outtype]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        partial.unlink(missing_ok=True)
        raise ConversionError(f"converting {hf_dir} to GGUF timed out after {timeout}s") from e
    if res.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise ConversionError(
            f"converting {hf_dir} to GGUF failed: {_error_line(res.stderr) or f'exit {res.returncode}'}"
        )
    os.replace(partial, out_path)
    return out_path


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _error_line(text: str) -> str:
    """The exception line of a Python traceback if there is one, else the last line."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) and " " not in head:
            return ln
    return lines[-1] if lines else ""

