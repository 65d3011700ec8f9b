# The GPU check (issue 13; scripts/gpu_check.sh): the CUDA and NVML paths and as much of the paper
# profiles as fits, on one CUDA GPU within 8 minutes.
#   make gpu-check         on the GPU machine, with its own python3 (PYTHONPATH=., no venv)
#   make gpu-check-dry     the same steps on the CPU at a tiny size, with the venv (about a minute)
#   make gpu-data          copy MNIST and Fashion-MNIST into data/ (ignored by git) so that the device
#                          tool can carry them (`carry: ["data"]`, about 41 MB)

GPU_PYTHON ?= python3
GPU_DATA_DIRS ?= ../shared/data /usr/share/datasets

.PHONY: gpu-check gpu-check-dry gpu-data

gpu-check:
	PYTHON=$(GPU_PYTHON) bash scripts/gpu_check.sh

gpu-check-dry: venv
	PYTHON=$(PY) bash scripts/gpu_check.sh --dry-run

gpu-data:
	@mkdir -p data/MNIST/raw data/fashion-mnist
	@for d in $(GPU_DATA_DIRS); do \
		[ -d $$d/MNIST/raw ] && cp -n $$d/MNIST/raw/*-ubyte* data/MNIST/raw/ 2>/dev/null; \
		[ -d $$d/fashion-mnist ] && cp -n $$d/fashion-mnist/*-ubyte* data/fashion-mnist/ 2>/dev/null; \
	done; true
	@du -sh data/MNIST data/fashion-mnist
