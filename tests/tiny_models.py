"""Every architecture family we train, at a toy size, built from a config so that nothing downloads."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel

from hmu_crc.training import ModelArguments, build_model

TINY_MODELS = {
    "vit": {
        "model_type": "vit",
        "image_size": 64,
        "patch_size": 16,
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "resnet": {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]},
    "efficientnet": {
        "model_type": "efficientnet",
        "image_size": 64,
        "width_coefficient": 0.1,
        "depth_coefficient": 0.1,
        "hidden_dim": 128,
    },
    "swin": {
        "model_type": "swin",
        "image_size": 64,
        "patch_size": 4,
        "embed_dim": 16,
        "depths": [1, 1],
        "num_heads": [1, 2],
        "window_size": 4,
    },
    "hybrid": {
        "model_type": "timm_wrapper",
        "architecture": "vit_tiny_r_s16_p8_224",
        "model_args": {"img_size": 64, "depth": 1},
    },
}
"""Each family's architecture at a toy size, built from a config so that nothing downloads."""


def save_untrained(family: str, folder: Path, image_size: int = 64) -> tuple[PreTrainedModel, Path]:
    """A randomly initialised tissue classifier of `family`, saved with its image processor as train_hf.py does."""
    model, processor = build_model(ModelArguments(model_config=dict(TINY_MODELS[family]), image_size=image_size))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model.eval(), folder
