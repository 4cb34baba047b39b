"""The demo's optimizer bounds each step, which is what keeps training from scratch finite."""
import torch

from dsanet.solver import SGDWithGradientClipping


def test_sgd_with_gradient_clipping_bounds_the_update_norm():
    weights = torch.nn.Parameter(torch.zeros(10))
    optimizer = SGDWithGradientClipping([weights], lr=1.0, max_grad_norm=2.0)
    (weights * 1000.0).sum().backward()  # gradient norm 1000 * sqrt(10)
    optimizer.step()
    assert torch.linalg.vector_norm(weights).item() == torch.tensor(2.0).item()


def test_small_gradients_pass_unchanged_and_state_round_trips():
    weights = torch.nn.Parameter(torch.zeros(3))
    optimizer = SGDWithGradientClipping([weights], lr=0.5, momentum=0.9, max_grad_norm=10.0)
    (weights * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    optimizer.step()
    torch.testing.assert_close(weights.detach(), torch.tensor([-0.5, -1.0, -1.5]))
    restored = SGDWithGradientClipping([weights], lr=0.5, momentum=0.9, max_grad_norm=10.0)
    restored.load_state_dict(optimizer.state_dict())
    assert torch.equal(restored.state[weights]["momentum_buffer"], optimizer.state[weights]["momentum_buffer"])
