"""The networks: parameter counts of the paper's sizes, any input size, the attention map."""

from __future__ import annotations

import pytest
import torch

from enlighten_ray.models import (
    EnlightenGenerator,
    attention_map,
    check_strength,
    global_discriminator,
    local_discriminator,
)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_release() -> None:
    assert n_params(EnlightenGenerator()) == 8_636_675
    assert n_params(global_discriminator()) == 11_154_369
    assert n_params(local_discriminator()) == 6_959_553


def test_discriminator_layout_is_the_released_one() -> None:
    convs = [m for m in global_discriminator().model if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (3, 64, 2),
        (64, 128, 2),
        (128, 256, 2),
        (256, 512, 2),
        (512, 512, 2),
        (512, 512, 1),
        (512, 1, 1),
    ]
    assert all(c.kernel_size == (4, 4) and c.padding == (2, 2) for c in convs)


@pytest.mark.parametrize("size", [(1, 1), (37, 53), (401, 601)])
def test_any_size_comes_back_the_same_size(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    g = EnlightenGenerator(width=4).eval()
    x = torch.rand(2, 3, *size) * 2 - 1
    with torch.no_grad():
        y = g(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_attention_map_is_one_minus_rec601_luma() -> None:
    # A 2x2 image in [0, 1]: black, white, pure red, mid grey.
    rgb01 = torch.tensor([[[0.0, 1.0], [1.0, 0.5]], [[0.0, 1.0], [0.0, 0.5]], [[0.0, 1.0], [0.0, 0.5]]]).unsqueeze(0)
    a = attention_map(rgb01 * 2 - 1)
    expected = torch.tensor([[1.0, 0.0], [1 - 0.299, 0.5]])
    assert a.shape == (1, 1, 2, 2)
    torch.testing.assert_close(a[0, 0], expected)


def test_strength_scales_the_residual() -> None:
    torch.manual_seed(0)
    g = EnlightenGenerator(width=4).eval()
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        full, none, double = g(x, 1.0), g(x, 0.0), g(x, 2.0)
    torch.testing.assert_close(none, x)  # strength 0 leaves the input unchanged
    torch.testing.assert_close(double - x, 2 * (full - x))
    with pytest.raises(ValueError, match=r"strength must be in \[0, 2\]"):
        check_strength(2.5)


def test_eval_output_does_not_depend_on_batch_composition() -> None:
    torch.manual_seed(0)
    g = EnlightenGenerator(width=4)
    g.train()(torch.rand(4, 3, 32, 32) * 2 - 1)  # move BN running stats away from their init
    g.eval()
    a, b = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        alone = g(a)
        together = g(torch.cat([a, b]))[:1]
    torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-5)


def test_align_corners_is_a_setting_that_changes_the_output() -> None:
    torch.manual_seed(0)
    g = EnlightenGenerator(width=4).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        a = g(x)
        g.align_corners = False
        b = g(x)
    assert not torch.allclose(a, b)
