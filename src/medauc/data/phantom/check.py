"""A quick shortcut check: can global image properties alone tell the classes apart?

The same kind of features as the data stage's audit (size, aspect, file size, intensity
statistics, border darkness), a logistic regression and 5-fold cross-validated one-vs-rest AUC.
The folds keep each subject's slices together (subject id from the file name), since slices of one
subject share their scanner's intensities: split by image, the model would recognise subjects
seen in training and report a shortcut that is not a class cue.
For testing the phantom; the data stage's audit is the one a run reports.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

FEATURES = ("width", "height", "aspect", "file_bytes", "mean", "std", "p1", "p5", "p25", "p50", "p75", "p95", "p99", "border_mean")


def global_features(path: str | os.PathLike[str]) -> np.ndarray:
    """The features in ``FEATURES`` for one image file -> float64 (len(FEATURES),)."""
    p = Path(path)
    a = np.asarray(Image.open(p).convert("L"), dtype=np.float64)
    h, w = a.shape
    b = max(1, round(0.05 * min(h, w)))
    border = np.concatenate([a[:b].ravel(), a[-b:].ravel(), a[:, :b].ravel(), a[:, -b:].ravel()])
    pct = np.percentile(a, [1, 5, 25, 50, 75, 95, 99])
    return np.array([w, h, w / h, p.stat().st_size, a.mean(), a.std(), *pct, border.mean()])


def subject_of(path: str | os.PathLike[str]) -> str:
    """The subject id in a phantom image's file name (``sub-0042_s03.png`` -> ``sub-0042``); the
    file name itself when it holds none."""
    from medauc.data.phantom.generate import SUBJECT_PATTERN

    name = Path(path).name
    m = re.search(SUBJECT_PATTERN, name)
    return m.group(1) if m else name


def shortcut_auc(folder: str | os.PathLike[str], seed: int = 0, by_subject: bool = True) -> dict[str, float]:
    """Cross-validated one-vs-rest AUC per class from global features of a phantom folder.

    ``by_subject``: folds keep each subject's slices together (False: split by image).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from medauc.data.phantom.design import CLASSES

    root = Path(folder)
    paths, labels = [], []
    for c in CLASSES:
        for f in sorted((root / c).glob("*.png")):
            paths.append(f)
            labels.append(c)
    x = np.stack([global_features(p) for p in paths])
    y = np.array(labels)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    if by_subject:
        groups = np.array([subject_of(p) for p in paths])
        folds = StratifiedGroupKFold(5, shuffle=True, random_state=seed)
        prob = cross_val_predict(model, x, y, cv=folds, groups=groups, method="predict_proba")
    else:
        prob = cross_val_predict(model, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=seed), method="predict_proba")
    classes = sorted(set(labels))
    return {c: float(roc_auc_score(y == c, prob[:, i])) for i, c in enumerate(classes)}
