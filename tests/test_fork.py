"""A process forked while another thread steps, loads or saves gets a usable optimizer
holding the state of whole steps (docs/architecture.md: a fork waits for the step in
flight, and the child gets new locks and a new thread team).

Each case runs in a fresh interpreter (other libraries a test session imports warn
or misbehave at fork on their own) and forks it at random points of many steps.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="fork() is POSIX's")

FORKS = 20

SCRIPT = r"""
import io, os, sys, threading, time, traceback, warnings
import numpy as np
import adagrad_native as an

warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+: fork with threads
mode, seed = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(seed)
an.set_num_threads(2)
N = 1 << 21  # a step of a millisecond or two: forks land inside steps
param = np.zeros(N, np.float32)
inner = an.Adagrad(0.01, use_ema=mode == "apply-general")  # EMA: the general path
lso = mode == "apply-loss-scale"
opt = an.LossScaleOptimizer(inner, 1.0, dynamic_growth_steps=10**9) if lso else inner
grad = np.full(N, 0.5, np.float32)
opt.apply([grad], [param])
states = [opt.state_dict()]
opt.apply([grad], [param])
states.append(opt.state_dict())
stop = threading.Event()


def work():
    i = 0
    while not stop.is_set():
        i += 1
        if mode.startswith("apply"):
            opt.apply([grad], [param])
        elif mode == "load":
            opt.load_state_dict(states[i % 2])
        elif mode == "save":
            an.save_state(opt, io.BytesIO())
        elif mode == "new-variables":
            an.Variable(np.ones(3))  # takes the lock of variable names


def accumulator_after(steps):
    acc = np.float32(0.1)
    for _ in range(steps):
        acc = np.float32(acc + np.float32(0.25))
    return acc


def check_whole_step():
    steps = int(opt.iterations)
    acc = inner.variables[2 if not inner.use_ema else 3].value
    assert acc[0] == acc[-1] == accumulator_after(steps), f"half a step at {steps}"
    if lso:
        assert int(opt.step_counter) == steps, "the loss scale's counter fell behind"
    return steps


def child():
    steps = check_whole_step()
    opt.apply([grad], [param])  # the locks and the thread team work here
    assert int(opt.iterations) == steps + 1
    check_whole_step()
    opt.load_state_dict(opt.state_dict())
    an.save_state(opt, io.BytesIO())
    an.Variable(np.ones(2))


worker = threading.Thread(target=work)
worker.start()
hung = failed = 0
for _ in range(int(sys.argv[3])):
    time.sleep(rng.uniform(0, 0.004))
    pid = os.fork()
    if pid == 0:
        try:
            child()
            code = 0
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    deadline = time.monotonic() + 120
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        hung += 1
    elif os.waitstatus_to_exitcode(done[1]) != 0:
        failed += 1
stop.set()
worker.join()
print(f"forks: {hung} hung, {failed} failed, steps {int(opt.iterations)}")
sys.exit(1 if hung or failed else 0)
"""


@pytest.mark.parametrize(
    "mode", ["apply", "apply-general", "apply-loss-scale", "load", "save", "new-variables"]
)
def test_a_child_forked_at_random_points_gets_whole_steps_and_steps_on(mode, tmp_path):
    script = tmp_path / "fork_while_busy.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), mode, "7", str(FORKS)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "0 hung, 0 failed" in done.stdout
