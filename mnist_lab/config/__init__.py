"""The config: dataclass schemas in Hydra's ConfigStore (``schemas``) and the value checks Hydra
cannot do (``checks``). Nothing here imports TensorFlow."""

from mnist_lab.config.checks import validate
from mnist_lab.config.schemas import SCHEMAS, AugmentConfig, register_configs

__all__ = ["SCHEMAS", "AugmentConfig", "register_configs", "validate"]
