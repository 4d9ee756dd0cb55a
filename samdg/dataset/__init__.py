"""Raw datasets: listing (``raw``) and content checks (``integrity``)."""

from samdg.dataset.raw import Case, RawDataset, list_image_folder, load_raw_dataset

__all__ = ["Case", "RawDataset", "list_image_folder", "load_raw_dataset"]
