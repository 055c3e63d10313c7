"""A quick shortcut check: can global image properties alone tell the classes apart?

The same kind of features as the data stage's audit (size, aspect, file size, intensity
statistics, border darkness), a logistic regression and 5-fold cross-validated one-vs-rest AUC.
For testing the phantom; the data stage's audit is the one a run reports.
"""

from __future__ import annotations

import os
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


def shortcut_auc(folder: str | os.PathLike[str], seed: int = 0) -> dict[str, float]:
    """Cross-validated one-vs-rest AUC per class from global features of a phantom folder."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from medauc.data.phantom.generate import CLASSES

    root = Path(folder)
    paths, labels = [], []
    for c in CLASSES:
        for f in sorted((root / c).glob("*.png")):
            paths.append(f)
            labels.append(c)
    x = np.stack([global_features(p) for p in paths])
    y = np.array(labels)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    prob = cross_val_predict(model, x, y, cv=folds, method="predict_proba")
    classes = sorted(set(labels))
    return {c: float(roc_auc_score(y == c, prob[:, i])) for i, c in enumerate(classes)}
