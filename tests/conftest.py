import pytest
import torch


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    """vitlab's cache (remembered checks of image files, downloads) in a fresh folder per test,
    never the user's."""
    d = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(d))
    return d


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    """The trainer sets torch's thread count and deterministic mode; other tests must not see them."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det)
