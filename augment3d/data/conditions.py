"""``ConditionEncoder``: categorical subject attributes to one-hot condition vectors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..errors import DataError

__all__ = ["ConditionEncoder"]

_FORMAT = "augment3d.ConditionEncoder"
_VERSION = 1


class ConditionEncoder:
    """One-hot encoding of categorical columns (e.g. ``site``, ``grade``), saved with a model.

    Categories are fixed and sorted, so the same categories always give the same vector layout:
    one block per column, in column order, with a 1 at the category's place in its sorted list.
    Unknown categories are refused.

    Example:
        >>> enc = ConditionEncoder({"grade": ["HGG", "LGG"], "site": ["HIC", "SSA"]})
        >>> enc.encode({"grade": "HGG", "site": "SSA"}).tolist()
        [[1.0, 0.0, 0.0, 1.0]]
        >>> ConditionEncoder.from_dict(enc.to_dict()) == enc
        True
    """

    def __init__(self, categories: Mapping[str, Sequence[str]]):
        self.categories: dict[str, list[str]] = {}
        for column, values in categories.items():
            values = [str(v) for v in values]
            if not values:
                raise ValueError(f"condition column '{column}' has no categories")
            if len(set(values)) != len(values):
                raise ValueError(f"condition column '{column}' lists a category twice: {values}")
            self.categories[str(column)] = sorted(values)

    @classmethod
    def fit(cls, rows: Iterable[Mapping[str, str]], columns: Sequence[str]) -> ConditionEncoder:
        """Collect the categories of ``columns`` seen in ``rows``."""
        rows = list(rows)
        return cls({c: sorted({str(r[c]) for r in rows}) for c in columns})

    @property
    def columns(self) -> list[str]:
        return list(self.categories)

    @property
    def sizes(self) -> list[int]:
        """Number of categories of each column, in the condition vector's order."""
        return [len(v) for v in self.categories.values()]

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    def check(self, condition: Mapping[str, str], source: str | None = None) -> dict[str, str]:
        """Return ``condition`` restricted to this encoder's columns; raise on unknown values."""
        out = {}
        for column, known in self.categories.items():
            if column not in condition:
                raise DataError(source, f"condition has no value for '{column}' (needs {', '.join(self.columns)})")
            value = str(condition[column])
            if value not in known:
                raise DataError(source, f"unknown {column} '{value}' (known: {', '.join(known)})")
            out[column] = value
        return out

    def check_partial(self, condition: Mapping[str, str], source: str | None = None) -> dict[str, str]:
        """Check a condition that may fix only some columns; unknown columns or values raise."""
        unknown = sorted(set(condition) - set(self.categories))
        if unknown:
            raise DataError(source, f"no condition column {', '.join(unknown)} (known: {', '.join(self.columns) or 'none'})")
        out = {}
        for column, value in condition.items():
            if str(value) not in self.categories[column]:
                raise DataError(source, f"unknown {column} '{value}' (known: {', '.join(self.categories[column])})")
            out[column] = str(value)
        return out

    def for_subject(
        self, subject: Mapping, partial: Mapping[str, str] | None = None, source: str | None = None
    ) -> dict[str, str]:
        """The full condition of one torchio subject: ``partial``'s values (checked against ``source``),
        the other columns from the subject's attributes (``subject["site"]``). Raises :class:`DataError`
        naming a missing attribute or a value outside the categories."""
        values = self.check_partial(dict(partial), source) if partial else {}
        for column in self.categories:
            if column in values:
                continue
            if column not in subject:
                raise DataError(
                    None,
                    f"subject has no '{column}' attribute to condition on; add it "
                    f"(tio.Subject(..., {column}=...)) or give it in condition={{...}}",
                )
            values[column] = str(subject[column])
        return self.check(values, source=f"subject {subject.get('subject_id', '')}".strip())

    def matching(self, partial: Mapping[str, str], source: str | None = None) -> list[dict[str, str]]:
        """Every full condition that agrees with ``partial`` (checked), in :meth:`all_conditions` order."""
        fixed = self.check_partial(partial, source)
        return [c for c in self.all_conditions() if all(c[k] == v for k, v in fixed.items())]

    def encode(self, conditions: Mapping[str, str] | Sequence[Mapping[str, str]], source: str | None = None) -> np.ndarray:
        """One-hot vectors, shape ``(n, dim)`` float32, for one condition or a list of them."""
        if isinstance(conditions, Mapping):
            conditions = [conditions]
        checked = [self.check(c, source) for c in conditions]
        if not self.categories:
            return np.zeros((len(checked), 0), dtype=np.float32)
        out = np.zeros((len(checked), self.dim), dtype=np.float32)
        start = 0
        for column, known in self.categories.items():
            place = {value: start + i for i, value in enumerate(known)}
            out[np.arange(len(checked)), [place[c[column]] for c in checked]] = 1.0
            start += len(known)
        return out

    def decode(self, vectors: np.ndarray) -> list[dict[str, str]]:
        """Inverse of :meth:`encode` (argmax within each column's block)."""
        vectors = np.atleast_2d(np.asarray(vectors))
        out = []
        for vec in vectors:
            row, start = {}, 0
            for column, known in self.categories.items():
                block = vec[start : start + len(known)]
                row[column] = known[int(np.argmax(block))]
                start += len(known)
            out.append(row)
        return out

    def all_conditions(self) -> list[dict[str, str]]:
        """Every combination of categories, in a fixed order."""
        combos: list[dict[str, str]] = [{}]
        for column, known in self.categories.items():
            combos = [{**c, column: v} for c in combos for v in known]
        return combos

    def to_dict(self) -> dict:
        # the column order fixes the vector layout: keep it explicitly (JSON writers may sort keys)
        return {"format": _FORMAT, "version": _VERSION, "columns": self.columns, "categories": self.categories}

    @classmethod
    def from_dict(cls, data: Mapping) -> ConditionEncoder:
        if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
            raise ValueError("not a serialised ConditionEncoder")
        if data.get("version") != _VERSION:
            raise ValueError(f"ConditionEncoder version {data.get('version')} is not supported (expected {_VERSION})")
        categories = data.get("categories")
        if not isinstance(categories, Mapping) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in categories.values()
        ):
            raise ValueError("ConditionEncoder categories must map column names to lists of strings")
        columns = data.get("columns", list(categories))
        if sorted(columns) != sorted(categories):
            raise ValueError("ConditionEncoder columns and categories disagree")
        return cls({c: categories[c] for c in columns})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConditionEncoder) and self.categories == other.categories

    def __repr__(self) -> str:
        return f"ConditionEncoder({self.categories!r})"
