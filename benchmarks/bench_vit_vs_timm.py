"""Speed of vitlab's ViT against timm's same architecture, in one process.

Times a forward pass (eval, no_grad) and one training step (forward,
cross-entropy, backward, AdamW step) of both models with the same weights,
alternating between them within each round so that drifts of the machine
(clock, other load) hit both alike, and reports the median over rounds.
ratio = timm_time / vitlab_time: >= 1.0 means vitlab is not slower.

    python benchmarks/bench_vit_vs_timm.py                       # vit_s16, batch 4, CPU
    python benchmarks/bench_vit_vs_timm.py --model vit_b16 --batch 64 --device cuda

Results and the machines they came from: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import vitlab


def timm_twin(config: dict) -> torch.nn.Module:
    """timm VisionTransformer with the architecture of a vitlab ViT config."""
    from timm.models.vision_transformer import VisionTransformer
    if config.get("pos_embed", "learned") != "learned" or config.get("representation_size"):
        raise SystemExit("the timm twin needs learned position embeddings and no representation layer")
    avg = config["pool"] == "avg"
    return VisionTransformer(
        img_size=config["img_size"], patch_size=config["patch_size"], in_chans=config["in_chans"],
        num_classes=config["num_classes"], embed_dim=config["embed_dim"], depth=config["depth"],
        num_heads=config["num_heads"], mlp_ratio=config["mlp_dim"] / config["embed_dim"],
        global_pool="avg" if avg else "token", class_token=not avg, fc_norm=False)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(model, x, iters: int) -> float:
    model.eval()
    with torch.no_grad():
        sync(x.device)
        t = time.perf_counter()
        for _ in range(iters):
            model(x)
        sync(x.device)
    return (time.perf_counter() - t) / iters


def time_train_step(model, opt, x, y, iters: int) -> float:
    model.train()
    sync(x.device)
    t = time.perf_counter()
    for _ in range(iters):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(x.device)
    return (time.perf_counter() - t) / iters


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                what = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        what += f", {torch.get_num_threads()} threads"
    import timm
    return f"{what}; torch {torch.__version__}, timm {timm.__version__}, python {platform.python_version()}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit_s16", help="a vitlab ViT name (`vitlab models`)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rounds", type=int, default=7, help="rounds; the median (and min) is reported")
    p.add_argument("--iters", type=int, default=1, help="timed calls per model, phase and round")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--img-size", type=int, default=None, help="input size (default: the model's)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda given but CUDA is not available")
    torch.manual_seed(args.seed)
    overrides = {"img_size": args.img_size} if args.img_size else {}
    ours = vitlab.create_model(args.model, **overrides)
    theirs = timm_twin(ours.config)
    vitlab.load_pretrained(ours, theirs.state_dict())  # same weights in both
    ours, theirs = ours.to(device), theirs.to(device)

    c = ours.config
    h, w = (c["img_size"],) * 2 if isinstance(c["img_size"], int) else tuple(c["img_size"])
    x = torch.randn(args.batch, c["in_chans"], h, w, device=device)
    y = torch.randint(0, max(c["num_classes"], 1), (args.batch,), device=device)
    with torch.no_grad():
        diff = (ours.eval()(x) - theirs.eval()(x)).abs().max().item()
    models = {"vitlab": ours, "timm": theirs}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}

    print(f"{args.model} {h}x{w}, batch {args.batch}, {args.rounds} rounds x {args.iters} iters, "
          f"device {device}: {machine(device)}")
    print(f"same weights: max |logit difference| = {diff:.2e}")
    for name in models:  # warm-up (allocator, kernels, AdamW state)
        time_forward(models[name], x, 1)
        time_train_step(models[name], opts[name], x, y, 1)

    times = {(n, phase): [] for n in models for phase in ("forward", "train")}
    for r in range(args.rounds):
        order = list(models) if r % 2 == 0 else list(models)[::-1]  # alternate who goes first
        for phase in ("forward", "train"):
            for name in order:
                if phase == "forward":
                    t = time_forward(models[name], x, args.iters)
                else:
                    t = time_train_step(models[name], opts[name], x, y, args.iters)
                times[(name, phase)].append(t)
        print(f"round {r + 1}: " + "  ".join(
            f"{n} {ph} {times[(n, ph)][-1] * 1e3:.1f} ms" for ph in ("forward", "train") for n in models))

    # Medians are the headline. On a shared machine, where other load comes and goes, two
    # more robust figures: the min (the least disturbed run) and the median of the ratios
    # within each round (the two models measured back to back).
    print(f"\n{'phase':<28}{'stat':<14}{'vitlab ms':>11}{'timm ms':>11}{'timm/vitlab':>13}")
    for phase, label in (("forward", "forward (eval, no_grad)"), ("train", "train step (fwd+bwd+AdamW)")):
        ours_ts, theirs_ts = times[("vitlab", phase)], times[("timm", phase)]
        for stat, fn in (("median", statistics.median), ("min", min)):
            ours_t, theirs_t = fn(ours_ts), fn(theirs_ts)
            print(f"{label:<28}{stat:<14}{ours_t * 1e3:>11.1f}{theirs_t * 1e3:>11.1f}{theirs_t / ours_t:>13.3f}")
            label = ""
        paired = statistics.median(b / a for a, b in zip(ours_ts, theirs_ts))
        print(f"{'':<28}{'paired median':<14}{'':>11}{'':>11}{paired:>13.3f}")


if __name__ == "__main__":
    main()
