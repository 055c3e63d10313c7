"""Speed of the explanation stage at demo sizes: goal <= 60 s for 400 images per model.

Demo sizes: 128 px images with lesion masks, 64 px model input, resnet18, densenet121,
efficientnet_b0 and vit_tiny_patch16_224 (img_size=64), Grad-CAM, untrained weights (speed does
not depend on them). Runs the stage's own code (explain_models): batching, CAMs for the true
class and, for misclassified images, the predicted class, scoring against the masks, the
random twin, panels. Prints seconds per model for the trained pass and the twin pass.

    GLIBC_TUNABLES=... .venv/bin/python benchmarks/explain_speed.py [--images 400] [--models a,b] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import timm
import torch

from medauc.config import load_config, replace
from medauc.explain.passes import ExplainModel
from medauc.explain.stage import explain_models

DEMO = ["resnet18", "densenet121", "efficientnet_b0", "vit_tiny_patch16_224"]
CLASSES = ["healthy", "glioma", "meningioma", "pituitary"]


def _create(name: str, size: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    kw = {"img_size": size} if "vit" in name else {}
    return timm.create_model(name, num_classes=len(CLASSES), in_chans=1, **kw).eval()


def _data(n: int, img: int, rng: np.random.Generator):
    images, masks = [], []
    labels = np.arange(n) % len(CLASSES)
    for lab in labels:
        x = (0.2 + 0.05 * rng.standard_normal((img, img))).astype(np.float32)
        m = None
        if lab != 0:
            r, c = rng.integers(0, img - 20, 2)
            x[r : r + 20, c : c + 20] += 0.5
            m = np.zeros((img, img), bool)
            m[r : r + 20, c : c + 20] = True
        images.append(np.clip(x, 0, 1))
        masks.append(m)
    return images, labels, masks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--size", type=int, default=64, help="model input size (px)")
    ap.add_argument("--image-size", type=int, default=128, help="image and mask size (px)")
    ap.add_argument("--models", default=",".join(DEMO))
    ap.add_argument("--methods", default="gradcam")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--min-grid", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default (all cores)")
    args = ap.parse_args()
    if args.threads > 0:
        # On cores shared with other jobs, fewer threads than cores can be much faster.
        torch.set_num_threads(args.threads)
    size = args.size
    images, labels, masks = _data(args.images, args.image_size, np.random.default_rng(0))

    def prepare(imgs: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(imgs, dtype=np.float32))[:, None]
        return (torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False) - 0.5) / 0.25

    cfg = replace(load_config("demo"), **{
        "explain.methods": args.methods.split(","), "explain.batch_size": args.batch_size,
        "explain.max_images": args.images, "explain.min_grid": args.min_grid,
    })
    print(f"torch threads {torch.get_num_threads()}, {args.images} images of {args.image_size} px, model input {size} px, "
          f"methods {args.methods}, batch {args.batch_size}")
    for name in args.models.split(","):
        entry = ExplainModel(name, _create(name, size, 0), CLASSES, prepare, (1, size, size), lambda n=name: _create(n, size, 1))
        # Reference on the same (shared, noisy) cores: plain inference over the same images.
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(images), args.batch_size):
                entry.model(prepare(np.stack(images[i : i + args.batch_size])))
        forward = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = explain_models([entry], images, labels, masks, [f"{i:04d}" for i in range(len(images))], cfg, tmp)
            total = time.perf_counter() - t0
        m = result["models"][name]
        for method, out in m["methods"].items():
            sec = out["seconds"]
            print(f"{name:24s} {method:9s} layer {m['target_layer']:22s} grid {m['grid']}  trained {sec['trained']:6.1f} s "
                  f"({args.images / sec['trained']:6.1f} img/s)  twin {sec.get('random_twin', float('nan')):6.1f} s  "
                  f"stage total {total:6.1f} s  inference alone {forward:5.1f} s (CAM/inference {sec['trained'] / forward:4.1f}x)  "
                  f"goal <= 60 s per model: {'met' if sec['trained'] <= 60 else 'MISSED'}", flush=True)


if __name__ == "__main__":
    main()
