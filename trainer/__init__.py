"""IP-Adapter trainer (standalone; imports ip_core, never ComfyUI). `python -m trainer train --help`."""
from .errors import TrainerConfigError, TrainingDivergedError
from .train_config import TrainConfig

__all__ = ["TrainConfig", "TrainerConfigError", "TrainingDivergedError", "train"]


def train(config):
    """Run training (see trainer.train.train); imported lazily so `import trainer` stays light."""
    from .train import train as _train

    return _train(config)
