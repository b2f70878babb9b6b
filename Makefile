# The two commands of the README: `make demo` and `make test`. Each does all
# of its set-up on a fresh machine (virtual environment, vitlab, data).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install dev fashion-mnist bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

# Debian's dataset-fashion-mnist package puts the IDX files where vitlab looks.
fashion-mnist:
	@[ -d $(FMNIST) ] || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist)

# Train the small ViT on Fashion-MNIST on the CPU (see configs/fashion_mnist_vit.yaml).
demo: install fashion-mnist
	$(BIN)/vitlab train configs/fashion_mnist_vit.yaml --out runs/fashion_mnist_vit-$$(date +%Y%m%d-%H%M%S)

test: dev
	$(BIN)/python -m pytest -q

bench: dev
	$(BIN)/python benchmarks/bench_vit_vs_timm.py

clean:
	rm -rf $(VENV) runs
