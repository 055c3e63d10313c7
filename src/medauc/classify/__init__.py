"""Classifiers: timm model factory, the one training loop, prediction, data-parallel training."""
