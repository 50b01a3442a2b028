"""Keras optimizers and learning-rate schedules built from the ``optimizer`` config group."""

from __future__ import annotations

from typing import TypeAlias

from omegaconf import DictConfig

from mnist_lab.core.backend import keras

LearningRate: TypeAlias = float | keras.optimizers.schedules.LearningRateSchedule

# name -> (Keras class, the config keys passed through as keyword arguments)
OPTIMIZERS: dict[str, tuple[type[keras.optimizers.Optimizer], tuple[str, ...]]] = {
    "sgd": (keras.optimizers.SGD, ()),
    "momentum": (keras.optimizers.SGD, ("momentum", "nesterov")),
    "adam": (keras.optimizers.Adam, ("beta_1", "beta_2", "epsilon")),
    "adamw": (keras.optimizers.AdamW, ("beta_1", "beta_2", "epsilon", "weight_decay")),
    "rmsprop": (keras.optimizers.RMSprop, ("rho", "momentum", "epsilon")),
    "adagrad": (keras.optimizers.Adagrad, ("initial_accumulator_value", "epsilon")),
}


def build_schedule(cfg: DictConfig, total_steps: int) -> LearningRate:
    s = cfg.schedule
    lr = cfg.lr
    warmup = min(s.warmup_steps, total_steps)
    if s.name == "cosine":
        # CosineDecay does the linear warmup itself: 0 -> lr over warmup steps, then decays.
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else lr,
            decay_steps=max(total_steps - warmup, 1),
            alpha=s.alpha,
            warmup_target=lr if warmup else None,
            warmup_steps=warmup,
        )
    if s.name == "exponential":
        decay = keras.optimizers.schedules.ExponentialDecay(lr, s.decay_steps, s.decay_rate)
        return _Warmup(decay, warmup) if warmup else decay
    return _Warmup(lr, warmup) if warmup else lr


class _Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 over ``warmup_steps``, then ``after`` (a number or a schedule)."""

    def __init__(self, after, warmup_steps: int) -> None:
        self.after = after
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        after = self.after(step - self.warmup_steps) if callable(self.after) else self.after
        ramp = (step + 1) / self.warmup_steps
        return keras.ops.where(step < self.warmup_steps, ramp * self._peak(), after)

    def _peak(self):
        return self.after(0) if callable(self.after) else self.after


def build_optimizer(cfg: DictConfig, total_steps: int) -> keras.optimizers.Optimizer:
    cls, keys = OPTIMIZERS[cfg.name]
    kwargs = {key: cfg[key] for key in keys}
    if cfg.clipnorm is not None:
        kwargs["global_clipnorm"] = cfg.clipnorm
    return cls(learning_rate=build_schedule(cfg, total_steps), **kwargs)
