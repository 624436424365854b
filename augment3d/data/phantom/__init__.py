"""The phantom cohort: a BraTS-layout stand-in for BraTS-Africa built from the MNI152 template.

See :func:`augment3d.data.phantom.cohort.make_phantom_cohort`.
"""

from .cohort import PhantomConfig, make_phantom_cohort
from .subject import SubjectParams, sample_subject_params, synthesize_subject

__all__ = [
    "PhantomConfig",
    "make_phantom_cohort",
    "SubjectParams",
    "sample_subject_params",
    "synthesize_subject",
]
