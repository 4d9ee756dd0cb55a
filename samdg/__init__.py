"""samdg: Segment Anything for domain-generalisable medical image segmentation, the nnU-Net way."""

__version__ = "0.1.0"
