"""Grad-CAM explanations of a tissue classifier on tile files: heatmaps, overlays, a CSV and contact sheets."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from hmu_crc.figures import DPI
from hmu_crc.labels import CLASS_DESCRIPTIONS, CLASS_NAMES
from hmu_crc.predict import find_tiles, load_classifier, predict_batch, readable_tiles, tile_loader
from hmu_crc.transforms import PixelPreprocessor

logger = logging.getLogger(__name__)

COLUMNS = ("file", "predicted", "probability", "target", "target_probability", "tile", "heatmap", "overlay")
"""The header of `explanations.csv`; the last three are paths relative to the output folder."""
COLORMAP = "turbo"
"""Matplotlib colour map of the overlays: blue for no evidence, red for the strongest in the tile."""
OVERLAY_ALPHA = 0.45
"""Weight of the heatmap's colour in an overlay; the tile keeps the rest."""
SHEET_COLUMNS = 6
"""Overlays per row of a contact sheet."""
PNG_COMPRESSION = 1
"""zlib level of the PNGs written per tile: level 1 writes several times faster than Pillow's 6, a little larger."""


@dataclass(frozen=True)
class CamRecipe:
    """Where Grad-CAM reads one architecture family."""

    layer: Callable[[PreTrainedModel], torch.nn.Module]
    """The layer whose output activations and gradients make the heatmap."""
    prefix_tokens: Callable[[PreTrainedModel], int] | None = None
    """For a transformer: how many class or register tokens precede the patch tokens in that layer's output;
    None for a CNN, whose layer already gives a (B, C, h, w) feature map."""


def _vit_blocks(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The encoder blocks of a transformers ViT, which moved from `vit.encoder.layer` to `vit.layers` in v5."""
    return model.vit.layers if hasattr(model.vit, "layers") else model.vit.encoder.layer


# NOTE: a ViT classifies from its class token alone, so the patch tokens of the last block's *output* get no
# gradient; their gradient arrives through the last block's attention. Hence, as pytorch-grad-cam documents for
# transformers, the layer read is the norm before that attention (`layernorm_before` / `norm1`), on its patch
# tokens reshaped to their 2-D grid. Swin has no class token and averages its last tokens; the same layer keeps
# the families alike.
CAM_RECIPES: Mapping[str, CamRecipe] = MappingProxyType(
    {
        "resnet": CamRecipe(lambda model: model.resnet.encoder.stages[-1]),
        "efficientnet": CamRecipe(lambda model: model.efficientnet.encoder.top_activation),
        "vit": CamRecipe(lambda model: _vit_blocks(model)[-1].layernorm_before, lambda model: 1),
        "swin": CamRecipe(lambda model: model.swin.encoder.layers[-1].blocks[-1].layernorm_before, lambda model: 0),
        "timm_wrapper": CamRecipe(
            lambda model: model.timm_model.blocks[-1].norm1, lambda model: model.timm_model.num_prefix_tokens
        ),
    }
)
"""The Grad-CAM target of each family we train, by `config.model_type`: ResNet's last stage and EfficientNet's
last 1x1 convolution (after its norm and activation), or the token grid of the last transformer block of ViT,
Swin, and timm ViTs such as the ResNet-stem hybrid."""


@dataclass(frozen=True)
class TokenGrid:
    """pytorch-grad-cam's reshape transform for a transformer: (B, tokens, C) -> (B, C, side, side), after
    dropping the class/prefix tokens. The grid is square because tiles are resized to a square input."""

    prefix_tokens: int

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, self.prefix_tokens :, :]
        side = math.isqrt(patches.shape[1])
        if side * side != patches.shape[1]:
            msg = (
                f"token grid: expected a square number of patch tokens after {self.prefix_tokens} prefix "
                f"token(s), found {patches.shape[1]}; Grad-CAM needs the model's square input size"
            )
            raise ValueError(msg)
        return patches.reshape(patches.shape[0], side, side, patches.shape[2]).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class CamMethod:
    """The Grad-CAM set-up chosen for one model."""

    layer_name: str
    """Dotted name of the target layer inside the model, e.g. `resnet.encoder.stages.3`."""
    layer: torch.nn.Module
    reshape: TokenGrid | None
    """The token-to-grid transform of a transformer; None for a CNN."""

    @property
    def description(self) -> str:
        if self.reshape is None:
            return f"Grad-CAM on layer {self.layer_name} (the last convolutional stage)"
        block = self.layer_name.rsplit(".", 1)[0]
        return (
            f"Grad-CAM on the token grid of block {block} (its layer {self.layer_name}; reshape transform: "
            f"{self.reshape.prefix_tokens} prefix token(s) dropped, patch tokens laid out on their 2-D grid)"
        )


def cam_method(model: PreTrainedModel) -> CamMethod:
    """The Grad-CAM target layer and reshape transform for `model`, from `CAM_RECIPES`.

    Raises:
        ValueError: If the model's family is not in `CAM_RECIPES`, or a timm model is not ViT-like.
    """
    model_type = getattr(model.config, "model_type", None)
    recipe = CAM_RECIPES.get(model_type)
    supported = ", ".join(CAM_RECIPES)
    if recipe is None:
        msg = (
            f"{type(model).__name__} (model_type {model_type!r}): Grad-CAM is set up for the model types "
            f"{supported}; explain a model of one of those families, or add a recipe to CAM_RECIPES"
        )
        raise ValueError(msg)
    try:
        layer = recipe.layer(model)
        prefix = None if recipe.prefix_tokens is None else int(recipe.prefix_tokens(model))
    except (AttributeError, IndexError) as error:
        architecture = getattr(model.config, "architecture", model_type)
        msg = (
            f"{type(model).__name__} ({architecture}): expected the layout of the supported families "
            f"({supported}; for timm, a ViT with `blocks` and `num_prefix_tokens`), found none ({error}); "
            "explain a model of one of those families"
        )
        raise ValueError(msg) from error
    name = next(name for name, module in model.named_modules() if module is layer)
    return CamMethod(name, layer, None if prefix is None else TokenGrid(prefix))


class LogitsModel(torch.nn.Module):
    """A classifier as pytorch-grad-cam calls it: a uint8 (B, 3, H, W) batch of tiles in, a logits tensor out.

    The model's own normalisation (and resizing to its input size) happens inside, so Grad-CAM sizes its
    heatmaps to the tiles rather than to the model's input.
    """

    def __init__(self, model: PreTrainedModel, preprocessor: PixelPreprocessor) -> None:
        super().__init__()
        self.model = model
        self.preprocessor = preprocessor

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=self.preprocessor(pixels, train=False)).logits


@dataclass
class Explanations:
    """Grad-CAM for a batch of tiles."""

    probabilities: np.ndarray
    """Class probabilities, (N, 8) float64, as `hmu-crc predict` computes them."""
    targets: np.ndarray
    """The class id each heatmap explains, (N,)."""
    heatmaps: list[np.ndarray]
    """Per tile, float32 of the tile's (H, W), in [0, 1]: evidence for the target, scaled within the tile."""


class TileExplainer:
    """Grad-CAM for one classifier, hooked once and reused batch after batch."""

    def __init__(self, model: PreTrainedModel, preprocessor: PixelPreprocessor) -> None:
        self.model = model
        self.preprocessor = preprocessor
        self.method = cam_method(model)
        self._cam: GradCAM | None = GradCAM(LogitsModel(model, preprocessor), [self.method.layer], self.method.reshape)

    def __call__(self, arrays: Sequence[np.ndarray], target: int | None = None) -> Explanations:
        """Explain (H, W, 3) uint8 tiles, for the class `target` or else for each tile's predicted class."""
        if self._cam is None:
            raise RuntimeError("this TileExplainer is closed; make a new one to explain more tiles")
        probabilities = predict_batch(self.model, self.preprocessor, arrays)
        targets = probabilities.argmax(axis=1) if target is None else np.full(len(arrays), target)
        heatmaps: list[np.ndarray] = [np.empty(0)] * len(arrays)
        # Grad-CAM sizes its maps to the input batch, so tiles of one size go through together.
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, pixels in enumerate(arrays):
            by_shape.setdefault(pixels.shape, []).append(index)
        for indexes in by_shape.values():
            batch = torch.from_numpy(np.stack([arrays[i] for i in indexes])).permute(0, 3, 1, 2)
            maps = self._cam(batch, [ClassifierOutputTarget(int(targets[i])) for i in indexes])
            for index, heatmap in zip(indexes, maps, strict=True):
                heatmaps[index] = np.clip(heatmap, 0.0, 1.0)
        self.model.zero_grad(set_to_none=True)
        return Explanations(probabilities, targets, heatmaps)

    def close(self) -> None:
        """Remove the hooks from the model; the explainer cannot be called after."""
        if self._cam is not None:
            self._cam.activations_and_grads.release()
            self._cam = None

    def __enter__(self) -> TileExplainer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def overlay(pixels: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """The tile with its heatmap blended over it in `COLORMAP`, as (H, W, 3) uint8."""
    colours = colormaps[COLORMAP](heatmap)[..., :3]
    blend = (1 - OVERLAY_ALPHA) * pixels.astype(np.float32) / 255 + OVERLAY_ALPHA * colours
    return np.round(np.clip(blend, 0, 1) * 255).astype(np.uint8)


@dataclass
class ExplanationSummary:
    """What `explain_tiles` wrote."""

    output_dir: Path
    method: str
    """How the heatmaps were made, e.g. "Grad-CAM on layer resnet.encoder.stages.3 (...)"."""
    target_layer: str
    table: Path
    """`explanations.csv`: one row per explained tile."""
    report: Path
    """`explanations.json`: the model, the method and the counts."""
    counts: dict[str, int]
    """Explained tiles per predicted class, for every class."""
    contact_sheets: dict[str, Path] = field(default_factory=dict)
    """One PNG per predicted class with tiles."""
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    """Unreadable files left out with `skip_invalid`, with the reason."""

    @property
    def explained(self) -> int:
        return sum(self.counts.values())


@dataclass
class _SheetEntry:
    probability: float
    overlay: Path
    caption: str


def explain_tiles(
    model_id: str | Path,
    paths: Sequence[str | Path],
    output_dir: str | Path,
    *,
    batch_size: int = 32,
    target_class: str | None = None,
    num_workers: int | None = None,
    skip_invalid: bool = False,
    max_per_sheet: int = 36,
) -> ExplanationSummary:
    """Grad-CAM heatmaps of a classifier on tile files and folders of tiles.

    Writes into `output_dir`: `tiles/`, `heatmaps/` (grey PNG, 255 = strongest evidence in the tile) and
    `overlays/`, one PNG each per tile named `<number>_<stem>.png`; `explanations.csv` (`COLUMNS`);
    `sheets/<CLASS>.png`, the most confident overlays of each predicted class; `explanations.json`.

    Args:
        model_id: A folder written by train_hf.py, or a Hub model id.
        paths: Tile files (PNG, TIFF, JPEG) and folders searched at any depth.
        output_dir: A new or empty folder.
        batch_size: Tiles per forward and backward pass.
        target_class: The class every heatmap explains; by default each tile's predicted class.
        num_workers: Processes decoding tiles (default: up to 8 of the machine's cores; 0 decodes in this one).
        skip_invalid: Leave unreadable files out and list them in `explanations.json`, instead of stopping.
        max_per_sheet: Overlays on each contact sheet, the most confident first.

    Returns:
        The method, the files written and the counts per predicted class.

    Raises:
        ValueError: For an unknown target class, a model with other labels or of an unsupported family, a
            non-empty output folder, or an unreadable tile without `skip_invalid`.
    """
    if batch_size < 1 or max_per_sheet < 1:
        msg = f"batch_size and max_per_sheet: expected at least 1, found {batch_size} and {max_per_sheet}"
        raise ValueError(msg)
    target = _target_id(target_class)
    output_dir = _check_empty(Path(output_dir))
    files = find_tiles(paths)
    model, preprocessor = load_classifier(model_id)
    explainer = TileExplainer(model, preprocessor)
    method = explainer.method
    logger.info("explaining %d tile(s) with %s", len(files), method.description)
    # NOTE: pytorch-grad-cam scales each heatmap to [0, 1] within its tile, so colours compare regions of one tile,
    # not tiles with each other.
    loader = tile_loader(files, batch_size, num_workers)
    for folder in ("tiles", "heatmaps", "overlays"):
        (output_dir / folder).mkdir(parents=True)
    summary = ExplanationSummary(
        output_dir,
        method.description,
        method.layer_name,
        output_dir / "explanations.csv",
        output_dir / "explanations.json",
        dict.fromkeys(CLASS_NAMES, 0),
    )
    sheets: dict[str, list[_SheetEntry]] = {name: [] for name in CLASS_NAMES}
    digits = max(6, len(str(len(files))))
    with (
        explainer,
        open(summary.table, "w", newline="") as handle,
        tqdm(total=len(files), desc="explaining", unit="tile") as bar,
    ):
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for batch in loader:
            readable = readable_tiles(batch, files, summary.skipped, skip_invalid)
            found = explainer([pixels for _, pixels in readable], target) if readable else None
            for position, (index, pixels) in enumerate(readable):
                name = f"{index:0{digits}d}_{files[index].stem}.png"
                row, entry = _write_tile(output_dir, name, files[index], pixels, found, position)
                writer.writerow(row)
                sheets[row[1]].append(entry)
                summary.counts[row[1]] += 1
            bar.update(len(batch))
    for name, entries in sheets.items():
        if entries:
            summary.contact_sheets[name] = _contact_sheet(
                name, entries, output_dir / "sheets" / f"{name}.png", max_per_sheet, target_class
            )
    _write_report(summary, model_id, model, target_class)
    if summary.skipped:
        logger.warning(
            "%d unreadable file(s) left out, e.g. %s; all listed in %s",
            len(summary.skipped),
            summary.skipped[0][0],
            summary.report,
        )
    logger.info("explained %d tile(s) into %s with %s", summary.explained, output_dir, method.description)
    return summary


def _target_id(target_class: str | None) -> int | None:
    if target_class is None:
        return None
    if target_class not in CLASS_NAMES:
        msg = (
            f"target class {target_class!r}: expected one of the tissue classes {', '.join(CLASS_NAMES)}; "
            "pass one of them, or leave it out to explain each tile's predicted class"
        )
        raise ValueError(msg)
    return CLASS_NAMES.index(target_class)


def _check_empty(folder: Path) -> Path:
    """The folder, if it is new or empty: earlier explanations are never mixed with new ones."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        msg = (
            f"{folder}: expected a new or empty output folder, found an existing "
            f"{'folder with files' if folder.is_dir() else 'file'}; pass another --output-dir or remove it"
        )
        raise ValueError(msg)
    return folder


def _write_tile(
    output_dir: Path, name: str, file: Path, pixels: np.ndarray, found: Explanations, position: int
) -> tuple[list[str], _SheetEntry]:
    """Write the tile at `position` of a batch, its heatmap and overlay; returns its CSV row and sheet entry."""
    probabilities, heatmap = found.probabilities[position], found.heatmaps[position]
    predicted, target = int(probabilities.argmax()), int(found.targets[position])
    tile, grey, blended = (Path(folder) / name for folder in ("tiles", "heatmaps", "overlays"))
    Image.fromarray(pixels).save(output_dir / tile, compress_level=PNG_COMPRESSION)
    Image.fromarray(np.round(heatmap * 255).astype(np.uint8)).save(output_dir / grey, compress_level=PNG_COMPRESSION)
    Image.fromarray(overlay(pixels, heatmap)).save(output_dir / blended, compress_level=PNG_COMPRESSION)
    row = [
        str(file),
        CLASS_NAMES[predicted],
        f"{probabilities[predicted]:.6f}",
        CLASS_NAMES[target],
        f"{probabilities[target]:.6f}",
        *(path.as_posix() for path in (tile, grey, blended)),
    ]
    caption = f"{file.stem[:18]}\n{CLASS_NAMES[predicted]} {probabilities[predicted]:.2f}"
    if target != predicted:
        caption += f", {CLASS_NAMES[target]} {probabilities[target]:.2f}"
    return row, _SheetEntry(float(probabilities[predicted]), output_dir / blended, caption)


def _contact_sheet(
    class_name: str, entries: list[_SheetEntry], path: Path, max_per_sheet: int, target_class: str | None
) -> Path:
    """A grid of the most confident overlays of tiles predicted as `class_name`, titled with the class."""
    shown = sorted(entries, key=lambda entry: -entry.probability)[:max_per_sheet]
    columns = min(SHEET_COLUMNS, len(shown))
    rows = math.ceil(len(shown) / columns)
    # A fixed layout: constrained layout would measure every caption, slow for a sheet of dozens of tiles.
    width, height, top = max(4.0, 1.6 * columns + 0.2), 1.9 * rows + 1.0, 1.0  # inches
    figure = Figure(figsize=(width, height))
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - top / height, wspace=0.05, hspace=0.3)
    explained = f"Grad-CAM for {target_class}" if target_class else "Grad-CAM for the predicted class"
    figure.suptitle(
        f"{class_name} ({CLASS_DESCRIPTIONS[class_name]})\n{len(shown)} of {len(entries)} tile(s) predicted "
        f"{class_name}, most confident first\n{explained}",
        fontsize=9,
        y=1 - 0.08 / height,
        va="top",
    )
    for position, axes in enumerate(figure.subplots(rows, columns, squeeze=False).ravel()):
        axes.set_axis_off()
        if position < len(shown):
            with Image.open(shown[position].overlay) as image:
                axes.imshow(np.asarray(image))
            axes.set_title(shown[position].caption, fontsize=6)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI, pil_kwargs={"compress_level": PNG_COMPRESSION})
    figure.clear()
    return path


def _write_report(
    summary: ExplanationSummary, model_id: str | Path, model: PreTrainedModel, target_class: str | None
) -> None:
    report = {
        "model": str(model_id),
        "model_type": model.config.model_type,
        "method": summary.method,
        "target_layer": summary.target_layer,
        "target": target_class or "predicted class",
        "heatmap_scale": "per tile: 0 is the least and 1 the most evidence for the target in that tile",
        "tiles": summary.explained,
        "counts": summary.counts,
        "table": summary.table.name,
        "contact_sheets": {
            name: path.relative_to(summary.output_dir).as_posix() for name, path in summary.contact_sheets.items()
        },
        "skipped": [{"file": str(file), "error": error} for file, error in summary.skipped],
    }
    summary.report.write_text(json.dumps(report, indent=2) + "\n")
