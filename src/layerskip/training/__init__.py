"""The LayerSkip training recipe: layer dropout, early-exit loss and its curricula, LoRA, FSDP.

Entry points: `layerskip train` (`commands/train.py`), or `training.trainer.train(config)`.
"""
