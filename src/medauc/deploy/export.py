"""``medauc export --run DIR [--model NAME] [--seed S] [--format onnx]``: the chosen model as a file to hand over.

Writes, in the run folder, ``export/<model>/<seed>/``:

* ``model.onnx``: the model with its normalisation, the run's preprocessing in its metadata
  (:mod:`medauc.deploy.onnx_export`); kept only when onnxruntime reproduces PyTorch on every test
  image of the run within ``--tolerance`` (1e-4), else the command fails saying by how much;
* ``export.json``: the file's sha256, the check (images, largest differences, worst image), the
  metadata written;
* ``model_card.md``: the model card (:mod:`medauc.deploy.card`), linked from the report, which is
  rebuilt when the run has one.

``--verify FILE.onnx`` checks a file received later (a copy, another machine's) the same way
against the run's model, writing nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from medauc import fileio, lock, records
from medauc.deploy.chosen import Chosen, choose
from medauc.deploy.onnx_export import TOLERANCE, set_metadata, to_onnx, verify_onnx
from medauc.errors import DataError, ExportError

EXPORT_DIR = "export"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="DIR", help="the run folder the model was trained in")
    parser.add_argument("--model", default=None, help="trained model (timm name); default: the run's best by evaluate.primary_metric")
    parser.add_argument("--seed", type=int, default=None, help="training seed; default: the first of train.seeds trained")
    parser.add_argument("--format", default="onnx", choices=("onnx",), help="file format [onnx]")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help=f"largest difference allowed from PyTorch [{TOLERANCE:g}]")
    parser.add_argument("--verify", default=None, metavar="FILE.onnx", help="only check FILE.onnx against the run's model; write nothing")


def test_images(chosen: Chosen, meta: dict[str, Any]) -> tuple[torch.Tensor, list[str]]:
    """The run's test images at the model's size, uint8 ``(N, S, S)`` (from the training cache), and their ids."""
    from medauc.data.datasets import image_set
    from medauc.data.manifest import IMAGE_COLUMNS, read_manifest

    path = chosen.run_dir / "manifest.csv"
    if not path.is_file():
        raise DataError(f"{path} does not exist: the export is checked on the run's test images; run `medauc prepare` first")
    df = read_manifest(path, required=IMAGE_COLUMNS)
    test = df[df["split"] == "test"]
    if test.empty:
        raise DataError(f"{path} has no test images to check the export on")
    classes = list(meta["classes"])
    s = image_set(test.assign(label=classes[0]), classes, int(meta["image_size"]), chosen.run_dir / "cache", chosen.run_dir)
    return s.images, s.image_ids


def export_dir(chosen: Chosen) -> Path:
    return chosen.run_dir / EXPORT_DIR / chosen.model / str(chosen.seed)


def export_model(chosen: Chosen, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Export ``chosen`` to ONNX, check it, write its card (module docstring); the facts of ``export.json``."""
    import onnx

    from medauc.classify.models import load_trained
    from medauc.deploy.card import write_card
    from medauc.deploy.predict import preprocessing

    model, meta = load_trained(chosen.model_dir)
    images, ids = test_images(chosen, meta)
    proto = to_onnx(model, meta, chosen.model, images)
    weights = chosen.model_dir / "best.safetensors"
    env_path = chosen.run_dir / "environment.json"
    env = fileio.read_json(env_path) if env_path.is_file() else {}
    values = {
        "medauc.model": meta["model_name"], "medauc.seed": str(chosen.seed), "medauc.classes": list(meta["classes"]),
        "medauc.negative_class": chosen.negative_class, "medauc.preprocessing": preprocessing(meta, chosen),
        "medauc.threshold": {"value": chosen.threshold, "source": chosen.threshold_text()},
        "medauc.weights_sha256": fileio.file_sha256(weights), "medauc.run": chosen.run_dir.name,
        "medauc.version": (env.get("packages") or {}).get("medauc") or "",
    }
    set_metadata(proto, values)
    proto.doc_string = (f"medauc: {meta['model_name']} seed {chosen.seed}; input {INPUT_TEXT.format(s=meta['image_size'])}; "
                        "see metadata medauc.preprocessing")
    out = export_dir(chosen)
    path = out / "model.onnx"
    with lock.run_lock(chosen.run_dir):
        with fileio.atomic_path(out / "model.onnx.unchecked") as tmp:
            onnx.save_model(proto, str(tmp))
        unchecked = out / "model.onnx.unchecked"
        try:
            check = verify_onnx(unchecked, model, meta, images, ids, tolerance)
        except ExportError:
            unchecked.unlink(missing_ok=True)
            raise
        unchecked.replace(path)
        facts = {"schema": "medauc.export/1", "format": "onnx", "file": str(path.relative_to(chosen.run_dir)),
                 "sha256": fileio.file_sha256(path), "model": chosen.model, "seed": chosen.seed, "chosen": chosen.why,
                 "check": check, "metadata": {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}}
        fileio.write_json(out / "export.json", facts)
        write_card(out / "model_card.md", chosen, meta, facts)
    return facts


INPUT_TEXT = "image float32 (N, 1, {s}, {s}), 8-bit grey levels 0..255"


def _rebuild_report(chosen: Chosen) -> bool:
    """Rebuild the run's report, so that it links the new card; False when the run has no report."""
    from medauc import stages

    if records.stage_record(chosen.run_dir, "report") is None:
        return False
    stages.run("report", chosen.cfg, chosen.run_dir)
    return True


def main(args: argparse.Namespace) -> int:
    if not args.tolerance > 0:
        raise ExportError(f"--tolerance {args.tolerance}: must be > 0")
    chosen = choose(args.run, args.model, args.seed)
    if args.verify:
        from medauc.classify.models import load_trained

        model, meta = load_trained(chosen.model_dir)
        images, ids = test_images(chosen, meta)
        check = verify_onnx(args.verify, model, meta, images, ids, args.tolerance)
        print(f"export: {args.verify} reproduces {chosen.model} seed {chosen.seed} on {check['n_images']} test images "
              f"(largest difference {check['max_abs_diff']['probabilities']:.2e} in probabilities, "
              f"{check['max_abs_diff']['logits']:.2e} in logits; tolerance {args.tolerance:g})")
        return 0
    print(f"export: {chosen.model} seed {chosen.seed} of {chosen.run_dir} ({chosen.why}) to ONNX")
    facts = export_model(chosen, args.tolerance)
    out = chosen.run_dir / facts["file"]
    c = facts["check"]
    print(f"export: wrote {out} (sha256 {facts['sha256'][:16]}…); onnxruntime reproduces PyTorch on {c['n_images']} test images: "
          f"largest difference {c['max_abs_diff']['probabilities']:.2e} in probabilities, {c['max_abs_diff']['logits']:.2e} "
          f"in logits (tolerance {c['tolerance']:g})")
    print(f"export: model card {out.parent / 'model_card.md'}"
          + ("; report rebuilt with a link to it" if _rebuild_report(chosen) else ""))
    return 0
