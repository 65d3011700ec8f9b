# The local-learning tables (issue 14): Scalable Forward-Forward and forward gradient with local losses,
# each beside BP and MF on the same networks (results/tables/{sff,fg}.{md,csv,tex}).
#   make reproduce-sff PROFILE=quick       cnn and ResNet-8 (SFF, SFF hybrid) on cifar10-jpeg, Fashion-MNIST
#   make reproduce-fg PROFILE=quick        MLP and LocalMixer (FG-A, FG-W) on MNIST, cifar10-jpeg
#   make reproduce-sff PROFILE=paper       ResNet-20, full training sets (meant for a GPU)
#   make local-tables                      both tables from results/ alone, no training

.PHONY: reproduce-sff reproduce-fg reproduce-local local-tables

reproduce-sff reproduce-fg: reproduce-%: venv
	$(call SWEEP,$*,$*)

reproduce-local: reproduce-sff reproduce-fg

local-tables: venv
	$(PY) scripts/plots.py --only sff fg
