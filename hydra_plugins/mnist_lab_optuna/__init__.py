"""mnist-lab's Optuna sweeper for Hydra (``hydra/sweeper=mnist_lab_optuna``): see sweeper.py."""

import importlib.util
import os


def expose_to_hydra() -> None:
    """Make this plugin visible to Hydra's plugin scan, whatever the install.

    Hydra finds plugins by listing the folders of the ``hydra_plugins`` namespace package with
    pkgutil. A wheel puts this package in site-packages' ``hydra_plugins/``, which it lists;
    an editable install (``pip install -e .``) maps it through an import hook that pkgutil
    cannot list, so Hydra would know neither the sweeper nor its config. Call this before
    Hydra starts: the package's real folder joins the namespace's path.
    """
    import hydra_plugins

    spec = importlib.util.find_spec(__name__)
    if spec is None or spec.origin is None:
        return
    folder = os.path.dirname(os.path.dirname(spec.origin))
    # Listed twice, Hydra would scan the plugin twice, and stop.
    if os.path.realpath(folder) not in {os.path.realpath(p) for p in hydra_plugins.__path__}:
        hydra_plugins.__path__.append(folder)
