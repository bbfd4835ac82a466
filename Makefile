# Two entry points for a fresh machine (see README):
#   make demo   install everything, then run the main job on the embedded synthetic data
#   make test   install everything, then run the default test suite (CI runs this)
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# docs/environment.md, "Torch and torchvision pin": this torch/torchvision pair must be installed FIRST (timm needs torchvision;
# later unpinned installs such as deepspeed would otherwise pull another torch).
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
export DS_ACCELERATOR ?= cpu
export DS_BUILD_OPS ?= 0
export OMP_NUM_THREADS ?= 2
# docs/environment.md, "Allocator and threads": keep large buffers mapped (the aeris CLI sets this itself;
# pytest and the benchmark scripts are not the CLI). `GLIBC_TUNABLES= make test` runs without.
export GLIBC_TUNABLES ?= glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184

.PHONY: install demo test test-slow test-all bench clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/aeris demo

test: install
	$(VENV)/bin/pytest -q

test-slow: install
	$(VENV)/bin/pytest -q -m slow

test-all: install
	$(VENV)/bin/pytest -q -m "slow or not slow"

clean-demo:
	rm -rf data/synthetic runs
