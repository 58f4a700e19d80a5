"""Reading LAMOST files and catalogues, writing output tables."""

from rrnet.io.catalog import CatalogError, read_catalog, read_table, validate_catalog, write_table
from rrnet.io.lamost import (
    Arm,
    BadColumnsError,
    BadFitsError,
    LamostFile,
    LamostReadError,
    MissingExtensionError,
    MissingFileError,
    read_arm,
    read_arms,
    read_lamost,
)

__all__ = [
    "Arm",
    "BadColumnsError",
    "BadFitsError",
    "CatalogError",
    "LamostFile",
    "LamostReadError",
    "MissingExtensionError",
    "MissingFileError",
    "read_arm",
    "read_arms",
    "read_catalog",
    "read_lamost",
    "read_table",
    "validate_catalog",
    "write_table",
]
