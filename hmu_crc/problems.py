"""Problems found in a release: raised in strict mode, listed in the preparation report with --skip-invalid."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

ProblemKind = Literal[
    "unreadable",
    "not_an_image",
    "corrupt",
    "truncated",
    "empty",
    "wrong_size",
    "wrong_mode",
    "unknown_class",
    "unsafe_path",
    "duplicate",
    "no_patient_id",
    "no_clinical_row",
    "no_tiles",
    "bad_value",
    "bad_encoding",
    "bad_csv",
    "duplicate_patient",
    "background",
]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file, tile or clinical row."""

    kind: ProblemKind
    where: str
    """The tile's path inside the release, or `<csv name>:<line>` for a clinical row."""
    found: str
    """What was found, in words."""
    expected: str
    """What was expected, in words."""
    fix: str
    """What the user can do about it."""

    def message(self) -> str:
        return f"{self.where}: expected {self.expected}, found {self.found}; {self.fix}"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class ReleaseError(ValueError):
    """Raised for a problem in the release when --skip-invalid is not given."""

    def __init__(self, problems: list[Problem], hint: str = "") -> None:
        self.problems = problems
        shown = "\n".join(f"  - {p.message()}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        tail = f"\n{hint}" if hint else ""
        super().__init__(f"{len(problems)} problem(s) in the release:\n{shown}{more}{tail}")
