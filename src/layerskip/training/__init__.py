"""The LayerSkip training recipe: layer dropout, early-exit loss and its curricula, LoRA, FSDP.

Entry point: `layerskip train` (`training.command`), or `training.trainer.train(config)`.
"""
