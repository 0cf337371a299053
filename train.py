"""Train a quality model: the Hydra entry point of the train stage.

python train.py                              # defaults from conf/
python train.py model.lr=3e-4 trainer=gpu
python train.py -m model.lr=1e-3,3e-4        # Hydra multirun (one job directory per run)
"""

import hydra
from omegaconf import DictConfig

from fiqa.cli.hydra_entry import redirect_multirun_outputs
from fiqa.stages.runner import run_stage


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    redirect_multirun_outputs(cfg)
    return run_stage("train", cfg).get("val/spearman")


if __name__ == "__main__":
    main()
