# The accuracy tables of the Mono-Forward paper (issue 3): every cell trained, then the table with
# the published values beside ours (results/tables/tableN.{md,csv,tex}).
#   make reproduce-table3 PROFILE=quick     2 CPU cores, well under an hour; says "quick" on its face
#   make reproduce-table2 PROFILE=paper     the paper's protocol (meant for a GPU)
#   make reproduce-table3 SWEEP_ARGS="--jobs 2"   runs in parallel processes
#   make tables                             the tables from results/ alone, no training

.PHONY: reproduce-table1 reproduce-table2 reproduce-table3 reproduce-table6 reproduce-tables tables

reproduce-table1 reproduce-table2 reproduce-table3 reproduce-table6: reproduce-table%: venv
	$(call SWEEP,table$*,table$*)

reproduce-tables: reproduce-table3 reproduce-table6 reproduce-table2 reproduce-table1

tables: venv
	$(PY) scripts/plots.py --only table1 table2 table3 table6
