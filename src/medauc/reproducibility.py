"""Reproducibility: one seeding function, and the facts needed to repeat a run.

:func:`seed_everything` seeds Python, NumPy and PyTorch from one integer; :func:`environment_info`
(written to every run folder's ``environment.json``) records package versions, the device and the
git commit.
"""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and PyTorch from one integer; return a NumPy generator for explicit use.

    Prefer passing the returned generator (or a ``torch.Generator`` seeded from the same value)
    to anything random over relying on global state.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return np.random.default_rng(seed)


def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        commit = out.stdout.strip() if out.returncode == 0 else ""
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=5,
        )
        if commit and dirty.returncode == 0 and dirty.stdout.strip():
            commit += "+dirty"
        return commit or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_info() -> dict[str, Any]:
    """Versions, device and machine facts needed to repeat a run."""
    from importlib import metadata

    versions = {}
    for pkg in ("medauc", "torch", "torchvision", "timm", "grad-cam", "monai", "numpy", "scipy", "scikit-learn", "pandas", "nilearn",
                "nibabel", "pydicom", "pylibjpeg-openjpeg", "python-gdcm",  # the last three decode DICOM
                "onnx", "onnxruntime", "onnxscript"):  # medauc export
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
        "git_commit": git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda_available"] = torch.cuda.is_available()
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        info["cuda_version"] = torch.version.cuda
        info["cuda_device_count"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:  # pragma: no cover
        info["device"] = "cpu"
    return info
