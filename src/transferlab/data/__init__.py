"""Data: discover layouts, split, decode images, batch transforms."""

from transferlab.data.discover import Sample, discover
from transferlab.data.images import IMAGE_EXTENSIONS, ImageReadError, load_image
from transferlab.data.split import SplitSamples, read_split_csv, stratified_split, write_split_csv

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "Sample",
    "SplitSamples",
    "discover",
    "load_image",
    "read_split_csv",
    "stratified_split",
    "write_split_csv",
]
