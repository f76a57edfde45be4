"""`adagrad_native.torch.Adagrad` against torch itself: bit for bit with
`torch.optim.Adagrad(fused=True)` on dense gradients (every option, float32 and
float64, every ISA path), close to its default path, and with torch's sparse path
up to torch's square root (which is not always the correctly rounded one)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import adagrad_native.torch as ant  # noqa: E402
from adagrad_native import _native  # noqa: E402
from tests.torch.pairs import (  # noqa: E402
    TORCH_INPUTS,
    assert_bit_identical,
    cnn_batches,
    native_and_torch,
    small_cnn,
    train,
    twins,
)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@pytest.fixture(params=_native.available_isas())
def isa(request):
    assert _native.select_isa(request.param)
    yield request.param
    _native.select_isa("auto")


# Every input on the ISA the core picks; two that reach every operation of the formula
# (maximize, weight decay, an lr_decay that rounds) on every ISA path (the core's own
# test, tests/test_torch_formula.py, takes every option and dtype on every path).
ISA_CASES = [pytest.param("auto", name, id=name) for name in TORCH_INPUTS] + [
    pytest.param(isa, name, id=f"{isa}-{name}")
    for isa in _native.available_isas()
    for name in ("maximize", "lr_decay_inexact")
]


@pytest.mark.parametrize("isa_name, input_name", ISA_CASES)
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_dense_bit_identical_to_fused(isa_name, input_name, dtype):
    assert _native.select_isa(isa_name)
    try:
        check_dense_bit_identical_to_fused(dtype, TORCH_INPUTS[input_name])
    finally:
        _native.select_isa("auto")


def check_dense_bit_identical_to_fused(dtype, kwargs):
    mine, opt_mine, theirs, opt_theirs = native_and_torch(small_cnn(dtype), kwargs, {"fused": True})
    batches = cnn_batches(12, dtype)
    train(mine, opt_mine, batches)
    train(theirs, opt_theirs, batches)
    assert_bit_identical(list(mine.parameters()), list(theirs.parameters()))
    sums = [opt_mine.state[p]["sum"] for p in mine.parameters()]
    assert_bit_identical(sums, [opt_theirs.state[p]["sum"] for p in theirs.parameters()], "sum")
    for p, q in zip(mine.parameters(), theirs.parameters()):
        assert torch.equal(opt_mine.state[p]["step"], opt_theirs.state[q]["step"])


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_groups_with_their_own_options_in_one_call(dtype):
    """Weights with decay, biases without, a third group at another rate, one added later,
    parameters that miss gradients on some steps (their own step counts)."""
    model = small_cnn(dtype)
    mine, theirs = twins(model)

    def groups(m):
        conv1, bn, conv2, fc = m[0], m[1], m[3], m[6]
        return [
            {"params": [conv1.weight, conv2.weight], "weight_decay": 0.01},
            {"params": [conv1.bias, conv2.bias, fc.bias], "lr": 0.05, "lr_decay": 0.1},
            {"params": [bn.weight, bn.bias], "eps": 1e-3, "maximize": False},
        ]

    opt_mine = ant.Adagrad(groups(mine), lr=0.02, lr_decay=0.01)
    opt_theirs = torch.optim.Adagrad(groups(theirs), lr=0.02, lr_decay=0.01, fused=True)

    def drop_some(m):  # the last layer's weight is not in a group yet; bn.bias skips steps
        if torch.rand(()) < 0.5:
            m[1].bias.grad = None

    torch.manual_seed(3)
    train(mine, opt_mine, cnn_batches(6, dtype), drop_some)
    torch.manual_seed(3)
    train(theirs, opt_theirs, cnn_batches(6, dtype), drop_some)
    opt_mine.add_param_group({"params": [mine[6].weight], "weight_decay": 0.1, "lr": 0.1})
    opt_theirs.add_param_group({"params": [theirs[6].weight], "weight_decay": 0.1, "lr": 0.1})
    torch.manual_seed(4)
    train(mine, opt_mine, cnn_batches(6, dtype, seed=2), drop_some)
    torch.manual_seed(4)
    train(theirs, opt_theirs, cnn_batches(6, dtype, seed=2), drop_some)
    assert_bit_identical(list(mine.parameters()), list(theirs.parameters()))
    steps_mine = [float(opt_mine.state[p]["step"]) for p in mine.parameters()]
    assert steps_mine == [float(opt_theirs.state[p]["step"]) for p in theirs.parameters()]
    assert len(set(steps_mine)) > 1  # the counts did differ


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_close_to_torch_default_path(dtype):
    """Torch's default (foreach) path rounds differently from its fused kernel (its sqrt,
    the order of its operations): the same training, as far apart as torch's own two
    paths are (here up to 1.9e-6 in float32 and 1.9e-16 in float64, measured)."""
    mine, opt_mine, theirs, opt_theirs = native_and_torch(small_cnn(dtype), {"weight_decay": 0.01})
    batches = cnn_batches(12, dtype)
    train(mine, opt_mine, batches)
    train(theirs, opt_theirs, batches)
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-14}
    for a, b in zip(mine.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_low_precision_close_to_fused(dtype):
    """16-bit parameters: float32 math rounded once per stored value, as torch's fused
    kernel (which rounds lr, eps and weight decay to the 16-bit type in its vector body,
    which this package does not), within torch's own fused-vs-forloop tolerance."""
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
    model = model.to(dtype)
    kwargs = {"lr": 0.05, "weight_decay": 0.01, "eps": 1e-3}
    mine, opt_mine, theirs, opt_theirs = native_and_torch(model, kwargs, {"fused": True})
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        x = torch.randn(32, 16, generator=g).to(dtype)
        for m, o in ((mine, opt_mine), (theirs, opt_theirs)):
            o.zero_grad()
            m(x).float().pow(2).mean().backward()
            o.step()
    for a, b in zip(mine.parameters(), theirs.parameters()):
        assert a.dtype == dtype and opt_mine.state[a]["sum"].dtype == dtype
        torch.testing.assert_close(a, b, atol=5e-3, rtol=5e-3)


# ---------------------------------------------------------------- sparse gradients


def embedding_grad(table, ids, offsets, generator):
    """The uncoalesced sparse gradient an EmbeddingBag(sparse=True) makes for these bags."""
    table.grad = None
    bag = torch.nn.functional.embedding_bag(ids, table, offsets, mode="sum", sparse=True)
    (bag * torch.randn(bag.shape, generator=generator, dtype=bag.dtype)).sum().backward()
    return table.grad


def torch_sqrt_bound(p_mine, p_torch, state_sum, lr, eps, grad_rows):
    """Per element of the touched rows: bit-identical where torch's sqrt of the sum is the
    correctly rounded one; elsewhere the update differs by at most 2 ulps of itself
    (one ulp of the square root, carried through a division and a multiply) plus the
    rounding of the sum p + update."""
    s = state_sum.numpy()
    sqrt_torch = torch.sqrt(state_sum).numpy()
    ieee = np.sqrt(s)
    update = np.abs(lr * grad_rows / (ieee + eps))
    a, b = p_mine.numpy(), p_torch.numpy()
    same_sqrt = sqrt_torch == ieee
    assert np.array_equal(a[same_sqrt], b[same_sqrt])
    bound = 2 * np.spacing(update.astype(a.dtype)) + np.spacing(np.abs(b))
    assert (np.abs(a - b) <= bound).all()
    return int((~same_sqrt).sum())


@pytest.mark.parametrize("maximize", [False, True], ids=["descend", "maximize"])
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_sparse_step_matches_torch_up_to_its_sqrt(isa, dtype, maximize):
    g = torch.Generator().manual_seed(7)
    rows, dim = 500, 24
    start = torch.randn(rows, dim, generator=g, dtype=dtype)
    mine = torch.nn.Parameter(start.clone())
    theirs = torch.nn.Parameter(start.clone())
    kwargs = {"lr": 0.1, "lr_decay": 0.01, "maximize": maximize, "initial_accumulator_value": 0.05}
    opt_mine = ant.Adagrad([mine], **kwargs)
    opt_theirs = torch.optim.Adagrad([theirs], **kwargs)
    differing_sqrt = 0
    for step in range(1, 9):
        # Each id twice: the sum of two copies does not depend on their order.
        once = torch.randperm(rows, generator=g)[:150]
        ids = torch.cat([once, once])[torch.randperm(300, generator=g)]
        grad = embedding_grad(theirs, ids, torch.arange(0, 300, 3), g)
        mine.grad = grad.clone()
        opt_mine.step()
        opt_theirs.step()
        touched = grad.coalesce()._indices()[0]
        assert torch.equal(opt_mine.state[mine]["sum"], opt_theirs.state[theirs]["sum"])
        lr = 0.1 / (1 + (step - 1) * 0.01)
        differing_sqrt += torch_sqrt_bound(
            mine.detach()[touched],
            theirs.detach()[touched],
            opt_theirs.state[theirs]["sum"][touched],
            lr,
            1e-10,
            grad.coalesce()._values().numpy(),
        )
        untouched = torch.ones(rows, dtype=torch.bool)
        untouched[touched] = False
        assert torch.equal(mine.detach()[untouched], theirs.detach()[untouched])
        with torch.no_grad():
            mine.copy_(theirs)  # the next step starts from torch's values
    assert torch.equal(opt_mine.state[mine]["step"], opt_theirs.state[theirs]["step"])
    print(f"elements where torch's sqrt was not the correctly rounded one: {differing_sqrt}")


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_repeated_ids_are_summed_in_their_order(dtype):
    """Many copies of an id: summed in the order they come (torch sums them in the order
    of its unstable sort of the ids, which differs between its own CPU dispatch levels).
    Torch given the gradient summed in that order computes the same step."""
    g = torch.Generator().manual_seed(11)
    rows, dim = 20, 7
    start = torch.randn(rows, dim, generator=g, dtype=dtype)
    mine, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    opt_mine = ant.Adagrad([mine], lr=0.5, eps=0.25)  # eps: no sqrt rounding can show
    opt_theirs = torch.optim.Adagrad([theirs], lr=0.5, eps=0.25)
    ids = torch.randint(0, rows, (400,), generator=g)  # ~20 copies of each id
    values = torch.randn(400, dim, generator=g, dtype=dtype)
    mine.grad = torch.sparse_coo_tensor(ids[None], values, (rows, dim))
    summed = torch.zeros(rows, dim, dtype=dtype)
    for k in range(400):  # one add after another, in order
        summed[ids[k]] += values[k]
    present = torch.unique(ids)
    coalesced = torch.sparse_coo_tensor(present[None], summed[present], (rows, dim)).coalesce()
    theirs.grad = coalesced
    opt_mine.step()
    opt_theirs.step()
    assert torch.equal(opt_mine.state[mine]["sum"], opt_theirs.state[theirs]["sum"])
    same = torch.sqrt(opt_theirs.state[theirs]["sum"]) == torch.from_numpy(
        np.sqrt(opt_theirs.state[theirs]["sum"].numpy())
    )
    assert torch.equal(mine.detach()[same], theirs.detach()[same])


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_embedding_bag_training_stays_with_torch(dtype):
    """A DLRM-style model (two sparse tables, an MLP) trained 30 steps by both: the sparse
    path's sqrt ulps do not grow into a different training."""
    torch.manual_seed(0)
    model = torch.nn.ModuleDict(
        {
            "users": torch.nn.EmbeddingBag(300, 16, mode="sum", sparse=True),
            "products": torch.nn.EmbeddingBag(500, 16, mode="sum", sparse=True),
            "mlp": torch.nn.Sequential(
                torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)
            ),
        }
    ).to(dtype)
    mine, opt_mine, theirs, opt_theirs = native_and_torch(model, {"lr": 0.05})
    g = torch.Generator().manual_seed(1)
    for _ in range(30):
        users = torch.randint(0, 300, (64 * 4,), generator=g)
        items = torch.randint(0, 500, (64 * 4,), generator=g)
        offsets = torch.arange(0, 64 * 4, 4)
        target = torch.rand(64, 1, generator=g, dtype=dtype)
        for m, o in ((mine, opt_mine), (theirs, opt_theirs)):
            o.zero_grad()
            x = torch.cat([m["users"](users, offsets), m["products"](items, offsets)], dim=1)
            torch.nn.functional.mse_loss(m["mlp"](x), target).backward()
            o.step()
    tol = 1e-5 if dtype == torch.float32 else 1e-13
    for (name, a), b in zip(mine.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=name)
