"""vitlab.data.batch_augment against torchvision's per-image transforms, on the CPU:
each operation equals torchvision's functional on every image (all magnitude bins, both signs,
1 and 3 channels, uint8 and float); AutoAugment's and RandAugment's draws (sub-policies,
probabilities, signed magnitudes) and random erasing's boxes follow torchvision's distributions;
whole augmented batches have torchvision's pixel statistics; every image draws its own; the
batches of an epoch depend on (seed, epoch, sample) alone; the trainer picks the batched path."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from tiny import TINY_MODEL, make_fashion
from vitlab.data import (AUTO_AUGMENT_POLICIES, BatchAutoAugment, BatchRandAugment, BatchRandomErasing,
                         BatchTransforms, DatasetInfo, ImageFileDataset, TensorImageDataset, apply_op, batch_mixer,
                         build_train_transform)
from vitlab.data.augment_ops import OPS
from vitlab.data.batch_augment import AUTO_AUGMENT_SUB_POLICIES, magnitude_bins
from vitlab.errors import UserError
from vitlab import config as config_mod
from vitlab.config import DataConfig
from vitlab.data.loader import TensorBatches, _DeviceLoader, fast_path_ok, make_batches

REPO = Path(__file__).resolve().parents[1]


def info_for(channels: int, size: int = 32) -> DatasetInfo:
    return DatasetInfo("test", 10, channels, size, (0.5,) * channels, (0.25,) * channels,
                       [str(i) for i in range(10)])


def images(n: int, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(n, C, s, s) uint8: noise, noisy gradients, narrow grey ranges and (every 8th) a constant image,
    so that AutoContrast and Equalize meet flat channels and tiny histograms."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = []
    for i in range(n):
        if i % 8 == 7:
            img = torch.full((channels, size, size), int(torch.randint(0, 256, (), generator=g)))
        elif i % 3 == 0:
            img = torch.randint(0, 256, (channels, size, size), generator=g)
        elif i % 3 == 1:
            a, b = torch.rand(2, generator=g) + 0.1
            ramp = (xx * a + yy * b) * 255 / (size * (a + b))
            img = ramp.expand(channels, size, size) + torch.randint(-20, 21, (channels, size, size), generator=g)
        else:
            lo, hi = sorted(torch.randint(0, 256, (2,), generator=g).tolist())
            img = torch.randint(lo, hi + 1, (channels, size, size), generator=g)
        out.append(img.clamp(0, 255).to(torch.uint8))
    return torch.stack(out)


def torchvision_op(img: torch.Tensor, name: str, m: float) -> torch.Tensor:
    """One image through torchvision's functional of AutoAugment's operation ``name`` at signed magnitude
    ``m``, with AutoAugment's arguments (nearest, no fill, shears about the top-left corner)."""
    near = InterpolationMode.NEAREST
    bound = 255.0 if img.dtype == torch.uint8 else 1.0
    if name == "Identity":
        return img
    if name in ("ShearX", "ShearY"):
        deg = math.degrees(math.atan(m))
        return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, interpolation=near, fill=None, center=[0, 0],
                        shear=[deg, 0.0] if name == "ShearX" else [0.0, deg])
    if name in ("TranslateX", "TranslateY"):
        shift = [int(m), 0] if name == "TranslateX" else [0, int(m)]
        return F.affine(img, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=near, fill=None)
    if name == "Rotate":
        return F.rotate(img, angle=m, interpolation=near, fill=None)
    blends = {"Brightness": F.adjust_brightness, "Color": F.adjust_saturation, "Contrast": F.adjust_contrast,
              "Sharpness": F.adjust_sharpness}
    if name in blends:
        return blends[name](img, 1.0 + m)
    if name == "Posterize":
        return F.posterize(img, int(m))
    if name == "Solarize":
        return F.solarize(img, bound * m)
    return {"AutoContrast": F.autocontrast, "Equalize": F.equalize, "Invert": F.invert}[name](img)


def signed_magnitudes(name: str, size: int) -> list[float]:
    """Every magnitude AutoAugment (10 bins) and RandAugment (31 bins) can give ``name``, both signs."""
    mags = set(magnitude_bins(name, 10, size, size).tolist()) | set(magnitude_bins(name, 31, size, size).tolist())
    return sorted(mags | ({-m for m in mags} if OPS[name][1] else set()))


# Blends whose float rounding may differ from torchvision's by one grey level on some machines (a fused
# multiply-add in torch's vectorised kernels, the convolution's summation order); on x86 CPUs with FMA
# they are exact, and the test asks for at most one grey level on at most 0.1% of the pixels.
WITHIN_ONE = {"Color", "Contrast", "Sharpness"}


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name", list(OPS))
def test_each_op_equals_torchvision_on_every_image(name, channels):
    x = images(24, channels, 32)
    for m in signed_magnitudes(name, 32):
        ours = apply_op(x, name, m)
        assert ours.dtype == torch.uint8 and ours.shape == x.shape
        ref = torch.stack([torchvision_op(img, name, m) for img in x])
        diff = (ours.int() - ref.int()).abs()
        if name in WITHIN_ONE:
            assert diff.max() <= 1 and (diff > 0).float().mean() <= 1e-3, (name, m)
        else:
            assert torch.equal(ours, ref), (name, m, int(diff.max()), int((diff > 0).sum()))


@pytest.mark.parametrize("name", list(OPS))
def test_each_op_on_float_images_and_odd_sizes(name):
    """Float images in [0, 1] follow torchvision's float kernels; a 28 x 20 image checks the geometry of
    sizes that are not powers of two and not square."""
    x = images(12, 3, 28)[..., :20]
    xf = x.float() / 255
    for m in signed_magnitudes(name, 20)[::3]:
        ours, ref = apply_op(xf, name, m), torch.stack([torchvision_op(img, name, m) for img in xf])
        assert ours.dtype == torch.float32
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0, msg=f"{name} {m}")
        ours, ref = apply_op(x, name, m), torch.stack([torchvision_op(img, name, m) for img in x])
        assert (ours.int() - ref.int()).abs().max() <= (1 if name in WITHIN_ONE else 0), (name, m)


def test_per_image_magnitudes():
    """One call, a different magnitude per image: as each image alone."""
    x = images(8)
    mags = torch.linspace(-30, 30, 8, dtype=torch.float64)
    out = apply_op(x, "Rotate", mags)
    for i in range(8):
        assert torch.equal(out[i], torchvision_op(x[i], "Rotate", float(mags[i])))


# --------------------------------------------------------------------------- the random draws


def chi2_limit(df: int, z: float = 3.72) -> float:
    """The chi-square quantile with p = 1e-4 above it (Wilson-Hilferty)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def assert_same_distribution(a: Counter, b: Counter, min_count: int = 10) -> None:
    """Two-sample chi-square test of homogeneity; categories seen fewer than min_count times in all are
    pooled."""
    na, nb = sum(a.values()), sum(b.values())
    cats = [k for k in set(a) | set(b) if a[k] + b[k] >= min_count]
    rest = (na - sum(a[k] for k in cats), nb - sum(b[k] for k in cats))
    cells = [(a[k], b[k]) for k in cats] + ([rest] if sum(rest) else [])
    stat = sum((x * math.sqrt(nb / na) - y * math.sqrt(na / nb)) ** 2 / (x + y) for x, y in cells)
    assert len(cells) > 1 and stat < chi2_limit(len(cells) - 1), (stat, len(cells), a.most_common(5), b.most_common(5))


def record_torchvision(monkeypatch, transform, n: int, size: int = 32) -> Counter:
    """How often torchvision's ``transform`` applies each sequence of (operation, signed magnitude) to an
    image, counted by replacing its dispatch to the functionals with a recorder."""
    seqs = []

    def record(self, image, transform_id, magnitude, interpolation, fill):
        seqs[-1].append((transform_id, round(magnitude, 5)))
        return image

    monkeypatch.setattr(type(transform), "_apply_image_or_video_transform", record)
    img = tv_tensors.Image(torch.zeros(1, size, size, dtype=torch.uint8))
    torch.manual_seed(0)
    for _ in range(n):
        seqs.append([])
        transform(img)
    return Counter(tuple(s) for s in seqs)


def record_ours(transform, n: int, size: int = 32) -> Counter:
    params = transform.draw(n, torch.Generator().manual_seed(1))
    steps = transform.plan(params, size, size)
    names = list(OPS)
    seqs = [[] for _ in range(n)]
    for op, mag in steps:
        for i in range(n):
            if op[i] >= 0:
                seqs[i].append((names[op[i]], round(float(mag[i]), 5)))
    return Counter(tuple(s) for s in seqs)


@pytest.mark.parametrize("policy", ["cifar10", "imagenet", "svhn"])
def test_auto_augment_draws_follow_torchvision(policy, monkeypatch):
    """The applied sequences of (operation, signed magnitude) per image (sub-policy choice, each step's
    probability, the signs) have torchvision's distribution; and the sub-policies are drawn uniformly
    and each step applied with its probability."""
    n = 6000
    ours = BatchAutoAugment(policy)
    tv = v2.AutoAugment(AUTO_AUGMENT_POLICIES[policy])
    if hasattr(tv, "_policies"):  # torchvision's own table of the sub-policies
        assert AUTO_AUGMENT_SUB_POLICIES[policy] == tuple(tuple(sub) for sub in tv._policies)
    theirs = record_torchvision(monkeypatch, tv, n)
    assert_same_distribution(record_ours(ours, n), theirs)
    params = ours.draw(20000, torch.Generator().manual_seed(2))
    counts = torch.bincount(params["aa_policy"], minlength=25).double()
    assert ((counts - 800) ** 2 / 800).sum() < chi2_limit(24)
    steps = ours.plan(params, 32, 32)
    for p, sub in enumerate(AUTO_AUGMENT_SUB_POLICIES[policy]):
        mine = params["aa_policy"] == p
        for k, (_, prob, _) in enumerate(sub):
            rate = (steps[k][0][mine] >= 0).double().mean().item()
            sd = math.sqrt(max(prob * (1 - prob), 1e-4) / mine.sum().item())
            assert abs(rate - prob) < 4.5 * sd, (p, k, rate, prob)


def test_rand_augment_draws_follow_torchvision(monkeypatch):
    """Operations uniform over 14 (Identity included), magnitudes at the bin, signs half and half."""
    n = 6000
    ours = BatchRandAugment(num_ops=2, magnitude=9)
    theirs = record_torchvision(monkeypatch, v2.RandAugment(num_ops=2, magnitude=9), n)
    mine = record_ours(ours, n)
    assert_same_distribution(mine, theirs)
    singles_ours = Counter(step for seq, c in mine.items() for step in seq for _ in range(c))
    singles_theirs = Counter(step for seq, c in theirs.items() for step in seq for _ in range(c))
    assert_same_distribution(singles_ours, singles_theirs)
    assert len({name for name, _ in singles_ours}) == 14
    for name, (_, signed) in OPS.items():
        if signed:
            pos, neg = singles_ours[(name, round(float(magnitude_bins(name, 31, 32, 32)[9]), 5))], \
                singles_ours[(name, -round(float(magnitude_bins(name, 31, 32, 32)[9]), 5))]
            assert abs(pos - neg) < 4.5 * math.sqrt(pos + neg), name


def ks_limit(n: int, m: int, c: float = 1.95) -> float:
    """Two-sample Kolmogorov-Smirnov distance above which p < 0.001."""
    return c * math.sqrt((n + m) / (n * m))


def ks(a: torch.Tensor, b: torch.Tensor) -> float:
    grid = torch.cat([a, b]).unique()
    fa = torch.searchsorted(a.sort().values, grid, right=True) / len(a)
    fb = torch.searchsorted(b.sort().values, grid, right=True) / len(b)
    return float((fa - fb).abs().max())


def test_random_erasing_boxes_follow_torchvision():
    """Erasing rate, area, aspect ratio and place of the box, as v2.RandomErasing with vitlab's settings."""
    n, h, w, p = 4000, 24, 40, 0.6
    cfg = DataConfig(random_erasing=p)
    tv = [t for t in build_train_transform(cfg, info_for(1, 24)).transforms if isinstance(t, v2.RandomErasing)][0]
    ones = torch.ones(1, h, w)
    torch.manual_seed(0)
    theirs = torch.stack([tv(ones) for _ in range(n)])
    ours = BatchRandomErasing(p)(torch.ones(n, 1, h, w), torch.Generator().manual_seed(0))

    def boxes(x):
        erased = x[:, 0] == 0
        rows, cols = erased.any(2), erased.any(1)
        hit = rows.any(1)
        bh, bw = rows.sum(1)[hit].double(), cols.sum(1)[hit].double()
        top, left = rows.int().argmax(1)[hit].double(), cols.int().argmax(1)[hit].double()
        assert torch.equal(erased.sum((1, 2))[hit].double(), bh * bw)  # rectangles
        return hit, bh * bw / (h * w), torch.log(bh / bw), top / (h - bh + 1), left / (w - bw + 1)

    hit_t, *stats_t = boxes(theirs)
    hit_o, *stats_o = boxes(ours)
    rate_t, rate_o = hit_t.double().mean().item(), hit_o.double().mean().item()
    assert abs(rate_t - rate_o) < 4.5 * math.sqrt(2 * p * (1 - p) / n)
    for name, a, b in zip(("area", "log aspect", "top", "left"), stats_o, stats_t):
        assert ks(a, b) < ks_limit(len(a), len(b)), name


# --------------------------------------------------------------------------- whole batches


PIPELINES = {
    "cifar10 preset": dict(crop_padding=4, hflip=True, auto_augment="cifar10"),
    "imagenet": dict(auto_augment="imagenet"),
    "svhn + erasing": dict(auto_augment="svhn", random_erasing=0.5),
    "randaugment": dict(crop_padding=2, rand_augment=2, rand_augment_magnitude=9, random_erasing=0.25),
}


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_augmented_batch_statistics_match_torchvision(pipeline, channels):
    """Per-image means and standard deviations of augmented images, and per-channel mean and std of
    whole batches, agree with torchvision's per-image pipeline on the same images (two-sample tests)."""
    cfg, info = DataConfig(**PIPELINES[pipeline]), info_for(channels)
    x = images(256, channels).repeat(3, 1, 1, 1)  # each image three times: 768 draws
    tv = build_train_transform(cfg, info)
    torch.manual_seed(0)
    theirs = torch.stack([tv(tv_tensors.Image(img)) for img in x]).as_subclass(torch.Tensor)
    bt = BatchTransforms(cfg, info, train=True)
    ours = bt(x, bt.draw(len(x), torch.Generator().manual_seed(0)))
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    for stat in (lambda t: t.mean((1, 2, 3)), lambda t: t.std((1, 2, 3))):
        a, b = stat(ours).double(), stat(theirs).double()
        se = math.sqrt(a.var() / len(a) + b.var() / len(b))
        assert abs(a.mean() - b.mean()) < 4.5 * se, (pipeline, a.mean(), b.mean(), se)
        assert ks(a, b) < ks_limit(len(a), len(b)), pipeline
    for c in range(channels):
        assert abs(ours[:, c].mean() - theirs[:, c].mean()) < 0.1
        assert abs(ours[:, c].std() / theirs[:, c].std() - 1) < 0.05


def test_each_image_draws_its_own():
    x = images(1).expand(256, -1, -1, -1).contiguous()
    bt = BatchTransforms(DataConfig(**PIPELINES["cifar10 preset"]), info_for(3), train=True)
    params = bt.draw(256, torch.Generator().manual_seed(0))
    out = bt(x, params)
    assert len(params["aa_policy"].unique()) == 25
    assert len({tuple(o.flatten()[::7].tolist()) for o in out}) > 150


def test_params_rows_are_per_image():
    """Image i's result depends only on row i of the draws: a batch in two halves equals the whole."""
    x = images(64)
    bt = BatchTransforms(DataConfig(**PIPELINES["randaugment"], auto_augment="imagenet"), info_for(3), train=True)
    params = bt.draw(64, torch.Generator().manual_seed(3))
    whole = bt(x, params)
    halves = [bt(x[s], {k: v[s] for k, v in params.items()}) for s in (slice(0, 23), slice(23, 64))]
    assert torch.equal(torch.cat(halves), whole)


def test_same_generator_same_output_and_one_channel_works():
    x = images(32, channels=1, size=28)
    for t in (BatchAutoAugment("cifar10"), BatchRandAugment(3, 15), BatchRandomErasing(0.5)):
        xin = x.float() / 255 if isinstance(t, BatchRandomErasing) else x
        a = t(xin, torch.Generator().manual_seed(5))
        b = t(xin, torch.Generator().manual_seed(5))
        assert torch.equal(a, b) and a.shape == xin.shape
        assert not torch.equal(a, t(xin, torch.Generator().manual_seed(6)))


@pytest.mark.parametrize("mixup,cutmix,seed", [(0.8, 0.0, 0), (0.0, 1.0, 0), (0.8, 1.0, 0), (0.8, 1.0, 3)])
def test_mixup_and_cutmix_take_the_batched_output(mixup, cutmix, seed):
    """Mixup or CutMix on a batch of BatchTransforms: each image mixed with the one before it (as
    torchvision pairs them), pixels and labels with the same weight."""
    bt = BatchTransforms(DataConfig(**PIPELINES["cifar10 preset"]), info_for(3), train=True)
    x = bt(images(16), bt.draw(16, torch.Generator().manual_seed(0)))
    y = torch.arange(16) % 10  # neighbours differ: the weight can be read off the soft labels
    mixer = batch_mixer(DataConfig(mixup=mixup, cutmix=cutmix), num_classes=10)
    torch.manual_seed(seed)
    xm, ym = mixer(x, y)
    assert xm.shape == x.shape and xm.dtype == torch.float32 and type(xm) is torch.Tensor
    other, y_other = x.roll(1, 0), y.roll(1, 0)
    lam = float(ym[0, y[0]])
    assert 0 < lam < 1
    one_hot = torch.nn.functional.one_hot
    torch.testing.assert_close(ym, lam * one_hot(y, 10).float() + (1 - lam) * one_hot(y_other, 10).float())
    mixed = lam * x + (1 - lam) * other
    if torch.allclose(xm, mixed, atol=1e-5):  # Mixup
        assert mixup > 0
        return
    assert cutmix > 0  # CutMix: one box, the same for every image, pasted from the image before
    from_other = ~(xm == x).all(0).all(0)  # (H, W): pixels that are not the image's own
    rows, cols = from_other.any(1).nonzero().squeeze(1), from_other.any(0).nonzero().squeeze(1)
    box = torch.zeros_like(from_other)
    box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
    assert torch.equal(xm[..., box], other[..., box]) and torch.equal(xm[..., ~box], x[..., ~box])
    assert abs(box.double().mean().item() - (1 - lam)) < 1e-6  # the label weight is the box's area


# --------------------------------------------------------------------------- the loader


def dataset(n: int = 100, channels: int = 3) -> TensorImageDataset:
    return TensorImageDataset(images(n, channels), torch.arange(n) % 10, [str(i) for i in range(10)])


def by_sample(tb: TensorBatches) -> dict[int, torch.Tensor]:
    """Each sample's augmented image, by its index."""
    out = {}
    for sel, (x, _) in zip(tb.batches, tb):
        for i, img in zip(sel.tolist(), x):
            out.setdefault(i, img)
    return out


def test_epoch_batches_depend_on_seed_epoch_and_sample_only():
    """Same (seed, epoch): identical batches; skipping the first samples, another batch size or
    two ranks give each sample the same image; another epoch gives others."""
    ds, info = dataset(), info_for(3)
    cfg = DataConfig(crop_padding=4, hflip=True, auto_augment="cifar10", random_erasing=0.3)
    kw = dict(train=True, data_cfg=cfg, info=info, device="cpu", seed=7)
    whole = TensorBatches(ds, 16, epoch=3, **kw)
    assert isinstance(make_batches(ds, 16, epoch=3, **kw), TensorBatches)
    again = TensorBatches(ds, 16, epoch=3, **kw)
    for (a, ya), (b, yb) in zip(whole, again):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    ref = by_sample(whole)
    for other in (TensorBatches(ds, 16, epoch=3, skip=37, **kw), TensorBatches(ds, 10, epoch=3, **kw),
                  TensorBatches(ds, 8, epoch=3, rank=0, world=2, **kw),
                  TensorBatches(ds, 8, epoch=3, rank=1, world=2, **kw)):
        for i, img in by_sample(other).items():
            assert torch.equal(img, ref[i])
    skipped = TensorBatches(ds, 16, epoch=3, skip=37, **kw)
    assert [int(i) for sel in skipped.batches for i in sel] == [int(i) for sel in whole.batches for i in sel][37:]
    later = by_sample(TensorBatches(ds, 16, epoch=4, **kw))
    assert sum(torch.equal(later[i], ref[i]) for i in ref) < 10


def test_crop_and_flip_only_keep_their_draws():
    """Crop offsets and flips are drawn first, as before AutoAugment had a batched form: a run with
    crop and flip only sees the same batches as it did."""
    ds, info = dataset(40), info_for(3)
    cfg = DataConfig(crop_padding=4, hflip=True)
    tb = TensorBatches(ds, 40, train=True, data_cfg=cfg, info=info, device="cpu", seed=1, epoch=2)
    x, _ = next(iter(tb))
    g = torch.Generator().manual_seed(1 * 1_000_003 + 2)
    order = torch.randperm(40, generator=g)
    offsets = torch.randint(0, 9, (40, 2), generator=g)
    flips = torch.rand(40, generator=g) < 0.5
    for k, i in enumerate(order.tolist()):
        img = torch.nn.functional.pad(ds.images[i].float() / 255, (4,) * 4)
        img = img[:, offsets[i, 0]:offsets[i, 0] + 32, offsets[i, 1]:offsets[i, 1] + 32]
        img = img.flip(-1) if flips[i] else img
        assert torch.allclose(x[k], (img - 0.5) / 0.25)


def test_device_augment_chooses_the_path(tmp_path):
    ds, info = dataset(20), info_for(3)
    aug = dict(crop_padding=4, hflip=True, auto_augment="cifar10", rand_augment=1, random_erasing=0.5)
    assert fast_path_ok(ds, DataConfig(**aug), True, info)
    assert fast_path_ok(ds, DataConfig(**aug, device_augment=True), True, info)
    assert not fast_path_ok(ds, DataConfig(**aug, device_augment=False), True, info)
    assert fast_path_ok(ds, DataConfig(**aug, device_augment=False), False, info)  # evaluation: no augmentation
    assert not fast_path_ok(ds, DataConfig(**aug, img_size=48), True, info)
    with pytest.raises(UserError, match="img_size=48") as e:
        fast_path_ok(ds, DataConfig(**aug, img_size=48, device_augment=True), True, info)
    assert "\n" not in str(e.value) and "device_augment" in str(e.value)
    files = ImageFileDataset([str(tmp_path / "a.png")], [0], ["a"])
    assert not fast_path_ok(files, DataConfig(**aug), True, info)
    with pytest.raises(UserError, match="held in memory"):
        fast_path_ok(files, DataConfig(**aug, device_augment=True), True, info)
    kw = dict(train=True, info=info, device="cpu", seed=0, epoch=0)
    assert isinstance(make_batches(ds, 8, data_cfg=DataConfig(**aug, device_augment=False), **kw), _DeviceLoader)


def test_device_augment_false_keeps_the_exact_per_image_path():
    """data.device_augment=false: torchvision per image, each seeded with (seed, epoch, index), so worker
    processes and a skip change nothing (the training tests' resume through this path needs the flag
    now that random erasing has a batched form)."""
    info = info_for(3)
    cfg = DataConfig(crop_padding=4, hflip=True, auto_augment="cifar10", random_erasing=0.5, device_augment=False)
    ds = dataset(40)
    ds.transform = build_train_transform(cfg, info)
    kw = dict(train=True, data_cfg=cfg, info=info, device="cpu", seed=3, epoch=1)
    whole = list(make_batches(ds, 8, **kw))
    resumed = list(make_batches(ds, 8, skip=16, num_workers=2, **kw))
    assert len(resumed) == 3
    for (a, ya), (b, yb) in zip(whole[2:], resumed):
        assert torch.equal(a, b) and torch.equal(ya, yb)


@pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")  # the preset's 4 workers, never started
@pytest.mark.parametrize("device_augment", [None, False])
def test_trainer_takes_the_batched_path_for_the_cifar10_preset(tmp_path, device_augment):
    """configs/cifar10_vit.yaml's augmentation (crop 4, flip, AutoAugment cifar10) on the tiny
    Fashion-MNIST (one channel, in memory): batched unless data.device_augment is false."""
    from vitlab.train.engine import Trainer

    make_fashion(tmp_path / "fashion")
    preset = yaml.safe_load((REPO / "configs" / "cifar10_vit.yaml").read_text())
    assert preset["data"]["auto_augment"] == "cifar10"
    data = {**preset["data"], "name": "fashion_mnist", "root": str(tmp_path / "fashion"),
            "device_augment": device_augment}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"model": TINY_MODEL, "data": data,
                                    "train": {"epochs": 1, "batch_size": 16, "threads": 1, "progress": False,
                                              "loggers": []}}))
    trainer = Trainer(config_mod.load(path), tmp_path / "run")
    batches = trainer._batches(0, train=True)
    if device_augment is False:
        assert isinstance(batches, _DeviceLoader)
        return
    assert isinstance(batches, TensorBatches)
    assert repr(batches.transforms) == ("BatchTransforms(random crop (pad 4), hflip, BatchAutoAugment('cifar10'), "
                                        "normalise)")
    x, y = next(iter(batches))
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert isinstance(trainer._batches(0, train=False), TensorBatches)
