"""mnist-lab's SLURM launcher for Hydra (``hydra/launcher=slurm_cpu``, ``slurm_gpu``): the
submitit plugin's, with a sweep that outlives a cancelled job (see _launcher.py).

Hydra's plugin scan finds the class here, in the package itself; without the ``slurm`` extra
(hydra-submitit-launcher) there is nothing to find, and nothing to warn about. Like the Optuna
sweeper, it is seen through an editable install once ``expose_to_hydra()`` has run.
"""

try:
    from hydra_plugins.mnist_lab_slurm._launcher import SlurmLauncher
except ImportError:  # no hydra-submitit-launcher: hydra/launcher=slurm_cpu says it is missing
    pass
else:
    __all__ = ["SlurmLauncher"]
