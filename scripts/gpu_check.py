"""One prepared check of medauc's CUDA training path, for a machine with an NVIDIA GPU.

What it runs, each through medauc's own command line, on a generated folder-per-class data set
(four classes of easily told apart shapes, so a model that trains correctly must get well above
chance in a few epochs):

1. ``medauc prepare`` on the folder;
2. ``medauc train`` on CUDA with bf16 autocast, with fp16 autocast + loss scaling, and in float32,
   and once on CPU in float32 as the reference: every run must finish with finite losses, record
   its precision in ``model.json``, and reach the accuracy bar; CUDA and CPU accuracies are compared;
3. interruption on CUDA: a training killed with SIGKILL after its first epoch, then the same command,
   must finish from where it stopped (epochs 1..E once each in ``history.csv``);
4. DDP with NCCL through ``torchrun`` (one process per visible GPU, at most 2; with one GPU a
   process group of one, ``MEDAUC_DDP_SINGLE=1``): the gathered predictions cover every test
   image exactly once;
5. ``benchmarks/throughput.py --device cuda``: medauc's training step against a bare timm loop,
   images/s and the data-wait share, at 224 px.

Everything it prints also goes to ``OUT/gpu_check.log``; a summary with pass/fail per item goes to
``OUT/gpu_check.json``. Exit status 0 when every check passed.

    python scripts/gpu_check.py --out /tmp/gpu-check          # medauc and its dependencies installed
    PYTHONPATH=src python scripts/gpu_check.py --out $OUT      # from a checkout, dependencies installed

On a machine without internet that has PyTorch but not all of medauc's pure-Python dependencies,
bring them as wheels (here, with internet, in the repository root; ``.whl/`` is ignored by git)::

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \\
        timm==1.0.31 ImageHash==4.3.2 PyWavelets==1.9.0

and there run ``pip install --no-index --no-deps --target /tmp/site .whl/*.whl`` and
``export PYTHONPATH=/tmp/site:src`` first. ``--device cpu`` runs the same script without a GPU
(steps 2-5 on CPU, gloo instead of NCCL) to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["healthy", "glioma", "meningioma", "pituitary"]
MODELS = ["resnet18", "efficientnet_b0", "vit_tiny_patch16_224"]
# Chance is 0.25 (180 test images: SD 0.03). On CPU in 10 epochs the CNNs reach 0.97-0.98; vit_tiny,
# from scratch, about 0.5 and still climbing, so it is held to "clearly learns" only.
ACCURACY_BAR = 0.4
CONVERGED = 0.9  # models at least this accurate on CPU must match it on CUDA within DEVICE_GAP
DEVICE_GAP = 0.1


class Log:
    def __init__(self, path: Path) -> None:
        self.file = path.open("a", encoding="utf-8")

    def __call__(self, *parts: object) -> None:
        line = " ".join(str(p) for p in parts)
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


def make_data(folder: Path, per_class: int, size: int, seed: int = 0) -> None:
    """Four classes a small CNN tells apart in a few epochs: plain, dark disc, bright disc, bright bar.

    Each image has its own noise, brightness and object position, so memorising pixels does not work.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for c, cls in enumerate(CLASSES):
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = 0.35 + 0.1 * rng.standard_normal() + 0.05 * rng.standard_normal((size, size))
            cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.08, 0.15)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            if cls == "glioma":
                img = np.where(disc, img - 0.3, img)
            elif cls == "meningioma":
                img = np.where(disc, img + 0.4, img)
            elif cls == "pituitary":
                img = np.where((np.abs(yy - cy) < r / 3) & (np.abs(xx - cx) < 2 * r), img + 0.4, img)
            Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / cls / f"{cls}_{i:04d}.png")


def medauc(*args: str) -> list[str]:
    return [sys.executable, "-m", "medauc", *args]


def run(log: Log, cmd: list[str], timeout: float = 900) -> tuple[int, float]:
    log("$", " ".join(cmd))
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    for line in p.stdout.splitlines():
        if "|" in line and ("step/s" in line or "s/step" in line or "img/s" in line):
            continue  # progress-bar redraws
        log("  " + line)
    log(f"  -> exit {p.returncode} in {seconds:.1f} s")
    return p.returncode, seconds


def accuracy(pred_csv: Path) -> float:
    d = pd.read_csv(pred_csv)
    prob = d.filter(like="prob_").to_numpy()
    classes = [c.removeprefix("prob_") for c in d.filter(like="prob_").columns]
    y = d["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    return float((prob.argmax(1) == y).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu-check", help="folder for the log, summary and runs")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--per-class", type=int, default=150, help="generated images per class")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--bench-size", type=int, default=224)
    ap.add_argument("--skip-bench", action="store_true")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    log = Log(out / "gpu_check.log")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["PYTHONUNBUFFERED"] = "1"
    results: dict[str, dict] = {}

    import torch

    cuda = args.device == "cuda"
    log("torch", torch.__version__, "cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
    if cuda:
        if not torch.cuda.is_available():
            log("no CUDA device visible: run with --device cpu to check the script itself")
            return 2
        log("gpu", torch.cuda.get_device_name(0), "bf16 supported", torch.cuda.is_bf16_supported())
    import timm

    log("timm", timm.__version__, "python", sys.version.split()[0])

    data, prepared = work / "data", work / "prepared"
    if not data.is_dir():
        make_data(data, args.per_class, 96)
    common = ["--config", "smoke", "data.source=folder", f"data.path={data}", "data.image_size=64",
              "data.shortcut_audit=false", f"train.epochs={args.epochs}", "train.early_stopping_patience=99",
              "train.lr=0.001", "train.zero_head=true", "train.batch_size=16"]
    rc, _ = run(log, medauc("prepare", "--out", str(prepared), *common))
    manifest = prepared / "manifest.csv"
    results["prepare"] = {"ok": rc == 0 and manifest.is_file()}
    if not results["prepare"]["ok"]:
        return finish(log, out, results)
    n_test = int((pd.read_csv(manifest)["split"] == "test").sum())
    models = args.models.split(",")

    # 2. precisions on the device, and the CPU reference
    variants = {"bf16": ["train.amp=true", "train.amp_dtype=bf16"], "fp16": ["train.amp=true", "train.amp_dtype=fp16"],
                "fp32": ["train.amp=false"]}
    if not cuda:
        variants = {"fp32": ["train.amp=false"]}
    want = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
    runs_ = {f"{args.device}-{k}": (args.device, v, want[k]) for k, v in variants.items()}
    if cuda:
        runs_["cpu-fp32"] = ("cpu", ["train.amp=false"], "float32")
    for name, (device, extra, precision) in runs_.items():
        folder = work / name
        rc, seconds = run(log, medauc("train", "--out", str(folder), "--manifest", str(manifest), *common,
                                      f"model.names=[{','.join(models)}]", f"train.device={device}", *extra))
        per_model = {}
        for m in models:
            mdir = folder / "train" / m / "0"
            try:
                meta = json.loads((mdir / "model.json").read_text())
                hist = pd.read_csv(mdir / "history.csv")
                acc = accuracy(folder / "predictions" / m / "0" / "test.csv")
            except (OSError, ValueError, KeyError) as exc:
                per_model[m] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                continue
            finite = bool(np.isfinite(hist[["train_loss", "val_loss"]].to_numpy()).all())
            ok = finite and meta.get("precision") == precision and acc >= ACCURACY_BAR
            per_model[m] = {"ok": ok, "test_accuracy": round(acc, 4), "precision": meta.get("precision"),
                            "finite_losses": finite, "images_per_s": [float(v) for v in hist["images_per_s"]],
                            "data_wait_fraction": [float(v) for v in hist["data_wait_fraction"]]}
            log(f"  {name} {m}: {per_model[m]}")
        results[f"train-{name}"] = {"ok": rc == 0 and all(v["ok"] for v in per_model.values()),
                                    "seconds": round(seconds, 1), "models": per_model}
    if cuda and "train-cpu-fp32" in results and "train-cuda-fp32" in results:
        acc = {d: {m: results[f"train-{d}-fp32"]["models"][m].get("test_accuracy", math.nan) for m in models} for d in ("cuda", "cpu")}
        gaps = {m: round(abs(acc["cuda"][m] - acc["cpu"][m]), 4) for m in models}
        held = [m for m in models if acc["cpu"][m] >= CONVERGED]
        results["cuda-vs-cpu"] = {"ok": bool(held) and all(gaps[m] <= DEVICE_GAP for m in held),
                                  "accuracy_gap": gaps, "compared": held}

    # 3. SIGKILL after the first epoch, then the same command resumes
    folder = work / f"{args.device}-resume"
    cmd = medauc("train", "--out", str(folder), "--manifest", str(manifest), *common, f"model.names=[{models[0]}]",
                 f"train.device={args.device}", f"train.epochs={max(args.epochs, 3)}")
    log("$", " ".join(cmd), "(killed after epoch 1)")
    hist_path = folder / "train" / models[0] / "0" / "history.csv"
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None:
        if hist_path.is_file() and len(pd.read_csv(hist_path)) >= 1:
            break
        time.sleep(0.2)
    killed_after = len(pd.read_csv(hist_path)) if hist_path.is_file() else 0
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    rc, _ = run(log, cmd)
    epochs = list(pd.read_csv(hist_path)["epoch"]) if hist_path.is_file() else []
    results["resume"] = {"ok": rc == 0 and 0 < killed_after < max(args.epochs, 3) and epochs == list(range(1, max(args.epochs, 3) + 1)),
                         "killed_after_epochs": killed_after, "epochs": epochs}

    # 4. DDP through torchrun (NCCL on CUDA, gloo on CPU)
    nproc = min(2, torch.cuda.device_count()) if cuda else 2
    if nproc == 1:
        os.environ["MEDAUC_DDP_SINGLE"] = "1"  # one GPU: a process group of one, so NCCL and DDP still run
    folder = work / f"{args.device}-ddp"
    rc, seconds = run(log, [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                            "-m", "medauc", "train", "--out", str(folder), "--manifest", str(manifest), *common,
                            f"model.names=[{models[0]}]", f"train.device={args.device}"])
    pred = folder / "predictions" / models[0] / "0" / "test.csv"
    ddp_ok = rc == 0 and pred.is_file()
    info: dict = {"processes": nproc, "seconds": round(seconds, 1)}
    if ddp_ok:
        ids = pd.read_csv(pred)["image_id"]
        expected = pd.read_csv(manifest).query("split == 'test'")["image_id"]
        info.update(rows=len(ids), unique=int(ids.nunique()), test_images=n_test, test_accuracy=round(accuracy(pred), 4))
        ddp_ok = len(ids) == n_test and set(ids) == set(expected)
    results["ddp"] = {"ok": ddp_ok, **info}

    # 5. throughput against a bare loop
    if not args.skip_bench:
        rc, _ = run(log, [sys.executable, "benchmarks/throughput.py", "--device", args.device, "--models", ",".join(models),
                          "--size", str(args.bench_size), "--batch", "64" if cuda else "16",
                          "--images", "1024" if cuda else "64", "--rounds", "3" if cuda else "1"], timeout=1200)
        results["throughput"] = {"ok": rc == 0}
    return finish(log, out, results)


def finish(log: Log, out: Path, results: dict) -> int:
    ok = all(r["ok"] for r in results.values())
    (out / "gpu_check.json").write_text(json.dumps({"ok": ok, **results}, indent=2) + "\n", encoding="utf-8")
    for name, r in results.items():
        log(f"{'PASS' if r['ok'] else 'FAIL'} {name}")
    log("all passed" if ok else "some checks FAILED", "; summary in", out / "gpu_check.json")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
