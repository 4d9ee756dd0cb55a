"""Raw datasets: listing (``raw``) and content checks (``integrity``)."""

from samdg.dataset.integrity import check_integrity_or_raise, verify_dataset
from samdg.dataset.raw import Case, RawDataset, channel_files_per_case, list_image_folder, load_raw_dataset

__all__ = ["Case", "RawDataset", "channel_files_per_case", "check_integrity_or_raise", "list_image_folder",
           "load_raw_dataset", "verify_dataset"]
