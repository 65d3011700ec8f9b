"""The Mono-Forward paper's untested Section 3.3 claims, as experiments (issue 15).

* ``hotplug``: a trained 2-layer MF net equals the first two layers of a trained 3-layer one; a new
  top layer plugged onto a trained net and trained alone, against the deeper net from scratch (MF
  and BP); the top layer unplugged.
* ``damage``: one layer of a trained MF or BP net damaged (noise, zeroed units, re-initialised);
  accuracy without retraining and while retraining that layer alone.
* ``parallel``: MF's blocks as pipeline stages in separate processes (``torch.distributed``), against
  one-process MF and against BP with DistributedDataParallel; a model of the speed-up for k stages.

Each experiment writes one JSON file under ``results/claims/``; ``report`` turns those files, and
nothing else, into ``results/tables/claims_*.md`` and ``results/figures/claims_*``.
"""
