"""HMU-CRC-Hist550K as a Hugging Face dataset, with tissue classifiers trained on it."""

from hmu_crc.labels import CLASS_NAMES

__version__ = "0.1.0"

__all__ = ["CLASS_NAMES", "__version__"]
