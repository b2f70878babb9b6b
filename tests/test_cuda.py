"""What only a GPU can check (marked ``cuda``; skipped without CUDA): bf16 attention against fp32,
eager and compiled, relative bias included; the manual attention path (attention maps) against the
fused kernel; device-resident batches and augmentation against the CPU path; host reads of a
training epoch counted by CUDA's own sync detector. ``benchmarks/gpu_check.py`` runs them."""

from __future__ import annotations

import math
import shutil
import warnings

import pytest
import torch
import yaml

import vitlab
from tiny import TINY_MODEL, make_fashion
from vitlab import config as cfgmod
from vitlab.config import DataConfig
from vitlab.data import DatasetInfo, TensorImageDataset
from vitlab.data.loader import TensorBatches

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.py)")]


def small_vit(pos_embed: str) -> torch.nn.Module:
    torch.manual_seed(0)
    m = vitlab.create_model("vit", img_size=32, patch_size=4, embed_dim=192, depth=4, num_heads=6, mlp_dim=384,
                            num_classes=10, pos_embed=pos_embed, drop_path=0.0)
    for p in m.parameters():  # no zero head: gradients everywhere
        torch.nn.init.normal_(p, std=0.02) if p.ndim > 1 else None
    return m.cuda()


def grads(model, x, y, autocast: bool, compiled: bool):
    model.zero_grad(set_to_none=True)
    net = torch.compile(model) if compiled else model
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        logits = net(x).float()
    torch.nn.functional.cross_entropy(logits, y).backward()
    return logits.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("pos_embed", ["learned", "relative"])
def test_bf16_attention_forward_and_backward_follow_fp32(pos_embed, compiled):
    if compiled and not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        pytest.skip("torch.compile needs a C compiler")
    model = small_vit(pos_embed)
    x, y = torch.randn(32, 3, 32, 32, device="cuda"), torch.arange(32, device="cuda") % 10
    torch.backends.cuda.matmul.allow_tf32 = False
    ref_logits, ref_grad = grads(model, x, y, autocast=False, compiled=False)
    logits, grad = grads(model, x, y, autocast=True, compiled=compiled)
    assert (logits - ref_logits).abs().max() < 0.05 * ref_logits.abs().max()
    assert torch.nn.functional.cosine_similarity(grad, ref_grad, dim=0) > 0.99


@pytest.mark.parametrize("pos_embed", ["learned", "relative"])
def test_attention_maps_agree_with_the_fused_path(pos_embed):
    model = small_vit(pos_embed).eval()
    x = torch.randn(4, 3, 32, 32, device="cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():
        fused = model.forward_features(x)
        maps = model.attention_maps(x)
        grid = model.patch_embed.grid_for(32, 32)
        manual = model.embed(x)  # the path attention_maps takes, to the end
        for blk in model.blocks:
            manual, _ = blk(manual, return_attn=True, grid=grid)
        manual = model.norm(manual)
        cpu = model.cpu().forward_features(x.cpu())
    assert all(torch.allclose(m.sum(-1), torch.ones_like(m.sum(-1)), atol=1e-4) for m in maps)
    assert torch.allclose(fused, manual, atol=1e-4, rtol=1e-4)
    assert torch.allclose(fused.cpu(), cpu, atol=1e-4, rtol=1e-4)


def test_device_batches_and_augmentation_equal_the_cpu_path():
    """The same epoch on the GPU (masked augmentation, no TF32 in the sampling grid even with TF32 on)
    and on the CPU (grouped): the same images, to float rounding."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8, generator=g)
    info = DatasetInfo("t", 10, 3, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), [str(i) for i in range(10)])
    cfg = DataConfig(crop_padding=4, hflip=True, auto_augment="cifar10", rand_augment=2, random_erasing=0.25)
    torch.backends.cuda.matmul.allow_tf32 = True
    cpu_ds = TensorImageDataset(images, torch.arange(300) % 10, info.classes)
    gpu_ds = TensorImageDataset(images.cuda(), (torch.arange(300) % 10).cuda(), info.classes)
    kw = dict(train=True, data_cfg=cfg, info=info, seed=1, epoch=2)
    for (a, ya), (b, yb) in zip(TensorBatches(cpu_ds, 64, device="cpu", **kw),
                                TensorBatches(gpu_ds, 64, device="cuda", **kw), strict=True):
        assert torch.equal(ya, yb.cpu())
        far = ((a - b.cpu()).abs() > 1e-4).float().mean().item()
        assert far < 1e-3, f"{100 * far:.3f}% of the values differ"


def test_a_training_epoch_syncs_only_at_its_checks(tmp_path):
    """CUDA's sync detector counts the host waits of one epoch: about one per train.check_every steps."""
    from vitlab.train.engine import Trainer

    make_fashion(tmp_path / "data", 512, 64)
    cfg = {"model": TINY_MODEL,
           "data": {"name": "fashion_mnist", "root": str(tmp_path / "data"), "crop_padding": 2, "hflip": True,
                    "auto_augment": "cifar10", "random_erasing": 0.25, "device_resident": True},
           "train": {"epochs": 1, "batch_size": 32, "progress": False, "loggers": [], "device": "cuda",
                     "check_every": 4}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    t = Trainer(cfgmod.load(tmp_path / "c.yaml"), tmp_path / "run")
    t._train_epoch()  # warm-up (first-time allocations, cuBLAS handles)
    t.position = type(t.position)()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t._train_epoch()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    steps = t.steps_per_epoch
    assert len(syncs) <= math.ceil(steps / 4) + 3, [str(w.message)[:120] for w in syncs[:5]]
