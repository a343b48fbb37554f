"""The fused head + cross-entropy equals autograd's head-then-cross-entropy, in value and in gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from train import head_loss


def _case(rows: int, vocab: int = 1000, dim: int = 48, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(dim, vocab, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, dim, generator=g) * 0.3)
    head.weight.requires_grad_(False)
    hidden = torch.randn(rows, dim, generator=g)
    targets = torch.randint(0, vocab, (rows,), generator=g)
    return head, hidden, targets


def _reference(head, hidden, targets, autocast: bool):
    h = hidden.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = head(h)
    loss = F.cross_entropy(logits.float(), targets, reduction="sum")
    (loss * 0.37).backward()
    return loss.detach(), h.grad


def _fused(head, hidden, targets, autocast: bool):
    h = hidden.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = head_loss.head_cross_entropy(h, head, targets)
    (loss * 0.37).backward()
    return loss.detach(), h.grad


@pytest.mark.parametrize("rows", [1, 7, head_loss.ROWS, head_loss.ROWS * 2 + 3])
def test_float32_loss_and_gradient_equal_autograds(rows):
    head, hidden, targets = _case(rows)
    ref_loss, ref_grad = _reference(head, hidden, targets, autocast=False)
    loss, grad = _fused(head, hidden, targets, autocast=False)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)
    assert grad.dtype == hidden.dtype


def test_under_bf16_autocast_it_matches_autocasts_head_within_bf16_rounding():
    head, hidden, targets = _case(300, seed=1)
    ref_loss, ref_grad = _reference(head, hidden, targets, autocast=True)
    loss, grad = _fused(head, hidden, targets, autocast=True)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(grad, ref_grad, rtol=2e-2, atol=2e-3)
    # and both differ from float32 by more than they differ from each other: the bf16 matmul was used
    f32_loss, _ = _reference(head, hidden, targets, autocast=False)
    assert abs(loss - ref_loss) < abs(loss - f32_loss)


def test_the_cast_head_is_reused_until_the_weight_changes():
    head, hidden, _ = _case(4)
    cache = head_loss._HeadCache()
    first = cache.get(head.weight, torch.bfloat16)
    assert cache.get(head.weight, torch.bfloat16) is first
    with torch.no_grad():
        head.weight.mul_(2.0)  # an in-place change bumps the version: the copy is made again
    again = cache.get(head.weight, torch.bfloat16)
    assert again is not first
    torch.testing.assert_close(again.float(), head.weight, rtol=1e-2, atol=1e-2)
    assert cache.get(head.weight, torch.float32) is head.weight  # no cast needed, no copy


def test_only_a_frozen_bias_free_linear_head_is_fused():
    head, _, _ = _case(1)
    assert head_loss.fusable(head)
    head.weight.requires_grad_(True)
    assert not head_loss.fusable(head)
    assert not head_loss.fusable(torch.nn.Linear(4, 8, bias=True).requires_grad_(False))
    assert not head_loss.fusable(torch.nn.Identity())
