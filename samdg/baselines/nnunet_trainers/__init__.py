"""nnU-Net trainer classes owned by samdg. nnU-Net finds them by name through ``nnUNet_extTrainer``, which samdg
points at this folder, so this package holds trainer modules only."""
