"""Sweeps: the summary of a sweep folder, and a job's side of a search."""

# The sweepers mnist-lab knows: Hydra's grid, whose jobs resume with the sweep's own command,
# and our Optuna search (hydra_plugins/mnist_lab_optuna).
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
OUR_SWEEPER = "hydra_plugins.mnist_lab_optuna.sweeper.OptunaSweeper"
