"""Simulated predictions files, for tests, benchmarks and trying the evaluation without a model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medauc.fileio import write_csv

CLASSES = ("healthy", "glioma", "meningioma", "pituitary")


def simulate_probs(
    y: np.ndarray, n_classes: int, skill: float, rng: np.random.Generator,
    shared: np.ndarray | None = None, correlation: float = 0.5,
) -> np.ndarray:
    """Softmax probabilities (n, K) for class indices ``y`` (n,): logits = skill x one-hot + noise.

    ``shared`` (n, K) standard-normal noise common to several models makes them correlated by
    image (``correlation`` = share of the noise variance that is shared), as real models are.
    """
    own = rng.standard_normal((y.size, n_classes))
    noise = own if shared is None else np.sqrt(correlation) * shared + np.sqrt(1 - correlation) * own
    logits = skill * np.eye(n_classes)[y] + noise
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def write_predictions(path: str | Path, image_ids: Sequence[str], y: np.ndarray, probs: np.ndarray,
                      classes: Sequence[str] = CLASSES, decimals: int | None = None,
                      subjects: Sequence[str] | None = None) -> Path:
    """Write a predictions CSV (image_id, label, prob_<class>...[, subject]); ``decimals`` rounds (makes ties)."""
    rows = []
    for i, img in enumerate(image_ids):
        row = {"image_id": img, "label": classes[int(y[i])]}
        for c, name in enumerate(classes):
            v = float(probs[i, c])
            row[f"prob_{name}"] = round(v, decimals) if decimals is not None else repr(v)
        if subjects is not None:
            row["subject"] = subjects[i]
        rows.append(row)
    return write_csv(path, rows, ["image_id", "label"] + [f"prob_{c}" for c in classes] + (["subject"] if subjects is not None else []))


def simulate_run(
    root: str | Path, models: dict[str, float], seeds: Sequence[int] = (0,),
    n_per_class: Sequence[int] = (60, 40, 40, 40), n_val_per_class: Sequence[int] | None = (30, 20, 20, 20),
    seed: int = 0, classes: Sequence[str] = CLASSES, slices_per_patient: int = 0, patient_share: float = 0.7,
) -> dict[str, dict[int, Path]]:
    """Write ``root/predictions/<model>/<seed>/{test,val}.csv`` for models {name: skill}; returns the test files.

    ``slices_per_patient`` > 0: consecutive test images of a class belong to one patient of that many
    slices (named in a ``subject`` column), and ``patient_share`` of the shared noise is the patient's,
    common to all its slices: slices of one patient are correlated, as in real MRI series.
    """
    rng = np.random.default_rng(seed)
    k = len(classes)
    y = np.repeat(np.arange(k), n_per_class)
    ids = [f"img{i:05d}" for i in range(y.size)]
    subjects = None
    if slices_per_patient > 0:
        within = np.concatenate([np.arange(n) for n in n_per_class]) // slices_per_patient
        subjects = [f"{classes[c]}-p{j:03d}" for c, j in zip(y, within)]
        _, patient = np.unique(subjects, return_inverse=True)
    out: dict[str, dict[int, Path]] = {}
    for s in seeds:
        shared = rng.standard_normal((y.size, k))
        if subjects is not None:
            shared = np.sqrt(patient_share) * rng.standard_normal((patient.max() + 1, k))[patient] + np.sqrt(1 - patient_share) * shared
        for name, skill in models.items():
            folder = Path(root) / "predictions" / name / str(s)
            out.setdefault(name, {})[s] = write_predictions(folder / "test.csv", ids, y, simulate_probs(y, k, skill, rng, shared),
                                                            classes, subjects=subjects)
            if n_val_per_class is not None:
                yv = np.repeat(np.arange(k), n_val_per_class)
                write_predictions(folder / "val.csv", [f"val{i:05d}" for i in range(yv.size)], yv, simulate_probs(yv, k, skill, rng), classes)
    return out
