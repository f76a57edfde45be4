"""`adagrad_native.torch.Adagrad` as a torch user drives it: schedulers, gradient
clipping and scaling, state dicts both ways and through torch.save, parameters whose
storage is replaced or laid out otherwise, and the errors it gives."""

from __future__ import annotations

import copy
import io
import threading

import pytest

torch = pytest.importorskip("torch")

import adagrad_native.torch as ant  # noqa: E402
from tests.torch.pairs import (  # noqa: E402
    assert_bit_identical,
    cnn_batches,
    native_and_torch,
    small_cnn,
    train,
)


def fused(model, **kwargs):
    return torch.optim.Adagrad(model.parameters(), fused=True, **kwargs)


SCHEDULERS = {
    "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
    "lambda": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda k: 1 / (1 + k)),
    "one_cycle": lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=0.2, total_steps=10, cycle_momentum=False
    ),
    "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=5),
}


@pytest.mark.parametrize("make", SCHEDULERS.values(), ids=SCHEDULERS.keys())
def test_lr_schedulers_drive_it_as_torch(make):
    mine, opt_mine, theirs, opt_theirs = native_and_torch(small_cnn(), {"lr": 0.1}, {"fused": True})
    sched_mine, sched_theirs = make(opt_mine), make(opt_theirs)
    for batch in cnn_batches(10):
        train(mine, opt_mine, [batch])
        sched_mine.step()
        train(theirs, opt_theirs, [batch])
        sched_theirs.step()
    assert opt_mine.param_groups[0]["lr"] == opt_theirs.param_groups[0]["lr"]
    assert_bit_identical(list(mine.parameters()), list(theirs.parameters()))


def test_reduce_lr_on_plateau():
    mine, opt_mine, theirs, opt_theirs = native_and_torch(small_cnn(), {"lr": 0.1}, {"fused": True})
    for m, o in ((mine, opt_mine), (theirs, opt_theirs)):
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=0, factor=0.5)
        for _ in range(4):
            train(m, o, cnn_batches(1))  # the same batch each time
            sched.step(1.0)  # never improves: the rate halves
    assert opt_mine.param_groups[0]["lr"] == opt_theirs.param_groups[0]["lr"] < 0.1
    assert_bit_identical(list(mine.parameters()), list(theirs.parameters()))


def test_clip_grad_norm_and_zero_grad_to_zeros():
    mine, opt_mine, theirs, opt_theirs = native_and_torch(small_cnn(), {"lr": 0.1}, {"fused": True})

    def clip(m):
        torch.nn.utils.clip_grad_norm_(m.parameters(), 0.05)

    for m, o in ((mine, opt_mine), (theirs, opt_theirs)):
        train(m, o, cnn_batches(5), clip)
        o.zero_grad(set_to_none=False)  # zero gradients: a step changes nothing
        assert all(p.grad is not None and not p.grad.any() for p in m.parameters())
        o.step()
    assert_bit_identical(list(mine.parameters()), list(theirs.parameters()))


def test_grad_scaler_with_a_skipped_step():
    mine, opt_mine, theirs, opt_theirs = native_and_torch(small_cnn(), {"lr": 0.1}, {"fused": True})
    for m, o in ((mine, opt_mine), (theirs, opt_theirs)):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for k, (x, y) in enumerate(cnn_batches(6)):
            o.zero_grad()
            scaler.scale(torch.nn.functional.cross_entropy(m(x), y)).backward()
            if k == 2:
                next(m.parameters()).grad[0] = float("inf")  # overflow: skipped, scale halves
            scaler.step(o)
            scaler.update()
        assert scaler.get_scale() == 2.0**9
    assert_bit_identical(list(mine.parameters()), list(theirs.parameters()))
    assert float(opt_mine.state[next(mine.parameters())]["step"]) == 5


def test_state_dict_round_trips_with_torch_through_torch_save():
    # fused=True on both: a loaded state dict brings its groups' flags along (torch's rule),
    # and torch's default path rounds differently from its fused kernel.
    kwargs = {"lr": 0.1, "lr_decay": 0.1, "weight_decay": 0.01, "fused": True}
    mine, opt_mine, theirs, opt_theirs = native_and_torch(small_cnn(), kwargs)
    train(mine, opt_mine, cnn_batches(4))
    train(theirs, opt_theirs, cnn_batches(4))

    def through_file(opt):
        buf = io.BytesIO()
        torch.save(opt.state_dict(), buf)
        buf.seek(0)
        return torch.load(buf, weights_only=True)

    mine_saved, theirs_saved = through_file(opt_mine), through_file(opt_theirs)
    state = mine_saved["state"][0]
    assert set(state) == {"step", "sum"} and state["step"].dtype == torch.float32
    assert state["step"].shape == () and state["sum"].shape == next(mine.parameters()).shape
    # Each continues from the other's state: torch from this package's and back.
    opt_mine.load_state_dict(theirs_saved)
    opt_theirs.load_state_dict(mine_saved)
    train(mine, opt_mine, cnn_batches(4, seed=3))
    train(theirs, opt_theirs, cnn_batches(4, seed=3))
    assert_bit_identical(list(mine.parameters()), list(theirs.parameters()))
    for p, q in zip(mine.parameters(), theirs.parameters()):
        assert torch.equal(opt_mine.state[p]["sum"], opt_theirs.state[q]["sum"])
        assert torch.equal(opt_mine.state[p]["step"], opt_theirs.state[q]["step"])


def test_a_state_dict_without_some_parameters_loads():
    """torch makes a parameter's state at its first gradient: a group added later and not
    stepped yet is absent from its state_dict."""
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    theirs = torch.optim.Adagrad([a], lr=0.1, initial_accumulator_value=0.5)
    theirs.add_param_group({"params": [b]})
    a.grad = torch.ones(3)
    theirs.step()
    assert b not in theirs.state
    mine = ant.Adagrad([a], lr=0.1, initial_accumulator_value=0.5)
    mine.add_param_group({"params": [b]})
    mine.load_state_dict(theirs.state_dict())
    a.grad, b.grad = torch.ones(3), torch.ones(2)
    mine.step()
    assert float(mine.state[a]["step"]) == 2 and float(mine.state[b]["step"]) == 1
    assert torch.equal(mine.state[b]["sum"], torch.full((2,), 1.5))


def test_loaded_state_is_copied_not_shared():
    """Torch's load_state_dict keeps the given tensors; the step must not write into them."""
    mine, opt_mine, theirs, opt_theirs = native_and_torch(small_cnn(), {}, {"fused": True})
    train(theirs, opt_theirs, cnn_batches(2))
    given = opt_theirs.state_dict()
    before = {k: {n: t.clone() for n, t in v.items()} for k, v in given["state"].items()}
    opt_mine.load_state_dict(given)
    train(mine, opt_mine, cnn_batches(2))
    for k, v in given["state"].items():
        assert all(torch.equal(t, before[k][n]) for n, t in v.items())


def test_state_exists_from_construction_as_torch():
    model = small_cnn()
    mine, theirs = (
        ant.Adagrad(model.parameters(), initial_accumulator_value=0.3),
        fused(model, initial_accumulator_value=0.3),
    )
    a, b = mine.state_dict(), theirs.state_dict()
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert torch.equal(a["state"][k]["sum"], b["state"][k]["sum"])
        assert float(a["state"][k]["step"]) == 0


def test_replaced_storage_is_stepped_in_its_new_layout():
    """p.data = ... (a clone, channels_last, a transposed layout) between steps: the step
    follows the parameter's new memory, with the same numbers."""
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 3, 3, 3), (5, 7), (6,)]
    start = [torch.randn(s, generator=g) for s in shapes]
    mine = [torch.nn.Parameter(t.clone()) for t in start]
    theirs = [torch.nn.Parameter(t.clone()) for t in start]
    opt_mine = ant.Adagrad(mine, lr=0.1, weight_decay=0.01)
    opt_theirs = torch.optim.Adagrad(theirs, lr=0.1, weight_decay=0.01, fused=True)
    for step in range(6):
        grads = [torch.randn(s, generator=g) for s in shapes]
        if step == 2:
            mine[0].data = mine[0].data.to(memory_format=torch.channels_last)
            mine[1].data = mine[1].data.t().contiguous().t()
            mine[2].data = mine[2].data.clone()
        for params, opt in ((mine, opt_mine), (theirs, opt_theirs)):
            for p, grad in zip(params, grads):
                p.grad = grad.clone()
            opt.step()
    assert_bit_identical(mine, theirs)
    assert opt_mine.state[mine[0]]["sum"].stride() == mine[0].stride() == (27, 1, 9, 3)


def test_state_moved_to_shared_memory_is_followed():
    p = torch.nn.Parameter(torch.ones(4))
    opt = ant.Adagrad([p], lr=0.1)
    p.grad = torch.ones(4)
    opt.step()
    opt.share_memory()
    p.share_memory_()
    opt.step()
    state_sum = opt.state[p]["sum"]
    assert state_sum.is_shared() and torch.equal(state_sum, torch.full((4,), 2.0))
    torch.testing.assert_close(p.detach(), torch.full((4,), 0.9 - 0.1 / 2**0.5))


def test_channels_last_model_in_place():
    model = small_cnn(channels_last=True)
    mine, opt_mine, theirs, opt_theirs = native_and_torch(model, {"lr": 0.1}, {"fused": True})
    weight = mine[0].weight
    ptr = weight.data_ptr()
    train(mine, opt_mine, cnn_batches(4))
    train(theirs, opt_theirs, cnn_batches(4))
    assert weight.data_ptr() == ptr and weight.is_contiguous(memory_format=torch.channels_last)
    assert_bit_identical(list(mine.parameters()), list(theirs.parameters()))


def test_parameter_with_gaps_is_stepped_through_a_copy():
    """A strided view (torch's own non-contiguous test case) updates the viewed memory."""
    base = torch.randn(10, 5, 2)
    mine = torch.nn.Parameter(base.clone()[..., 0])
    theirs = torch.nn.Parameter(base.clone()[..., 0])
    opt_mine, opt_theirs = ant.Adagrad([mine], lr=0.1), torch.optim.Adagrad([theirs], lr=0.1)
    for _ in range(5):
        for p, o in ((mine, opt_mine), (theirs, opt_theirs)):
            o.zero_grad()
            (p**3).sum().backward()
            o.step()
    assert mine.stride() == (10, 2)
    torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7)
    assert not torch.equal(mine, base[..., 0])


def test_sparse_gradient_with_weight_decay_is_refused_as_torch():
    table = torch.nn.Embedding(10, 3, sparse=True)
    opt = ant.Adagrad(table.parameters(), weight_decay=0.1)
    table(torch.tensor([1, 2])).sum().backward()
    before = table.weight.detach().clone()
    with pytest.raises(RuntimeError, match="weight_decay option is not compatible with sparse"):
        opt.step()
    assert torch.equal(table.weight, before) and float(opt.state[table.weight]["step"]) == 0


def test_sparse_gradient_other_than_rows_is_refused():
    p = torch.nn.Parameter(torch.zeros(4, 4))
    opt = ant.Adagrad([p])
    p.grad = torch.eye(4).to_sparse()  # sparse_dim 2: not rows
    with pytest.raises(ValueError, match="sparse_dim=2"):
        opt.step()
    assert not p.any()


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: {"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
        (lambda: {"eps": -1.0}, ValueError, "Invalid epsilon value"),
        (lambda: {"initial_accumulator_value": -1}, ValueError, "initial_accumulator_value"),
        (lambda: {"differentiable": True}, ValueError, "differentiable=True is not supported"),
        (lambda: {"fused": True, "foreach": True}, RuntimeError, "cannot be `True` together"),
        (lambda: {"lr": torch.tensor([0.1, 0.2])}, ValueError, "Tensor lr must be 1-element"),
    ],
    ids=["lr", "eps", "initial_accumulator_value", "differentiable", "fused_foreach", "lr_tensor"],
)
def test_constructor_errors(make, error, match):
    with pytest.raises(error, match=match):
        ant.Adagrad([torch.nn.Parameter(torch.zeros(2))], **make())


@pytest.mark.parametrize(
    "param, error, match",
    [
        (lambda: torch.zeros(3, device="meta"), ValueError, "is on device meta.*CPU tensors only"),
        (lambda: torch.zeros(3, dtype=torch.int32), TypeError, "has dtype torch.int32"),
    ],
    ids=["device", "dtype"],
)
def test_parameter_errors_name_the_parameter(param, error, match):
    good = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(error, match=match):
        ant.Adagrad([good, param()])
    opt = ant.Adagrad([good])
    with pytest.raises(error, match=r"param_groups\[1\]\['params'\]\[0\]"):
        opt.add_param_group({"params": [param()]})
    assert len(opt.param_groups) == 1  # the refused group was not added


def test_a_parameter_converted_after_construction_keeps_its_state():
    """model.double() replaces p.data: the state follows (torch's load_state_dict rule)."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = ant.Adagrad([("weight", p)], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    p.data = p.data.double()
    first = p.detach().clone()
    p.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    assert opt.state[p]["sum"].dtype == torch.float64  # sum 2, in float64 now
    torch.testing.assert_close(p.detach(), first - 0.1 / (2.0**0.5 + 1e-10), rtol=0, atol=1e-15)


def test_differentiable_set_on_a_group_later_is_refused():
    p = torch.nn.Parameter(torch.ones(3))
    opt = ant.Adagrad([p])
    opt.param_groups[0]["differentiable"] = True
    p.grad = torch.ones(3)
    with pytest.raises(ValueError, match="differentiable=True"):
        opt.step()
    assert torch.equal(p, torch.ones(3))


def test_hooks_and_closure():
    p = torch.nn.Parameter(torch.ones(3))
    opt = ant.Adagrad([p], lr=0.5)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert calls == ["pre", "post"] and float(loss.detach()) == 3.0
    assert torch.allclose(p, torch.full((3,), 0.5))  # first Adagrad step: p - lr * sign(g)


def test_deepcopy_and_pickle_step_on_their_own():
    model = small_cnn()
    opt = ant.Adagrad(model.parameters(), lr=0.1)
    train(model, opt, cnn_batches(2))
    twin_model, twin_opt = copy.deepcopy((model, opt))
    train(twin_model, twin_opt, cnn_batches(2, seed=5))
    train(model, opt, cnn_batches(2, seed=5))
    assert_bit_identical(list(model.parameters()), list(twin_model.parameters()))
    buf = io.BytesIO()
    torch.save(opt, buf)
    buf.seek(0)
    restored = torch.load(buf, weights_only=False)
    assert isinstance(restored, ant.Adagrad) and restored.state_dict()["state"].keys()


def test_steps_from_two_threads_are_serialized():
    p = torch.nn.Parameter(torch.zeros(100_000))
    opt = ant.Adagrad([p], lr=0.1)
    p.grad = torch.ones(100_000)

    def run():
        for _ in range(20):
            opt.step()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert float(opt.state[p]["step"]) == 40


def test_complex_parameters_step_as_their_real_pairs():
    z = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.complex64))
    r = torch.nn.Parameter(torch.view_as_real(z.detach()).clone())
    opt_z, opt_r = ant.Adagrad([z], lr=0.1), torch.optim.Adagrad([r], lr=0.1, fused=True)
    for _ in range(3):
        grad = torch.randn(4, 3, dtype=torch.complex64)
        z.grad, r.grad = grad, torch.view_as_real(grad).clone()
        opt_z.step()
        opt_r.step()
    assert torch.equal(torch.view_as_real(z.detach()), r.detach())
    assert opt_z.state[z]["sum"].dtype == torch.complex64


def test_uncoalesced_embedding_gradients_without_private_calls():
    bag = torch.nn.EmbeddingBag(50, 4, mode="sum", sparse=True)
    opt = ant.Adagrad(bag.parameters(), lr=0.1)
    ids = torch.tensor([3, 3, 7, 3, 9, 7])
    bag(ids, torch.tensor([0, 3])).sum().backward()
    assert not bag.weight.grad.is_coalesced()
    before = bag.weight.detach().clone()
    opt.step()
    changed = (bag.weight != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [3, 7, 9]
