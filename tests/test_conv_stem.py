"""The ViT with a convolutional stem (models/conv_stem.py): its grid, its filters analysis, and
a run of it through train, analyze and export."""

from __future__ import annotations

import json

import pytest
import torch

import vitlab
from tiny import fails, make_fashion, write_config
from vitlab import cli
from vitlab.analysis.filters import filter_pca, max_components


def test_grid_rounds_up_and_any_size_runs():
    model = vitlab.create_model("vit_mnist_conv", depth=1).eval()
    assert model.patch_embed.grid_size == (4, 4)  # 28 -> 14 -> 7 -> 4
    assert model.patch_embed.grid_for(27, 33) == (4, 5)  # 27 -> 14 -> 7 -> 4; 33 -> 17 -> 9 -> 5
    with torch.no_grad():
        assert model.forward_features(torch.randn(2, 1, 27, 33)).shape == (2, 1 + 4 * 5, 64)


def test_filters_are_the_first_convolution_s():
    torch.manual_seed(0)
    model = vitlab.create_model("vit_mnist_conv", depth=1)
    w = model.patch_embed.stem[0].weight.detach().double()  # (16, 1, 3, 3)
    assert max_components(model) == 9  # 16 filters of 9 values: at most 9 directions
    comps, ratio = filter_pca(model, 9)
    assert comps.shape == (9, 1, 3, 3)
    flat = comps.reshape(9, -1).double()
    assert torch.allclose(flat @ flat.T, torch.eye(9, dtype=torch.float64), atol=1e-5)
    # the first component is the leading direction of the centred filters (up to sign)
    centred = (w.reshape(16, -1) - w.reshape(16, -1).mean(0))
    first = torch.linalg.svd(centred, full_matrices=False)[2][0]
    assert torch.allclose((flat[0] @ first).abs(), torch.tensor(1.0, dtype=torch.float64), atol=1e-5)
    assert ratio.sum() == pytest.approx(1.0, abs=1e-5)


def test_conv_stem_run_trains_is_analysed_and_refused_by_timm_export(tmp_path, capsys):
    make_fashion(tmp_path / "fm", 32, 20)
    cfg = write_config(tmp_path / "c.yaml", {"name": "fashion_mnist", "root": str(tmp_path / "fm")},
                       model={"name": "vit_mnist_conv", "depth": 1}, epochs=1, loggers=[])
    run = tmp_path / "run"
    assert cli.main(["train", str(cfg), "--out", str(run)]) == 0
    assert cli.main(["analyze", str(run / "best.pt"), "--out", str(tmp_path / "an"), "--distance-images", "8"]) == 0
    # every ViT analysis ran: the filters are the stem's first convolution's
    for name in ("rollout.png", "attention_distance.png", "pos_embed_similarity.png", "filters.png"):
        assert (tmp_path / "an" / name).is_file(), name
    filters = json.loads((tmp_path / "an" / "filters.json").read_text())
    assert filters["shape"] == [1, 3, 3] and filters["k"] == 9
    capsys.readouterr()
    err = fails(capsys, "export", run, "--to", "timm", "--out", tmp_path / "t")
    assert "convolutional stem" in err
    err = fails(capsys, "export", run, "--to", "hf", "--out", tmp_path / "h")
    assert "convolutional stem" in err
