"""Where the data comes from: description, licence and citations, for the builder's DatasetInfo and the cards."""

DESCRIPTION = (
    "HMU-CRC-Hist550K: about 550,000 non-overlapping 224x224 H&E tiles (20x, Aperio AT2) cut from annotated "
    "regions of 500 colorectal cancer whole-slide images (Harbin Medical University Cancer Hospital, 2013-2015), "
    "each labelled with one of eight tissue classes (ADI, DEB, LYM, MUC, MUS, NORM, STR, TUM), and one clinical "
    "row per patient (sex, age, T, N, M, TNM stage, treatment history, survival). Splits are grouped by patient."
)

HOMEPAGE = "https://huggingface.co/datasets/hmu-crc/hmu_crc_hist550k"
"""Where this package publishes the prepared dataset; the release's own page is named in its paper."""

LICENSE = "cc-by-4.0"
"""The licence stated by the release; check the copy you downloaded before you publish a derivative."""

CITATION = """\
@misc{hmu_crc_hist550k,
  title = {{HMU-CRC-Hist550K}: a colorectal cancer histology dataset of 550,000 tiles from 500 patients
           with clinical data},
  note = {Harbin Medical University Cancer Hospital; cite the dataset's paper as given on its release page},
}
"""

KATHER_CITATION = """\
@article{kather2019predicting,
  title = {Predicting survival from colorectal cancer histology slides using deep learning:
           a retrospective multicenter study},
  author = {Kather, Jakob Nikolas and Krisam, Johannes and Charoentong, Pornpimol and Luedde, Tom and
            Herpel, Esther and Weis, Cleo-Aron and Gaiser, Timo and Marx, Alexander and Valous, Nektarios A.
            and Ferber, Dyke and others},
  journal = {PLOS Medicine},
  volume = {16},
  number = {1},
  pages = {e1002730},
  year = {2019},
}
"""
