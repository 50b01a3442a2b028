"""The run's hyperparameters as the HParams dashboard shows them: named by their override keys,
scalars only, with the machine the run used beside them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from omegaconf import OmegaConf

from mnist_lab.core.backend import keras
from mnist_lab.rundir.records import LOCATION_KEYS

HParamValue = bool | int | float | str


def hparams_of(cfg: Any, model: keras.Model) -> dict[str, HParamValue]:
    """The run's hyperparameters, named by their override keys, for the HParams dashboard:
    every leaf of model, optimizer and data (a sweep over any of them must show), the
    trainer's batch size and steps, the seed and the parameter count."""
    t = cfg.trainer
    values: dict[str, HParamValue] = {
        "model": cfg.model.name,
        "optimizer": cfg.optimizer.name,
        "data": cfg.data.name,
        "optimizer.schedule": cfg.optimizer.schedule.name,
        "trainer.batch_size": int(t.batch_size),
        "trainer.steps": int(t.steps),
        "seed": int(cfg.seed),
        "model.params": int(model.count_params()),
        "trainer.early_stopping.patience": _hparam_value(t.early_stopping.patience),
        "trainer.target_precision": _hparam_value(t.target_precision),
    }
    for group in ("model", "optimizer", "data"):
        tree = OmegaConf.to_container(cfg[group], resolve=True)
        for key, value in _leaves(tree, group):
            if not key.endswith(".name") and key not in LOCATION_KEYS:
                values[key] = _hparam_value(value)
    return values


def machine_hparams(machine: dict[str, Any]) -> dict[str, HParamValue]:
    """What the HParams table can filter runs by: the precision used and the CPU."""
    keys = ("precision", "cpu", "bfloat16", "intra_op_threads")
    return {f"machine.{k}": _hparam_value(machine[k]) for k in keys}


def _leaves(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}")
    else:
        yield prefix, node


def _hparam_value(value: Any) -> HParamValue:
    # HParams take scalars only: a list such as hidden_units becomes "128,32".
    if isinstance(value, bool | int | float | str):
        return value
    if value is None:
        return "none"
    return ",".join(str(v) for v in value)
