"""Datasets: readers of every format, detection and alignment, the prepared-face store, preparation, verification benchmarks."""
