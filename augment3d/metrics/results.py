"""What ``augment3d evaluate`` measures, as typed objects, and ``metrics.json`` read and written through them.

:class:`Evaluation` is the one shape the evaluation produces, its report renders and the bench reads back.
``metrics.json`` carries ``schema`` (:data:`SCHEMA`); files written before it existed (no ``schema``) are read
as schema 0, where a family added later is None (its rows are left out of reports). A file of a newer schema,
or one missing what every schema has, is refused with the file named.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError

__all__ = [
    "SCHEMA",
    "ConditionFidelity",
    "Distance",
    "Diversity",
    "Evaluation",
    "LabelConsistency",
    "MeanStd",
    "RestyleFidelity",
    "Shares",
]

#: the version of metrics.json's layout this code writes (0: files written before it was recorded)
SCHEMA = 1


@dataclass(frozen=True)
class MeanStd:
    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values) -> MeanStd:
        import numpy as np

        v = np.asarray(values, dtype=np.float64)
        return cls(float(v.mean()), float(v.std()), int(v.size))


@dataclass(frozen=True)
class Distance:
    """FID or KID of the synthetic features against the training reals, with its floor: held-out reals
    against the same training reals at the same N (the distance a perfect generator would show)."""

    synthetic_vs_train: float
    floor_held_out_vs_train: float
    synthetic_vs_held_out: float | None = None  # FID only
    synthetic_vs_train_std: float | None = None  # KID only: over its subsets
    floor_std: float | None = None
    synthetic_ci95: tuple[float, float] | None = None  # bootstrap over subjects
    floor_ci95: tuple[float, float] | None = None
    verdict: str | None = None  # in words, from the two intervals


@dataclass(frozen=True)
class Diversity:
    """Mean pairwise MS-SSIM (higher: less diverse), or why it was not computed."""

    synthetic: float | None = None
    synthetic_pairs: int | None = None
    real_train: float | None = None
    real_pairs: int | None = None
    note: str | None = None


@dataclass(frozen=True)
class Shares:
    """One share (or fraction) for the synthetic subjects and the real reference named by ``reference``."""

    synthetic: float | None
    real: float | None
    reference: str  # the JSON key of the real side: "real_held_out" or "real_train"


@dataclass(frozen=True)
class LabelConsistency:
    """Dice per region of a segmenter trained on the real training cases, on synthetic subjects (against the
    labels they were generated with) and on held-out reals (the reference)."""

    synthetic: dict[str, float]
    reference_held_out_real: dict[str, float]
    with_tumour_wt: float | None = None  # WT over only the synthetic subjects with a tumour label
    with_tumour_n: int | None = None
    ratio_to_real: float | None = None  # with_tumour_wt / the reference's WT


@dataclass(frozen=True)
class ConditionFidelity:
    """How often a classifier trained on real features recognises the condition a synthetic subject was
    asked for (per condition column), beside the same classifier on real subjects, cross-validated."""

    synthetic_accuracy: float | None = None
    synthetic_accuracy_by_category: dict[str, float] = field(default_factory=dict)
    synthetic_n_by_category: dict[str, int] | None = None
    classifier_trained_on: int | None = None
    real_accuracy_cross_validated: float | None = None
    real_accuracy_cross_validated_by_category: dict[str, float] | None = None
    folds: int | None = None
    note: str | None = None  # why there is no classifier (one category among the reals)


@dataclass(frozen=True)
class RestyleFidelity:
    """The training maps rendered into each category of a column, and how often they are recognised as it."""

    accuracy: float
    by_target_category: dict[str, float]
    n: int
    perfect_restyle_by_target_category: dict[str, float] | None = None


@dataclass(frozen=True)
class Evaluation:
    """Every figure ``augment3d evaluate`` writes to ``metrics.json``, each with its N and reference."""

    run: str
    data: str
    generator_step: int | None
    psi: float
    mode: str
    seed: int
    extractor: str
    grid: tuple[int, ...]
    n_synthetic: int
    n_real_train: int
    n_real_held_out: int
    settings: dict[str, Any]
    note: str | None
    fid: Distance
    kid: Distance
    ssim_to_nearest_held_out: MeanStd
    mse_to_nearest_held_out: MeanStd
    psnr_to_nearest_held_out: MeanStd
    reference_ssim: MeanStd  # held-out reals to their nearest training real
    reference_mse: MeanStd
    diversity: Diversity
    prdc: dict[str, float]
    prdc_reference_held_out: dict[str, float]
    memorisation: dict[str, Any]
    label_consistency: LabelConsistency
    share_with_tumour: Shares
    tumour_at_head_edge: Shares | None = None
    label_profile: dict[str, Any] | None = None
    condition_fidelity: dict[str, ConditionFidelity] = field(default_factory=dict)
    restyle_fidelity: dict[str, RestyleFidelity] = field(default_factory=dict)
    schema: int = SCHEMA

    # --- metrics.json -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        lc = self.label_consistency
        out: dict[str, Any] = {
            "schema": self.schema,
            "run": self.run,
            "data": self.data,
            "generator_step": self.generator_step,
            "psi": self.psi,
            "mode": self.mode,
            "seed": self.seed,
            "extractor": self.extractor,
            "grid": list(self.grid),
            "n": {"synthetic": self.n_synthetic, "real_train": self.n_real_train, "real_held_out": self.n_real_held_out},
            "settings": self.settings,
            "note": self.note,
            "fid": _drop_none(_asdict(self.fid)),
            "kid": _drop_none(_asdict(self.kid)),
            "ssim_to_nearest_held_out": _asdict(self.ssim_to_nearest_held_out),
            "mse_to_nearest_held_out": _asdict(self.mse_to_nearest_held_out),
            "psnr_to_nearest_held_out": _asdict(self.psnr_to_nearest_held_out),
            "reference_held_out_to_nearest_train": {"ssim": _asdict(self.reference_ssim), "mse": _asdict(self.reference_mse)},
            "diversity_ms_ssim": _drop_none(_asdict(self.diversity)),
            "prdc": self.prdc,
            "prdc_reference_held_out": self.prdc_reference_held_out,
            "memorisation": self.memorisation,
            "label_consistency_dice": {
                "synthetic": lc.synthetic,
                "reference_held_out_real": lc.reference_held_out_real,
                "synthetic_with_tumour": {"WT": lc.with_tumour_wt, "n": lc.with_tumour_n},
                "ratio_to_real": lc.ratio_to_real,
            },
            "share_with_tumour": _shares_json(self.share_with_tumour),
        }
        if self.tumour_at_head_edge is not None:
            out["tumour_at_head_edge"] = _shares_json(self.tumour_at_head_edge)
        if self.label_profile is not None:
            out["label_profile"] = self.label_profile
        if self.condition_fidelity:
            out["condition_fidelity"] = {k: _drop_none(_asdict(v)) for k, v in self.condition_fidelity.items()}
        if self.restyle_fidelity:
            out["restyle_fidelity"] = {k: _drop_none(_asdict(v)) for k, v in self.restyle_fidelity.items()}
        return out

    def write(self, path: str | os.PathLike) -> None:
        from ..io.atomic import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def from_json(cls, m: dict[str, Any], source: str | os.PathLike = "metrics.json") -> Evaluation:
        if not isinstance(m, dict):
            raise DataError(source, f"is not an augment3d metrics.json (a JSON {type(m).__name__}, not an object)")
        schema = m.get("schema", 0)
        if not isinstance(schema, int) or schema > SCHEMA:
            raise DataError(
                source,
                f"is metrics.json schema {schema!r}; this augment3d reads schema <= {SCHEMA}: "
                "upgrade augment3d, or evaluate the run again",
            )
        try:
            n, lc, ref = m["n"], m["label_consistency_dice"], m["reference_held_out_to_nearest_train"]
            with_tumour = lc.get("synthetic_with_tumour") or {}  # schema 0: absent before it existed
            edge = m.get("tumour_at_head_edge")
            return cls(
                run=m["run"],
                data=m["data"],
                generator_step=m.get("generator_step"),
                psi=m["psi"],
                mode=m.get("mode", "joint"),
                seed=m["seed"],
                extractor=m["extractor"],
                grid=tuple(m["grid"]),
                n_synthetic=n["synthetic"],
                n_real_train=n["real_train"],
                n_real_held_out=n["real_held_out"],
                settings=m.get("settings", {}),
                note=m.get("note"),
                fid=_distance(m["fid"]),
                kid=_distance(m["kid"]),
                ssim_to_nearest_held_out=MeanStd(**m["ssim_to_nearest_held_out"]),
                mse_to_nearest_held_out=MeanStd(**m["mse_to_nearest_held_out"]),
                psnr_to_nearest_held_out=MeanStd(**m["psnr_to_nearest_held_out"]),
                reference_ssim=MeanStd(**ref["ssim"]),
                reference_mse=MeanStd(**ref["mse"]),
                diversity=Diversity(**m.get("diversity_ms_ssim", {})),
                prdc=m["prdc"],
                prdc_reference_held_out=m["prdc_reference_held_out"],
                memorisation=m["memorisation"],
                label_consistency=LabelConsistency(
                    lc["synthetic"],
                    lc["reference_held_out_real"],
                    with_tumour.get("WT"),
                    with_tumour.get("n"),
                    lc.get("ratio_to_real"),
                ),
                share_with_tumour=Shares(
                    m["share_with_tumour"]["synthetic"], m["share_with_tumour"]["real_held_out"], "real_held_out"
                ),
                tumour_at_head_edge=None if edge is None else Shares(edge["synthetic"], edge["real_train"], "real_train"),
                label_profile=m.get("label_profile"),
                condition_fidelity={k: _condition_fidelity(v) for k, v in m.get("condition_fidelity", {}).items()},
                restyle_fidelity={k: RestyleFidelity(**v) for k, v in m.get("restyle_fidelity", {}).items()},
                schema=schema,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(source, f"is not a complete augment3d metrics.json ({type(exc).__name__}: {exc})") from None

    @classmethod
    def read(cls, path: str | os.PathLike) -> Evaluation:
        path = Path(path)
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(path, f"cannot be read as JSON ({exc})") from None
        return cls.from_json(m, path)


def _asdict(obj) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(obj).items()}


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _shares_json(s: Shares) -> dict[str, float | None]:
    return {"synthetic": s.synthetic, s.reference: s.real}


def _distance(d: dict[str, Any]) -> Distance:
    pair = lambda v: None if v is None else (float(v[0]), float(v[1]))  # noqa: E731
    return Distance(**{**d, "synthetic_ci95": pair(d.get("synthetic_ci95")), "floor_ci95": pair(d.get("floor_ci95"))})


def _condition_fidelity(d: dict[str, Any]) -> ConditionFidelity:
    d = dict(d)
    if "held_out_real_accuracy" in d:  # schema 0, before the cross-validated reference
        d.setdefault("real_accuracy_cross_validated", d.pop("held_out_real_accuracy"))
    return ConditionFidelity(**d)
