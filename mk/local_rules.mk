# The local-learning tables (issue 14): Scalable Forward-Forward and forward gradient with local losses,
# each beside BP and MF on the same networks (results/tables/{sff,fg}.{md,csv,tex}).
#   make reproduce-sff PROFILE=quick       cnn and ResNet-8 (SFF, SFF hybrid) on cifar10-jpeg, Fashion-MNIST
#   make reproduce-fg PROFILE=quick        MLP and LocalMixer (FG-A, FG-W) on MNIST, cifar10-jpeg
#   make reproduce-sff PROFILE=paper       ResNet-20, full training sets (meant for a GPU)
#   make reproduce-local-cost PROFILE=quick  peak training memory of SFF and FG beside BP and MF (a few
#                                          steps a network; epoch times come from the two tables' runs)
#   make local-tables                      the three tables from results/ alone, no training

.PHONY: reproduce-sff reproduce-fg reproduce-local-cost reproduce-local local-tables

reproduce-sff reproduce-fg: reproduce-%: venv
	$(call SWEEP,$*,$*)

reproduce-local-cost: venv
	$(call SWEEP,local_cost,local_cost)

reproduce-local: reproduce-sff reproduce-fg reproduce-local-cost

local-tables: venv
	$(BPFREE) plots --only sff fg local_cost
