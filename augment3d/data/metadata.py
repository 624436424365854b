"""``metadata.csv``: one row per subject, ``subject_id`` plus categorical columns."""

from __future__ import annotations

import csv
import os
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError

__all__ = ["METADATA_FILE", "Metadata", "read_metadata", "subject_conditions", "same_id"]

METADATA_FILE = "metadata.csv"


def same_id(subject_id: str) -> str:
    """A subject id in Unicode NFC form, so ids typed on one system match folder names made on
    another (macOS writes decomposed accents, most others composed ones)."""
    return unicodedata.normalize("NFC", subject_id)


@dataclass
class Metadata:
    """The parsed table, with rows keyed by subject and per-subject problems (duplicates)."""

    path: Path
    columns: list[str]
    rows: dict[str, dict[str, str]]
    duplicates: dict[str, list[int]] = field(default_factory=dict)

    def categories(self, column: str) -> list[str]:
        return sorted({row[column] for row in self.rows.values() if row.get(column)})


def read_metadata(root: str | os.PathLike) -> Metadata | None:
    """Read ``<root>/metadata.csv`` if present (``None`` otherwise). Raises :class:`DataError`."""
    path = Path(root) / METADATA_FILE
    if not path.exists():
        return None
    if not path.is_file():
        raise DataError(path, "is not a regular file (a folder, a FIFO or a device); metadata must be a CSV file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read metadata ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if not columns:
        raise DataError(path, "metadata file is empty (expected a header with 'subject_id')")
    if "subject_id" not in columns:
        raise DataError(path, f"no 'subject_id' column (columns: {', '.join(columns)})")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise DataError(
            path,
            f"column {', '.join(repr(c) for c in repeated)} appears more than once in the header; "
            "keep one (which one is meant cannot be guessed)",
        )
    rows: dict[str, dict[str, str]] = {}
    lines: dict[str, list[int]] = {}
    try:
        for line_no, record in enumerate(reader, start=2):
            if None in record:
                raise DataError(path, f"line {line_no} has more fields than the header")
            row = {k.strip(): (v or "").strip() for k, v in record.items()}
            sid = same_id(row.get("subject_id", ""))
            if not sid:
                if any(row.values()):
                    raise DataError(path, f"line {line_no} has an empty subject_id")
                continue
            lines.setdefault(sid, []).append(line_no)
            rows.setdefault(sid, row)
    except csv.Error as exc:
        raise DataError(path, f"malformed CSV ({exc})") from None
    duplicates = {sid: nums for sid, nums in lines.items() if len(nums) > 1}
    return Metadata(path=path, columns=columns, rows=rows, duplicates=duplicates)


def subject_conditions(
    metadata: Metadata | None,
    subject_id: str,
    columns: Sequence[str],
    categories: Mapping[str, Sequence[str]] | None = None,
    root: str | os.PathLike | None = None,
) -> dict[str, str]:
    """The conditioning values of one subject, checked. Raises :class:`DataError`.

    Args:
        metadata: the cohort's table (``None`` when the cohort has no metadata.csv).
        subject_id: the case's id.
        columns: the conditioning columns the recipe or model asks for.
        categories: allowed values per column (from a recipe or a trained model); values outside
            them are refused.
        root: the cohort folder, named in the error when metadata.csv is absent.
    """
    if not columns:
        return {}
    if metadata is None:
        where = Path(root) / METADATA_FILE if root is not None else Path(METADATA_FILE)
        raise DataError(where, f"missing, but conditioning needs the columns {', '.join(columns)}")
    missing_cols = [c for c in columns if c not in metadata.columns]
    if missing_cols:
        raise DataError(metadata.path, f"no column {', '.join(repr(c) for c in missing_cols)} (conditioning needs it)")
    subject_id = same_id(subject_id)
    if subject_id in metadata.duplicates:
        lines = ", ".join(str(n) for n in metadata.duplicates[subject_id])
        raise DataError(metadata.path, f"subject '{subject_id}' appears in several rows (lines {lines})")
    row = metadata.rows.get(subject_id)
    if row is None:
        raise DataError(metadata.path, f"no row for subject '{subject_id}'")
    values = {}
    for column in columns:
        value = row.get(column, "")
        if not value:
            raise DataError(metadata.path, f"subject '{subject_id}' has no value for '{column}'")
        allowed = (categories or {}).get(column)
        if allowed is not None and value not in allowed:
            raise DataError(
                metadata.path,
                f"subject '{subject_id}': unknown {column} '{value}' (known: {', '.join(allowed)})",
            )
        values[column] = value
    return values
