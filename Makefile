# GLAG — the three user commands, the demo, tests and benchmarks.
#   make demo                        install, then the whole pipeline on digits-LT (a few minutes, CPU)
#   make test                        install, then the test suite
#   make features DATASET=cifar10-jpeg IM=100 LOSS=graloss   stage one -> runs/<dataset>-im<IM>/<loss>/seed0/bank.h5,
#                                    which becomes the current bank (runs/current.json)
#   make generate                    AFG on the current bank (or DATASET=...'s) -> <bank folder>/synthetic/<hash>.h5
#   make classify                    stage two (GLAG default) on the current bank -> <bank folder>/stage2/<run>/
#   make reproduce DATASET=fashion-mnist IM=100   every loss x method x seed, one mean ± std table
# Extra options for any tool go in ARGS="--epochs 10 ...".

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATASET ?=
IM     ?=
LOSS   ?=
SEED   ?=
ARGS   ?=
RECIPE ?=
SEEDS  ?=
SHARED ?= ../shared
DATA   ?= datasets
DEMO   := runs/demo

export GLAG_DATA ?= $(DATA)

.PHONY: install demo test features generate classify reproduce bench bench-extract bench-generate bench-classify bench-crt-peer bench-group bench-decode bench-scale \
        data-cifar10 data-tiny-imagenet clean-runs

install: $(VENV)/.installed

# torch/torchvision first, pinned: pip takes the local wheels of this platform instead of a download.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	@# the distribution is glag-lt (glag on the package index is another project): drop an install under the old name
	$(BIN)/pip uninstall -q -y glag >/dev/null 2>&1 || true
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test,plots,tensorboard]'
	touch $@

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Stage one on DATASET (digits, the embedded default, when not given); the bank becomes the current one.
features: install
	$(BIN)/glag-extract --dataset $(or $(DATASET),digits) $(if $(IM),--im $(IM)) $(if $(LOSS),--loss $(LOSS)) \
	    $(if $(SEED),--seed $(SEED)) $(ARGS)

# Without DATASET these use the current bank: the one `make features` wrote last.
generate: install
	$(BIN)/glag-generate $(if $(DATASET),--dataset $(DATASET)) $(ARGS)

classify: install
	$(BIN)/glag-classify run $(if $(DATASET),--dataset $(DATASET)) $(ARGS)

# The whole comparison on one dataset (docs/reproduce.md): stage one per loss and seed, every stage-two
# method from each bank, one mean ± std table in runs/<dataset>-im<IM>/results/. Reruns skip what is done.
reproduce: install
	$(BIN)/glag-reproduce $(if $(RECIPE),--recipe $(RECIPE),--dataset $(or $(DATASET),digits)) \
	    $(if $(IM),--im $(IM)) $(if $(SEEDS),--seeds $(SEEDS)) $(ARGS)

# The embedded default: scikit-learn's digits made long-tailed (IM 10). Stage one twice (CE and GraLoss),
# then from the banks: plain CE (stage one end to end), cRT on the CE bank, cRT on the GraLoss bank, GLAG.
demo: install
	$(BIN)/glag-extract --dataset digits --loss ce --out $(DEMO)/ce/bank.h5 $(ARGS)
	$(BIN)/glag-extract --dataset digits --loss graloss --out $(DEMO)/graloss/bank.h5 $(ARGS)
	$(BIN)/glag-generate --bank $(DEMO)/graloss/bank.h5 --beta-init 0.6
	$(BIN)/glag-classify run --bank $(DEMO)/ce/bank.h5 --method crt --run crt --overwrite
	$(BIN)/glag-classify run --bank $(DEMO)/graloss/bank.h5 --method crt --run crt --overwrite
	$(BIN)/glag-classify run --bank $(DEMO)/graloss/bank.h5 --method glag --run glag --overwrite
	$(BIN)/glag-classify table --stage-one $(DEMO)/ce/bank.h5 --stage-one $(DEMO)/graloss/bank.h5 $(DEMO)/ce/stage2/crt \
	    $(DEMO)/graloss/stage2/crt $(DEMO)/graloss/stage2/glag | tee $(DEMO)/results.md

bench: bench-extract bench-generate bench-classify bench-crt-peer

bench-extract: install data-cifar10
	$(BIN)/python bench/bench_extract.py --data-root $(GLAG_DATA) $(ARGS)

bench-generate: install
	$(BIN)/python bench/bench_generate.py $(ARGS)

bench-classify: install
	$(BIN)/python bench/bench_classify.py $(ARGS)

# cRT the peer way (frozen backbone over the images every epoch) vs from the bank, CIFAR-10-LT JPEG.
bench-crt-peer: install data-cifar10
	$(BIN)/python bench/bench_crt_peer.py --data-root $(GLAG_DATA) $(ARGS)

# Stage two at CIFAR-100-LT, ImageNet-LT and iNaturalist 2018 shapes (issue 19): writes banks of those shapes
# under runs/bench-scale (~30 GB), bench/results/scale.md; iNat's stage-two epochs are projected from one.
bench-scale: install
	$(BIN)/python bench/bench_scale.py $(ARGS)

# Device benchmarks (issue 13): grouped stage-one steps and the GPU JPEG path; both run on CPU too.
bench-group: install
	$(BIN)/python bench/bench_group.py $(ARGS)

bench-decode: install
	$(BIN)/python bench/bench_decode.py $(ARGS)

# Unpack the offline archives of ../shared/data into the data root (never into git).
data-cifar10: $(GLAG_DATA)/cifar10-jpeg
$(GLAG_DATA)/cifar10-jpeg:
	mkdir -p $(GLAG_DATA) && tar xzf $(SHARED)/data/cifar10-jpeg.tar.gz -C $(GLAG_DATA)

data-tiny-imagenet: $(GLAG_DATA)/tiny-imagenet-202
$(GLAG_DATA)/tiny-imagenet-202:
	mkdir -p $(GLAG_DATA) && tar xzf $(SHARED)/data/tiny-imagenet-202.tar.gz -C $(GLAG_DATA)

clean-runs:
	rm -rf runs
