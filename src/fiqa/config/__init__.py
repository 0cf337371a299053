"""The config layer: composing ``conf/`` (``compose``), its typed schemas (``schemas``) and
their check (``validate``), and per stage the objects a stage builds from its config
(``extraction``, ``labels``, ``training``, ``evaluation``). Stages import only what they use,
so a stage's code dependencies stay its own."""

from fiqa.config.compose import compose_config, config_dir

__all__ = ["compose_config", "config_dir"]
