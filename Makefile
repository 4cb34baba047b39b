# One-command set-up and the project's entry points. Every target sets up first when needed.
PYTHON ?= python3
# `make test D2_SRC=PATH` runs the suite against the detectron2 built from PATH (a source folder or a
# .tar.gz of one, e.g. a git archive of detectron2 main), compiled ops included, in its own environment.
D2_SRC ?=
ifeq ($(strip $(D2_SRC)),)
VENV := .venv
else
VENV := .venv-d2src
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-complete
ARCH := $(shell uname -m)
# torch/torchvision pairs that import and run together on these machines (override to taste).
ifeq ($(ARCH),aarch64)
TORCH_PACKAGES ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_PACKAGES ?= torch==2.14.1 torchvision==0.29.1
endif

.PHONY: setup test demo bench study study-headline study-paper gpu-check clean-venv

setup: $(STAMP)

$(STAMP): setup.cfg setup.py pyproject.toml tools/install_detectron2.py Makefile $(D2_SRC)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install $(TORCH_PACKAGES)
	$(PY) -m pip install -e '.[test]'
	$(PY) tools/install_detectron2.py $(if $(strip $(D2_SRC)),--source $(D2_SRC))
	$(PY) -c "import dsanet, detectron2; print('dsanet', dsanet.__version__, '| detectron2', detectron2.__version__)"
	touch $(STAMP)

test: setup
	$(PY) -m pytest tests -rfE --tb=short

DEMO_OUT := output/demo
demo: setup
	$(PY) train_net.py --config-file configs/Demo/dsanet_conf_synthetic_cpu.py train.output_dir=$(DEMO_OUT)
	$(PY) tools/visualize_predictions.py --config-file $(DEMO_OUT)/config.yaml --weights $(DEMO_OUT)/model_final.pth --output $(DEMO_OUT)/predictions --num-images 8

# `make bench BENCH_FLAGS=--quick`: every benchmark at a small image size, a smoke run of a few minutes.
BENCH_FLAGS ?=
bench: setup
	$(PY) -m benchmarks.run_all --output output/bench $(BENCH_FLAGS)

# The README's variant study on the embedded benchmark (hours on CPU); run it again to resume, or with a
# larger STUDY_SEEDS to add seeds. Several invocations may share the folder (each run is locked):
#   make setup && (OMP_NUM_THREADS=1 make study & OMP_NUM_THREADS=1 make study; wait)   (setup first: once, not twice at a time)
STUDY_OUT := output/study
STUDY_SEEDS ?= 3
study: setup
	$(PY) tools/compare_variants.py --config-file configs/Demo/dsanet_conf_synthetic_study_cpu.py \
	    --seeds $(STUDY_SEEDS) --output $(STUDY_OUT) \
	    --variant 'retinanet: model.head.dsa_levels=[] model.head.with_confidence=False' \
	    --variant 'retinanet_conf: model.head.dsa_levels=[]' \
	    --variant 'dsanet: model.head.with_confidence=False' \
	    --variant 'dsanet_conf:' \
	    --eval-variant 'dsanet_conf_alpha0=dsanet_conf: model.score_fusion_alpha=0.0' \
	    --eval-variant 'dsanet_conf_alpha0.5=dsanet_conf: model.score_fusion_alpha=0.5' \
	    --eval-variant 'dsanet_conf_alpha0.7=dsanet_conf: model.score_fusion_alpha=0.7' \
	    --compare dsanet_conf:retinanet_conf --compare dsanet:retinanet_conf

# The README's headline (projects/DSANet/docs/STUDIES.md): RetinaNet, DSANet-Conf and DSANet, HEADLINE_SEEDS seeds
# with one intra-op thread, seeds 0 and 1 again with two threads (a second setup), then the report over both
# setups. Resumable, and the first step may run twice at a time on a 2-core CPU like `make study`.
HEADLINE_OUT := output/study_headline
HEADLINE_SEEDS ?= 7
HEADLINE = $(PY) tools/compare_variants.py --config-file configs/Demo/dsanet_conf_synthetic_study_cpu.py \
	--variant 'retinanet: model.head.dsa_levels=[] model.head.with_confidence=False' --variant 'dsanet_conf:' \
	--variant 'dsanet: model.head.with_confidence=False' --compare dsanet_conf:dsanet
study-headline: setup
	$(HEADLINE) --seeds $(HEADLINE_SEEDS) --threads 1 --output $(HEADLINE_OUT)
	$(HEADLINE) --seeds 2 --threads 2 --output $(HEADLINE_OUT)_threads2
	$(HEADLINE) --seeds $(HEADLINE_SEEDS) --threads 1 --output $(HEADLINE_OUT) \
	    --import-setup threads2=$(HEADLINE_OUT)_threads2/results.json

# The paper's design choices (its Tables 1-5) and full-resolution P3 on the embedded benchmark, each paired
# with DSANet (no confidence, as in those tables) seed by seed; RetinaNet is the reference row. Variants come
# fewest estimated seeds for +-1.0 AP first. Resumable, and shared by several invocations like `make study`
# (see projects/DSANet/docs/STUDIES.md).
PAPER_STUDY_OUT := output/study_paper
PAPER_STUDY_SEEDS ?= 3
PAPER_STUDY_FLAGS ?=
P3_HALF = p3:self_half_k{k},p4:self,p5:self,p6:self,p7:self
study-paper: setup
	$(PY) tools/compare_variants.py --config-file configs/Demo/dsanet_conf_synthetic_study_cpu.py \
	    --seeds $(PAPER_STUDY_SEEDS) --output $(PAPER_STUDY_OUT) $(PAPER_STUDY_FLAGS) \
	    --variant 'dsanet: model.head.with_confidence=False' \
	    --variant 'dsanet_star_p3_half_k1: model.head.with_confidence=False model.backbone._target_=dsanet.modeling.FPNWithoutTopDown model.head.dsa_levels={$(subst {k},1,$(P3_HALF))}' \
	    --variant 'p3_half_k3: model.head.with_confidence=False model.head.dsa_levels={$(subst {k},3,$(P3_HALF))}' \
	    --variant 'after_towers: model.head.with_confidence=False model.head.dsa_location=after' \
	    --variant 'authors_code_scale_init: model.head.with_confidence=False model.head.dsa_qk_scale=channels model.head.dsa_conv_init=xavier' \
	    --variant 'p3_half_k1: model.head.with_confidence=False model.head.dsa_levels={$(subst {k},1,$(P3_HALF))}' \
	    --variant 'retinanet: model.head.dsa_levels=[] model.head.with_confidence=False' \
	    --variant 'shared_branch: model.head.with_confidence=False model.head.dsa_shared=True' \
	    --variant 'gamma_fixed_1: model.head.with_confidence=False model.head.dsa_learn_gamma=False' \
	    --variant 'self_p3_p7_full_resolution: model.head.with_confidence=False model.head.dsa_levels=[p3,p4,p5,p6,p7]' \
	    --variant 'cbam_p3_p7: model.head.with_confidence=False model.head.dsa_levels={p3:cbam,p4:cbam,p5:cbam,p6:cbam,p7:cbam}' \
	    --compare self_p3_p7_full_resolution:retinanet --compare dsanet_star_p3_half_k1:p3_half_k1

# On a CUDA machine: does the project work there, and what does it cost (about 5 minutes; see
# projects/DSANet/docs/GPU.md). Without CUDA it says so and fails.
GPU_CHECK_OUT ?= output/gpu_check/gpu_check.json
gpu-check: setup
	$(PY) tools/gpu_check.py --output $(GPU_CHECK_OUT)

clean-venv:
	rm -rf $(VENV)
