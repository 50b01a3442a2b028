"""The ``mnist-lab`` console script: compose the config with Hydra, check it, train.

This module stays light: TensorFlow is imported only once the config is known to be valid,
so ``--help``, ``--cfg job`` and config errors answer in about a second.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from mnist_lab.config import register_configs, validate
from mnist_lab.console import error_line
from mnist_lab.errors import EXIT_USER_ERROR, UserError

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def run(cfg: DictConfig) -> dict[str, Any]:
    """One Hydra job: a validated config in, the run's metrics out."""
    validate(cfg)
    from mnist_lab.train import train  # TensorFlow is heavy: import it only for real work

    return train(cfg, run_dir=HydraConfig.get().runtime.output_dir)


# OmegaConf's detail lines: the message above them already names the key.
_NOISE = ("full_key:", "reference_type", "object_type")


def _one_line(ex: BaseException) -> str:
    """Squeeze Hydra's and OmegaConf's multi-line messages into one readable line."""
    parts = []
    for e in (ex, ex.__cause__):
        if e is None or (parts and str(e) in parts[0]):
            continue
        text = str(e).split("Config search path")[0]
        keep = [
            line.strip().rstrip(".")
            for line in text.splitlines()
            if line.strip()
            and not line.strip().startswith(("full_key:", "reference_type", "object_type"))
        ]
        parts.append(" ".join(keep))
    return ": ".join(parts)


def main() -> None:
    # Let exceptions reach us instead of Hydra's reporter, so each user error becomes one line.
    # A user who sets HYDRA_FULL_ERROR themselves still gets the full trace.
    wants_trace = "HYDRA_FULL_ERROR" in os.environ
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        run()
    except UserError as ex:
        error_line(str(ex))
        sys.exit(EXIT_USER_ERROR)
    except (HydraException, OmegaConfBaseException) as ex:
        if wants_trace:
            raise
        error_line(_one_line(ex))
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
