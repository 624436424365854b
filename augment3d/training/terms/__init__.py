"""The extra terms of G's loss, one module each, beside the adversarial loss and R1 of the loop.

``settings`` (torch-free) holds what each term takes from a recipe's ``[train.terms.NAME]``
table; ``base`` the interface the loop calls (:class:`~.base.LossTerm`); the term modules build
themselves from their settings (``from_settings``). :func:`build_terms` makes the ones a run
switches on. docs/MODEL.md says what each does and what it measured.
"""

from __future__ import annotations

import importlib

from .settings import Terms

__all__ = ["Terms", "TERM_CLASSES", "build_terms"]

#: term name (its ``[train.terms.NAME]`` table) -> module and class in this package
TERM_CLASSES = {
    "mode_seeking": ("mode_seeking", "ModeSeeking"),
    "label_consistency": ("label_consistency", "LabelConsistency"),
    "texture_match": ("texture_match", "TextureMatch"),
    "contrast_match": ("contrast_match", "ContrastMatch"),
    "reconstruction": ("reconstruction", "Reconstruction"),
}


def build_terms(terms: Terms, context) -> list:
    """The terms ``terms`` switches on, built for ``context`` (a :class:`~.base.TermContext`), in
    the order they join G's loss."""
    built = []
    for name, settings in terms.active():
        module, cls = TERM_CLASSES[name]
        built.append(getattr(importlib.import_module(f".{module}", __name__), cls).from_settings(settings, context))
    return built
