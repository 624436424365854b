"""Label-image consistency and condition fidelity: judges trained on real data score synthetic data.

* A small 3D segmenter trained on the real training volumes segments each synthetic image; Dice
  against the generated label map says whether the labels sit on the tumour the images show.
* A logistic-regression classifier on the feature extractor's features, trained on real
  volumes, predicts each synthetic subject's condition; accuracy per column says whether the
  generator honours its condition.

Both judges are also scored on held-out real data, which tells how far to trust them.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.segmenter import TinySegmenter, one_hot, segmentation_loss
from .regions import REGIONS, dice

__all__ = ["TinySegmenter", "train_segmenter", "segment", "label_consistency", "condition_fidelity",
           "condition_classifiers", "accuracy_by_category"]


def train_segmenter(images: np.ndarray, labels: np.ndarray, steps: int = 150, batch: int = 4, seed: int = 0,
                    width: int = 8) -> TinySegmenter:
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
    return np.concatenate([model(torch.as_tensor(images[i : i + 4], dtype=torch.float32)).argmax(1).numpy()
                           for i in range(0, len(images), 4)]).astype(np.uint8)


def label_consistency(model: TinySegmenter, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean Dice per region between the judge's segmentation of ``images`` and ``labels``."""
    predicted = segment(model, images)
    return {region: float(np.mean([dice(p, t, region) for p, t in zip(predicted, labels)])) for region in REGIONS}


def condition_classifiers(real_features: np.ndarray, real_conditions: list[dict]) -> dict:
    """Per condition column, a classifier of it trained on real features (None with one category)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = {}
    for column in (real_conditions[0] if real_conditions else {}):
        y = [c[column] for c in real_conditions]
        if len(set(y)) < 2:
            out[column] = None
            continue
        out[column] = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
        out[column].fit(real_features, y)
    return out


def accuracy_by_category(classifier, features: np.ndarray, conditions: list[dict], column: str) -> dict:
    """The classifier's accuracy on ``features``, overall and per category of ``column``."""
    truth = np.array([c[column] for c in conditions])
    right = classifier.predict(features) == truth
    return {"accuracy": float(right.mean()),
            "by_category": {str(v): float(right[truth == v].mean()) for v in sorted(set(truth.tolist()))}}


def condition_fidelity(real_features: np.ndarray, real_conditions: list[dict], fake_features: np.ndarray,
                       fake_conditions: list[dict], held_features: np.ndarray | None = None,
                       held_conditions: list[dict] | None = None, classifiers: dict | None = None) -> dict[str, dict]:
    """Per condition column: accuracy on synthetic subjects, overall and per category (and on
    held-out real, the reference)."""
    classifiers = classifiers or condition_classifiers(real_features, real_conditions)
    out = {}
    for column, clf in classifiers.items():
        if clf is None:
            out[column] = {"note": "only one category among real training subjects; no classifier"}
            continue
        synthetic = accuracy_by_category(clf, fake_features, fake_conditions, column)
        result = {"synthetic_accuracy": synthetic["accuracy"], "synthetic_accuracy_by_category": synthetic["by_category"]}
        if held_features is not None and len(held_features):
            held = accuracy_by_category(clf, held_features, held_conditions, column)
            result["held_out_real_accuracy"] = held["accuracy"]
            result["held_out_real_accuracy_by_category"] = held["by_category"]
        out[column] = result
    return out
