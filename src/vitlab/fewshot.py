"""Few-shot linear evaluation, as the ViT paper defines it (section 4.1: "a regularized
least-squares regression problem that maps the (frozen) representation of a subset of
training images to {-1, 1}^K target vectors"), for any model of vitlab's protocol.

``vitlab fewshot CHECKPOINT --data CONFIG --shots 1,5,10,25 [--draws N]`` and
``fewshot_checkpoint`` evaluate a run's checkpoint on the dataset of another config;
``fewshot_accuracy`` does the same on features you already have.

The protocol is that of the paper's code, big_vision's few-shot evaluator
(``big_vision/evaluators/fewshot_lsr.py``, with the defaults of
``big_vision/configs/common_fewshot.py``):

1. Features: the frozen model's pre-logit representation,
   ``model.forward_head(model.forward_features(x), pre_logits=True)`` (a ViT's class
   token or pooled tokens after the final norm and representation layer; a CNN's
   globally pooled last feature map), in eval mode, of images given the eval
   transforms at the model's input size and normalisation.
2. Draws: draw ``d`` (``d = 0 .. draws-1``) permutes the training images of each class
   with ``numpy.random.default_rng(seed + d)``; the k-shot training set is the first
   ``k`` of each class (so within a draw the 5 shots are among the 10).
3. Whitening: each feature dimension is standardised with the mean and standard
   deviation (+ 1e-5) of the k-shot training features, and a constant feature of
   ``BIAS_CONSTANT`` = 100 is appended as the bias: regularised like the others, it
   is in effect almost free (a weight of w on it is a bias of 100 w).
4. Targets: one-hot vectors rescaled to {-1, 1}.
5. The fit: ridge regression in closed form,
   ``W = (X^T X + l2 I)^-1 X^T Y`` (or ``X^T (X X^T + l2 I)^-1 Y`` when there are fewer
   images than dimensions: the same W), in float64.
6. The regulariser: **fixed**, ``l2 = 2^10 = 1024`` (``L2_REG``), big_vision's default
   for this evaluator (``l2_reg=2.0 ** 10``); it is not tuned per task or per k. The
   fit equals scikit-learn's ``RidgeClassifier(alpha=l2, fit_intercept=False)`` on the
   whitened features with the bias column (tests/test_fewshot.py).
7. Prediction: the class of the largest output; top-1 accuracy on the test split.

The result of each k is the mean and the spread (sample standard deviation over
the draws; 0 for one draw) of the draws' accuracies, which are also returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .errors import UserError

L2_REG = 2.0 ** 10  # big_vision configs/common_fewshot.py: l2_reg=2.0 ** 10
BIAS_CONSTANT = 100.0  # big_vision evaluators/fewshot_lsr.py
DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_DRAWS = 3  # big_vision's num_seeds


def parse_shots(text: str | Sequence[int], option: str = "--shots") -> list[int]:
    """``"1,5,10"`` (or a list of ints) -> ``[1, 5, 10]``: positive, distinct, sorted."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        shots = [int(str(s).strip()) for s in items if str(s).strip()]
    except ValueError:
        raise UserError(f"{option} takes whole numbers of images per class, e.g. 1,5,10,25; got {text!r}") from None
    if not shots or min(shots) < 1:
        raise UserError(f"{option} takes whole numbers of images per class of 1 or more, e.g. 1,5,10,25; "
                        f"got {text!r}")
    if len(set(shots)) < len(shots):
        raise UserError(f"{option} lists a number twice: {text!r}")
    return sorted(shots)


def check_draws(draws: int, option: str = "--draws") -> int:
    if int(draws) < 1:
        raise UserError(f"{option} must be 1 or more, got {draws}")
    return int(draws)


# --------------------------------------------------------------------------- the fit


@dataclass
class LinearFit:
    """A least-squares fit: features are whitened with ``mean`` and ``std`` (1, D), the
    bias column appended, and multiplied by ``weight`` (D + 1, C)."""
    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor

    def design(self, x: torch.Tensor) -> torch.Tensor:
        """The whitened features of ``x`` (N, D) with the bias column: (N, D + 1), float64."""
        z = (x.double() - self.mean) / self.std
        return torch.cat([z, z.new_full((len(z), 1), BIAS_CONSTANT)], 1)

    def decision(self, x: torch.Tensor) -> torch.Tensor:
        """The fit's outputs (N, C) for features ``x`` (N, D)."""
        return self.design(x) @ self.weight

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted classes (N,) int64 of features ``x`` (N, D)."""
        return self.decision(x).argmax(1)


def fit_least_squares(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = L2_REG) -> LinearFit:
    """Ridge regression of {-1, 1} one-hot targets on whitened features with a bias column
    (steps 3-5 of the module docstring). ``x`` (N, D) features, ``y`` (N,) classes."""
    x = torch.as_tensor(x).double()
    y = torch.as_tensor(y).long()
    mean = x.mean(0, keepdim=True)
    std = x.std(0, unbiased=False, keepdim=True) + 1e-5
    fit = LinearFit(mean, std, torch.empty(0))
    z = fit.design(x)
    t = 2.0 * torch.nn.functional.one_hot(y, num_classes).double() - 1.0
    n, d = z.shape
    if n >= d:
        fit.weight = torch.linalg.solve(z.T @ z + l2 * torch.eye(d, dtype=z.dtype), z.T @ t)
    else:
        fit.weight = z.T @ torch.linalg.solve(z @ z.T + l2 * torch.eye(n, dtype=z.dtype), t)
    return fit


# --------------------------------------------------------------------------- draws and scores


def draw_shots(labels: torch.Tensor, shots: Sequence[int], draws: int = DEFAULT_DRAWS, seed: int = 0,
               num_classes: int | None = None, classes: Sequence[str] | None = None) -> list[dict[int, torch.Tensor]]:
    """For each draw, ``{k: indices of the k-shot training set}`` (step 2 of the module
    docstring): the first k of a seeded permutation of each class's images, class by class.
    ``UserError`` when a class has fewer images than the largest k."""
    labels = np.asarray(torch.as_tensor(labels).cpu())
    num_classes = num_classes or int(labels.max()) + 1
    most = max(shots)
    counts = np.bincount(labels, minlength=num_classes)
    if counts.min() < most:
        c = int(counts.argmin())
        name = f"{classes[c]!r}" if classes else str(c)
        raise UserError(f"class {name} has {counts[c]} training image(s), fewer than {most} shots")
    picks = []
    for d in range(draws):
        rng = np.random.default_rng(seed + d)
        perms = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
        picks.append({k: torch.from_numpy(np.concatenate([p[:k] for p in perms])) for k in shots})
    return picks


def score_draws(picks: list[dict[int, torch.Tensor]], train_x: torch.Tensor, train_y: torch.Tensor,
                test_x: torch.Tensor, test_y: torch.Tensor, num_classes: int, l2: float = L2_REG) -> dict:
    """``{k: {"mean", "std", "accs"}}``: the test top-1 of the fit on each draw's k-shot rows
    of ``train_x``/``train_y`` (``picks`` from ``draw_shots``)."""
    test_y = torch.as_tensor(test_y).long()
    out = {}
    for k in picks[0]:
        accs = []
        for p in picks:
            fit = fit_least_squares(train_x[p[k]], torch.as_tensor(train_y)[p[k]], num_classes, l2)
            accs.append((fit.predict(test_x) == test_y).double().mean().item())
        out[k] = {"mean": float(np.mean(accs)), "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
                  "accs": accs}
    return out


def fewshot_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                     shots: Sequence[int] = DEFAULT_SHOTS, draws: int = DEFAULT_DRAWS, l2: float = L2_REG,
                     seed: int = 0, num_classes: int | None = None) -> dict:
    """Few-shot linear evaluation on features you already have: ``train_x`` (N, D) and
    ``train_y`` (N,) the pool the k-shot sets are drawn from, ``test_x``/``test_y`` the test
    split. Returns ``{k: {"mean", "std", "accs"}}`` (accuracies as fractions)."""
    shots, draws = parse_shots(shots), check_draws(draws)
    num_classes = num_classes or int(max(int(torch.as_tensor(train_y).max()), int(torch.as_tensor(test_y).max()))) + 1
    picks = draw_shots(train_y, shots, draws, seed, num_classes)
    return score_draws(picks, torch.as_tensor(train_x), train_y, torch.as_tensor(test_x), test_y, num_classes, l2)


# --------------------------------------------------------------------------- a model's features


@torch.no_grad()
def extract_features(model, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The pre-logit features (N, num_features) float32 and labels (N,) of ``batches`` on the
    model's device, in eval mode (its mode is restored); CPU tensors."""
    feats, labels = [], []
    was_training = model.training
    model.eval()
    try:
        for x, y in batches:
            f = model.forward_head(model.forward_features(x), pre_logits=True)
            feats.append(f.float().flatten(1).cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("extract_features got no batches")
    return torch.cat(feats), torch.cat(labels).long()


def fewshot_checkpoint(path: str | Path, data: str | Path, shots: Sequence[int] | str = DEFAULT_SHOTS,
                       draws: int = DEFAULT_DRAWS, overrides: Sequence[str] = (), device: str = "auto",
                       batch_size: int = 256, seed: int = 0, l2: float = L2_REG) -> dict:
    """Few-shot linear evaluation of the model of checkpoint ``path`` on the dataset of the
    config ``data`` (read with ``vitlab.config.load`` and ``overrides``: every check): the
    k-shot sets are drawn from its training split, the accuracy is measured on its
    validation/test split (``data.val_subset`` applies). The images get the eval transforms
    at the model's input size and with the normalisation it was trained with; the config's
    augmentations play no part. ``train.threads`` of the config, when set, is the CPU
    threads used. Only the drawn training images are read through the model.

    Returns ``{"shots": {k: {"mean", "std", "accs"}}, "draws", "l2_reg", "classes",
    "test_images", "train_images", "features", "checkpoint", "data"}``."""
    from . import config as cfgmod
    from .data import build_datasets
    from .data.loader import make_batches
    from .run import checkpoint
    from .run.runtime import resolve_device

    shots, draws = parse_shots(shots), check_draws(draws)
    if batch_size < 1:
        raise UserError(f"--batch-size must be 1 or more, got {batch_size}")
    ckpt = checkpoint.load(path)
    checkpoint.require_run(ckpt, path)
    cfg = cfgmod.load(data, list(overrides))
    dev = resolve_device(device, "--device")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    # the model's input: its size and the normalisation it was trained with
    facts = ckpt["dataset"]
    cfg.data.img_size = (ckpt["config"].get("data", {}).get("img_size") or facts["img_size"])
    cfg.data.mean, cfg.data.std = list(facts["mean"]), list(facts["std"])
    train_ds, test_ds, info = build_datasets(cfg.data, cfg.train.seed)
    if info.in_chans != facts["in_chans"]:
        raise UserError(f"the dataset of {data} has {info.in_chans} channel(s) but the model of {path} takes "
                        f"{facts['in_chans']}")
    if len(test_ds) == 0:
        raise UserError(f"the validation/test split of the dataset of {data} holds no images")
    train_ds.transform = test_ds.transform  # eval transforms for the k-shot images too

    picks = draw_shots(train_ds.targets, shots, draws, seed, info.num_classes, info.classes)
    used = torch.unique(torch.cat([p[k] for p in picks for k in p]))  # sorted
    local = torch.full((len(train_ds),), -1, dtype=torch.long)
    local[used] = torch.arange(len(used))
    picks = [{k: local[idx] for k, idx in p.items()} for p in picks]

    model = checkpoint.build_model(ckpt).to(dev).eval()

    def batches(ds):
        return make_batches(ds, batch_size, train=False, data_cfg=cfg.data, info=info, device=dev, seed=0,
                            epoch=0, num_workers=cfg.data.num_workers)

    train_x, train_y = extract_features(model, batches(train_ds.subset(used)))
    test_x, test_y = extract_features(model, batches(test_ds))
    scores = score_draws(picks, train_x, train_y, test_x, test_y, info.num_classes, l2)
    return {"shots": scores, "draws": draws, "l2_reg": l2, "classes": list(info.classes),
            "test_images": len(test_ds), "train_images": len(train_ds), "features": train_x.shape[1],
            "checkpoint": str(path), "data": str(data)}


def format_results(r: dict) -> str:
    """The lines ``vitlab fewshot`` prints."""
    head = (f"few-shot linear evaluation of {r['checkpoint']} on {r['data']}: {len(r['classes'])} classes, "
            f"{r['test_images']:,} test images, {r['features']} features, l2 = {r['l2_reg']:g}, "
            f"{r['draws']} draw(s)")
    lines = [head]
    for k, s in r["shots"].items():
        spread = f" ± {100 * s['std']:.2f}" if r["draws"] > 1 else ""
        lines.append(f"  {k:>3}-shot: {100 * s['mean']:6.2f}%{spread}  (draws: "
                     + ", ".join(f"{100 * a:.2f}%" for a in s["accs"]) + ")")
    lines.append("± : standard deviation over the draws of the k training images per class")
    return "\n".join(lines)
