"""Training: data modules, distillation, callbacks, model cost, the distill-then-regress chain."""
