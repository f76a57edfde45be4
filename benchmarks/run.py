"""Side-by-side benchmark of adagrad_native against numpy, torch, optax, Keras and the roofline.

Usage, from the repository root:
    python -m benchmarks.run                 # full suite, writes benchmarks/RESULTS.md + .png
    python -m benchmarks.run --quick         # smoke run (< 3 min), reduced sizes, temp output
    python -m benchmarks.run --workloads 1,3 --repeats 20
    python -m benchmarks.run --impls native,torch-fused,roofline

Workloads: 1 one 16M fp32 tensor; 2 BERT-base-like list; 3 4-tensor MLP; 4 W2 with
clipnorm + weight decay + EMA; 5 W2 with gradient accumulation (micro / update steps);
6 float16 / bfloat16 parameters; 7 thread scaling (1 vs 2 threads); 8 2 threads beside a
busy process (contention).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")  # before anything imports keras

from benchmarks import memory, peers, report  # noqa: E402
from benchmarks.contention import contention_table  # noqa: E402
from benchmarks.timing import OtherLoad, Stat, Timed, run_group, wait_for_idle  # noqa: E402
from benchmarks.workloads import (  # noqa: E402
    Roofline,
    Workload,
    all_workloads,
    make_data,
    plain_roofline,
    thread_sizes,
)

HERE = Path(__file__).resolve().parent
TORCH_FUSED = "torch fused=True"


def _roofline_name(rf: Roofline, dtype: str = "float32") -> str:
    return f"roofline probe ({rf.label}, {rf.bytes_per_element(dtype)} B/elem)"


def _groups(
    entries: list[tuple[str, Callable[[], Timed], float]], budget: float
) -> list[list[tuple[str, Callable[[], Timed], float]]]:
    """Greedy grouping in order so that each group's arrays fit in `budget` bytes."""
    groups: list[list[tuple[str, Callable[[], Timed], float]]] = [[]]
    used = 0.0
    for entry in entries:
        if groups[-1] and used + entry[2] > budget:
            groups.append([])
            used = 0.0
        groups[-1].append(entry)
        used += entry[2]
    return groups


def run_workload(
    wl: Workload, impls: list[peers.Impl], args: argparse.Namespace, with_roofline: bool
) -> report.Table:
    """Times every available implementation on `wl` and returns its table."""
    print(f"\n== {wl.title}: {len(wl.shapes)} tensors, {wl.elements / 1e6:.2f} M elements")
    notes: list[str] = []
    data = make_data(wl)
    big = wl.elements > peers.SLOW_ELEMENTS
    entries: list[tuple[str, Callable[[], Timed], float]] = []
    if with_roofline:
        for rf in wl.rooflines:

            def prepare_probe(rf: Roofline = rf) -> Timed:
                return Timed(peers.roofline_step(rf, wl, data), args.warmup, args.repeats)

            # streams the native optimizer's buffers: no arrays of its own
            entries.append((_roofline_name(rf, wl.dtype), prepare_probe, 0.0))
    chosen = list(impls)
    if wl.dtype != "float32" and any(i.key == "native" for i in impls):
        chosen.insert(1, peers.NATIVE_ACC32)
    for impl in chosen:
        if reason := impl.unavailable(wl):
            notes.append(f"{impl.label}: not run ({reason}).")
            continue
        warmup, repeats = args.warmup, args.repeats
        if impl.slow and big and wl.dtype != "float32":
            notes.append(
                f"{impl.label}: not run (numpy {wl.dtype} arithmetic takes tens of seconds "
                f"per step on {wl.elements / 1e6:.0f} M elements)."
            )
            continue
        if impl.slow and big:
            warmup, repeats = 0, min(2, args.repeats)
            notes.append(
                f"{impl.label}: slow on {wl.elements / 1e6:.0f} M elements, "
                "so 1 warm-up + 2 timed steps only."
            )

        def prepare(impl: peers.Impl = impl, warmup: int = warmup, repeats: int = repeats) -> Timed:
            return Timed(impl.prepare(wl, data), warmup, repeats, cycle=wl.accumulation_steps)

        entries.append((impl.label, prepare, impl.memory_bytes(wl)))

    results: dict[str, dict[str, Stat]] = {}
    noise: list[float] = []
    for group in _groups(entries, args.mem_budget_gb * 2**30):
        steps: dict[str, Timed] = {}
        for name, prepare, _ in group:
            try:
                t0 = time.perf_counter()
                timed = prepare()
                timed.call()  # first call: jit compile / lazy build; counts as a warm-up
                print(f"   prepared {name} (+ first call) in {time.perf_counter() - t0:.1f} s")
                steps[name] = timed
            except Exception as e:  # a peer that breaks is reported, not fatal
                notes.append(f"{name}: failed ({type(e).__name__}: {str(e)[:200]}).")
        noise.append(_time_quietly(steps, args))
        for name, timed in steps.items():
            results[name] = {ph: Stat.of(s) for ph, s in timed.samples.items()}
        del steps
        gc.collect()
    notes.append(_noise_note(noise))
    return _table(wl, chosen, results, notes, with_roofline)


def _time_quietly(steps: dict[str, Timed], args: argparse.Namespace) -> float:
    """Times the group; retries (up to --retries) while other processes were busy.

    Keeps the samples of the quietest attempt and returns the other processes' load
    (cores) of that attempt.
    """
    kept: tuple[float, dict[str, dict[str, list[float]]]] | None = None
    for attempt in range(1 + args.retries):
        settle = _settle(args)
        other = OtherLoad()
        for timed in steps.values():
            timed.samples = {}
        run_group(steps, min_sample_s=args.min_sample_ms / 1e3)
        load = max(settle, other.cores() or 0.0)
        if kept is None or load < kept[0]:
            kept = (load, {name: timed.samples for name, timed in steps.items()})
        if load <= args.max_noise:
            break
        if attempt < args.retries:
            print(f"   other processes kept {load:.2f} cores busy: timing the group again")
    assert kept is not None
    for name, timed in steps.items():
        timed.samples = kept[1][name]
    return kept[0]


def _settle(args: argparse.Namespace) -> float:
    """Waits up to --idle-wait s for other processes to go quiet; returns their load."""
    load = wait_for_idle(args.idle_wait) if args.idle_wait > 0 else None
    return load or 0.0


def _noise_note(loads: list[float]) -> str:
    worst = max(loads, default=0.0)
    return (
        f"noise: other processes kept up to {worst:.2f} of {os.cpu_count()} cores busy "
        "while this table was timed (0 = quiet machine; a busy core slows 2-thread steps; "
        "noisy groups are timed again and the quietest attempt is kept)."
    )


def _table(
    wl: Workload,
    impls: list[peers.Impl],
    results: dict[str, dict[str, Stat]],
    notes: list[str],
    with_roofline: bool,
) -> report.Table:
    def med(label: str, phase: str = "step") -> float | None:
        stat = results.get(label, {}).get(phase)
        return stat.median if stat else None

    rf_times = [med(_roofline_name(rf, wl.dtype)) for rf in wl.rooflines]
    if not with_roofline:
        reason = peers.probe_unavailable() or "not selected"
        notes.append(f"roofline probe: not run ({reason}).")
    small_extra: dict[str, float | None] = {}
    if wl.micro_seconds:  # workload 3 also compares with the numpy implementations
        for impl in peers.IMPLS:
            if impl.key in ("oracle", "numpy-loop"):
                small_extra[impl.label.split(" (")[0]] = med(impl.label)
    rows: list[report.Row] = []
    labels = [i.label for i in impls] + [_roofline_name(rf, wl.dtype) for rf in wl.rooflines]
    for label in labels:
        for phase, stat in results.get(label, {}).items():
            rf_index = 1 if (label == peers.NATIVE_ACC32.label or phase == "update") else 0
            if label.startswith("roofline"):
                rf_s: float | None = stat.median
            else:
                rf_s = rf_times[rf_index] if rf_index < len(rf_times) else None
            name = label if phase == "step" else f"{label} — {phase}"
            torch_s = med(TORCH_FUSED, phase)
            row = report.Row(name, stat, wl.elements, rf_s, torch_s, dict(small_extra))
            row.impl, row.phase = label, phase
            rows.append(row)
    if wl.accumulation_steps > 1:
        notes.append(
            "micro-steps compare with the micro-step roofline, update steps with the "
            "update-step roofline (g + gacc reset + v + acc)."
        )
    if wl.dtype != "float32":
        notes.append(
            "the accumulator_dtype=float32 row compares with the 'acc fp32' roofline "
            "(one probe pass over the 2-byte g and v and that optimizer's 4-byte accumulator)."
        )
    if len(wl.rooflines) == 1 and len(wl.rooflines[0].passes) > 1:
        notes.append("roofline = the probe's two passes run back to back (norm pass + update).")
    if with_roofline:
        notes.append(
            "the roofline probe streams adagrad_native's own buffers of this workload (the "
            "shared parameters and gradients, and that optimizer's state), so it moves the "
            "step's bytes on the same pages."
        )
    return report.step_table(wl.key, wl.title, rows, wl.micro_seconds, notes, _short(wl))


def _short(wl: Workload) -> str:
    return {
        "1": "W1 16M fp32",
        "2": "W2 BERT fp32",
        "3": "W3 MLP",
        "4": "W4 clip+wd+EMA",
        "5": "W5 accum",
    }.get(wl.key, wl.key.replace("6-", "W6 W").replace("-", " "))


def thread_table(args: argparse.Namespace, with_roofline: bool) -> report.Table:
    """Workload 7: this package (and the probe, torch fused) at 1 and 2 threads."""
    import adagrad_native as an

    default = an.get_num_threads()
    cells: list[list[str]] = []
    speedups: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    noise: list[float] = []
    torch_mod = None
    if "torch-fused" in args.impl_keys and not peers._installed("torch"):
        import torch as torch_mod
    for n in thread_sizes(args.quick):
        wl = Workload("7", f"{n} elements", ((n,),), rooflines=(plain_roofline(),))
        print(f"\n== W7: thread scaling, one fp32 tensor of {n} elements", flush=True)
        data = make_data(wl)
        steps: dict[tuple[str, int], Timed] = {}
        for threads in (1, 2):

            def set_an(t: int = threads) -> None:
                an.set_num_threads(t)

            steps[("adagrad_native", threads)] = Timed(
                peers.IMPLS[0].prepare(wl, data), args.warmup, args.repeats, before=set_an
            )
            if with_roofline:
                steps[(_roofline_name(wl.rooflines[0]), threads)] = Timed(
                    peers.roofline_step(wl.rooflines[0], wl, data),
                    args.warmup,
                    args.repeats,
                    before=set_an,
                )
            if torch_mod is not None:

                def set_torch(t: int = threads, mod: object = torch_mod) -> None:
                    mod.set_num_threads(t)  # type: ignore[attr-defined]

                steps[(TORCH_FUSED, threads)] = Timed(
                    peers.IMPLS[1].prepare(wl, data), args.warmup, args.repeats, before=set_torch
                )
        named = {f"{k[0]} @{k[1]}": v for k, v in steps.items()}
        noise.append(_time_quietly(named, args))
        size = f"{n / 2**20:g} Mi" if n >= 2**20 else f"{n // 1024} Ki"
        for label in dict.fromkeys(k[0] for k in steps):
            t1 = Stat.of(steps[(label, 1)].samples["step"]).median
            t2 = Stat.of(steps[(label, 2)].samples["step"]).median
            cells.append(
                [
                    size,
                    label,
                    f"{t1 * 1e3:.3f}",
                    f"{t2 * 1e3:.3f}",
                    f"{t1 / t2:.2f}",
                    f"{n / t2 / 1e6:.0f}",
                ]
            )
            speedups.setdefault(size, {})[label] = t1 / t2
        an.set_num_threads(default)
        if torch_mod is not None:
            torch_mod.set_num_threads(default)
        del steps, named, data
        gc.collect()
    notes.append(_noise_note(noise))
    notes.append(
        "1- and 2-thread runs are interleaved; the thread count is set before every "
        "turn (`an.set_num_threads`, `torch.set_num_threads`)."
    )
    header = [
        "elements",
        "implementation",
        "1 thread ms/step",
        "2 threads ms/step",
        "speed-up",
        "M elem/s at 2 threads",
    ]
    table = report.Table(
        "W7 threads", "W7: thread scaling, one float32 tensor", header, cells, notes
    )
    table.speedups = speedups
    return table


def memory_section(args: argparse.Namespace) -> str:
    """Peak RSS growth over 50 steps, measured in child processes."""
    keys = ["1", "2", "4"]
    lines = [
        "## Per-step memory (this package)",
        "",
        "Peak RSS (VmHWM) growth over 50 steps after build + 3 warm-up steps, each "
        "workload in a fresh process (peak reset via /proc/self/clear_refs).",
        "",
        "| workload | M elements | param + state MiB | RSS before MiB | peak growth KiB |",
        "|---|--:|--:|--:|--:|",
    ]
    for key in keys:
        print(f"\n== memory: workload {key}", flush=True)
        res = memory.measure_in_child(key, 50, args.quick)
        if "error" in res:
            lines.append(f"| {key} | — | — | — | failed: {res['error']} |")
            continue
        slots = 3 if key == "4" else 2  # param + acc (+ EMA average)
        lines.append(
            f"| {res['title']} | {res['elements'] / 1e6:.1f} | "
            f"{res['elements'] * 4 * slots / 2**20:.0f} | "
            f"{res['rss_before_kib'] / 1024:.0f} | {res['growth_kib']} |"
        )
        if not res["peak_reset"]:
            lines.append("")
            lines.append("(peak reset unavailable: growth is relative to the earlier peak)")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: reduced sizes, 3 repeats, output to a temp dir",
    )
    ap.add_argument("--workloads", default="1,2,3,4,5,6,7,8", help="comma list of 1..8")
    ap.add_argument(
        "--impls",
        default="all",
        help="comma list of: " + ",".join(i.key for i in peers.IMPLS) + ",roofline",
    )
    ap.add_argument("--repeats", type=int, default=None, help="timed samples (default 10/3)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 2/1)")
    ap.add_argument(
        "--min-sample-ms",
        type=float,
        default=20.0,
        help="fast steps are looped so that one sample lasts at least this long",
    )
    ap.add_argument(
        "--mem-budget-gb",
        type=float,
        default=6.0,
        help="implementations whose arrays fit together are interleaved",
    )
    ap.add_argument(
        "--idle-wait",
        type=float,
        default=None,
        help="before each timing group, wait up to this many seconds for other processes to "
        "go quiet (default 30, 0 with --quick)",
    )
    ap.add_argument(
        "--retries",
        type=int,
        default=None,
        help="time a group again (up to this many times) when other processes kept more than "
        "--max-noise cores busy; the quietest attempt is kept (default 2, 0 with --quick)",
    )
    ap.add_argument("--max-noise", type=float, default=0.3, help="cores; see --retries")
    ap.add_argument("--no-memory", action="store_true", help="skip the RSS measurement")
    ap.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="where RESULTS.md and results.png go (default: benchmarks/, or a "
        "temp dir with --quick)",
    )
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 10)
    if args.idle_wait is None:
        args.idle_wait = 0.0 if args.quick else 60.0
    if args.retries is None:
        args.retries = 0 if args.quick else 2
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if args.out_dir is None:
        args.out_dir = (
            Path(tempfile.gettempdir()) / "adagrad_native_bench_quick" if args.quick else HERE
        )
    keys = [i.key for i in peers.IMPLS] + ["roofline"]
    args.impl_keys = keys if args.impls == "all" else args.impls.split(",")
    unknown = set(args.impl_keys) - set(keys)
    if unknown:
        ap.error(f"unknown --impls {sorted(unknown)}; choose from {keys}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    command = " ".join(["python -m benchmarks.run", *(sys.argv[1:] if argv is None else argv)])
    impls = [i for i in peers.IMPLS if i.key in args.impl_keys]
    probe_reason = peers.probe_unavailable()
    with_roofline = "roofline" in args.impl_keys and probe_reason is None
    if probe_reason:
        print(f"note: roofline probe unavailable: {probe_reason}")
    workloads = all_workloads(args.quick)
    tables: list[report.Table] = []
    for key in args.workloads.split(","):
        key = key.strip()
        if key == "7":
            tables.append(thread_table(args, with_roofline))
        elif key == "8":
            tables.append(contention_table(args))
        elif key in workloads:
            tables += [run_workload(wl, impls, args, with_roofline) for wl in workloads[key]]
        else:
            sys.exit(f"unknown workload {key!r}; choose from 1..8")
        report.print_tables(tables[-1:])
    mem = "" if args.no_memory else memory_section(args)
    print(mem)
    elapsed = time.perf_counter() - start
    import adagrad_native as an

    extra = [
        f"threads: adagrad_native {an.get_num_threads()}, torch set to the same, jax/XLA "
        "default (all cores)",
        "method: per workload, implementations are timed interleaved (round-robin, rotating "
        f"order) in groups whose arrays fit in {args.mem_budget_gb:g} GB; {args.warmup} "
        f"warm-up steps, then {args.repeats} rounds; in a round a fast step runs repeatedly "
        f"for ≥ {args.min_sample_ms:g} ms; every step is timed on its own; tables give the "
        "median and the best step time.",
        "peers configured as Keras 3 Adagrad (lr 0.01, initial accumulator 0.1, epsilon "
        "1e-7): torch puts eps outside the sqrt (closest equivalent, eps=1e-7); optax puts "
        "it inside like Keras; jitted jax peers donate params and state buffers and block "
        "until ready; numpy/torch gradients are shared, not copied.",
        "the machine is shared and noisy: only ratios within one run mean anything.",
    ]
    header = report.machine_header(command, elapsed, extra)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    md, png = args.out_dir / "RESULTS.md", args.out_dir / "results.png"
    report.write_markdown(md, header, tables, mem)
    report.write_chart(png, tables, f"adagrad_native benchmarks ({command})")
    print(f"wrote {md} and {png} in {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
