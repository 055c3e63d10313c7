"""A trained model as one ONNX file that carries its preprocessing, checked against PyTorch.

The graph takes ``image``: float32 ``(N, 1, S, S)``, the 8-bit grey levels 0..255 of images read and
resized as the run read its own (the steps are in the metadata), and gives ``logits`` and
``probabilities`` ``(N, C)``. The model's normalisation (mean, std) and the channel repeat of a
3-channel stem are inside the graph, so a caller has nothing to get wrong after the resize.

Metadata (``metadata_props``, all text; JSON where it says so): ``medauc.classes`` (JSON),
``medauc.negative_class``, ``medauc.preprocessing`` (JSON, :func:`medauc.deploy.predict.preprocessing`),
``medauc.threshold`` (JSON: value and source), ``medauc.model``, ``medauc.seed``,
``medauc.weights_sha256`` (the PyTorch weights it was made from), ``medauc.version``.

:func:`verify_onnx` runs the file in onnxruntime on the run's test images and compares both
outputs with PyTorch's; an export is kept only when they agree within ``tolerance`` (1e-4).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medauc.errors import ExportError

log = logging.getLogger(__name__)
TOLERANCE = 1e-4
INPUT, OUTPUTS = "image", ("logits", "probabilities")


class Deployed(nn.Module):
    """8-bit grey levels ``(N, 1, S, S)`` float -> ``(logits, probabilities)``: the model with its normalisation."""

    def __init__(self, model: nn.Module, meta: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.in_chans = int(meta["in_chans"])
        # As InputTransform: the mean and std apply to values in [0, 1], the input is 0..255.
        self.register_buffer("mean", torch.tensor(meta["mean"], dtype=torch.float32).view(1, -1, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(meta["std"], dtype=torch.float32).view(1, -1, 1, 1) * 255.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = ((x - self.mean) / self.std).expand(-1, self.in_chans, -1, -1)
        logits = self.model(x)
        return logits, torch.softmax(logits, dim=1)


def _unsupported(exc: BaseException) -> str | None:
    """The operator an exporter error names (``aten.foo.default``, ``mylib.op``), or None."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        m = re.search(r"No ONNX function found for (?:<OpOverload\(op='([^']+)', overload='([^']+)'\)>|(\S+?))[.\s]", str(e))
        if m:
            return f"{m.group(1)}.{m.group(2)}" if m.group(1) else m.group(3)
        m = re.search(r"operator '([^']+)'", str(e))
        if m:
            return m.group(1)
        e = e.__cause__ or e.__context__
    return None


def to_onnx(model: nn.Module, meta: dict[str, Any], name: str, example: torch.Tensor) -> Any:
    """The ``onnx.ModelProto`` of ``model`` (eval mode, float32, CPU) wrapped in :class:`Deployed`.

    ``example``: uint8 images ``(N, S, S)`` to trace with (N >= 2). Raises ExportError naming the
    operator when an operation has no ONNX conversion.
    """
    import onnx  # noqa: F401  (the exporter needs it; a missing install fails here, named)

    wrapped = Deployed(model.float().cpu().eval(), meta).eval()
    x = example[:2].unsqueeze(1).float()
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    try:
        with torch.no_grad():
            program = torch.onnx.export(wrapped, (x,), None, input_names=[INPUT], output_names=list(OUTPUTS),
                                        dynamic_shapes=({0: batch},), dynamo=True, external_data=False, verbose=False)
    except torch.onnx.errors.OnnxExporterError as exc:
        op = _unsupported(exc)
        if op:
            raise ExportError(f"{name} cannot be exported to ONNX: it uses the operator {op}, which the ONNX exporter "
                              "cannot convert; choose another model for deployment, or replace that layer") from exc
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{name} cannot be exported to ONNX ({type(exc).__name__}: {first})") from exc
    return program.model_proto


def set_metadata(proto: Any, values: dict[str, Any]) -> None:
    """Add ``values`` as ``metadata_props`` (text; dicts and lists as JSON)."""
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """``metadata_props`` of an ONNX file, as text; ExportError when it is no readable ONNX file."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError) as exc:
        raise ExportError(f"{path} is not a readable ONNX file ({type(exc).__name__}); export it again with `medauc export`") from exc
    return {p.key: p.value for p in proto.metadata_props}


def _torch_outputs(model: nn.Module, meta: dict[str, Any], images: torch.Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    from medauc.classify.models import InputTransform
    from medauc.classify.predict import predict_logits

    logits = predict_logits(model.float().cpu().eval(), images, InputTransform(meta), batch_size)
    return logits.numpy(), torch.softmax(logits, dim=1).numpy()


def verify_onnx(path: str | os.PathLike[str], model: nn.Module, meta: dict[str, Any], images: torch.Tensor,
                image_ids: list[str], tolerance: float = TOLERANCE, batch_size: int = 64) -> dict[str, Any]:
    """Run ``path`` in onnxruntime on ``images`` (uint8 ``(N, S, S)``) and compare with PyTorch.

    Returns ``{n_images, tolerance, max_abs_diff: {logits, probabilities}, worst_image}``; raises
    ExportError saying by how much when an output differs by more than ``tolerance``, or when the
    file's classes or input size are not the model's.
    """
    import onnxruntime as ort

    meta_props = read_metadata(path)
    size = int(meta["image_size"])
    if meta_props.get("medauc.classes") != json.dumps(list(meta["classes"])):
        raise ExportError(f"{path}: its classes {meta_props.get('medauc.classes')} are not the model's {list(meta['classes'])}; "
                          "export it again with `medauc export`")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except (RuntimeError, ValueError) as exc:  # onnxruntime's errors derive from RuntimeError
        raise ExportError(f"{path}: onnxruntime cannot load it ({type(exc).__name__}: {str(exc)[:200]}); "
                          "export it again with `medauc export`") from exc
    shape = session.get_inputs()[0].shape
    if session.get_inputs()[0].name != INPUT or list(shape[1:]) != [1, size, size]:
        raise ExportError(f"{path}: input {session.get_inputs()[0].name} {shape}, expected {INPUT} [N, 1, {size}, {size}]")
    ref_logits, ref_probs = _torch_outputs(model, meta, images, batch_size)
    outs: dict[str, list[np.ndarray]] = {k: [] for k in OUTPUTS}
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].unsqueeze(1).float().numpy()
        for k, v in zip(OUTPUTS, session.run(list(OUTPUTS), {INPUT: x})):
            outs[k].append(np.asarray(v))
    got = {k: np.concatenate(v) if v else np.empty((0, len(meta["classes"]))) for k, v in outs.items()}
    diffs = {"logits": np.abs(got["logits"] - ref_logits), "probabilities": np.abs(got["probabilities"] - ref_probs)}
    worst = {k: float(d.max()) if d.size else 0.0 for k, d in diffs.items()}
    row = int(diffs["probabilities"].max(axis=1).argmax()) if len(images) else -1
    result = {"n_images": int(len(images)), "tolerance": tolerance, "max_abs_diff": worst,
              "worst_image": image_ids[row] if row >= 0 else None}
    bad = {k: v for k, v in worst.items() if not v <= tolerance}  # NaN counts as bad
    if bad:
        what = ", ".join(f"{k} by {v:.3g}" for k, v in bad.items())
        raise ExportError(f"{path} does not reproduce the PyTorch model: onnxruntime's outputs differ on {len(images)} test images, "
                          f"{what} (tolerance {tolerance:g}; worst image {result['worst_image']}); the file is damaged or "
                          "not this model's: export it again with `medauc export`")
    return result
