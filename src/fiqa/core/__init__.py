"""The bottom layer: file writing, provenance, alignment maths, image reading, pairs and EDC.

Nothing here imports another fiqa package; every other layer may import it.
"""
