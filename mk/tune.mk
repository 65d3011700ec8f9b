# Hyperparameter tuning with Optuna (benchmarks/tuning/, bpfree tune).
#   make tune ALGO=mf DATASET=fmnist WIDTHS=1000,1000 [PROFILE=quick|paper] [TUNE_TRIALS=N] [TUNE_ARGS=...]
#       one study; the same command again resumes it; TUNE_ARGS="--storage postgresql://... --worker-id 1"
#       makes this one of many workers
#   make tune-fmnist-mf-bp [PROFILE=...]   MF and BP on Fashion-MNIST 2x1000 with the same trial budget
#   make tune-dashboard STUDY=mf_fmnist_2x1000   watch a study in the browser (needs optuna-dashboard)
# Outputs: results/studies/<study>.log|.csv|.best.json, <study>/runs/, best settings in
# results/studies/best_params.json (what a spec's params_file points to).

ALGO ?= mf
DATASET ?= fmnist
WIDTHS ?= 1000,1000
STUDY ?= $(ALGO)_$(DATASET)_2x1000
TUNE_ARGS ?=

# The budget of every study, the same for every algorithm: trials, and epochs/patience per trial.
ifeq ($(PROFILE),paper)
TUNE_TRIALS ?= 30
TUNE_BUDGET := --epochs 50 --patience 5
else
TUNE_TRIALS ?= 8
TUNE_BUDGET := --epochs 5 --patience 2 --train-limit 10000 --test-limit 10000  # minutes on a CPU
endif

.PHONY: tune tune-fmnist-mf-bp tune-dashboard

tune: venv
	$(BPFREE) tune -a $(ALGO) -d $(DATASET) --widths $(WIDTHS) $(TUNE_BUDGET) --trials $(TUNE_TRIALS) \
		--measure time,memory --quiet $(TUNE_ARGS)

tune-fmnist-mf-bp: venv
	for algo in mf bp; do $(MAKE) --no-print-directory tune ALGO=$$algo DATASET=fmnist WIDTHS=1000,1000 || exit 1; done

tune-dashboard: venv
	@$(VENV)/bin/optuna-dashboard --version >/dev/null 2>&1 || { \
		echo "optuna-dashboard is not installed: $(VENV)/bin/pip install optuna-dashboard"; exit 2; }
	@test -f results/studies/$(STUDY).log || { echo "no study results/studies/$(STUDY).log"; exit 2; }
	$(VENV)/bin/optuna-dashboard results/studies/$(STUDY).log

# The energy study (Spyra 2025; benchmarks/specs/energy_study.yaml): FF, CaFo and MF against BP on
# their own networks. Every algorithm x dataset x network is tuned with the same budget (the same
# number of trials, each with the profile's epochs and patience), the profile's seeds then run with
# the tuned settings, and results/tables/energy_study.{md,csv} is written even if some run failed.
#   make reproduce-energy-study PROFILE=quick   2 CPU cores, about 30-40 minutes; says QUICK on its face
#   make reproduce-energy-study PROFILE=paper   30 trials per cell, up to 50 epochs, 3 seeds (meant for a GPU)
#   make reproduce-energy-study SWEEP_ARGS="--jobs 2"   final runs in parallel processes (tuning is sequential)
# Running it again resumes: finished trials and runs are reused.
ifeq ($(PROFILE),paper)
# as many trials as `make tune` gives a paper-profile study (the study's own count is not in its summary)
ENERGY_STUDY_TRIALS ?= 30
else
# 1 trial of the algorithm's defaults + 2 sampled: every cell's share of ~20 minutes of tuning on 2 cores
ENERGY_STUDY_TRIALS ?= 3
endif

.PHONY: reproduce-energy-study

reproduce-energy-study: venv
	$(BPFREE) sweep energy_study --profile $(PROFILE) --tune $(ENERGY_STUDY_TRIALS) --run $(SWEEP_ARGS); \
	status=$$?; $(BPFREE) plots --only energy_study --profile $(PROFILE) && exit $$status
