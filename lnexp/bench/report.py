"""Runs benchmark sections and writes their results as JSON and markdown."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from lnexp.bench.machine import busy_warnings, machine_info
from lnexp.bench.sections import SECTIONS, BenchConfig
from lnexp.errors import UserError


def run_benchmark(
    section_names: list[str],
    config: BenchConfig,
    *,
    out: str | Path | None = None,
    markdown: str | Path | None = None,
) -> dict[str, Any]:
    """Runs the sections; returns (and writes to ``out``/``markdown``) the results.

    Raises:
        UserError: For an unknown section name.
    """
    if section_names == ["all"]:
        section_names = list(SECTIONS)
    unknown = [name for name in section_names if name not in SECTIONS]
    if unknown or not section_names:
        raise UserError(
            f"Unknown sections {unknown}: --sections takes a comma-separated list of "
            f"{list(SECTIONS)} (or 'all')."
        )
    for name in section_names:  # Every section's settings checked before the first one runs.
        check = getattr(SECTIONS[name], "check", None)
        if check is not None:
            check(config)
    machine = machine_info()
    results: dict[str, Any] = {
        "machine": machine,
        "config": dataclasses.asdict(config),
        "warnings": busy_warnings(machine),
        "sections": {},
    }
    for name in section_names:
        results["sections"][name] = SECTIONS[name].run(config)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    if markdown is not None:
        markdown = Path(markdown)
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(to_markdown(results))
    return results


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "—"
    suffix = "x" if spec.endswith("x") else ""
    return f"{value:{spec.removesuffix('x')}}{suffix}"


def _limits_lines(lim: dict[str, Any]) -> list[str]:
    matmul = ", ".join(
        f"{r['library']} {'x'.join(map(str, r['shape']))} {r['flops_per_s'] / 1e9:.0f}"
        for r in lim["matmul"]
    )
    bandwidth = ", ".join(
        f"{r['array_mb']:.1f} MiB arrays{'' if r['donated'] else ' (fresh output)'} "
        f"{r['bytes_per_s'] / 1e9:.1f}"
        for r in lim["bandwidth"]
    )
    return [
        "",
        f"Machine limits (measured): float32 matmul GFLOP/s (m x k x n): {matmul}; best "
        f"{lim['matmul_flops_per_s'] / 1e9:.0f}. Triad bandwidth GB/s: {bandwidth}; memory "
        f"bandwidth (largest arrays) {lim['bandwidth_bytes_per_s'] / 1e9:.1f}, from the cache "
        f"{lim['cache_bandwidth_bytes_per_s'] / 1e9:.1f}.",
    ]


def to_markdown(results: dict[str, Any]) -> str:
    """One table per section, preceded by the machine and the section's setup, then goals."""
    m = results["machine"]
    load = m["load_average"][0] if m["load_average"] else None
    lines = [
        f"Machine: {m['cpu']}, {m['cpu_count']} cores (load average at start "
        f"{_fmt(load, '.2f')}); jax {m['jax']}, flax {m['flax']}, "
        f"torch {m['torch'] or 'not installed'}; {m['date']}.",
    ]
    for warning in results.get("warnings", []):
        lines += ["", f"**Warning:** {warning}"]
    for name, section in results["sections"].items():
        columns = SECTIONS[name].COLUMNS
        header = ["row"] + [title for _, title, _ in columns]
        lines += ["", f"### {name}", "", section.get("setup", "")]
        if "limits" in section:
            lines += _limits_lines(section["limits"])
        lines += ["", "| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for row in section["rows"]:
            note = row.get("skipped") or row.get("error")
            if note:
                cells = [row["name"]] + ["—"] * len(columns)
                cells[-1] = f"— ({note})"
            else:
                cells = [row["name"]] + [_fmt(row.get(key), spec) for key, _, spec in columns]
            lines.append("| " + " | ".join(cells) + " |")
        if section["goals"]:
            lines += [""] + [f"- {goal}" for goal in section["goals"]]
    return "\n".join(lines) + "\n"
