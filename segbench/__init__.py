"""segbench: does synthetic data improve 3D tumour segmentation?

The harness (arms, segmentation-models-pytorch-3d models, BraTS metrics, reports) is being
built in issue 6; this package holds it.
"""

__all__: list[str] = []
