"""Reading, validating and preparing BraTS-layout cohorts, and the phantom cohort."""

from .cohort import PreparedCohort, SkippedCase, prepare_cohort
from .conditions import ConditionEncoder
from ..brats import BRATS2021, BRATS2023, KEYS, LABEL_KEY, MODALITIES, NamingScheme
from .layout import Case, discover_cases
from .metadata import METADATA_FILE, Metadata, read_metadata, subject_conditions
from .nifti import NiftiVolume, read_nifti
from .preprocess import PreparedCase, PreprocessConfig, preprocess_case
from .validation import CaseReport, LoadedCase, check_case, read_case, validate_cohort

__all__ = [
    "BRATS2021",
    "BRATS2023",
    "KEYS",
    "LABEL_KEY",
    "METADATA_FILE",
    "MODALITIES",
    "Case",
    "CaseReport",
    "ConditionEncoder",
    "LoadedCase",
    "Metadata",
    "NamingScheme",
    "NiftiVolume",
    "PreparedCase",
    "PreparedCohort",
    "PreprocessConfig",
    "SkippedCase",
    "check_case",
    "discover_cases",
    "prepare_cohort",
    "preprocess_case",
    "read_case",
    "read_metadata",
    "read_nifti",
    "subject_conditions",
    "validate_cohort",
]
