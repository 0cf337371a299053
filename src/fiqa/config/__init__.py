"""The config layer: composing ``conf/``, its typed schemas, validation, and the builders that
turn a composed config into the library's objects (used by the stages only)."""

from fiqa.config.compose import compose_config, config_dir
from fiqa.config.validate import ConfigError, validate_config

__all__ = ["ConfigError", "compose_config", "config_dir", "validate_config"]
