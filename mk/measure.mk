# Cost measurements: Tables 4 and 5, Figures 1 to 5 (issue 4), and `make plots`.
#   make reproduce-table5 PROFILE=quick     train the table's runs (skips finished ones), then write the table
#   make reproduce-fig3 PROFILE=paper       the same for a figure; fig1 and fig2 come from the same runs
#   make reproduce-table4 PROFILE=quick     time prediction on this machine (accuracy comes from Table 3's runs)
#   make plots                              every figure and table from results/ alone, no training

.PHONY: reproduce-table4 reproduce-table5 reproduce-fig1 reproduce-fig2 reproduce-fig3 reproduce-fig4 reproduce-fig5 plots

# Runs every config of spec $(1) for $(PROFILE) through the sweep API (benchmarks/sweep.py); finished runs are reused.
RUN_SPEC = $(PY) -c "import sys; from benchmarks.sweep import load_spec, expand, run_configs; \
configs = [c for _, cs in expand(load_spec(sys.argv[1]), sys.argv[2]) for c in cs]; \
run_configs(configs, dry_run=False)" $(1) $(PROFILE)

reproduce-table4: venv
	$(PY) scripts/measure_latency.py --profile $(PROFILE)
	$(PY) scripts/plots.py --only table4

reproduce-table5: venv
	$(call RUN_SPEC,table5)
	$(PY) scripts/plots.py --only table5

reproduce-fig1 reproduce-fig2: venv
	$(call RUN_SPEC,fig1)
	$(PY) scripts/plots.py --only fig1 fig2

reproduce-fig3: venv
	$(call RUN_SPEC,fig3)
	$(PY) scripts/plots.py --only fig3

reproduce-fig4: venv
	$(call RUN_SPEC,fig4)
	$(PY) scripts/plots.py --only fig4

reproduce-fig5: venv
	$(call RUN_SPEC,fig5)
	$(PY) scripts/plots.py --only fig5

plots: venv
	$(PY) scripts/plots.py
