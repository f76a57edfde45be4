"""`python -m adagrad_native`: train a numpy MLP on generated spirals with Adagrad."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

import adagrad_native as an
from adagrad_native._demo import MLP, make_spirals


def _at_least(minimum: float, kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: a number of `kind` of at least `minimum`."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number; received {text!r}") from None
        if not value >= minimum:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be at least {minimum}; received {text}")
        return value

    return parse


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each default, except where there is none (None)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m adagrad_native", description=__doc__, formatter_class=_Help
    )
    add = parser.add_argument
    add("--version", action="version", version=f"adagrad_native {an.__version__}")
    add("--epochs", type=_at_least(1, int), default=40, help="passes over the training set")
    add("--batch-size", type=_at_least(1, int), default=64, help="examples per optimizer step")
    add("--hidden", type=_at_least(1, int), default=64, help="units in each of the 2 hidden layers")
    add(
        "--learning-rate",
        type=_at_least(0.0, float),
        default=0.1,
        help="Adagrad's learning rate",
    )
    add(
        "--samples-per-class",
        type=_at_least(2, int),
        default=1000,
        help="spiral points per class (3 classes; 80%% train, 20%% test)",
    )
    add(
        "--threads",
        type=_at_least(1, int),
        default=None,
        help="threads of the native step (default: OMP_NUM_THREADS, else the CPUs)",
    )
    add("--seed", type=int, default=0, help="seed of the data, the weights and the batches")
    add(
        "--plot",
        metavar="PATH",
        default=None,
        help="write the loss and accuracy curves to this image (needs matplotlib)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the training job and prints its progress.

    Args:
        argv: The command-line arguments (default: `sys.argv[1:]`).

    Returns:
        The exit code: 0 when the training loss fell, else 1.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads > an._core.MAX_THREADS:
            parser.error(f"--threads must be at most {an._core.MAX_THREADS}")
        an.set_num_threads(int(args.threads))
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("--plot needs matplotlib: pip install matplotlib")

    rng = np.random.default_rng(args.seed)
    x, y = make_spirals(int(args.samples_per_class), 3, 0.03, rng)
    split = int(0.8 * len(y))
    x_train, y_train, x_test, y_test = x[:split], y[:split], x[split:], y[split:]
    model = MLP.create([2, args.hidden, args.hidden, 3], rng)
    optimizer = an.Adagrad(learning_rate=args.learning_rate)

    info = an.build_info()
    n_params = sum(p.size for p in model.params)
    threads = info["num_threads"]
    print(
        f"adagrad_native {info['version']}: ISA {info['isa']}, "
        f"{threads} thread{'s' if threads != 1 else ''}"
    )
    print(
        f"MLP 2-{args.hidden}-{args.hidden}-3 ({n_params} parameters, {len(model.params)} "
        f"tensors) on {len(y_train)} spiral points, 3 classes; {optimizer!r}"
    )
    first_loss = model.loss_and_grads(x_train, y_train)[0]
    print(f"epoch  0  train loss {first_loss:.4f}")
    curve: list[tuple[int, float, float]] = []
    step_times: list[float] = []
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(y_train))
        losses = []
        for start in range(0, len(order), args.batch_size):
            batch = order[start : start + args.batch_size]
            loss, grads = model.loss_and_grads(x_train[batch], y_train[batch])
            t0 = time.perf_counter()
            optimizer.apply(grads, model.params)
            step_times.append(time.perf_counter() - t0)
            losses.append(loss)
        accuracy = model.accuracy(x_test, y_test)
        curve.append((epoch, float(np.mean(losses)), accuracy))
        if epoch % 5 == 0 or epoch == 1:
            print(
                f"epoch {epoch:2d}  train loss {np.mean(losses):.4f}  "
                f"test accuracy {accuracy:6.1%}  "
                f"optimizer step {np.median(step_times[-len(losses) :]) * 1e6:6.1f} us"
            )
    final_loss = model.loss_and_grads(x_train, y_train)[0]
    print(
        f"summary: train loss {first_loss:.4f} -> {final_loss:.4f}; test accuracy "
        f"{model.accuracy(x_test, y_test):.1%}; {optimizer.iterations} optimizer steps, "
        f"median {np.median(step_times) * 1e6:.1f} us each"
    )
    if args.plot:
        _plot(curve, args.plot)
        print(f"wrote {args.plot}")
    return 0 if final_loss < first_loss else 1


def _plot(curve: list[tuple[int, float, float]], path: str) -> None:
    """The training loss and the test accuracy per epoch, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs, losses, accuracies = zip(*curve)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, losses)
    left.set(xlabel="epoch", ylabel="train loss (cross-entropy)", title="Loss")
    right.plot(epochs, [100 * a for a in accuracies])
    right.set(xlabel="epoch", ylabel="test accuracy (%)", title="Accuracy")
    fig.suptitle("adagrad_native: MLP on 3 spirals")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
