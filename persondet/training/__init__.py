"""The ``train`` step: one tracked training, single process or torch.distributed (torchrun).

- ``trainer.train(config) -> metrics``: the training as a page of named steps; what the ``train`` entry
  point (through ``launch``), the tests and the optuna objective call.
- ``build``: the device, the data, the detector and its recipe, from the config.
- ``loop.fit``: the epoch loop (train, validate, log, checkpoint, callback).
- ``checkpoint``: what an epoch leaves behind and how a training resumes from it bit for bit.
- ``launcher.launch(config)``: in this process, or torchrun workers (``worker``) when nproc * nnodes > 1.

Exactly one MLflow run per training, and global rank 0 is the only process that logs to it.
"""

from persondet.training.launcher import launch
from persondet.training.loop import TIMING_WARMUP_ITERS
from persondet.training.trainer import train

__all__ = ["TIMING_WARMUP_ITERS", "launch", "train"]
