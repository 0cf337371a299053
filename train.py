"""Train a quality model: the Hydra entry point of the train stage.

python train.py                              # defaults from conf/
python train.py model.lr=3e-4 trainer=gpu
python train.py -m model.lr=1e-3,3e-4        # Hydra multirun (one job directory per run)
python train.py -v ...                       # a user error with its full traceback
"""

import sys

import hydra
from omegaconf import DictConfig

from fiqa.cli.allocator import restart_with_malloc_env
from fiqa.cli.errors import verbose_errors
from fiqa.cli.hydra_entry import hydra_stage_job


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return hydra_stage_job("train", cfg, prog="train.py")


if __name__ == "__main__":
    restart_with_malloc_env()
    sys.argv = verbose_errors(sys.argv)
    main()
