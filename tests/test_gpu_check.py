"""benchmarks/gpu_check.py --smoke: every step of the prepared GPU check at toy size on the CPU, so
that the check is known to run before a GPU window is spent on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_every_step_on_the_cpu(tmp_path):
    out = tmp_path / "check"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--budget", "500",
                        "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    assert "step failed" not in summary and "out of time" not in summary, summary
    assert {p.name for p in out.iterdir()} == {"env.json", "cuda_tests.txt", "bench.json", "runs.json", "kill.json",
                                               "recipe.json", "recipe_metrics.csv", "summary.md"}
    runs = json.loads((out / "runs.json").read_text())
    assert set(runs) == {"vit_cifar_relative_aug", "resnet18_channels_last", "hybrid", "fp16_clipped"}
    for name, run in runs.items():  # stopped by SIGTERM inside an epoch, resumed to the end
        assert run["ok"], (name, run)
    kill = json.loads((out / "kill.json").read_text())
    assert kill["killed_code"] == -9 and kill["resume_code"] == 0
    assert kill["bit_exact"], kill  # on the CPU a SIGKILLed run resumes to the same weights
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["code"] == 0 and recipe["epochs"] == 2 and recipe["images_per_second"] > 0
    bench = json.loads((out / "bench.json").read_text())
    assert bench["phases"]["train"]["vitlab"]["images_per_s"] > 0
