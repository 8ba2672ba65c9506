"""The eight tissue classes, in the one order used everywhere, and how external sets map onto them."""

from types import MappingProxyType

CLASS_NAMES: tuple[str, ...] = ("ADI", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
"""Tissue codes in `ClassLabel` order; index i is label id i in every dataset and model."""

CLASS_DESCRIPTIONS = MappingProxyType(
    {
        "ADI": "adipose tissue",
        "DEB": "debris and necrosis",
        "LYM": "lymphocytes",
        "MUC": "mucus",
        "MUS": "smooth muscle",
        "NORM": "normal colonic mucosa",
        "STR": "cancer-associated stroma",
        "TUM": "colorectal adenocarcinoma epithelium",
    }
)
"""One line per class, for cards and reports."""

KATHER_BACKGROUND = "BACK"
"""Kather's ninth class (background); our eight-class models have no such label, so its tiles are left out."""

LABEL2ID = MappingProxyType({name: i for i, name in enumerate(CLASS_NAMES)})
ID2LABEL = MappingProxyType(dict(enumerate(CLASS_NAMES)))
