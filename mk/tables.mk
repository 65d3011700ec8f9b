# The accuracy tables of the Mono-Forward paper (issue 3): every cell trained, then the table with
# the published values beside ours (results/tables/tableN.{md,csv,tex}).
#   make reproduce-table3 PROFILE=quick     2 CPU cores, well under an hour; says "quick" on its face
#   make reproduce-table2 PROFILE=paper     tunes every CNN cell (8 trials each), then the seeds (days on 2 CPU cores)
#   make reproduce-table3 PROFILE=paper     tunes every cell (12 trials each), then the 3 seeds
#   make reproduce-table3 SWEEP_ARGS="--jobs 2"   runs in parallel processes
#   make tables                             the tables from results/ alone, no training

.PHONY: reproduce-table1 reproduce-table2 reproduce-table3 reproduce-table6 reproduce-tables tables

reproduce-table6: venv
	$(call SWEEP,table6,table6)

# Tables 1 and 2 (issue 26): the paper profile tunes every cell with one budget first (TABLE12_TRIALS
# finished Optuna trials each, on the profile's `tune` budget in benchmarks/specs/table{1,2}.yaml).
TABLE12_TRIALS ?= 8
reproduce-table1 reproduce-table2: reproduce-table%: venv
	$(call SWEEP,table$* $(if $(filter paper,$(PROFILE)),--tune $(TABLE12_TRIALS)),table$*)

# The paper profile tunes every cell with the same budget first (TABLE3_TRIALS Optuna trials, each
# on the profile's `tune` budget: benchmarks/specs/table3.yaml), then runs the seeds with the best settings.
TABLE3_TRIALS ?= 12
reproduce-table3: venv
	$(call SWEEP,table3 $(if $(filter paper,$(PROFILE)),--tune $(TABLE3_TRIALS)),table3)

reproduce-tables: reproduce-table3 reproduce-table6 reproduce-table2 reproduce-table1

tables: venv
	$(BPFREE) plots --only table1 table2 table3 table6

# The claim-by-claim report (benchmarks/report.py): every claim of the paper and the energy study,
# published figure, ours, protocol and verdict, from results/ alone (after the tables are written).
.PHONY: report
report: venv
	$(BPFREE) plots
	$(BPFREE) report
