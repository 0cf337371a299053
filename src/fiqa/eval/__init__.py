"""Evaluation: benchmark sets, the quality methods on them, the EDC matrix, its outputs and reports."""
