"""Speed of the augment stage (denoiser training, generation, checks) at the demo size.

Goal (issue 6): denoiser training and generation for the demo config (about 180 healthy training
images at 64 px, 6x) in at most 2 minutes on a 2-core CPU.

    python benchmarks/augment_speed.py                    # synthetic demo-sized set
    python benchmarks/augment_speed.py --run runs/demo-X  # a prepared run folder (its manifest.csv)

Prints wall and CPU seconds per phase (CPU seconds are less disturbed by other processes on
shared cores) and the denoiser's training throughput in images per second. Writes nothing
outside a temporary folder.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd


def synthetic_run(run_dir: Path, n_healthy: int, size: int, seed: int = 0) -> None:
    """A demo-sized manifest of textured ellipses (healthy) and ellipses with a bright disc (3 tumour classes)."""
    from medauc.data.images import save_png
    from medauc.data.manifest import write_manifest

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    rows, group = [], 0
    counts = {"healthy": n_healthy, "glioma": int(n_healthy * 0.8), "meningioma": int(n_healthy * 0.8), "pituitary": int(n_healthy * 0.85)}
    for ci, (label, n_train) in enumerate(counts.items()):
        n = int(n_train / 0.6)
        for k in range(n):
            split = "train" if k < n_train else ("val" if k < n_train + n // 10 else "test")
            a, b = rng.uniform(0.32, 0.42, 2)
            head = (((yy - 0.5) / a) ** 2 + ((xx - 0.5) / b) ** 2) < 1
            tex = np.kron(rng.random((16, 16)), np.ones((size // 16, size // 16)))
            img = head * (0.35 + 0.3 * tex) + rng.normal(0, 0.02, (size, size))
            if ci:
                ly, lx = [(0.4, 0.4), (0.3, 0.6), (0.65, 0.5)][ci - 1]
                img = img + 0.4 * (((yy - ly) ** 2 + (xx - lx) ** 2) < 0.006)
            path = save_png(run_dir / "images" / label / f"{k:04d}.png", np.clip(img, 0, 1)).resolve()
            rows.append({"image_id": f"{label}/{k:04d}", "path": str(path), "label": label, "split": split,
                         "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "phash": "0" * 16,
                         "width": size, "height": size, "mode": "L", "group": group, "mask_path": ""})
            group += 1
    write_manifest(run_dir / "manifest.csv", pd.DataFrame(rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=None, help="a prepared run folder to read manifest.csv from")
    p.add_argument("--config", default="demo")
    p.add_argument("--healthy", type=int, default=180, help="healthy training images in the synthetic set")
    p.add_argument("--size", type=int, default=128, help="synthetic image size (the demo phantom: 128)")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. augment.epochs=30")
    args = p.parse_args(argv)

    from medauc.augment.command import augment_stage
    from medauc.config import load_config

    cfg = load_config(args.config, args.overrides)
    tmp = Path(tempfile.mkdtemp(prefix="medauc-augment-bench-"))
    try:
        if args.run is not None:
            shutil.copy(args.run / "manifest.csv", tmp / "manifest.csv")
        else:
            synthetic_run(tmp, args.healthy, args.size)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = augment_stage(cfg, tmp, progress=False)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        t = result["timing"]
        n = result["counts"]
        a = cfg.augment
        train_imgs = n["healthy_train_original"] * a.epochs
        print(f"config {cfg.name}: augment.image_size={a.image_size} channels={a.channels} epochs={a.epochs} "
              f"sigmas={len(a.sigmas)} target={a.target} ({a.multiple}x); denoiser threads {a.num_threads or 'torch default'}")
        print(f"healthy train {n['healthy_train_original']} -> {n['healthy_train_augmented']} ({n['generated']} generated); "
              f"restored tumour test images {n['restored_test']}")
        print(f"denoiser training  {t['denoiser_train_seconds']:7.1f} s wall  ({train_imgs / t['denoiser_train_seconds']:.0f} img/s)")
        print(f"generation         {t['generate_seconds']:7.1f} s wall  ({n['generated'] / t['generate_seconds']:.0f} img/s incl. PNG writing)")
        core = t["denoiser_train_seconds"] + t["generate_seconds"]
        core_cpu = t["denoiser_train_cpu_seconds"] + t["generate_cpu_seconds"]
        print(f"training + generation {core:.1f} s wall, {core_cpu:.1f} s CPU (goal: <= 120 s wall)  {'OK' if core <= 120 else 'OVER'}")
        print(f"restore tumour test {t['restore_test_seconds']:6.1f} s wall; validation + baselines {t.get('validation_seconds', float('nan')):.1f} s; checks b-d {t['checks_seconds']:.1f} s wall")
        print(f"whole stage        {wall:7.1f} s wall, {cpu:.1f} s CPU (this process, all threads)")
        for row in result["b_restoration_quality"]["validation"]:
            base = f" (best blur {row['psnr_blur']:.1f}, NLM {row['psnr_nlm']:.1f})" if "psnr_nlm" in row else ""
            print(f"  sigma {row['sigma']:.1f}: PSNR {row['psnr_noisy']:.1f} -> {row['psnr_restored']:.1f} dB{base}, "
                  f"SSIM {row['ssim_noisy']:.3f} -> {row['ssim_restored']:.3f}")
        d = result["d_artefact_detectability"]
        print(f"  artefact AUC {d['auc']:.3f}; near-copies {result['c_memorisation']['near_copy_share']:.1%}")
        return 0 if core <= 120 else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
