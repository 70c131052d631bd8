"""MNIST: the official files (download, checksums), the LightningDataModule, and augmentation on the device."""
