"""segbench: does synthetic data improve 3D tumour segmentation?

``augment3d bench`` runs it (see docs/BENCH.md). Modules: ``config`` (the ``[bench]`` recipe
section), ``splits``, ``data`` (subjects and each arm's training data), ``model`` (smp-3d
networks, loss, inference), ``train`` (one arm x seed job), ``metrics`` (Dice, HD95 in mm,
BraTS-2023 lesion-wise), ``stats`` (bootstrap CIs, Wilcoxon), ``report`` and ``bench`` (the
stages). Importing ``segbench`` imports none of them.
"""

__all__: list[str] = []
