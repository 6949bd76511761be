"""The ONNX file contract: what an exported model takes, returns and says about itself.

An export takes a normalised float batch :data:`INPUT_NAME` (N, 3, S, S) and returns softmax
:data:`OUTPUT_NAME` (N, C). Class names, preprocessing and the bundle's summary travel in
the file's ``metadata_props``, one JSON value per ``transferlab.*`` key, so the file is
enough on its own. This module depends only on the bundle, so the backends that read
exports and the exporter that checks them can both use it without importing each other.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferlab import __version__
from transferlab.bundle import WEIGHTS_FILE, Bundle
from transferlab.errors import BundleError, TransferlabError
from transferlab.files import replace_when_done

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
# Metadata keys of an exported ONNX file; each value is a JSON document.
META_PREFIX = "transferlab."
REQUIRED_META = ("architecture", "class_names", "preprocessing")


class ExportError(TransferlabError):
    """An export that failed or does not match the PyTorch model."""


def weights_digest(bundle_dir: Path) -> str:
    """SHA-256 of a bundle's weights file: ties an export to the weights it came from."""
    h = hashlib.sha256()
    with (bundle_dir / WEIGHTS_FILE).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def encode_onnx_meta(meta: dict[str, Any]) -> dict[str, str]:
    """Bundle metadata -> ONNX ``metadata_props`` (one JSON value per top-level key)."""
    return {f"{META_PREFIX}{k}": json.dumps(v, ensure_ascii=False) for k, v in meta.items()}


def decode_onnx_meta(props: dict[str, str], where: Path) -> dict[str, Any]:
    """ONNX ``metadata_props`` -> the metadata; a clear error when it is not an export's."""
    meta = {
        k[len(META_PREFIX) :]: json.loads(v) for k, v in props.items() if k.startswith(META_PREFIX)
    }
    for key in REQUIRED_META:
        if key not in meta:
            raise BundleError(
                f"{where} lacks transferlab metadata ('{key}'); export it with 'transferlab export'"
            )
    return meta


def export_meta(bundle: Bundle, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The bundle's description, plus what an export adds (input/output contract)."""
    meta = {k: v for k, v in bundle.meta.items() if k not in ("config", "drop_rate")}
    meta.update(
        {
            "architecture": bundle.architecture,
            "class_names": bundle.class_names,
            "preprocessing": bundle.preprocessing.to_dict(),
            "transferlab_version": __version__,
            "input": {
                "name": INPUT_NAME,
                "layout": "NCHW float32, RGB, resized + centre-cropped, (x/255 - mean) / std",
            },
            "output": {"name": OUTPUT_NAME, "meaning": "softmax over class_names"},
        }
    )
    meta.update(extra or {})
    return meta


def with_softmax(model: nn.Module) -> nn.Module:
    """The bundle's model with the softmax every export ends in, on the CPU, in eval mode."""
    return nn.Sequential(model, nn.Softmax(dim=1)).cpu().eval()


def set_onnx_metadata(path: Path, meta: dict[str, Any]) -> None:
    """Replace the ``metadata_props`` of the ONNX file at ``path`` with ``meta``."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in encode_onnx_meta(meta).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "transferlab"
    proto.doc_string = f"{meta['architecture']} classifier over {len(meta['class_names'])} classes"
    onnx.save(proto, str(path))


def export_onnx(bundle: Bundle, out: Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``bundle`` as ONNX (dynamic batch, softmax output, metadata) to ``out``."""
    size = bundle.preprocessing.input_size
    sample = torch.zeros(2, 3, size, size)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                with_softmax(bundle.model),
                (sample,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                dynamo=True,
                verbose=False,
            )
        if program is None:
            raise ExportError("torch.onnx.export returned no program")
        program.save(str(tmp))
        set_onnx_metadata(tmp, export_meta(bundle, extra))

    try:
        replace_when_done(out, write)
    except TransferlabError:
        raise
    except Exception as exc:
        raise ExportError(
            f"ONNX export of {bundle.architecture} failed ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0][:200]}); try --format torchscript"
        ) from exc
    return out
