"""torch's own optimizer tests for Adagrad (test/test_optim.py over the optim_db entry
in torch/testing/_internal/common_optimizers.py), the cases that apply on a CPU,
rewritten for `adagrad_native.torch.Adagrad`. Their inputs are torch's Adagrad inputs
(tests/torch/pairs.py), each also with the global flags torch adds (foreach, fused),
which this optimizer accepts; `differentiable` is refused (its own test)."""

from __future__ import annotations

import copy
import functools

import pytest

torch = pytest.importorskip("torch")

import adagrad_native.torch as ant  # noqa: E402
from tests.torch.pairs import TORCH_INPUTS, options  # noqa: E402

Adagrad = ant.Adagrad
Parameter = torch.nn.Parameter
GLOBAL_FLAGS = {
    "": {},
    "foreach": {"foreach": True},
    "forloop": {"foreach": False},
    "fused": {"fused": True},
}
INPUTS = [
    pytest.param({**kwargs, **flags}, id=f"{name}-{flag}" if flag else name)
    for name, kwargs in TORCH_INPUTS.items()
    for flag, flags in GLOBAL_FLAGS.items()
]


def test_errors():
    param = Parameter(torch.randn(1, 1))
    param2 = Parameter(torch.randn(1, 1))
    with pytest.raises(TypeError, match="params argument given to the optimizer should be"):
        Adagrad(param)
    with pytest.warns(UserWarning, match="a parameter group with duplicate parameters"):
        Adagrad([param, param])
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        Adagrad([{"params": param}, {"params": param}])
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        Adagrad([param], lr=torch.tensor([0.001, 0.001]))
    with pytest.raises(ValueError, match="all optimizer params should be with/without names"):
        Adagrad([("weight", param), param2])
    with pytest.raises(ValueError, match="all optimizer param groups should be with/without names"):
        Adagrad([{"params": [param], "lr": 1e-2}, {"params": [("weight", param2)]}])
    with pytest.raises(ValueError, match="Invalid lr_decay value: -0.5"):
        Adagrad([param], lr=1e-2, lr_decay=-0.5)
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together"):
        Adagrad([param], foreach=True, fused=True)


@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "strided"])
@pytest.mark.parametrize("kwargs", INPUTS)
def test_forloop_goes_right_direction(kwargs, contiguous):
    if contiguous:
        weight, bias = Parameter(torch.randn(10, 5)), Parameter(torch.randn(10))
    else:
        weight = Parameter(torch.randn(10, 5, 2)[..., 0])
        bias = Parameter(torch.randn(10, 2)[..., 0])
    x = torch.randn(5)
    opt = Adagrad([weight, bias], **options(kwargs))

    def closure():
        opt.zero_grad()
        loss = (weight.mv(x) + bias).pow(2).sum()
        loss.backward()
        return loss

    initial = closure().item()
    for _ in range(20):
        opt.step(closure)
    if kwargs.get("maximize", False):
        assert closure().item() > initial
    else:
        assert closure().item() < initial


@pytest.mark.parametrize("kwargs", INPUTS)
def test_complex(kwargs):
    """Complex parameters (and a real one among them) step as their real views do."""
    complex_params = [
        torch.randn(10, 5, dtype=torch.complex64, requires_grad=True),
        torch.randn(10, dtype=torch.complex64, requires_grad=True),
        torch.randn(10, 5, dtype=torch.float32, requires_grad=True),
    ]
    real_params = [
        (torch.view_as_real(p) if p.is_complex() else p).detach().clone().requires_grad_()
        for p in complex_params
    ]
    complex_opt = Adagrad(complex_params, **options(kwargs))
    real_opt = Adagrad(real_params, **options(kwargs))
    for _ in range(3):
        for c, r in zip(complex_params, real_params):
            r.grad = torch.randn_like(r)
            c.grad = torch.view_as_complex(r.grad) if c.is_complex() else r.grad.clone()
        real_opt.step()
        complex_opt.step()
        for c, r in zip(complex_params, real_params):
            assert torch.equal(torch.view_as_real(c) if c.is_complex() else c, r)


def rosenbrock(t):
    x, y = t
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def test_complex_2d():
    a1 = torch.randn(2, dtype=torch.complex64, requires_grad=True)
    a1_real = a1.real.clone().detach().requires_grad_()
    a1_imag = a1.imag.clone().detach().requires_grad_()
    optim1, optim2 = Adagrad([a1]), Adagrad([a1_real, a1_imag])
    for _ in range(10):
        optim1.zero_grad()
        optim2.zero_grad()
        a2 = torch.complex(a1_real, a1_imag)
        rosenbrock(a1).abs().backward()
        rosenbrock(a2).abs().backward()
        torch.testing.assert_close(a1.grad.real, a1_real.grad)
        torch.testing.assert_close(a1.grad.imag, a1_imag.grad)
        optim1.step()
        optim2.step()
        torch.testing.assert_close(a1.real, a1_real)
        torch.testing.assert_close(a1.imag, a1_imag)


@pytest.mark.parametrize("kwargs", INPUTS)
def test_param_groups_weight_decay(kwargs):
    weight, bias = Parameter(torch.randn(10, 5)), Parameter(torch.randn(10))
    x = torch.randn(5)
    bias_kwargs = {**options(kwargs), "weight_decay": 0.0}
    opt = Adagrad([dict(params=[weight], **options(kwargs)), dict(params=[bias], **bias_kwargs)])
    initial = (weight.mv(x) + bias).pow(2).sum().item()
    for _ in range(20):
        opt.zero_grad()
        loss = (weight.mv(x) + bias).pow(2).sum()
        loss.backward()
        opt.step()
    if kwargs.get("maximize", False):
        assert loss.item() > initial
    else:
        assert loss.item() < initial


@pytest.mark.parametrize("kwargs", INPUTS)
def test_param_groups_lr(kwargs):
    kwargs = options(kwargs)
    if "lr" not in kwargs or kwargs["lr"] == 0:
        kwargs["lr"] = 1e-3
    weight, bias = Parameter(torch.randn(10, 5)), Parameter(torch.randn(10))
    irrelevant = Parameter(torch.randn(2))
    irrelevant_clone = irrelevant.clone()
    x = torch.randn(5)
    opt = Adagrad([dict(params=[weight, bias], **kwargs), dict(params=[irrelevant])], lr=1e-28)
    initial = (weight.mv(x) + bias).pow(2).sum().item()
    for _ in range(20):
        opt.zero_grad()
        loss = (weight.mv(x) + bias).pow(2).sum()
        loss.backward()
        irrelevant.grad = torch.rand_like(irrelevant)
        opt.step()
    if kwargs.get("maximize", False):
        assert loss.item() > initial
    else:
        assert loss.item() < initial
    assert torch.equal(irrelevant, irrelevant_clone)  # lr 1e-28: no visible change


@pytest.mark.parametrize("kwargs", INPUTS)
def test_step_is_noop_when_params_have_no_grad(kwargs):
    params = [torch.randn(2, 3, requires_grad=False) for _ in range(2)]
    old = [p.clone() for p in params]
    Adagrad(params, **options(kwargs)).step(lambda: torch.tensor([1.0]))
    assert all(torch.equal(a, b) for a, b in zip(params, old))


# Without weight decay only: with it a parameter moves on a zero gradient (torch's rule).
@pytest.mark.parametrize("kwargs", [p for p in INPUTS if not p.values[0].get("weight_decay")])
def test_step_is_noop_for_zero_grads(kwargs):
    param = torch.randn(5, 1, requires_grad=True)
    old = param.clone().detach()
    opt = Adagrad([param], **options(kwargs))
    param.grad = torch.zeros_like(param)
    opt.step(lambda: torch.tensor([1.0]))
    assert torch.equal(old, param.detach())


def test_step_is_noop_for_an_empty_sparse_grad():
    param = torch.randn(5, 1, requires_grad=True)
    old = param.clone().detach()
    opt = Adagrad([param])
    no_ids = torch.empty((1, 0), dtype=torch.long)
    param.grad = torch.sparse_coo_tensor(no_ids, torch.empty(0, 1), (5, 1))
    opt.step()
    assert torch.equal(old, param.detach())


@pytest.mark.parametrize("kwargs", INPUTS)
def test_optimizer_can_be_printed(kwargs):
    params = [Parameter(torch.randn(2, 3)) for _ in range(2)]
    assert "Adagrad" in repr(Adagrad(params, **options(kwargs)))


def fwd_bwd(opt, w, b, i):
    opt.zero_grad()
    loss = (w.mv(i) + b).pow(2).sum()
    loss.backward()
    return loss


@pytest.mark.parametrize("kwargs", INPUTS)
def test_state_dict_deterministic(kwargs):
    weight, bias = Parameter(torch.randn(2, 3)), Parameter(torch.randn(2))
    x = torch.randn(3)
    opt = Adagrad([weight, bias], **options(kwargs))
    closure = functools.partial(fwd_bwd, opt, weight, bias, x)
    for _ in range(10):
        opt.step(closure)
    with torch.no_grad():
        weight_c, bias_c = Parameter(weight.clone()), Parameter(bias.clone())
    opt_c = Adagrad([weight_c, bias_c], **options(kwargs))
    closure_c = functools.partial(fwd_bwd, opt_c, weight_c, bias_c, x)
    opt_c.load_state_dict(copy.deepcopy(opt.state_dict()))
    for _ in range(10):
        opt.step(closure)
        opt_c.step(closure_c)
        assert torch.equal(weight, weight_c) and torch.equal(bias, bias_c)
    a, b = opt.state_dict(), opt_c.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for k in a["state"]:
        assert all(torch.equal(a["state"][k][n], b["state"][k][n]) for n in ("step", "sum"))
    opt_c.param_groups.extend(opt_c.param_groups)  # repeated parameters: same representation
    assert opt.state_dict()["param_groups"][-1] == opt_c.state_dict()["param_groups"][-1]


@pytest.mark.parametrize("kwargs", INPUTS)
def test_can_load_older_state_dict(kwargs):
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 2, 1, stride=2), torch.nn.BatchNorm2d(2))
    x = torch.rand(1, 4, 16, 16)
    opt = Adagrad(model.parameters(), **options(kwargs))

    def step():
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()

    for _ in range(3):
        step()
    old = copy.deepcopy(opt.state_dict())
    for group in old["param_groups"]:
        for flag in ("maximize", "foreach", "fused", "differentiable", "capturable"):
            group.pop(flag, None)
    opt.load_state_dict(old)
    step()
    assert opt.param_groups[0]["maximize"] is False


def _stepped_three_times(kwargs):
    """An optimizer over two 2x3 parameters with gradients, after three steps."""
    params = [Parameter(torch.randn(2, 3)) for _ in range(2)]
    for p in params:
        p.grad = torch.rand_like(p)
    opt = Adagrad(params, **options(kwargs))
    for _ in range(3):
        opt.step()
    return opt, params


@pytest.mark.parametrize("kwargs", INPUTS)
def test_load_nontensor_step(kwargs):
    opt, params = _stepped_three_times(kwargs)
    state_dict = copy.deepcopy(opt.state_dict())
    for p_state in state_dict["state"].values():
        p_state["step"] = p_state["step"].item()
    opt.load_state_dict(state_dict)
    opt.step()
    assert float(opt.state[params[0]]["step"]) == 4


@pytest.mark.parametrize("kwargs", INPUTS)
def test_deepcopy_copies_all_public_attrs(kwargs):
    opt, _ = _stepped_three_times(kwargs)

    def public(obj):
        return {k for k in obj.__dict__ if not k.startswith("_")}

    assert public(opt) == public(copy.deepcopy(opt))


@pytest.mark.parametrize("kwargs", INPUTS)
def test_fused_matches_forloop(kwargs):
    """torch's fused-vs-forloop parity test (a model plus a 0-d parameter, a step where
    every gradient is None), here this optimizer against torch's fused kernel: the
    parameters and the state are identical."""
    results = []
    for cls, extra in ((Adagrad, {}), (torch.optim.Adagrad, {"fused": True})):
        x = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=torch.float64).reshape(3, 2)
        torch.manual_seed(1)
        model = torch.nn.Sequential(
            torch.nn.Linear(2, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 1), torch.nn.Sigmoid()
        ).to(torch.float64)
        empty = torch.zeros((), dtype=torch.float64, requires_grad=True)  # a 0-d parameter
        empty.grad = torch.rand_like(empty)
        params = list(model.parameters()) + [empty]
        flags = {k: v for k, v in options(kwargs).items() if k not in ("foreach", "fused")}
        opt = cls(params, **flags, **extra)
        for i in range(7):
            opt.zero_grad()
            if i != 3:
                model(x).sum().backward()
            opt.step()
        results.append((params, opt))
    (mine, opt_mine), (theirs, opt_theirs) = results
    for p, q in zip(mine, theirs):
        assert torch.equal(p, q)
        for k in ("step", "sum"):
            assert torch.equal(opt_mine.state[p][k], opt_theirs.state[q][k])


def sparse_rosenbrock_closure(p, opt, sparse, w):
    """Rosenbrock's gradient on one coordinate, as two uncoalesced copies of one id."""
    opt.zero_grad()
    loss = rosenbrock(p)
    loss.backward()
    grad = p.grad.detach()
    if w:
        i, v = torch.tensor([[0, 0]]), torch.stack([grad[0] / 4.0, grad[0] - grad[0] / 4.0])
    else:
        i, v = torch.tensor([[1, 1]]), torch.stack([grad[1] - grad[1] / 4.0, grad[1] / 4.0])
    x = torch.sparse_coo_tensor(i, v, (2,))
    p.grad = x if sparse else x.to_dense()
    return loss


def test_rosenbrock_sparse_matches_dense():
    """torch's sparse test: cyclic coordinate descent with uncoalesced sparse gradients,
    and a twin that takes the same gradients densely (torch's sparse and fused orders
    of operations differ by an ulp here and there)."""
    params = torch.tensor([1.5, 1.5], requires_grad=True)
    params_c = params.detach().clone().requires_grad_()
    opt, opt_c = Adagrad([params], lr=0.1), Adagrad([params_c], lr=0.1)
    for k in range(2000):
        opt.step(functools.partial(sparse_rosenbrock_closure, params, opt, True, k % 2))
        opt_c.step(functools.partial(sparse_rosenbrock_closure, params_c, opt_c, False, k % 2))
        torch.testing.assert_close(params, params_c)
    assert params.detach().dist(torch.tensor([1.0, 1.0])) <= torch.tensor([0.5, 0.5]).norm()


def test_rosenbrock_sparse_with_schedulers():
    """torch's sparse metadata for Adagrad: lr 0.1 with StepLR and ReduceLROnPlateau."""
    params = torch.tensor([1.5, 1.5], requires_grad=True)
    opt = Adagrad([params], lr=0.1, weight_decay=0, lr_decay=0)
    step_lr = torch.optim.lr_scheduler.StepLR(opt, gamma=1 - 1e-5, step_size=500)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, threshold=1e-4)
    solution = torch.tensor([1.0, 1.0])
    initial_dist = params.detach().dist(solution)
    for k in range(2000):
        opt.step(functools.partial(sparse_rosenbrock_closure, params, opt, True, k % 2))
        step_lr.step()
        plateau.step(rosenbrock(params).detach())
    assert params.detach().dist(solution) <= initial_dist
