"""`python -m adagrad_native`: train a numpy MLP on generated spirals with Adagrad."""

from __future__ import annotations

import argparse
import time

import numpy as np

import adagrad_native as an
from adagrad_native._demo import MLP, make_spirals


def main(argv: list[str] | None = None) -> int:
    """Runs the training job and prints its progress; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--samples-per-class", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        an.set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    x, y = make_spirals(args.samples_per_class, 3, 0.03, rng)
    split = int(0.8 * len(y))
    x_train, y_train, x_test, y_test = x[:split], y[:split], x[split:], y[split:]
    model = MLP.create([2, args.hidden, args.hidden, 3], rng)
    optimizer = an.Adagrad(learning_rate=args.learning_rate)

    info = an.build_info()
    n_params = sum(p.size for p in model.params)
    print(f"adagrad_native {info['version']}: ISA {info['isa']}, {info['num_threads']} thread(s)")
    print(
        f"MLP 2-{args.hidden}-{args.hidden}-3 ({n_params} parameters, {len(model.params)} "
        f"tensors) on {len(y_train)} spiral points, 3 classes"
    )
    first_loss = model.loss_and_grads(x_train, y_train)[0]
    print(f"epoch  0  train loss {first_loss:.4f}")
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
        if epoch % 5 == 0 or epoch == 1:
            print(
                f"epoch {epoch:2d}  train loss {np.mean(losses):.4f}  "
                f"test accuracy {model.accuracy(x_test, y_test):6.1%}  "
                f"optimizer step {np.median(step_times[-len(losses) :]) * 1e6:6.1f} us"
            )
    final_loss = model.loss_and_grads(x_train, y_train)[0]
    print(
        f"train loss fell from {first_loss:.4f} to {final_loss:.4f}; test accuracy "
        f"{model.accuracy(x_test, y_test):.1%}; median optimizer step "
        f"{np.median(step_times) * 1e6:.1f} us over {len(step_times)} steps "
        f"({int(optimizer.iterations)} iterations)"
    )
    return 0 if final_loss < first_loss else 1


if __name__ == "__main__":
    raise SystemExit(main())
