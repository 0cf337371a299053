"""The quality model: the regressor, its metrics, ONNX export and scoring (used by train and eval)."""
