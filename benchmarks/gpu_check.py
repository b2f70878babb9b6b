"""The prepared GPU check: everything vitlab needs to know from a GPU, in one command of about six
minutes on one H100/H200, each figure written to --out as soon as it is measured (a run cut short
still returns what it had).

    PYTHONPATH=src python benchmarks/gpu_check.py --data data/cifar10-jpeg.tar.gz --out gpu-check
    python benchmarks/gpu_check.py --smoke --out /tmp/smoke      # every step at toy size on the CPU

It needs no network and no installation beyond the machine's torch, torchvision (and timm for the
bench step): run it from the repository root with PYTHONPATH=src, or after `pip install --no-deps -e .`.
--data is the CIFAR-10 JPEG copy (the .tar.gz or its unpacked folder).

Steps, in order, and the file each writes:
 1. env.json          torch, CUDA, the device, vitlab
 2. cuda_tests.txt    the tests marked `cuda` (tests/test_cuda.py): bf16 attention against fp32, eager
                      and compiled, relative bias; attention maps against the fused path; device batches
                      against the CPU path; host syncs of a training epoch
 3. bench.json        `vitlab bench` of ViT-B/16 at 224 px, batch 256, bf16, against timm with the same
                      weights: images/s of training and inference, MFU
 4. runs.json         short training runs with the defaults, each stopped by SIGTERM in the middle of
                      an epoch and resumed: vit_cifar with relative position bias, drop path, AutoAugment,
                      RandAugment, erasing and Mixup; resnet18 (channels-last); the hybrid; fp16 with its
                      grad scaler and clipping. Finite losses, last.pt read on the CPU, resumed to the end
 5. kill.json         a run killed with SIGKILL in the middle of an epoch and resumed, against the same
                      run uninterrupted: the difference of weights and accuracy
 6. recipe.json       configs/cifar10_vit_fast.yaml to the end or to the time left (train.max_seconds):
    recipe_metrics.csv  time to 89.9%, best and final accuracy, images/s, set-up time
 7. summary.md        every figure above in one page
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.899  # the seed's 89.87%, rounded up
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class Check:
    def __init__(self, out: Path, budget: float, smoke: bool):
        self.out, self.budget, self.smoke, self.t0 = out, budget, smoke, time.monotonic()
        self.summary: list[str] = []
        out.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        if smoke:
            self.env["CUDA_VISIBLE_DEVICES"] = ""  # the toy run stays on the CPU

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def m(self, seconds: float) -> float:
        """A margin of the GPU check in seconds, scaled to the budget of --smoke."""
        return seconds / 8 if self.smoke else seconds * self.budget / 360.0

    def write(self, name: str, data) -> None:
        path = self.out / name
        path.write_text(data if isinstance(data, str) else json.dumps(data, indent=1, default=str))
        print(f"[{time.monotonic() - self.t0:6.1f} s] wrote {path}", flush=True)

    def note(self, line: str) -> None:
        self.summary.append(line)
        self.write("summary.md", "# GPU check\n\n" + "\n".join(f"- {s}" for s in self.summary) + "\n")

    def vitlab(self, *args, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "vitlab", *map(str, args)], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=max(timeout, 5))


# --------------------------------------------------------------------------- data

def cifar_root(given: str | None, smoke: bool, scratch: Path) -> Path:
    """The CIFAR-10 JPEG copy as a folder: unpacked from the archive, or a toy one for --smoke."""
    if smoke:
        from PIL import Image
        import numpy as np

        rng = np.random.default_rng(0)
        root = scratch / "cifar10-toy"
        for split, n in (("train", 24), ("test", 8)):
            for c, name in enumerate(CLASSES):
                d = root / split / name
                d.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    img = rng.integers(0, 60, (32, 32, 3)).astype("uint8")
                    img[:, 3 * c:3 * c + 4] = 220  # a learnable stripe per class
                    Image.fromarray(img).save(d / f"{i:04d}.jpg", quality=95)
        return root
    if given is None:
        sys.exit("gpu_check: give --data (the CIFAR-10 JPEG copy, .tar.gz or folder) or --smoke")
    path = Path(given)
    if path.is_dir():
        return path
    with tarfile.open(path) as tar:
        try:
            tar.extractall(scratch, filter="data")
        except TypeError:  # Python before 3.11.4: no filter argument
            tar.extractall(scratch)
    found = [p.parent.parent for p in scratch.rglob("train/airplane")]
    if not found:
        sys.exit(f"gpu_check: no train/airplane/ in {path}")
    return found[0]


# --------------------------------------------------------------------------- the steps

def step_env(c: Check) -> None:
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    import vitlab

    cuda = torch.cuda.is_available() and not c.smoke
    c.write("env.json", {
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "vitlab": vitlab.__version__, "device": torch.cuda.get_device_name(0) if cuda else platform.processor()
        or platform.machine(), "gpus": torch.cuda.device_count() if cuda else 0, "cpus": os.cpu_count(),
        "smoke": c.smoke})
    c.note(f"device: {torch.cuda.get_device_name(0) if cuda else 'CPU (smoke)'}; torch {torch.__version__}")


def step_cuda_tests(c: Check) -> None:
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda",
                        "tests/test_cuda.py"], cwd=ROOT, env=c.env, capture_output=True, text=True,
                       timeout=max(min(150, c.left() - c.m(200)), 30))
    c.write("cuda_tests.txt", r.stdout[-20000:] + r.stderr[-5000:])
    c.note(f"cuda tests: {(r.stdout.strip().splitlines() or ['no output'])[-1]}")


def step_bench(c: Check) -> None:
    args = (["--model", "vit_mnist", "--batch-size", "8", "--rounds", "2", "--device", "cpu"] if c.smoke else
            ["--model", "vit_b16", "--img-size", "224", "--batch-size", "256", "--amp", "bf16", "--device", "cuda",
             "--rounds", "5"])
    r = c.vitlab("bench", *args, "--json", timeout=min(120, c.left() - c.m(150)))
    try:
        result = json.loads(r.stdout)
    except json.JSONDecodeError:
        result = {"error": (r.stderr.strip().splitlines() or ["no output"])[-1], "code": r.returncode}
    c.write("bench.json", result)
    if "phases" not in result:
        c.note(f"bench {args[1]}: failed: {result.get('error')}")
        return
    parts = []
    for phase, r in result["phases"].items():
        mfu = r["vitlab"].get("mfu")
        parts.append(f"{phase} {r['vitlab']['images_per_s']:,.0f} images/s (timm {r['reference']['images_per_s']:,.0f}, "
                     f"paired ratio timm/vitlab {r['paired_ratio']:.3f}" + (f", MFU {100 * mfu:.1f}%" if mfu else "")
                     + ")")
    c.note(f"bench {args[1]} batch {result['batch']} {result['amp']}: " + "; ".join(parts))


def run_config(c: Check, folder: Path, data: Path, model: dict, train: dict, extra_data: dict) -> Path:
    import yaml

    cfg = {"model": model,
           "data": {"name": "cifar10", "root": str(data), "train_subset": 160 if c.smoke else 4096,
                    "val_subset": 40 if c.smoke else 1000, "subset_mode": "random", **extra_data},
           "train": {"epochs": 3, "batch_size": 8 if c.smoke else 64, "loggers": [], "progress": False,
                     "warmup_epochs": 0.5, **({"device": "cpu", "threads": 1} if c.smoke else {}), **train}}
    path = folder / "config.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def stop_mid_epoch(c: Check, config: Path, out: Path, sig: int, timeout: float) -> dict:
    """Start a run, send ``sig`` a quarter into its second epoch; returns what happened."""
    p = subprocess.Popen([sys.executable, "-m", "vitlab", "train", str(config), "--out", str(out)], cwd=ROOT,
                         env=c.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t = time.monotonic()
    while not (out / "metrics.csv").exists() and p.poll() is None and time.monotonic() - t < timeout:
        time.sleep(0.05)
    if p.poll() is None and (out / "metrics.csv").exists():
        with open(out / "metrics.csv") as f:
            first = float(list(csv.DictReader(f))[0]["seconds"])
        time.sleep(max(0.05, first / 4))
        p.send_signal(sig)
    try:
        stdout, stderr = p.communicate(timeout=max(timeout - (time.monotonic() - t), 5))
    except subprocess.TimeoutExpired:
        p.kill()
        stdout, stderr = p.communicate()
    return {"code": p.returncode, "stderr": stderr.strip().splitlines()[-1:] if stderr.strip() else []}


def read_last(out: Path) -> dict:
    import torch

    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)  # read on the CPU
    return {"epoch": ckpt["epoch"], "skip_samples": ckpt.get("skip_samples", 0),
            "losses_finite": all(math.isfinite(r["train_loss"]) for r in ckpt["history"]),
            "val_acc": [round(r["val_acc"], 4) for r in ckpt["history"]], "rng_saved": "rng" in ckpt}


def step_runs(c: Check, data: Path, scratch: Path) -> None:
    tiny_vit = {"depth": 2, "embed_dim": 96, "num_heads": 4, "mlp_dim": 192} if c.smoke else {}
    runs = {
        "vit_cifar_relative_aug": ({"name": "vit_cifar", "pos_embed": "relative", "drop_path": 0.1, **tiny_vit}, {},
                                   {"crop_padding": 4, "hflip": True, "auto_augment": "cifar10", "rand_augment": 2,
                                    "random_erasing": 0.25, "mixup": 0.8}),
        "resnet18_channels_last": ({"name": "resnet18", "stem": "cifar"}, {"optimizer": "sgd", "lr": 0.05},
                                   {"hflip": True, **({"img_size": 16} if c.smoke else {"crop_padding": 4})}),
        "hybrid": ({"name": "vit_hybrid_cifar", **tiny_vit}, {}, {"hflip": True}),
        "fp16_clipped": ({"name": "vit_cifar", **tiny_vit},
                         {} if c.smoke else {"amp": "fp16", "clip_grad": 1.0}, {"hflip": True}),
    }
    results = {}
    for name, (model, train, extra) in runs.items():
        if c.left() < c.m(150):
            results[name] = "skipped: out of time"
            continue
        out = scratch / "runs" / name
        cfg = run_config(c, scratch / "cfg" / name, data, model, train, extra)
        t = time.monotonic()
        stopped = stop_mid_epoch(c, cfg, out, signal.SIGTERM, timeout=min(120, c.left() - c.m(120)))
        mid = read_last(out) if (out / "last.pt").exists() else None
        resumed = c.vitlab("train", "--resume", out, timeout=min(120, c.left() - c.m(100)))
        results[name] = {"stopped": stopped, "at_stop": mid, "resume_code": resumed.returncode,
                         "resume_tail": resumed.stdout.strip().splitlines()[-1:],
                         "end": read_last(out) if (out / "last.pt").exists() else None,
                         "seconds": round(time.monotonic() - t, 1)}
        ok = (stopped["code"] == 130 and mid and mid["skip_samples"] > 0 and resumed.returncode == 0
              and results[name]["end"]["epoch"] == 3 and results[name]["end"]["losses_finite"])
        results[name]["ok"] = bool(ok)
        c.write("runs.json", results)
    c.note("runs (SIGTERM mid-epoch, resume): " + ", ".join(
        f"{k} {'ok' if isinstance(v, dict) and v['ok'] else 'FAILED' if isinstance(v, dict) else v}"
        for k, v in results.items()))


def step_kill(c: Check, data: Path, scratch: Path) -> None:
    import torch

    if c.left() < c.m(140):
        c.note("kill: skipped, out of time")
        return
    model = {"name": "vit_cifar", **({"depth": 2, "embed_dim": 96, "num_heads": 4, "mlp_dim": 192} if c.smoke
                                     else {})}
    cfg = run_config(c, scratch / "cfg" / "kill", data, model, {}, {"crop_padding": 4, "hflip": True})
    straight = c.vitlab("train", cfg, "--out", scratch / "kill-straight", timeout=min(120, c.left() - c.m(100)))
    killed = stop_mid_epoch(c, cfg, scratch / "kill-run", signal.SIGKILL, timeout=min(120, c.left() - c.m(80)))
    resumed = c.vitlab("train", "--resume", scratch / "kill-run", timeout=min(120, c.left() - c.m(60)))
    a = torch.load(scratch / "kill-straight" / "last.pt", map_location="cpu", weights_only=True)
    b = torch.load(scratch / "kill-run" / "last.pt", map_location="cpu", weights_only=True)
    diff = max((a["model"][k].float() - b["model"][k].float()).abs().max().item() for k in a["model"])
    result = {"straight_code": straight.returncode, "killed_code": killed["code"], "resume_code": resumed.returncode,
              "max_weight_difference": diff, "val_acc_straight": [r["val_acc"] for r in a["history"]],
              "val_acc_resumed": [r["val_acc"] for r in b["history"]], "bit_exact": diff == 0.0}
    c.write("kill.json", result)
    c.note(f"SIGKILL mid-epoch and resume: max weight difference {diff:.3g} against the uninterrupted run "
           f"(bit-exact: {diff == 0.0}); final val acc {result['val_acc_resumed'][-1:]} vs "
           f"{result['val_acc_straight'][-1:]}")


def step_recipe(c: Check, data: Path, scratch: Path) -> None:
    seconds = min(300.0, c.left() - c.m(45))
    if seconds < c.m(20):
        c.note("recipe: skipped, out of time")
        return
    sets = [f"data.root={data}", f"train.max_seconds={seconds:.0f}", "train.progress=false"]
    if c.smoke:
        sets += ["model.depth=1", "model.embed_dim=48", "model.num_heads=4", "model.mlp_dim=96", "train.epochs=2",
                 "train.batch_size=32", "train.device=cpu", "train.compile=false", "train.amp=none",
                 "train.fused=false", "train.check_every=1", "data.device_resident=null", "train.warmup_epochs=0.5"]
    out = scratch / "recipe"
    t = time.monotonic()
    r = c.vitlab("train", ROOT / "configs" / "cifar10_vit_fast.yaml", "--out", out, "--set", *sets,
                 timeout=c.left() - c.m(20))
    wall = time.monotonic() - t
    rows = []
    if (out / "metrics.csv").exists():
        shutil.copy(out / "metrics.csv", c.out / "recipe_metrics.csv")
        with open(out / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
    import torch

    hist = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["history"] if (
        out / "last.pt").exists() else []
    trained = 0.0
    to_target = None
    for row in hist:
        trained += row["train_seconds"]
        if to_target is None and row["val_acc"] >= TARGET:
            to_target = {"epoch": row["epoch"], "train_seconds": round(trained, 1)}
    images = sum(r_["train_images"] for r_ in hist)
    result = {"code": r.returncode, "tail": r.stdout.strip().splitlines()[-2:], "stderr": r.stderr.strip()[-500:],
              "budget_seconds": seconds, "wall_seconds": round(wall, 1), "epochs": len(hist),
              "train_seconds": round(trained, 1), "eval_and_setup_seconds": round(wall - trained, 1),
              "best_val_acc": max((h["val_acc"] for h in hist), default=None),
              "final_val_acc": hist[-1]["val_acc"] if hist else None, "time_to_target": to_target,
              "images_per_second": round(images / trained, 1) if trained else None, "target": TARGET,
              "metrics_rows": len(rows)}
    c.write("recipe.json", result)
    c.note(f"recipe: {result['epochs']} epochs, {result['train_seconds']} s of training ({result['wall_seconds']} s "
           f"wall), best {result['best_val_acc']}, final {result['final_val_acc']}, time to {TARGET:.1%}: "
           f"{to_target}, {result['images_per_second']} images/s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the result files (made)")
    p.add_argument("--data", help="the CIFAR-10 JPEG copy: cifar10-jpeg.tar.gz or its folder")
    p.add_argument("--smoke", action="store_true", help="every step at toy size on the CPU (under a minute)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole check (default 360; 150 with --smoke); the recipe gets what is left")
    a = p.parse_args()
    c = Check(Path(a.out), a.budget or (150.0 if a.smoke else 360.0), a.smoke)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        scratch = Path(tmp)
        step_env(c)
        data = cifar_root(a.data, a.smoke, scratch)
        for step in (lambda: step_cuda_tests(c), lambda: step_bench(c), lambda: step_runs(c, data, scratch),
                     lambda: step_kill(c, data, scratch), lambda: step_recipe(c, data, scratch)):
            try:
                step()
            except Exception as e:  # a step that fails is reported; the next ones still run
                c.note(f"step failed: {type(e).__name__}: {str(e)[:300]}")
    c.note(f"total {time.monotonic() - c.t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
