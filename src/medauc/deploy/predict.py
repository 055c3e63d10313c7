"""``medauc predict --run DIR [--model NAME] [--seed S] INPUT... [--out FILE.csv] [--cam DIR]``.

Applies a trained model of a run folder to new images with exactly the run's preprocessing: the
files are read as the run read its own (:mod:`medauc.deploy.inputs`), resized and quantised as the
training cache did (:func:`medauc.data.datasets.resize_uint8`), normalised by the model's
:class:`~medauc.classify.models.InputTransform` and predicted by the training stage's own
:func:`~medauc.classify.predict.predict_logits`, in float32, on a GPU when there is one.

Writes ``FILE.csv`` with a row per image::

    input, [path,] subject, seen_in_run, predicted, prob_<class>..., screening_score, screening_positive

(``input``: ``file-<n>[-f<k>|-s<k>]``, the n-th file found, :mod:`medauc.deploy.inputs`; ``path``
only with ``--paths``, since exports name folders and files after patients; ``subject``: the run's
salted patient hash for DICOM and NIfTI; ``seen_in_run``: the run's splits that hold images of
that patient (``train``, ``val``, ``test``; "" for none or unknown): predictions on them are no
independent test; ``screening_score``:
1 - p(negative class); ``screening_positive``: 1 when the score is at or above the run's operating
threshold, empty without one), and ``FILE.json`` beside it: the model, seed and why, the threshold
and where it comes from, the preprocessing, and every input that gave no image with its reason
(each also printed as one line). ``--cam DIR``: a Grad-CAM overlay per image for its predicted
class, ``DIR/<input>.png``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from medauc import fileio
from medauc.deploy.chosen import Chosen, choose
from medauc.deploy.inputs import InputImage, Unreadable, find_inputs, read_input
from medauc.errors import DataError

log = logging.getLogger(__name__)
COLUMNS = ("input", "subject", "seen_in_run", "predicted")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (PNG, JPEG, TIFF, DICOM, NIfTI)")
    parser.add_argument("--run", required=True, metavar="DIR", help="the run folder the model was trained in")
    parser.add_argument("--model", default=None, help="trained model (timm name); default: the run's best by evaluate.primary_metric")
    parser.add_argument("--seed", type=int, default=None, help="training seed; default: the first of train.seeds trained")
    parser.add_argument("--out", default="predictions.csv", metavar="FILE.csv", help="predictions file (and FILE.json beside it) [predictions.csv]")
    parser.add_argument("--cam", default=None, metavar="DIR", help="write a Grad-CAM overlay per image (predicted class) into DIR")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass [64]")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: a CUDA GPU when one is visible [auto]")
    parser.add_argument("--force", action="store_true", help="overwrite FILE.csv and FILE.json if they exist")
    parser.add_argument("--paths", action="store_true",
                        help="write each input's path into FILE.csv, FILE.json and the messages (off: folder and file names "
                             "often name the patient; rows are file-<n>, the n-th file found)")


def preprocessing(meta: dict[str, Any], chosen: Chosen) -> dict[str, Any]:
    """The preprocessing of the run, in words and values (predict's JSON, the ONNX metadata, the card)."""
    d = chosen.cfg.data
    return {
        "image_size": int(meta["image_size"]),
        "grey": "each file as one grey-level image in [0, 1] (medauc.data.images: colour by ITU-R 601-2 luminance, "
                "16-bit / 65535, alpha composited on black)",
        "dicom": {"window": d.window, "frames": d.dicom_frames,
                  "steps": "Modality LUT or Rescale Slope/Intercept, data.window, MONOCHROME1 inverted, rounded to 8 bits"},
        "nifti": {"window": d.window, "volume_axis": d.volume_axis, "slices": d.slices, "mask_pattern": d.mask_pattern,
                  "steps": "reoriented to RAS+, one window per volume, sliced along volume_axis, rounded to 8 bits"},
        "resize": f"bilinear, antialiased (PIL) to {meta['image_size']} x {meta['image_size']}, then rounded to 8 bits "
                  "(value = round(255 x grey))",
        "normalise": {"mean": [float(v) * 255 for v in meta["mean"]], "std": [float(v) * 255 for v in meta["std"]],
                      "on": "8-bit values 0..255", "in_chans": int(meta["in_chans"]),
                      "channels": "the grey image repeated" if int(meta["in_chans"]) > 1 else "one grey channel"},
    }


def seen_in_run(run_dir: str | Path) -> dict[str, str]:
    """``{subject: "train,test"}``: the splits of the run's manifest that hold each known patient's images."""
    import pandas as pd

    path = Path(run_dir) / "manifest.csv"
    if not path.is_file():
        return {}
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "subject" not in df.columns:
        return {}
    order = {"train": 0, "val": 1, "test": 2}
    known = df[df["subject"] != ""]
    return {subject: ",".join(sorted(set(splits), key=lambda x: order.get(x, 3)))
            for subject, splits in known.groupby("subject")["split"]}


def _cam_overlays(chosen: Chosen, model: Any, meta: dict[str, Any], x_u8: Any, items: list[InputImage],
                  predicted: np.ndarray, cam_dir: Path, transform: Any) -> None:
    """Grad-CAM of each image's predicted class, over the image as read, written to ``cam_dir/<input>.png``."""
    from PIL import Image

    from medauc.explain.cam import CamExplainer
    from medauc.explain.panels import overlay
    from medauc.fileio import atomic_path

    e = chosen.cfg.explain
    size, in_chans = int(meta["image_size"]), int(meta["in_chans"])
    with CamExplainer(model, e.methods[0], (in_chans, size, size), e.target_layer, seed=chosen.cfg.seed, min_grid=e.min_grid) as cam:
        for start in range(0, len(items), e.batch_size):
            sl = slice(start, start + e.batch_size)
            maps, _ = cam(transform(x_u8[sl]), [int(c) for c in predicted[sl]])
            for item, m in zip(items[sl], maps):
                with atomic_path(cam_dir / f"{item.name}.png") as tmp:
                    Image.fromarray(overlay(item.image, m)).save(tmp, format="PNG")


def predict_inputs(chosen: Chosen, inputs: list[str], batch_size: int = 64, device: str = "auto",
                   cam_dir: str | Path | None = None, paths: bool = False) -> tuple[list[dict[str, Any]], list[Unreadable], dict[str, Any]]:
    """Predict every image of ``inputs`` with ``chosen``: rows (module docstring; ``path`` with ``paths``), the
    inputs that gave no image (each printed as one line), and facts for the JSON (device, preprocessing, counts)."""
    import torch

    from medauc.classify.models import InputTransform, load_trained
    from medauc.classify.predict import predict_logits, predictions_frame
    from medauc.data.convert import load_salt
    from medauc.data.datasets import resize_uint8
    from medauc.device import resolve_device
    from medauc.progress import progress_bar

    dcfg = chosen.cfg.data
    files, bad, passed_over = find_inputs(inputs, dcfg.mask_pattern)
    salt = load_salt(chosen.run_dir) if any(f.kind != "image" for f in files) else None
    model, meta = load_trained(chosen.model_dir)
    dev = resolve_device(device)
    channels_last = bool(meta.get("channels_last", False))
    model = model.to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    transform = InputTransform(meta, dev, channels_last)
    classes = list(meta["classes"])
    neg = classes.index(chosen.negative_class) if chosen.negative_class in classes else 0
    threshold = chosen.threshold
    seen = seen_in_run(chosen.run_dir) if salt is not None else {}
    rows: list[dict[str, Any]] = []
    bar = progress_bar(total=len(files), desc="predict", unit="file", dynamic_ncols=True, mininterval=0.5)
    try:
        for start in range(0, len(files), batch_size):
            items: list[InputImage] = []
            for f in files[start : start + batch_size]:
                got = read_input(f, dcfg, salt)
                if isinstance(got, Unreadable):
                    bad.append(got)
                    print(f"medauc predict: skipped {got.line(paths)}", file=sys.stderr)
                else:
                    items += got
                bar.update()
            if not items:
                continue
            x = resize_uint8([it.image for it in items], int(meta["image_size"]))
            logits = predict_logits(model, x, transform, batch_size)
            frame = predictions_frame([it.name for it in items], [""] * len(items), logits, classes)
            prob = frame[[f"prob_{c}" for c in classes]].to_numpy()
            predicted = prob.argmax(axis=1)
            for it, p, k in zip(items, prob, predicted):
                score = 1.0 - float(p[neg])
                rows.append({"input": it.name, **({"path": it.path} if paths else {}), "subject": it.subject,
                             "seen_in_run": seen.get(it.subject, "") if it.subject else "", "predicted": classes[int(k)],
                             **{f"prob_{c}": float(v) for c, v in zip(classes, p)}, "screening_score": score,
                             "screening_positive": "" if threshold is None else int(score >= threshold)})
            if cam_dir is not None:
                _cam_overlays(chosen, model, meta, x, items, predicted, Path(cam_dir), transform)
    finally:
        bar.close()
    facts = {"device": str(dev), "files": len(files), "passed_over": passed_over, "preprocessing": preprocessing(meta, chosen),
             "classes": classes}
    return rows, bad, facts


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    side = out.with_suffix(".json")
    if out.suffix.lower() != ".csv":
        raise DataError(f"--out {out}: the predictions file must end in .csv")
    if args.batch_size < 1:
        raise DataError(f"--batch-size {args.batch_size}: must be >= 1")
    if not args.force and (out.exists() or side.exists()):
        raise DataError(f"--out {out}: {out if out.exists() else side} exists; pass --force to overwrite it, or choose another --out")
    chosen = choose(args.run, args.model, args.seed)
    print(f"predict: {chosen.model} seed {chosen.seed} of {chosen.run_dir} ({chosen.why})")
    print(f"predict: {chosen.threshold_text()}")
    rows, bad, facts = predict_inputs(chosen, args.inputs, args.batch_size, args.device, args.cam, args.paths)
    for b in bad:
        if b.name.startswith("arg-"):
            print(f"medauc predict: skipped {b.line(args.paths)}", file=sys.stderr)
    columns = [COLUMNS[0], *(["path"] if args.paths else []), *COLUMNS[1:], *(f"prob_{c}" for c in facts["classes"]),
               "screening_score", "screening_positive"]
    fileio.write_csv(out, rows, columns)
    fileio.write_json(side, {
        "schema": "medauc.predict/1", "run": str(chosen.run_dir), "model": chosen.model, "seed": chosen.seed,
        "chosen": chosen.why, "negative_class": chosen.negative_class, "threshold": chosen.threshold,
        "threshold_source": chosen.threshold_text(), "operating_point": chosen.operating_point,
        "device": facts["device"], "precision": "float32", "preprocessing": facts["preprocessing"],
        "n_images": len(rows), "n_files": facts["files"], "passed_over_in_folders": facts["passed_over"],
        "skipped": [{"input": b.name, **({"path": b.path} if args.paths else {}), "reason": b.reason} for b in bad],
        "cam": str(args.cam) if args.cam else None,
    })
    seen = sum(bool(r["seen_in_run"]) for r in rows)
    if seen:
        print(f"medauc predict: warning: {seen} image(s) come from patients whose images this run trained, selected or "
              "tested on (column seen_in_run): their predictions are no independent test", file=sys.stderr)
    print(f"predict: {len(rows)} image(s) from {facts['files']} file(s) on {facts['device']}"
          + (f", {len(bad)} input(s) skipped (listed above and in {side})" if bad else "")
          + (f", {facts['passed_over']} other file(s) in the folders passed over" if facts["passed_over"] else "")
          + f"; wrote {out}" + (f" and Grad-CAM overlays in {args.cam}" if args.cam else ""))
    return 0 if rows or not bad else 2
