"""Unpaired GAN training: data, augmentation, losses, the training step and the Ray Train loop."""
