"""The `fiqa` command: Hydra entry points of the stages and the study, and the tools."""
