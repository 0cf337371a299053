"""Hydra options derived from fiqa's registries, registered in Hydra's ConfigStore.

Hydra imports every module of the ``hydra_plugins`` namespace package when it starts (in
``fiqa <stage>``, ``python train.py`` and DVC's own composition for ``dvc exp run -S``), so
these options exist wherever ``conf/`` is composed. ``label=<method>`` for every registered
label method: ``conf/label/common.yaml`` with ``target: <method>``.
"""

from hydra.core.config_store import ConfigStore

from fiqa.label import METHODS

for _name in METHODS:
    ConfigStore.instance().store(
        group="label", name=_name, node={"defaults": ["common", "_self_"], "target": _name}
    )
