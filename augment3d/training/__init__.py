"""GAN training: the loop, its loss terms, adaptive augmentation, checkpoints of the training state."""
