"""Label-image consistency and condition fidelity: judges trained on real data score synthetic data.

* A small 3D segmenter trained on the real training volumes segments each synthetic image; Dice
  against the generated label map says whether the labels sit on the tumour the images show.
* A logistic-regression classifier on the feature extractor's features, trained on every real
  volume there is (training and held-out subjects: a scarce site has few of either), predicts each
  synthetic subject's condition; accuracy per column says whether the generator honours its
  condition.

Both judges are also scored on real data they did not learn from (the segmenter on held-out
subjects, the classifier by cross-validation), which tells how far to trust them.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.segmenter import TinySegmenter, one_hot, segmentation_loss
from .regions import REGIONS, dice

__all__ = [
    "TinySegmenter",
    "train_segmenter",
    "segment",
    "label_consistency",
    "condition_fidelity",
    "condition_classifiers",
    "cross_validated_accuracy",
    "accuracy_by_category",
    "top_up_conditions",
]


def train_segmenter(
    images: np.ndarray, labels: np.ndarray, steps: int = 150, batch: int = 4, seed: int = 0, width: int = 8
) -> TinySegmenter:
    """Cross-entropy + soft Dice, Adam, random flips; deterministic for a seed."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = TinySegmenter(width=width)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x_all = torch.as_tensor(images, dtype=torch.float32)
    y_all = torch.as_tensor(labels, dtype=torch.int64)
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (min(batch, len(x_all)),), generator=g)
        x, y = x_all[idx], y_all[idx]
        for axis in range(3):
            if torch.rand(1, generator=g) < 0.5:
                x, y = x.flip(2 + axis), y.flip(1 + axis)
        loss = segmentation_loss(model(x), one_hot(y, 4))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def segment(model: TinySegmenter, images: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [model(torch.as_tensor(images[i : i + 4], dtype=torch.float32)).argmax(1).numpy() for i in range(0, len(images), 4)]
    ).astype(np.uint8)


def label_consistency(model: TinySegmenter, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean Dice per region between the judge's segmentation of ``images`` and ``labels``."""
    predicted = segment(model, images)
    return {region: float(np.mean([dice(p, t, region) for p, t in zip(predicted, labels)])) for region in REGIONS}


def _classifier():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))


def condition_classifiers(real_features: np.ndarray, real_conditions: list[dict]) -> dict:
    """Per condition column, a classifier of it trained on real features (None with one category)."""
    out = {}
    for column in real_conditions[0] if real_conditions else {}:
        y = [c[column] for c in real_conditions]
        out[column] = _classifier().fit(real_features, y) if len(set(y)) > 1 else None
    return out


def cross_validated_accuracy(
    features: np.ndarray, conditions: list[dict], column: str, seed: int = 0, folds: int = 5
) -> dict | None:
    """How well the classifier of ``column`` recognises real subjects it did not learn from: each
    subject predicted by one trained without its fold (stratified; fewer folds when a category has
    fewer subjects). None when a category has a single subject."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    truth = np.array([c[column] for c in conditions])
    categories, counts = np.unique(truth, return_counts=True)
    if len(categories) < 2 or counts.min() < 2:
        return None
    split = StratifiedKFold(n_splits=min(folds, int(counts.min())), shuffle=True, random_state=seed)
    return {**_shares(truth, cross_val_predict(_classifier(), features, truth, cv=split)), "folds": split.n_splits}


def _shares(truth: np.ndarray, predicted: np.ndarray) -> dict:
    right = predicted == truth
    categories = sorted(set(truth.tolist()))
    return {
        "accuracy": float(right.mean()),
        "by_category": {str(v): float(right[truth == v].mean()) for v in categories},
        "n_by_category": {str(v): int((truth == v).sum()) for v in categories},
    }


def top_up_conditions(conditions: list[dict], pool: list[dict], per_category: int) -> list[dict]:
    """The conditions to generate besides ``conditions`` so that every category of every column
    seen in ``pool`` is asked for at least ``per_category`` times: drawn in turn from the ``pool``
    conditions of that category (so the other columns keep their real combinations). A scarce
    site is a handful of a distribution-matched sample (4 of 32 on the phantom bench), too few
    to say whether it is recognised."""
    extra: list[dict] = []
    for column in pool[0] if pool else {}:
        for category in sorted({c[column] for c in pool}, key=str):
            have = sum(c[column] == category for c in [*conditions, *extra])
            donors = [c for c in pool if c[column] == category]
            extra += [dict(donors[i % len(donors)]) for i in range(max(0, per_category - have))]
    return extra


def accuracy_by_category(classifier, features: np.ndarray, conditions: list[dict], column: str) -> dict:
    """The classifier's accuracy on ``features``, overall and per category of ``column``."""
    truth = np.array([c[column] for c in conditions])
    return _shares(truth, classifier.predict(features))


def condition_fidelity(
    real_features: np.ndarray,
    real_conditions: list[dict],
    fake_features: np.ndarray,
    fake_conditions: list[dict],
    classifiers: dict | None = None,
    seed: int = 0,
) -> dict[str, dict]:
    """Per condition column: the share of synthetic subjects recognised as the condition asked
    for, overall and per category, by a classifier trained on all of ``real_features``; the
    reference is the cross-validated share of real subjects recognised."""
    classifiers = classifiers or condition_classifiers(real_features, real_conditions)
    out = {}
    for column, clf in classifiers.items():
        if clf is None:
            out[column] = {"note": "only one category among real subjects; no classifier"}
            continue
        synthetic = accuracy_by_category(clf, fake_features, fake_conditions, column)
        result = {
            "synthetic_accuracy": synthetic["accuracy"],
            "synthetic_accuracy_by_category": synthetic["by_category"],
            "synthetic_n_by_category": synthetic["n_by_category"],
            "classifier_trained_on": len(real_features),
        }
        real = cross_validated_accuracy(real_features, real_conditions, column, seed)
        if real is not None:
            result["real_accuracy_cross_validated"] = real["accuracy"]
            result["real_accuracy_cross_validated_by_category"] = real["by_category"]
            result["folds"] = real["folds"]
        out[column] = result
    return out
