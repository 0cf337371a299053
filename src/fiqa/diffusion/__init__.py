"""The face DDPM: ``settings`` (the ``ddpm`` group's schema, light), ``model`` (``diffusers``
U-Net and schedules, loading, content digest), ``sampling`` (forward diffusion, DDIM
reconstruction), ``module`` and ``fit`` (Lightning training). Import the submodules: this package
imports nothing, so the config schemas and the label registry do not load ``diffusers``."""
