# Entry points. Every target creates the virtual environment first if it is missing.
#   make demo                      train BP, FA, DFA, FF and MF on the bundled digits set, side by side
#   make test                      the test suite
#   make reproduce-table3 PROFILE=quick   (and the other tables and figures; see README)
#   make plots                     tables and figures from results/ alone, no training

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# the suite's one command (pyproject.toml's console script; `bpfree --help`)
BPFREE := $(VENV)/bin/bpfree
PROFILE ?= quick
SWEEP_ARGS ?=  # e.g. --jobs 2, or --launcher slurm --launcher-opt slurm_partition=gpu
export PYTHONUNBUFFERED := 1

.PHONY: venv demo test bench-speed clean-venv
.DEFAULT_GOAL := demo

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q torch==2.14.1 torchvision==0.29.1  # from the local wheel cache where present
	$(VENV)/bin/pip install -q -e '.[all]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BPFREE) compare

test: venv
	$(PY) -m pytest -q tests

bench-speed: venv
	$(BPFREE) bench-speed

clean-venv:
	rm -rf $(VENV)

# $(call SWEEP,spec,outputs): run the spec's runs for $(PROFILE) (finished runs are reused, so an
# interrupted reproduction continues), then write its tables/figures even if some run failed, and
# exit with the sweep's status.
SWEEP = $(BPFREE) sweep $(1) --profile $(PROFILE) --run $(SWEEP_ARGS); status=$$?; \
	$(BPFREE) plots --only $(2) --profile $(PROFILE) && exit $$status

# Reproduction and plotting targets live in one fragment per topic.
include $(wildcard mk/*.mk)
