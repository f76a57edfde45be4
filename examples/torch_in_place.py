"""Training a torch model on the CPU with adagrad_native, in place.

`tensor.detach().numpy()` is a view of a CPU tensor's memory, so the optimizer updates
the torch parameters themselves: torch computes the gradients, adagrad_native steps
(Keras' Adagrad: epsilon inside the square root, unlike torch.optim.Adagrad).
Run: python examples/torch_in_place.py   (needs torch: pip install torch)
"""

from __future__ import annotations

import torch

import adagrad_native as an


def main() -> None:
    """Fits a small regression; checks that the loss fell and the memory is still torch's."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    x = torch.randn(512, 8)
    y = (x[:, :1] * 2 - x[:, 1:2]).sin()
    named = dict(model.named_parameters())
    views = {name: p.detach().numpy() for name, p in named.items()}  # no copies
    opt = an.Adagrad(learning_rate=0.1)
    first = torch.nn.functional.mse_loss(model(x), y).item()
    for _ in range(300):
        model.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.apply({name: p.grad.numpy() for name, p in named.items()}, views)
    loss = torch.nn.functional.mse_loss(model(x), y).item()
    print(f"MSE {first:.4f} -> {loss:.4f} after {opt.iterations} steps")
    assert loss < first / 4, "the model did not learn"
    assert views["0.weight"].ctypes.data == named["0.weight"].data_ptr()  # still the same memory


if __name__ == "__main__":
    main()
