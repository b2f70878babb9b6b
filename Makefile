# The two commands of the README: `make demo` and `make test`. Each does all
# of its set-up on a fresh machine (virtual environment, vitlab, data).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install dev fashion-mnist bench clean

# Packages are installed with uv, which fetches and unpacks torch's large wheels in
# parallel (about 40 s here against 140 s for pip); pip takes over wherever uv cannot
# be installed or cannot reach the index (uv reads UV_INDEX_URL, not pip.conf).
# `make demo INSTALL_WITH=pip` skips uv.
INSTALL_WITH ?= uv
ifeq ($(INSTALL_WITH),uv)
pip_install = ($(BIN)/pip install -q uv && $(BIN)/uv pip install -q --python $(BIN)/python $(1)) \
	|| $(BIN)/pip install -q $(1)
else
pip_install = $(BIN)/pip install -q $(1)
endif

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(call pip_install,-e .)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(call pip_install,-e '.[dev]')
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

# Debian's dataset-fashion-mnist package puts the IDX files where vitlab looks.
fashion-mnist:
	@[ -d $(FMNIST) ] || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist)

# Train the small ViT on Fashion-MNIST on the CPU (see configs/fashion_mnist_vit_conv.yaml), then
# analyse its best checkpoint: report.html holds the paper's pictures for this model.
demo: install fashion-mnist
	@run=runs/fashion_mnist_vit_conv-$$(date +%Y%m%d-%H%M%S) && \
	$(BIN)/vitlab train configs/fashion_mnist_vit_conv.yaml --out $$run && \
	$(BIN)/vitlab analyze $$run/best.pt --out $$run/analysis && \
	echo "demo done: open $$run/analysis/report.html"

test: dev
	$(BIN)/python -m pytest -q

bench: dev
	$(BIN)/python benchmarks/bench_vit_vs_timm.py

clean:
	rm -rf $(VENV) runs
