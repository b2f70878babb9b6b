"""load_run: a trained run's model and its RunInfo, from the run folder or a checkpoint file.
The model gives the trainer's logits; its transform is vitlab predict's, so the probabilities
of an image file agree with `vitlab.evaluate.predict`; bad input is one UserError line."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tiny import make_fashion, write_config
from vitlab import config as cfgmod
from vitlab.errors import UserError
from vitlab.evaluate import predict
from vitlab.run import checkpoint
from vitlab.run.load import RunInfo, load_run
from vitlab.train.engine import Trainer

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one torch thread (conftest restores the count)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny ViT trained for one epoch on a tiny Fashion-MNIST: (the Trainer, its run folder)."""
    root = tmp_path_factory.mktemp("fashion")
    make_fashion(root, 64, 32)
    d = tmp_path_factory.mktemp("run")
    cfg = cfgmod.load(write_config(d / "c.yaml", {"name": "fashion_mnist", "root": str(root)}, loggers=[],
                                   epochs=1))
    t = Trainer(cfg, d / "run")
    t.fit()
    return t, d / "run"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A grey image at the run's size, and a colour one of another size and shape."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 60, (28, 28), dtype=np.uint8)
    grey[6:14] += 150  # the band of class 3
    Image.fromarray(grey).save(root / "grey.png")
    Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(root / "colour.png")
    return [root / "grey.png", root / "colour.png"]


def test_the_folder_and_the_file_give_the_trainers_model_and_its_facts(run):
    t, out = run
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    t.model.eval()
    with torch.no_grad():
        want = t.model(x)
    for source in (out, out / "best.pt"):
        model, info = load_run(source)
        assert isinstance(info, RunInfo) and not model.training
        assert next(model.parameters()).device == torch.device("cpu")
        with torch.no_grad():
            assert torch.equal(model(x), want)
        assert info.classes == t.info.classes and len(info.classes) == 10
        assert info.input_size == (1, 28, 28)
        assert info.mean == tuple(t.info.mean) and info.std == tuple(t.info.std)
        assert info.model_name == "vit" and info.config == t.cfg.to_dict()
        assert info.checkpoint == out / "best.pt" and info.epoch == 1
    _, last = load_run(out, checkpoint="last")
    assert last.checkpoint == out / "last.pt"


def test_the_transform_is_vitlab_predicts(run, images):
    _, out = run
    model, info = load_run(out)
    results = predict(out / "best.pt", [str(p) for p in images], top_k=10, device="cpu")
    for path, r in zip(images, results):
        for image in (Image.open(path), path, str(path)):  # a PIL image or the file's path
            x = info.transform(image)
            assert x.shape == info.input_size and x.dtype == torch.float32
            with torch.no_grad():
                probs = model(x.unsqueeze(0)).softmax(-1)[0]
            for top in r["top"]:
                assert probs[top["index"]].item() == pytest.approx(top["prob"], abs=1e-6)
    # the three lines of the README
    x = info.transform(Image.open(images[0])).unsqueeze(0)
    assert info.classes[model(x).argmax(1).item()] == results[0]["top"][0]["class"]


def test_a_folder_without_best_pt_gives_last_pt_with_a_warning(run, tmp_path):
    _, out = run
    (tmp_path / "run").mkdir()
    shutil.copy(out / "last.pt", tmp_path / "run" / "last.pt")
    with pytest.warns(UserWarning, match="no best.pt"):
        _, info = load_run(tmp_path / "run")
    assert info.checkpoint == tmp_path / "run" / "last.pt"


def _one_line(fn, match: str) -> None:
    with pytest.raises(UserError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)


def test_bad_input_is_one_line(run, tmp_path):
    t, out = run
    _one_line(lambda: load_run(tmp_path / "none"), "not found")
    (tmp_path / "empty").mkdir()
    _one_line(lambda: load_run(tmp_path / "empty"), "holds no best.pt")
    _one_line(lambda: load_run(out, checkpoint="lats"), "unknown checkpoint 'lats'.*did you mean 'last'")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    _one_line(lambda: load_run(tmp_path / "text.pt"), "not a complete PyTorch checkpoint")
    torch.save({"model": t.model.state_dict()}, tmp_path / "weights.pt")
    _one_line(lambda: load_run(tmp_path / "weights.pt"), "not the checkpoint of a vitlab run")
    torch.save({"model": {}, "evil": RunInfo}, tmp_path / "pickled.pt")
    _one_line(lambda: load_run(tmp_path / "pickled.pt"), "pickled Python object")
    _one_line(lambda: load_run(out, device="gpu"), "device 'gpu'")
    ckpt = checkpoint.load(out / "best.pt")
    ckpt["config"]["train"]["objective"] = "mpp"
    checkpoint.save(ckpt, tmp_path / "mpp.pt")
    _one_line(lambda: load_run(tmp_path / "mpp.pt"), "masked-patch-prediction.*untrained")
