# Cost measurements: Tables 4 and 5, Figures 1 to 5 (issue 4), and `make plots`.
#   make reproduce-table5 PROFILE=quick     train the table's runs (skips finished ones), then write the table
#   make reproduce-fig3 PROFILE=paper       the same for a figure; fig1 and fig2 come from the same runs
#   make reproduce-table4 PROFILE=quick     time prediction on this machine (accuracy comes from Table 3's runs)
#   make plots                              every figure and table from results/ alone, no training

.PHONY: reproduce-table4 reproduce-table5 reproduce-fig1 reproduce-fig2 reproduce-fig3 reproduce-fig4 reproduce-fig5 plots

reproduce-table4: venv
	$(BPFREE) latency --profile $(PROFILE)
	$(BPFREE) plots --only table4

reproduce-table5: venv
	$(call SWEEP,table5,table5)

reproduce-fig1 reproduce-fig2: venv
	$(call SWEEP,fig1,fig1 fig2)

reproduce-fig3: venv
	$(call SWEEP,fig3,fig3)

reproduce-fig4: venv
	$(call SWEEP,fig4,fig4)

reproduce-fig5: venv
	$(call SWEEP,fig5,fig5)

plots: venv
	$(BPFREE) plots
