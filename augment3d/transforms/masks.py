"""Brain masks for torchio pipelines, as module-level functions (picklable).

torchio transforms travel to DataLoader and ``tio.Queue`` workers and back in each subject's
history, so everything they hold must pickle; a ``lambda`` does not, and a ``tio.Queue`` with
workers then waits forever. Use these instead::

    tio.ZNormalization(masking_method=augment3d.brain_mask)
"""

from __future__ import annotations

__all__ = ["brain_mask"]


def brain_mask(image):
    """Every voxel above the image's minimum (the background of skull-stripped BraTS scans).

    Example:
        >>> import torch
        >>> brain_mask(torch.tensor([0.0, 0.0, 3.5, 1.0])).tolist()
        [False, False, True, True]
    """
    return image > image.min()
