"""Markdown tables, the machine header and the PNG chart of a benchmark run."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.timing import Stat


@dataclass
class Row:
    """One implementation (and phase) of one workload."""

    label: str
    stat: Stat  # per-step seconds: median, best, number of samples
    elements: int
    roofline_s: float | None = None  # median of the roofline probe this row compares with
    torch_s: float | None = None  # median of torch fused (same phase)
    extra: dict[str, float | None] = field(default_factory=dict)  # extra column -> seconds
    impl: str = ""  # implementation label without the phase (chart legend)
    phase: str = "step"  # "step", or "micro" / "update" under gradient accumulation

    @property
    def seconds(self) -> float:
        return self.stat.median

    @property
    def fraction(self) -> float | None:
        return self.roofline_s / self.seconds if self.roofline_s else None


@dataclass
class Table:
    """A markdown table plus what the chart needs from it."""

    key: str
    title: str
    header: list[str]
    cells: list[list[str]]
    notes: list[str] = field(default_factory=list)
    # chart group ("W1 16M fp32", "W5 accum micro", ...) -> implementation -> fraction
    fractions: dict[str, dict[str, float]] = field(default_factory=dict)
    micro_seconds: dict[str, float] = field(default_factory=dict)  # label -> µs (small model)
    speedups: dict[str, dict[str, float]] = field(default_factory=dict)  # size -> label -> ×

    def markdown(self) -> str:
        lines = [
            f"### {self.title}",
            "",
            "| " + " | ".join(self.header) + " |",
            "|" + "|".join("---" if i == 0 else "--:" for i in range(len(self.header))) + "|",
        ]
        lines += ["| " + " | ".join(c) + " |" for c in self.cells]
        lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def _fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _fmt_time(seconds: float, micro: bool) -> str:
    return f"{seconds * 1e6:.1f}" if micro else f"{seconds * 1e3:.2f}"


def step_table(
    key: str,
    title: str,
    rows: list[Row],
    micro: bool,
    notes: list[str],
    chart_label: str | None = None,
) -> Table:
    """The standard per-workload table: time, throughput, roofline fraction, vs torch."""
    extras = list(dict.fromkeys(k for r in rows for k in r.extra))
    unit = "µs" if micro else "ms"
    header = [
        "implementation",
        f"median {unit}/step",
        f"best {unit}/step",
        "M elem/s",
        "fraction of roofline",
        "speed vs torch fused (×)",
    ]
    header += [f"speed vs {e} (×)" for e in extras] + ["timed steps"]
    cells, fractions, micros = [], {}, {}
    for r in rows:
        vs_torch = r.torch_s / r.seconds if r.torch_s else None
        cell = [
            r.label,
            _fmt_time(r.seconds, micro),
            _fmt_time(r.stat.best, micro),
            f"{r.elements / r.seconds / 1e6:.0f}",
            _fmt(r.fraction),
            _fmt(vs_torch),
        ]
        cell += [_fmt(r.extra[e] / r.seconds if r.extra.get(e) else None, 1) for e in extras]
        cells.append(cell + [str(r.stat.n)])
        if r.fraction is not None and not r.label.startswith("roofline"):
            group = chart_label or key
            group += "" if r.phase == "step" else f" {r.phase}"
            fractions.setdefault(group, {})[r.impl or r.label] = r.fraction
        if micro:
            micros[r.label] = r.seconds * 1e6
    notes = [
        "fraction of roofline = roofline probe time / implementation time (medians; 1.0 = "
        "moves the bytes as fast as the probe); speed vs X = X's median / this median "
        "(> 1: faster than X); M elem/s from the median.",
        *notes,
    ]
    return Table(chart_label or key, title, header, cells, notes, fractions, micros)


def machine_header(command: str, elapsed_s: float, extra: list[str]) -> str:
    """Markdown describing the machine, the build and the peers' versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        platform.processor() or "unknown",
    )
    flags = next(
        (ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")), []
    )
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f") if f in flags]
    l3 = Path("/sys/devices/system/cpu/cpu0/cache/index3/size")
    cache = f"; L3 {l3.read_text().strip()}" if l3.exists() else ""
    mem = "unknown"
    if Path("/proc/meminfo").exists():
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 2**20:.1f} GiB"
    lines = [
        "# adagrad_native benchmark results",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- command: `{command}` (total {elapsed_s / 60:.1f} min)",
        f"- CPU: {model}; {os.cpu_count()} logical cores; SIMD flags: {', '.join(simd)}"
        f"{cache}; memory {mem}",
        f"- Python {platform.python_version()} on {platform.system()} {platform.release()}",
        f"- adagrad_native build_info: `{_build_info()}`",
        f"- versions: {', '.join(f'{p} {_version(p)}' for p in _PACKAGES)}",
        f"- env: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'unset')}",
        *[f"- {e}" for e in extra],
        "",
    ]
    return "\n".join(lines)


_PACKAGES = ("adagrad_native", "numpy", "torch", "jax", "jaxlib", "optax", "keras", "ml_dtypes")


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def _build_info() -> Any:
    try:
        import adagrad_native as an

        return an.build_info()
    except ImportError as e:  # pragma: no cover - reported, not fatal
        return f"not importable: {e}"


# Sections of RESULTS.md that other scripts write (benchmarks.sparse, benchmarks.distributed,
# benchmarks.torch_drop_in); a run of the suite keeps them.
OTHER_SECTIONS = ("## Row-sparse", "## Distributed", "## torch drop-in")


def _sections(text: str) -> list[str]:
    """The text split before every '## ' heading (the first part is what precedes them)."""
    parts, current = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("## ") and current:
            parts.append("".join(current))
            current = []
        current.append(line)
    parts.append("".join(current))
    return parts


def write_markdown(path: Path, header: str, tables: list[Table], tail: str) -> None:
    """Writes the suite's results, keeping the sections other scripts wrote there."""
    old = path.read_text() if path.exists() else ""
    kept = [p for p in _sections(old) if p.startswith(OTHER_SECTIONS)]
    body = "\n".join(t.markdown() for t in tables)
    path.write_text(header + "\n" + body + "\n" + tail + "".join("\n" + p for p in kept))


def replace_section(path: Path, heading: str, section: str) -> None:
    """Puts `section` (starting with `heading`) in place of the section of that heading."""
    parts = _sections(path.read_text()) if path.exists() else [""]
    for i, part in enumerate(parts):
        if part.startswith(heading):
            # A section followed by another keeps the blank line between them.
            parts[i] = section.rstrip("\n") + "\n\n" if i + 1 < len(parts) else section
            break
    else:
        parts.append("\n" + section)
    path.write_text("".join(parts))


def write_chart(path: Path, tables: list[Table], title: str) -> None:
    """Grouped bars of the fraction of roofline per workload, the MLP's µs, thread scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    big = [t for t in tables if t.fractions and not t.micro_seconds]
    small = [t for t in tables if t.micro_seconds]
    threads = [t for t in tables if t.speedups]
    panels = [p for p in (big, small, threads) if p]
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 1, figsize=(13, 4.2 * len(panels)), squeeze=False)
    ax_iter = iter(axes[:, 0])
    if big:
        groups = {g: f for t in big for g, f in t.fractions.items()}
        labels = list(dict.fromkeys(lbl for f in groups.values() for lbl in f))
        _grouped(
            next(ax_iter),
            list(groups),
            labels,
            [[f.get(lbl) for f in groups.values()] for lbl in labels],
            "fraction of memory roofline (higher is better)",
            line=1.0,
        )
    if small:
        labels = list(dict.fromkeys(lbl for t in small for lbl in t.micro_seconds))
        _grouped(
            next(ax_iter),
            [t.key for t in small],
            labels,
            [[t.micro_seconds.get(lbl) for t in small] for lbl in labels],
            "µs per step, small model (log, lower is better)",
            log=True,
        )
    if threads:
        sizes = [size for t in threads for size in t.speedups]
        labels = list(dict.fromkeys(lbl for t in threads for s in t.speedups.values() for lbl in s))
        by_size = {size: s for t in threads for size, s in t.speedups.items()}
        _grouped(
            next(ax_iter),
            [f"W7 threads, {size}" for size in sizes],
            labels,
            [[by_size[size].get(lbl) for size in sizes] for lbl in labels],
            "speed-up 1 → 2 threads",
            line=2.0,
        )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


_COLORS: dict[str, Any] = {}


def _color(label: str) -> Any:
    """One colour per implementation, the same in every panel (20 distinct colours)."""
    if label not in _COLORS:
        import matplotlib

        palette = matplotlib.colormaps["tab20"].colors
        _COLORS[label] = palette[(2 * len(_COLORS)) % 20 + (len(_COLORS) // 10) % 2]
    return _COLORS[label]


def _grouped(
    ax: Any,
    groups: list[str],
    labels: list[str],
    values: list[list[float | None]],
    ylabel: str,
    log: bool = False,
    line: float | None = None,
) -> None:
    width = 0.8 / max(1, len(labels))
    for i, (lbl, vals) in enumerate(zip(labels, values, strict=True)):
        xs = [g + (i - (len(labels) - 1) / 2) * width for g in range(len(groups))]
        ys = [v if v is not None else 0.0 for v in vals]
        ax.bar(xs, ys, width, label=lbl, color=_color(lbl))
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=9)
    if log:
        ax.set_yscale("log")
    else:  # head room for the legend
        top = max([v for vals in values for v in vals if v is not None] + [line or 0.0])
        ax.set_ylim(0, 1.45 * top)
    if line is not None:
        ax.axhline(line, color="k", lw=0.8, ls="--")
    ax.legend(fontsize=7, ncol=3)
    ax.grid(axis="y", alpha=0.3)


def print_tables(tables: list[Table]) -> None:
    for t in tables:
        print(t.markdown(), flush=True)
    sys.stdout.flush()
