"""segbench: does synthetic data improve 3D tumour segmentation?

So far: ``segbench.metrics`` (Dice, HD95 in mm, BraTS-2023 lesion-wise scores per WT/TC/ET).
The harness (splits, arms, segmentation-models-pytorch-3d models, statistics, reports,
``augment3d bench``) is issue 6.
"""

__all__: list[str] = []
