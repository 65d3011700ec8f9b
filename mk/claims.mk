# The Mono-Forward paper's Section 3.3 claims (issue 15): hot-plugging layers, a damaged layer, and
# layer-parallel MF across processes (torch.distributed) against BP with DistributedDataParallel.
#   make reproduce-claims PROFILE=quick     all three on 2 CPU cores (about 10 minutes), then tables and figures
#   make reproduce-claims PROFILE=paper     full training sets, 20 epochs: ~1.8 h on 2 CPU cores (4 + 46 + 60 min)
#   make reproduce-claims-damage PROFILE=quick   one of them (hotplug, damage, parallel)
#   make claims                             the tables and figures from results/claims/*.json alone, no training
# Outputs: results/claims/<experiment>_<profile>.json, results/tables/claims_{hotplug,damage,parallel}.md,
# results/figures/claims_<experiment>_<profile>.{png,pdf}; the damage study's base runs (weights kept)
# in results/claims/runs/, reused when run again.

.PHONY: reproduce-claims reproduce-claims-hotplug reproduce-claims-damage reproduce-claims-parallel claims

# one thread a process: the parallel experiment measures processes on cores, and the machine is shared
reproduce-claims: venv
	OMP_NUM_THREADS=1 $(BPFREE) claims all --profile $(PROFILE)

reproduce-claims-hotplug reproduce-claims-damage reproduce-claims-parallel: reproduce-claims-%: venv
	OMP_NUM_THREADS=1 $(BPFREE) claims $* --profile $(PROFILE)

claims: venv
	$(BPFREE) claims --from-results
