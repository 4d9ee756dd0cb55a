"""Pure-PyTorch multi-scale deformable attention against the bilinear sampling written out (values and gradients)."""

from __future__ import annotations

import torch

from samdg.models.layers.deformable_attention import (
    MultiScaleDeformableAttention,
    heads_for_width,
    pixel_centre_reference_points,
)


def dense_bilinear(value: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of value (D, H, W) at one normalised location (x, y), zeros outside: (D,)."""
    _, rows, cols = value.shape
    px, py = x * cols - 0.5, y * rows - 0.5  # pixel coordinates, centres at integers
    x0, y0 = int(torch.floor(px)), int(torch.floor(py))
    out = value.new_zeros(value.shape[0])
    for dy in (0, 1):
        for dx in (0, 1):
            col, row = x0 + dx, y0 + dy
            if 0 <= col < cols and 0 <= row < rows:
                weight = (1 - (px - col).abs()) * (1 - (py - row).abs())
                out = out + weight * value[:, row, col]
    return out


def dense_reference(module: MultiScaleDeformableAttention, query, reference, values) -> torch.Tensor:
    """The attention with every sample written out as a loop (tiny inputs only)."""
    batch, queries, _ = query.shape
    locations, weights = module.sampling(query, reference.expand(batch, -1, -1), [v.shape[-2:] for v in values])
    head_values = module.head_values(values)
    rows = []
    for n in range(batch * module.heads):
        per_query = []
        for q in range(queries):
            total = 0
            for level in range(module.levels):
                for p in range(module.points):
                    x, y = locations[n, q, level, p]
                    total = total + weights[n, q, level, p] * dense_bilinear(head_values[level][n], x, y)
            per_query.append(total)
        rows.append(torch.stack(per_query))
    return module.merge_heads(torch.stack(rows), batch)


def test_deformable_attention_matches_dense_bilinear_reference_with_gradients():
    torch.manual_seed(0)
    module = MultiScaleDeformableAttention(dim=8, heads=2, levels=2, points=3).double()
    with torch.no_grad():  # random offsets and weights that depend on the query; some samples fall outside
        for parameter in module.parameters():
            parameter.normal_(0, 0.7)
    query = torch.randn(2, 5, 8, dtype=torch.double, requires_grad=True)
    reference = torch.rand(1, 5, 2, dtype=torch.double)
    values = [torch.randn(2, 8, 4, 3, dtype=torch.double, requires_grad=True),
              torch.randn(2, 8, 2, 5, dtype=torch.double, requires_grad=True)]

    fast = module(query, reference, values)
    parameters = [query, *values, *module.parameters()]
    fast_grads = torch.autograd.grad((fast * torch.linspace(-1, 1, fast.numel()).view_as(fast)).sum(), parameters)
    dense = dense_reference(module, query, reference, values)
    dense_grads = torch.autograd.grad((dense * torch.linspace(-1, 1, dense.numel()).view_as(dense)).sum(),
                                      parameters)

    torch.testing.assert_close(fast, dense)
    for fast_grad, dense_grad in zip(fast_grads, dense_grads):
        torch.testing.assert_close(fast_grad, dense_grad)
    assert all(grad.abs().sum() > 0 for grad in fast_grads)


def test_zero_offsets_at_pixel_centres_read_the_value_at_each_pixel():
    module = MultiScaleDeformableAttention(dim=4, heads=1, levels=1, points=1)
    with torch.no_grad():
        module.sampling_offsets.bias.zero_()
        module.value_proj.weight.copy_(torch.eye(4))
        module.output_proj.weight.copy_(torch.eye(4))
    value = torch.randn(1, 4, 3, 5)
    out = module(torch.randn(1, 15, 4), pixel_centre_reference_points((3, 5))[None], [value])
    torch.testing.assert_close(out, value.flatten(2).transpose(1, 2))


def test_heads_divide_the_width():
    assert [heads_for_width(w, 64) for w in (768, 160, 24, 320)] == [12, 2, 1, 5]


def test_sampling_runs_in_float32_under_bf16_autocast():
    torch.manual_seed(0)
    module = MultiScaleDeformableAttention(dim=8, heads=2, levels=1, points=2)
    query, value = torch.randn(1, 6, 8), torch.randn(1, 8, 2, 3)
    reference = pixel_centre_reference_points((2, 3))[None]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        locations, weights = module.sampling(module.value_proj(query), reference, [(2, 3)])  # bf16 queries
        out = module(module.value_proj(query), reference, [value])
    assert locations.dtype == weights.dtype == torch.float32
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
