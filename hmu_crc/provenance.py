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

HOW_MADE = (
    "Pathologists annotated tumour-microenvironment regions on 500 H&E whole-slide images of colorectal cancer "
    "(one slide per patient, scanned at 20x on an Aperio AT2 at Harbin Medical University Cancer Hospital, "
    "2013-2015) at three levels of review; non-overlapping 224x224 px tiles were cut from the annotated regions "
    "and sampled per class. Each tile carries the class of the region it was cut from."
)

CLINICAL_FIELDS = {
    "patient_id": "the patient, as in the tiles' `patient_id`",
    "sex": "`male` or `female`",
    "age": "age at diagnosis, years",
    "t_stage": "primary tumour category (AJCC), e.g. `T3`, `T4a`",
    "n_stage": "regional lymph node category, e.g. `N0`, `N1b`",
    "m_stage": "distant metastasis category, `M0` or `M1`...",
    "tnm_stage": "overall stage as a Roman numeral with letter, e.g. `IIA`, `IIIB`",
    "treatment": "treatment history, as recorded",
    "os_months": "overall survival or follow-up time, months",
    "os_event": "1 for death, 0 for censored (alive at last follow-up)",
}
"""One line per canonical clinical column, for the dataset card."""

LIMITATIONS = (
    "One centre, one scanner and one staining protocol: expect a drop on slides from elsewhere (stain and "
    "scanner shift); evaluate on Kather's sets or your own before relying on a model.",
    "An Asian (Chinese) cohort treated in 2013-2015: the patient mix may differ from yours.",
    "Tiles are static crops of annotated regions: they do not show how tissue classes mix at their borders, "
    "and class frequencies follow the per-class sampling, not the slides.",
    "Research use only: neither the data nor models trained on it are validated for diagnosis or treatment decisions.",
)
