"""Using a trained model: predict, export and serve. Never imports Lightning, Hydra or torchvision."""
