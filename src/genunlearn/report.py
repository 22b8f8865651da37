"""``genunlearn report``: regenerate every committed table and quoted number from committed data.

Three kinds of outputs are regenerated (and, with ``--check``, compared with what is committed):

1. **Derived files**, each from the data file beside it, with the function that wrote it in the first place:
   ``table.md`` and ``table.csv`` from a bench's ``results.json`` (:func:`genunlearn.experiments.bench.render_table`,
   ``write_csv``); ``summary.md`` and ``summary.csv`` from a sweep's ``cells.jsonl``
   (:mod:`genunlearn.experiments.sweep_summary`); ``independent_monitor.md`` from ``independent_monitor.json``;
   ``evaluation.md`` from ``evaluation.json``; ``audit.md`` from ``audit.json``; a CelebA original-model
   report's ``report.md`` from its ``summary.json``.
2. **Generated blocks** in any markdown file, between marker comments that name the generator and its data::

       <!-- begin generated: step-cost-times benchmarks/results/step_cost.json -->
       ...replaced by the generator's output...
       <!-- end generated: step-cost-times -->

   The generators are listed in :data:`GENERATORS` (``genunlearn report --list``).
3. **Quoted values** in prose: ``<!-- v SOURCE:SELECTOR [OP SOURCE:SELECTOR] [*K|/K] [:FORMAT] -->text<!-- /v -->``.
   ``text`` is replaced by the value the selector picks out of a JSON/JSONL/CSV file. ``SOURCE`` is a path
   relative to the repository root or an alias defined in the same file by ``<!-- source A = path -->``.
   ``SELECTOR`` is a dot path: keys (``models.mnist-vae.ratios``), list indices (``0``), filters on lists of
   objects (``rows[entry=uno]``, ``[method=s,bn_mode=eval]``), ``[literal key]`` for keys with dots or
   spaces (quote the whole token for spaces); a key ending in ``?`` may be missing, and then the value reads
   ``pending rerun`` (for statistics that older results files do not have). ``OP`` is ``-`` or ``/``
   between two values; ``*K`` multiplies and ``/K`` divides by a number; ``FORMAT`` is a Python format spec
   (``:.1f``, ``:+.2f``, ``:.1%``); ``none=TEXT`` says how ``None`` reads (default "—"; in bench
   statistics ``None`` means the threshold was never reached). Lists are formatted element-wise and joined
   by ", "; infinity reads "never".

``genunlearn report`` rewrites what differs; ``genunlearn report --check`` writes nothing, prints the first
difference and exits with status 1 (the test suite runs it over the repository).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import re
import shlex
import statistics
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genunlearn.errors import GenUnlearnError

PENDING = "pending rerun"


class ReportError(GenUnlearnError):
    """A marker, selector or data file the report cannot use (one-line message)."""


# --- loading data -------------------------------------------------------------------------------------------
def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def load_data(path: Path) -> Any:
    """JSON, JSON lines (a list) or CSV (a list of dicts, numbers converted)."""
    if not path.is_file():
        raise ReportError(f"{path}: data file not found")
    text = path.read_text()
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        if path.suffix == ".csv":
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]
        return json.loads(text)
    except (json.JSONDecodeError, csv.Error) as exc:
        raise ReportError(f"{path}: not valid {path.suffix[1:]}: {exc}") from None


# --- selectors ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Seg:
    kind: str  # "key", "index", "filter"
    value: Any
    optional: bool = False


def parse_selector(text: str) -> list[_Seg]:
    """Split ``rows[entry=uno].stats?.median`` into key / index / filter segments."""
    segs: list[_Seg] = []
    buf, depth, i = "", 0, 0
    tokens: list[str] = []
    while i < len(text):
        ch = text[i]
        if ch == "[":
            if depth == 0 and buf:
                tokens.append(buf)
                buf = ""
            depth += 1
            buf += ch
        elif ch == "]":
            depth -= 1
            buf += ch
            if depth == 0:
                tokens.append(buf)
                buf = ""
        elif ch == "." and depth == 0:
            if buf:
                tokens.append(buf)
            buf = ""
        else:
            buf += ch
        i += 1
    if depth != 0:
        raise ReportError(f"unbalanced brackets in selector {text!r}")
    if buf:
        tokens.append(buf)
    for tok in tokens:
        if tok.startswith("["):
            inner = tok[1:-1]
            if re.fullmatch(r"-?\d+", inner):
                segs.append(_Seg("index", int(inner)))
            elif "=" in inner:
                conds = []
                for part in inner.split(","):
                    k, _, v = part.partition("=")
                    conds.append((k.strip(), v.strip()))
                segs.append(_Seg("filter", tuple(conds)))
            else:
                segs.append(_Seg("key", inner))
        elif re.fullmatch(r"-?\d+", tok):
            segs.append(_Seg("index", int(tok)))
        elif tok.endswith("?"):
            segs.append(_Seg("key", tok[:-1], optional=True))
        else:
            segs.append(_Seg("key", tok))
    if not segs:
        raise ReportError("empty selector")
    return segs


def _matches(value: Any, wanted: str) -> bool:
    if str(value) == wanted:
        return True
    if value is None:
        return wanted in ("None", "null")
    try:
        return float(value) == float(wanted)
    except (TypeError, ValueError):
        return False


class _Pending(Exception):
    pass


def select(data: Any, selector: str) -> Any:
    """The value ``selector`` picks out of ``data`` (see the module docstring); raises ``ReportError``."""
    cur = data
    for seg in parse_selector(selector):
        if seg.kind == "key":
            if not isinstance(cur, Mapping):
                raise ReportError(f"selector {selector!r}: {seg.value!r} applied to a {type(cur).__name__}")
            if seg.value not in cur:
                if seg.optional:
                    raise _Pending
                raise ReportError(f"selector {selector!r}: no key {seg.value!r} (have {', '.join(map(str, cur))})")
            cur = cur[seg.value]
        elif seg.kind == "index":
            if isinstance(cur, Mapping) and str(seg.value) in cur:  # a numeric key ("relearn.10.100")
                cur = cur[str(seg.value)]
                continue
            if not isinstance(cur, list) or not -len(cur) <= seg.value < len(cur):
                raise ReportError(f"selector {selector!r}: index {seg.value} out of range")
            cur = cur[seg.value]
        else:
            if not isinstance(cur, list):
                raise ReportError(f"selector {selector!r}: filter applied to a {type(cur).__name__}")
            hits = [
                x for x in cur if isinstance(x, Mapping) and all(k in x and _matches(x[k], v) for k, v in seg.value)
            ]
            if len(hits) != 1:
                cond = ",".join(f"{k}={v}" for k, v in seg.value)
                raise ReportError(f"selector {selector!r}: [{cond}] matches {len(hits)} items, not 1")
            cur = hits[0]
    return cur


def format_value(value: Any, spec: str = "", scale: float | None = None, none: str = "—") -> str:
    """Format a number (or a list of numbers) for prose; ``None`` reads ``none``, infinity "never"."""
    if isinstance(value, list | tuple):
        return ", ".join(format_value(v, spec, scale, none) for v in value)
    if value is None:
        return none
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        if isinstance(value, float) and math.isinf(value):
            return "never"
        if scale is not None:
            value = value * scale
        return format(value, spec) if spec else str(value)
    return str(value)


_VALUE = re.compile(r"<!-- v (?P<spec>[^\n]*?) -->(?P<text>[^\n]*?)<!-- /v -->")
_SOURCE = re.compile(r"<!-- source (?P<alias>[A-Za-z_]\w*) = (?P<path>\S+) -->")
_BLOCK = re.compile(
    r"(?P<begin><!-- begin generated: (?P<spec>[^\n]*?) -->\n)(?P<body>.*?)"
    r"(?P<end><!-- end generated: (?P<name>\S+) -->)",
    re.S,
)


class _Values:
    """Resolves ``<!-- v ... -->`` specs of one document (aliases, cached data files)."""

    def __init__(self, root: Path, aliases: Mapping[str, str]) -> None:
        self.root, self.aliases = root, dict(aliases)
        self._cache: dict[Path, Any] = {}
        self.sources: set[str] = set()

    def _data(self, source: str) -> Any:
        rel = self.aliases.get(source, source)
        path = (self.root / rel).resolve()
        if path not in self._cache:
            self._cache[path] = load_data(path)
        self.sources.add(rel)
        return self._cache[path]

    def _operand(self, token: str) -> Any:
        source, sep, selector = token.partition(":")
        if not sep:
            raise ReportError(f"value {token!r}: expected SOURCE:SELECTOR")
        return select(self._data(source), selector)

    def render(self, spec: str) -> str:
        try:
            tokens = shlex.split(spec)
        except ValueError as exc:
            raise ReportError(f"value spec {spec!r}: {exc}") from None
        if not tokens:
            raise ReportError("empty value spec")
        fmt, scale, none = "", None, "—"
        while tokens and (
            tokens[-1][:1] in (":", "*")
            or tokens[-1].startswith("none=")
            or (tokens[-1][:1] == "/" and len(tokens[-1]) > 1)
        ):
            tok = tokens.pop()
            try:
                if tok.startswith("none="):
                    none = tok[5:]
                elif tok.startswith(":"):
                    fmt = tok[1:]
                else:
                    k = float(tok[1:])
                    scale = (scale or 1.0) * (k if tok[0] == "*" else 1 / k)
            except ValueError:
                raise ReportError(f"value spec {spec!r}: bad scale {tok!r}") from None
        try:
            if len(tokens) == 1:
                value = self._operand(tokens[0])
            elif len(tokens) == 3 and tokens[1] in ("-", "/"):
                a, b = self._operand(tokens[0]), self._operand(tokens[2])
                value = None if a is None or b is None else (a - b if tokens[1] == "-" else a / b)
            else:
                raise ReportError(f"value spec {spec!r}: expected 'SOURCE:SEL [-|/ SOURCE:SEL] [*SCALE] [:FORMAT]'")
        except _Pending:
            return PENDING
        try:
            return format_value(value, fmt, scale, none)
        except (TypeError, ValueError) as exc:
            raise ReportError(f"value spec {spec!r}: cannot format {value!r} with {fmt!r}: {exc}") from None


# --- generators of blocks -----------------------------------------------------------------------------------
Generator = Callable[[Path, list[str]], str]
GENERATORS: dict[str, tuple[Generator, str]] = {}


def generator(name: str, usage: str) -> Callable[[Generator], Generator]:
    """Register a block generator ``fn(root, args) -> markdown`` under ``name``."""

    def deco(fn: Generator) -> Generator:
        GENERATORS[name] = (fn, usage)
        return fn

    return deco


def _args(args: list[str], n: int, name: str) -> list[str]:
    if len(args) < n:
        raise ReportError(f"generator {name!r} needs {n} argument(s): {GENERATORS[name][1]}")
    return args


def _ms(m: Any, spec: str = ".1f") -> str:
    """``mean (std)`` of a ``[mean, std]`` pair."""
    if m is None or m[0] is None:
        return "—"
    return f"{m[0]:{spec}} ({m[1]:{spec}})"


def _f(v: Any, spec: str) -> str:
    return format_value(v, spec)


@generator("audit-verdict", "AUDIT_JSON")
def _gen_audit(root: Path, args: list[str]) -> str:
    from genunlearn.experiments.audit import render_verdict

    return render_verdict(load_data(root / _args(args, 1, "audit-verdict")[0])) + "\n"


@generator("models-evaluation", "EVALUATION_JSON")
def _gen_models(root: Path, args: list[str]) -> str:
    from genunlearn.experiments.model_eval import render_evaluation

    data = load_data(root / _args(args, 1, "models-evaluation")[0])
    return render_evaluation(data["rows"]) + "\n"


_PUBLISHED_AS = {"uno-published": "uno", "uno-s-published": "uno-s", "h-published": "h"}


def _median_range(stats: Mapping[str, Any] | None, key: str, spec: str = "g") -> str:
    if stats is None:
        return PENDING
    st = stats[key]
    if st["reached"] == 0:
        return "never"
    med = "never" if st["median"] is None else f"{st['median']:{spec}}"
    return f"{med} [{st['min']:{spec}}-{st['max']:{spec}}]"


@generator("bench-vs-paper", "BENCH_RESULTS_JSON PAPER_JSON")
def _gen_vs_paper(root: Path, args: list[str]) -> str:
    res_path, paper_path = _args(args, 2, "bench-vs-paper")[:2]
    res, paper = load_data(root / res_path), load_data(root / paper_path)
    prows = {r["entry"]: r for r in paper["rows"]}
    n = res["settings"]["seeds"]
    orig = res["original"]
    out = [
        "| row | paper: time to unlearn (s) / time per step (s) / implied updates¹ / FID | ours, ref monitor: time to "
        "unlearn (s) / updates (seeds that reached) / FID (all digits) | ours, robust monitor: first below / stays "
        "below (mean; seeds) | medians [range] of updates, ref · robust² |",
        "|---|---|---|---|---|",
        f"| original | FID {paper['original_fid']:.1f} | FID {orig['fid']:.1f} | forget fraction "
        f"{100 * orig['forget_fraction_robust']:.1f}% (ref {100 * orig['forget_fraction_ref']:.1f}%) | |",
    ]
    for r in res["rows"]:
        key = r["entry"]
        p = prows.get(key)
        if p is not None:
            mark = "" if p["fidelity"] is None else (" ✓" if p["fidelity"] else " ✗")
            implied = p["time_to_unlearn_s"][0] / p["time_per_step_s"][0]
            paper_cell = (
                f"{_ms(p['time_to_unlearn_s'], '.3f')} / {p['time_per_step_s'][0]:.3f} / ~{implied:.0f} / "
                f"{p['fid'][0]:.1f}{mark}"
            )
        elif key in _PUBLISHED_AS and _PUBLISHED_AS[key] in prows:
            paper_cell = f"(the published {prows[_PUBLISHED_AS[key]]['algorithm']} row)"
        else:
            paper_cell = "— (not in the paper)"
        reached = "" if r["reached_ref"] == n else f" ({r['reached_ref']}/{n})"
        stay_note = "" if r["stayed_robust"] == n else f" ({r['stayed_robust']}/{n} stay)"
        stats = r.get("stats")
        ours_ref = (
            f"{_ms(r['time_to_unlearn_ref_s'], '.3f')} / {_f(r['updates_to_unlearn_ref'][0], '.1f')}{reached} / "
            f"{_f(r['fid'][0], '.1f')}{'' if r['fidelity'] else ' ✗'}"
        )
        ours_rob = (
            f"{_f(r['updates_to_unlearn_robust'][0], '.1f')} / {_f(r['updates_to_stay_robust'][0], '.1f')}{stay_note}"
        )
        med = PENDING
        if stats is not None:
            ref, rob = (_median_range(stats, f"updates_to_unlearn_{m}") for m in ("ref", "robust"))
            med = f"{ref} · {rob}"
        out.append(f"| {r['label']} | {paper_cell} | {ours_ref} | {ours_rob} | {med} |")
    out += [
        "",
        f"¹ the paper's time to unlearn / its time per step ({paper['hardware']}). ² over all {n} seeds, a seed that "
        f"never got below counting as later than any; range over the seeds that did. Ours: mean (std) over {n} "
        f"seeds, K = {res['settings']['steps']}; time and updates over the seeds that reached the threshold. Paper: "
        f"{paper['source']}.",
        "",
    ]
    return "\n".join(out)


@generator("bench-robust", "BENCH_RESULTS_JSON [ENTRY,ENTRY,...]")
def _gen_bench_robust(root: Path, args: list[str]) -> str:
    res = load_data(root / _args(args, 1, "bench-robust")[0])
    want = args[1].split(",") if len(args) > 1 else None
    n = res["settings"]["seeds"]
    orig = res["original"]
    rows = {r["entry"]: r for r in res["rows"]}
    keys = want or list(rows)
    missing = [k for k in keys if k not in rows]
    if missing:
        raise ReportError(f"bench-robust: entries {missing} not in {args[0]}")
    out = [
        "| entry | robust: first below (mean) | median [range]¹ | stays below for good (mean; seeds) | held² "
        "| final forget fraction, robust | FID, retain digits |",
        "|---|---|---|---|---|---|---|",
        f"| original | | | | | {100 * orig['forget_fraction_robust']:.1f}% | {orig['fid_retain']:.1f} |",
    ]
    for k in keys:
        r = rows[k]
        first, stays = "never", "never"
        if r["reached_robust"]:
            first = f"{r['updates_to_unlearn_robust'][0]:.1f} ({r['reached_robust']}/{n})"
        if r["stayed_robust"]:
            stays = f"{r['updates_to_stay_robust'][0]:.1f} ({r['stayed_robust']}/{n})"
        out.append(
            f"| {r['label']} | {first} | {_median_range(r.get('stats'), 'updates_to_unlearn_robust')} | {stays} "
            f"| {r['held_robust']}/{n} | {100 * r['forget_fraction_final_robust'][0]:.1f}% "
            f"| {_ms(r['fid_retain'], '.1f')} |"
        )
    out += [
        "",
        f"Mean over the seeds that reached (of {n}), K = {res['settings']['steps']}; robust monitor "
        f"({res['settings']['robust_monitor_samples']:,} latents per seed, eval mode). ¹ over all seeds, never "
        f"counting as later than any; range over the seeds that reached. ² seeds that stayed below for the "
        f"{res['settings']['hold']} updates after first getting there. Data: `{args[0]}`.",
        "",
    ]
    return "\n".join(out)


@generator("bench-audit", "BENCH_RESULTS_JSON")
def _gen_bench_audit(root: Path, args: list[str]) -> str:
    from genunlearn.experiments.bench import AUDIT_FILE, audit_table, read_bench_audit

    path = root / _args(args, 1, "bench-audit")[0]
    audit = read_bench_audit(path.parent)
    if audit is None:
        raise ReportError(f"bench-audit: no {AUDIT_FILE} beside {args[0]}")
    rows = load_data(path)["rows"]
    return "\n".join([*audit_table(audit, rows), "", f"Data: `{Path(args[0]).parent / AUDIT_FILE}`.", ""])


@generator("sweep-by", "X_PARAM CELLS_JSONL")
def _gen_sweep_by(root: Path, args: list[str]) -> str:
    from genunlearn.experiments.sweep_summary import read_cells, summary_rows, sweep_hold

    x, cells_path = _args(args, 2, "sweep-by")[:2]
    cells = read_cells(root / cells_path)
    if not cells:
        raise ReportError(f"{cells_path}: no cells")
    hold = sweep_hold(cells)
    rows = summary_rows(cells, hold)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["forget"]), []).append(r)
    seeds = sorted({r["seeds"] for r in rows})

    def g(v: Any) -> str:
        if v is None:
            return "—"  # the method does not read this parameter
        if isinstance(v, str):
            return v
        return "never" if math.isinf(v) else f"{v:g}"

    def pct(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:.1f}%"

    collateral = any("median_collateral_final" in r for r in rows)
    out = [
        f"| method | digit | {x} | median updates to < 2% | reached | held {hold} updates | median max. in those "
        f"{hold} | median retain-FID change (max) |"
        + (" median collateral, at first < 2% → final |" if collateral else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|" if collateral else ""),
    ]
    for (method, digit), rs in groups.items():
        rs = sorted(rs, key=lambda r: (r.get(x) is None, r.get(x) or 0))
        j = " / ".join
        peaks = j(f"{100 * r['median_max_after_first']:.1f}%" for r in rs)
        fids = j(f"{r['median_fid_retain_delta']:+.2f} ({r['max_fid_retain_delta']:+.2f})" for r in rs)
        line = (
            f"| {method} | {digit} | {j(g(r.get(x)) for r in rs)} | {j(g(r['median_first_below']) for r in rs)} "
            f"| {j(str(r['reached']) for r in rs)} | {j(str(r['held']) for r in rs)} | {peaks} | {fids} |"
        )
        if collateral:
            line += (
                " "
                + j(f"{pct(r.get('median_collateral_at_first'))} → {pct(r.get('median_collateral_final'))}" for r in rs)
                + " |"
            )
        out.append(line)
    out += [
        "",
        f"Seeds per setting: {', '.join(map(str, seeds))}; {cells[0]['steps']} updates. Medians over seeds; "
        f"'never': the median seed never got below 2%; max. in those {hold}: median over seeds of the highest "
        f"reading in the {hold} updates after the first one below 2% (100% if it never got there). "
        f"Data: `{cells_path}`.",
        "",
    ]
    return "\n".join(out)


@generator("collateral-floor", "CELLS_JSONL [CELLS_JSONL ...]")
def _gen_collateral_floor(root: Path, args: list[str]) -> str:
    """Per digit and sweep: the collateral change and retained-mix TV after the cells' updates (no threshold)."""
    from genunlearn.experiments.sweep_summary import read_cells

    if not args:
        raise ReportError("collateral-floor needs at least one cells.jsonl")
    per: list[tuple[str, dict[int, list[dict]]]] = []
    for cells_path in args:
        cells = read_cells(root / cells_path)
        if not cells or any(c.get("collateral_final") is None for c in cells):
            raise ReportError(f"{cells_path}: no cells with a collateral reading")
        by: dict[int, list[dict]] = {}
        for c in cells:
            by.setdefault(int(c["forget"]), []).append(c)
        per.append((cells_path, by))
    digits = sorted({d for _, by in per for d in by})

    def cell(cs: list[dict] | None) -> str:
        if not cs:
            return "—"
        col = [c["collateral_final"] for c in cs]
        tv = statistics.median(c["retained_tv_final"] for c in cs)
        return f"{100 * statistics.median(col):.1f}% ({100 * min(col):.1f}-{100 * max(col):.1f}%), TV {100 * tv:.1f}%"

    heads = [f"`{Path(p).parent.name}`" for p, _ in per]
    out = ["| digit left out of the data | " + " | ".join(heads) + " |", "|---|" + "---|" * len(per)]
    for d in digits:
        out.append(f"| {d} | " + " | ".join(cell(by.get(d)) for _, by in per) + " |")
    first = per[0][1][digits[0]][0]
    seeds = sorted({len(cs) for _, by in per for cs in by.values()})
    out += [
        "",
        f"Collateral change after {first['steps']} updates of `{first['method']}` (lr {first['lr']:g}, "
        f"{first['optimizer']}): median over {', '.join(map(str, seeds))} seeds (min-max) of the share of the "
        "monitor's latents the original decoded as a retained digit that now decode to another digit, and the "
        "median total variation of the retained digits' proportions. Data: "
        + ", ".join(f"`{p}`" for p, _ in per)
        + ".",
        "",
    ]
    return "\n".join(out)


#: Issue 17's goal, per digit: median updates to < 2%, share of seeds holding, retain-FID change, collateral.
GOAL = {"updates": 10, "held_share": 0.9, "fid": 1.5, "collateral": 0.03}


def goal_checks(row: Mapping[str, Any]) -> dict[str, bool]:
    """Which parts of issue 17's goal a sweep summary row (one method, setting and digit) meets."""
    coll = row.get("median_collateral_at_first")
    return {
        "speed": row["median_first_below"] <= GOAL["updates"],
        "hold": row["held"] >= GOAL["held_share"] * row["seeds"],
        "fid": row["median_fid_retain_delta"] <= GOAL["fid"],
        "collateral": coll is not None and coll <= GOAL["collateral"],
    }


@generator("sweep-goal", "X CELLS_JSONL")
def _gen_sweep_goal(root: Path, args: list[str]) -> str:
    from genunlearn.experiments.sweep_summary import read_cells, summary_rows, sweep_hold

    x, cells_path = _args(args, 2, "sweep-goal")[:2]
    cells = read_cells(root / cells_path)
    if not cells:
        raise ReportError(f"{cells_path}: no cells")
    hold = sweep_hold(cells)
    groups: dict[tuple, list[dict]] = {}
    for r in summary_rows(cells, hold):
        groups.setdefault((r["method"], r.get(x)), []).append(r)
    parts = ("speed", "hold", "fid", "collateral")
    out = [
        f"| method | {x} | ≤ {GOAL['updates']} updates (median) | held {hold} updates in ≥ {GOAL['held_share']:.0%} "
        f"of seeds | retain-FID change ≤ +{GOAL['fid']:g} | collateral ≤ {GOAL['collateral']:.0%} at first < 2% "
        "| all four |",
        "|---|---|---|---|---|---|---|",
    ]
    for (method, xv), rs in groups.items():
        checks = {int(r["forget"]): goal_checks(r) for r in rs}

        def digits(ok: Callable[[dict[str, bool]], bool], checks: dict = checks) -> str:
            hit = [str(d) for d, c in sorted(checks.items()) if ok(c)]
            return ", ".join(hit) if hit else "none"

        cols = [digits(lambda c, p=p: c[p]) for p in parts] + [digits(lambda c: all(c.values()))]
        out.append(f"| {method} | {'—' if xv is None else f'{xv:g}'} | " + " | ".join(cols) + " |")
    every = ", ".join(str(d) for d in sorted({int(c["forget"]) for c in cells}))
    seeds = ", ".join(str(n) for n in sorted({r["seeds"] for rs in groups.values() for r in rs}))
    out += [
        "",
        f"Digits (of {every}) meeting each part of issue 17's goal; medians over {seeds} "
        f"seeds, {cells[0]['steps']} updates; collateral: the share of the monitor's latents the original decoded as a "
        f"retained digit that changed digit, at the first reading below 2%. Data: `{cells_path}`.",
        "",
    ]
    return "\n".join(out)


_TARGETS = {"uno/s": 1.6, "s/naive-s": 0.7, "memory (tensor) uno/s": 2.0}
_DESCRIPTIONS = {
    "d": "retain descent",
    "rep": "retain + replacement term",
    "naive-s": "grad each loss, flatten, project",
    "naive-uno": "double backward through flattened cos²",
    "uno-fd": "finite-difference HVPs",
}


def _step_cost_header(data: Mapping[str, Any]) -> str:
    prov = data.get("provenance") or {}
    machine = prov.get("machine", {})
    cpu = machine.get("cpu") or data.get("cpu", "?")
    date = prov.get("date", "date not recorded")
    commit = (prov.get("git") or {}).get("commit", "not recorded")
    return (
        f"{data['device']}, {cpu}, {data['threads']} threads, batch {data['batch']}, median of {data['repeats']} "
        f"interleaved rounds; {date}, commit {commit[:12]}"
    )


@generator("step-cost-times", "STEP_COST_JSON")
def _gen_step_times(root: Path, args: list[str]) -> str:
    path = _args(args, 1, "step-cost-times")[0]
    data = load_data(root / path)
    models = list(data["models"])
    first = data["models"][models[0]]["median_s"]
    head = " | ".join(f"{m} ({data['models'][m]['parameters']:,} params)" for m in models)
    out = [f"| method | {head} |", "|---" * (len(models) + 1) + "|"]
    for meth in sorted(first, key=first.get):
        desc = f" ({_DESCRIPTIONS[meth]})" if meth in _DESCRIPTIONS else ""
        vals = " | ".join(_f(1e3 * data["models"][m]["median_s"].get(meth, math.nan), ".1f") for m in models)
        out.append(f"| `{meth}`{desc} | {vals} |")
    out += ["", f"Median ms per step. {_step_cost_header(data)}. Data: `{path}`.", ""]
    return "\n".join(out)


@generator("step-cost-ratios", "STEP_COST_JSON")
def _gen_step_ratios(root: Path, args: list[str]) -> str:
    path = _args(args, 1, "step-cost-ratios")[0]
    data = load_data(root / path)
    models = list(data["models"])
    keys: list[str] = []
    for m in models:
        keys += [k for k in data["models"][m]["ratios"] if k not in keys]
    out = [f"| ratio (measured in one run) | target | {' | '.join(models)} |", "|---" * (len(models) + 2) + "|"]
    for k in keys:
        target = _TARGETS.get(k)
        cells = []
        for m in models:
            e = data["models"][m]
            v = e["ratios"].get(k)
            if v is None:
                cells.append("—")
                continue
            cell = f"{v:.2f}"
            mem = re.fullmatch(r"memory \((\w+)\) (\S+)/(\S+)", k)
            if mem and "peak_memory_bytes" in e:
                kind, a, b = mem.groups()
                pk = e["peak_memory_bytes"][kind]
                cell += f" ({pk[a] / 2**20:.1f} vs {pk[b] / 2**20:.1f} MiB)"
            if target is not None:
                cell = f"**{cell}** ({'met' if v <= target else 'not met'})"
            cells.append(cell)
        out.append(f"| {k} | {'—' if target is None else f'≤ {target:g}'} | {' | '.join(cells)} |")
    out += [
        "",
        "Time ratios of medians; memory (tensor): peak bytes of live tensors (profiler), memory (rss): growth of the "
        f"resident set. {_step_cost_header(data)}. Data: `{path}`.",
        "",
    ]
    return "\n".join(out)


@generator("step-cost-history", "STEP_COST_JSON [STEP_COST_JSON ...] (oldest first)")
def _gen_step_history(root: Path, args: list[str]) -> str:
    paths = _args(args, 1, "step-cost-history")
    runs = [(p, load_data(root / p)) for p in paths]
    models = list(runs[-1][1]["models"])
    out = [
        "| model | ratio | " + " | ".join(f"`{Path(p).name}`" for p, _ in runs) + " | largest change |",
        "|---" * (len(runs) + 3) + "|",
    ]
    worst = (0.0, "", "")
    for m in models:
        keys = [k for k in runs[-1][1]["models"][m]["ratios"] if not k.startswith("memory")]
        for k in keys:
            vals = [d["models"].get(m, {}).get("ratios", {}).get(k) for _, d in runs]
            present = [v for v in vals if v is not None]
            change = max(present) - min(present) if len(present) > 1 else None
            if change is not None and change > worst[0]:
                worst = (change, k, m)
            out.append(f"| {m} | {k} | " + " | ".join(_f(v, ".2f") for v in vals) + f" | {_f(change, '.2f')} |")
    s_ms = " · ".join(_f(1e3 * d["models"][models[0]]["median_s"]["s"], ".1f") for _, d in runs)
    out += [
        "",
        f"Time ratios of the committed step-cost runs (columns oldest first). The largest change of a ratio between "
        f"runs is {worst[0]:.2f} ({worst[1]}, {worst[2]}); the absolute time of an S step on {models[0]} was "
        f"{s_ms} ms.",
        "",
    ]
    return "\n".join(out)


@generator("bn-mode", "BN_MODE_JSONL")
def _gen_bn_mode(root: Path, args: list[str]) -> str:
    path = _args(args, 1, "bn-mode")[0]
    rows = load_data(root / path)

    def model(r: Mapping[str, Any]) -> str:
        c = r["checkpoint"]
        return "bundled VAE" if c in ("bundled", None) else ("authors' VAE" if "uno-paper" in c else c)

    out = [
        "| model | method | BN mode | seeds × updates | first below 2%, per seed | stays below from, per seed "
        "| median retain-FID change |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {model(r)} | {r['method']} | {r['bn_mode']} | {r['seeds']} × {r['steps']} | "
            f"{format_value(r['firsts'], '.0f')} | {format_value(r['stays'], '.0f')} | "
            f"{r['median_fid_retain_change']:+.2f} |"
        )
    out += ["", f"Robust monitor (1,024 latents per seed, eval mode); FID from 5,000 samples. Data: `{path}`.", ""]
    return "\n".join(out)


@generator("saved-tensors", "SAVED_TENSORS_JSON")
def _gen_saved(root: Path, args: list[str]) -> str:
    path = _args(args, 1, "saved-tensors")[0]
    data = load_data(root / path)
    out = ["| method | saved storages | MiB saved for backward | largest (MiB) |", "|---|---|---|---|"]
    for r in data["rows"]:
        big = ", ".join(f"{b / 2**20:.2f}" for b in r["largest_bytes"])
        out.append(f"| `{r['method']}` | {r['storages']} | {r['bytes'] / 2**20:.1f} | {big} |")
    out += ["", f"One step on {data['model']}, batch {data['batch']}. Data: `{path}`.", ""]
    return "\n".join(out)


@generator("allocator-rss", "ALLOCATOR_RSS_JSON")
def _gen_allocator(root: Path, args: list[str]) -> str:
    path = _args(args, 1, "allocator-rss")[0]
    data = load_data(root / path)
    settings = list(data["settings"])
    methods = list(data["settings"][settings[0]]["rss"])
    out = [
        "| method | " + " | ".join(f"RSS growth, {s} (MiB)" for s in settings) + " | live tensors (MiB) |",
        "|---" * (len(settings) + 2) + "|",
    ]
    for m in methods:
        rss = " | ".join(f"{data['settings'][s]['rss'][m] / 2**20:.1f}" for s in settings)
        out.append(f"| `{m}` | {rss} | {data['settings'][settings[0]]['tensor'][m] / 2**20:.1f} |")
    envs = "; ".join(
        f"{s}: `{' '.join(f'{k}={v}' for k, v in data['settings'][s]['env'].items()) or '-'}`" for s in settings
    )
    out += ["", f"One step on {data['model']} in a fresh process per cell ({envs}). Data: `{path}`.", ""]
    return "\n".join(out)


def _prov_line(prov: Mapping[str, Any] | None) -> str:
    prov = prov or {}
    machine = prov.get("machine", {})
    commit = (prov.get("git") or {}).get("commit", "not recorded")
    date = prov.get("date", "date not recorded")
    return f"{machine.get('cpu', '?')}, {machine.get('torch_threads', '?')} thread(s); {date}, commit {commit[:12]}"


@generator("lora-cost", "LORA_JSON MODEL")
def _gen_lora_cost(root: Path, args: list[str]) -> str:
    path, model = _args(args, 2, "lora-cost")[:2]
    data = load_data(root / path)
    entry = data["cost"][model]
    configs = entry["configs"]
    methods = list(configs["full"]["median_s"])
    head = (
        " | ".join(f"`{m}` ms (x full)" for m in methods) + " | " + " | ".join(f"`{m}` MiB (x full)" for m in methods)
    )
    out = [f"| configuration | trainable parameters | {head} |", "|---" * (2 + 2 * len(methods)) + "|"]
    for name, c in configs.items():
        times = " | ".join(f"{1e3 * c['median_s'][m]:.1f} ({c['time_vs_full'][m]:.2f})" for m in methods)
        mem = " | ".join(
            f"{c['peak_tensor_bytes'][m] / 2**20:.1f} ({c['memory_vs_full'][m]:.2f})"
            if "peak_tensor_bytes" in c
            else "—"
            for m in methods
        )
        out.append(f"| {name} | {c['trainable_parameters']:,} | {times} | {mem} |")
    prov = entry.get("provenance") or data.get("cost_provenance")  # per model; older files: one for all
    out += [
        "",
        f"{model}: {entry['parameters']:,} parameters, batch {entry['batch']}; one engine step (direction + Adam "
        f"update), median of {prov['config']['repeats']} interleaved rounds; peak live tensors "
        f"of one step (profiler). {_prov_line(prov)}. Data: `{path}`.",
        "",
    ]
    return "\n".join(out)


@generator("lora-unlearn", "LORA_JSON")
def _gen_lora_unlearn(root: Path, args: list[str]) -> str:
    path = _args(args, 1, "lora-unlearn")[0]
    data = load_data(root / path)
    sec = data["unlearn"]

    def pct(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:.1f}%"

    out = [
        "| lr | configuration | trainable parameters | median updates to < 2% (reached) | held 100 updates | median "
        "final forget fraction | median retain-FID change | median collateral, at first < 2% → final |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sec["summary"]:
        med = "never" if r["median_updates"] is None else f"{r['median_updates']:g}"
        out.append(
            f"| {r['lr']:g} | {r['config']} | {r['trainable_parameters']:,} | {med} ({r['reached']}/{r['seeds']}) | "
            f"{r.get('held', '—')}/{r['seeds']} | {100 * statistics.median(r['forget_fraction_final']):.1f}% | "
            f"{r['median_fid_retain_change']:+.2f} | {pct(r.get('median_collateral_at_first'))} → "
            f"{pct(r.get('median_collateral_final'))} |"
        )
    fid0 = statistics.median(v["fid_retain"] for v in sec["original"].values())
    out += [
        "",
        f"`{sec['method']}` on {sec['model']}, {sec['steps']} updates (no early stop), robust monitor "
        f"({sec['monitor']}); held: below 2% for the 100 updates after the first reading below; retain FID from "
        f"{sec['fid_samples']:,} samples after the last update, change against the original model (median retain FID "
        f"{fid0:.2f} over the seeds); collateral: the share of the monitor's latents the original decoded as a "
        f"retained digit that changed digit. {_prov_line(sec.get('provenance'))}. Data: `{path}`.",
        "",
    ]
    return "\n".join(out)


@generator("data-parallel-comm", "DATA_PARALLEL_JSON")
def _gen_dp_comm(root: Path, args: list[str]) -> str:
    path = _args(args, 1, "data-parallel-comm")[0]
    data = load_data(root / path)
    out = [
        "| method | gradient-sized all-reduces | scalar all-reduces | other collectives | MiB all-reduced per update "
        "| step time, 2 processes / 1 | time in collectives (share of the step) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        mib = ", ".join(f"{4 * f / 2**20:.2f}" for f in r["floats_per_update"])
        out.append(
            f"| `{r['method']}` | {format_value(r['gradient_allreduces'])} | {format_value(r['scalar_allreduces'])} | "
            f"{format_value(r['other_collectives'])} | {mib} | {r['parallel_over_single']:.2f} | "
            f"{1e3 * r['median_comm_s']:.1f} ms ({r['median_comm_share']:.0%}) |"
        )
    out += ["", f"{data['setup']}. {_prov_line(data.get('provenance'))}. Data: `{path}`.", ""]
    return "\n".join(out)


@generator("fsdp-probe", "FSDP_PROBE_JSON")
def _gen_fsdp(root: Path, args: list[str]) -> str:
    path = _args(args, 1, "fsdp-probe")[0]
    data = load_data(root / path)
    out = ["| check | result |", "|---|---|"]
    for name, r in data["checks"].items():
        if name == "parameters":
            continue
        if not r["ok"]:
            res = f"fails: `{r['error']}`"
        elif r.get("unused"):
            res = (
                f"runs, but {r['unused']} of {r.get('of', '?')} gradients are missing (the shards are not in the graph)"
            )
        else:
            labels = {
                "rel_error": "",
                "rel_error_g_r": "g_r ",
                "rel_error_g_f": "g_f ",
                "dot_rel_error": "dot product ",
            }
            labels["rel_error_hvp"] = "H v "
            errs = ", ".join(f"{labels[k]}{v:.1e}" for k, v in r.items() if k in labels)
            res = f"works; relative error {errs}"
        out.append(f"| {name.replace('_', ' ')} | {res} |")
    out += ["", f"{data['setup']}; torch {data['torch']}. {_prov_line(data.get('provenance'))}. Data: `{path}`.", ""]
    return "\n".join(out)


# --- small derived markdown files ---------------------------------------------------------------------------
def render_independent_monitor(data: Mapping[str, Any]) -> str:
    """``independent_monitor.md`` from ``independent_monitor.json``."""
    prov = data.get("provenance") or {}
    cmd = prov.get("command", {}).get("line") or data.get("command", "python benchmarks/independent_monitor.py ...")
    lines = [
        f"Independent classifier: {data['classifier']} (bn1 {'applied' if data['use_bn'] else 'skipped'}); "
        f"{data['latents']:,} latents, eval mode. Made by `{cmd}`; data in `independent_monitor.json`.",
        "",
        "| entry (seed 0, after K updates) | forget fraction, independent classifier | forget fraction, "
        "bench's own classifier |",
        "|---|---|---|",
    ]
    for r in data["rows"]:
        own = "—" if r["own"] is None else f"{r['own']:.3f}"
        lines.append(f"| {r['entry']} | {r['independent']:.3f} | {own} |")
    return "\n".join(lines) + "\n"


@generator("compare", "COMPARE_RESULTS_JSON")
def _gen_compare(root: Path, args: list[str]) -> str:
    """The comparison table (genunlearn bench compare), without its title."""
    from genunlearn.experiments.compare import render_table

    path = _args(args, 1, "compare")[0]
    body = render_table(load_data(root / path)).split("\n", 2)[2]
    return body + f"\nData: `{path}`.\n"


@generator("samples", "SAMPLES_RESULTS_JSON")
def _gen_samples(root: Path, args: list[str]) -> str:
    """A sample-level unlearning table (genunlearn bench compare --forget-ids), without its title."""
    from genunlearn.experiments.samples import render_samples

    path = _args(args, 1, "samples")[0]
    body = render_samples(load_data(root / path)).split("\n", 2)[2]
    return body + f"\nData: `{path}`.\n"


@generator("samples-overview", "SAMPLES_ROOT")
def _gen_samples_overview(root: Path, args: list[str]) -> str:
    """The sample-level results over forget sets (``SAMPLES_ROOT/<set>/results.json``) in one table."""
    from genunlearn.experiments.samples import collect, render_overview

    path = _args(args, 1, "samples-overview")[0]
    return render_overview(collect(root / path)) + f"\nData: `{path}/<set>/results.json`.\n"


@generator("i2i", "I2I_RESULTS_JSON")
def _gen_i2i(root: Path, args: list[str]) -> str:
    """The I2I bench's summary table per task (genunlearn bench i2i)."""
    from genunlearn.experiments.i2i_bench import render_summary

    path = _args(args, 1, "i2i")[0]
    return render_summary(load_data(root / path)) + f"Data: `{path}`; the full table: `{Path(path).parent}/table.md`.\n"


@generator("celeba", "CELEBA_RESULTS_JSON")
def _gen_celeba(root: Path, args: list[str]) -> str:
    """The CelebA bench's two tables (genunlearn bench celeba64), without their title line."""
    from genunlearn.experiments.celeba_bench import render_results

    path = _args(args, 1, "celeba")[0]
    text = render_results(load_data(root / path)).split("\n", 2)[2]  # drop "# title" and the blank line after it
    return text + f"\n\nData: `{path}`; figures in `{Path(path).parent}/figures/`.\n"


# --- the report ---------------------------------------------------------------------------------------------
@dataclass
class Output:
    """A file the report (re)generates: ``path`` and its expected content."""

    path: Path
    text: str
    source: str


def _bench_outputs(results: Path) -> list[Output]:
    from genunlearn.experiments.bench import BenchSettings, read_bench_audit, render_table, write_csv

    data = load_data(results)
    fields = {f.name for f in dataclasses.fields(BenchSettings)}
    settings = BenchSettings(**{k: v for k, v in data["settings"].items() if k in fields})
    audit = read_bench_audit(results.parent)
    table = render_table(data["rows"], data["original"], settings, data["title"], audit=audit) + "\n"
    rows = [{k: (tuple(v) if isinstance(v, list) and len(v) == 2 else v) for k, v in r.items()} for r in data["rows"]]
    with tempfile.TemporaryDirectory() as tmp:
        write_csv(rows, Path(tmp) / "table.csv")
        csv_text = (Path(tmp) / "table.csv").read_text()
    src = str(results.name)
    return [Output(results.parent / "table.md", table, src), Output(results.parent / "table.csv", csv_text, src)]


def _table_outputs(results: Path, table: str, rows: list[dict]) -> list[Output]:
    """``table.md`` (``table``) and ``table.csv`` (``rows``, written as the benches write it) beside ``results``."""
    from genunlearn.checkpoints import atomic_write_csv

    with tempfile.TemporaryDirectory() as tmp:
        atomic_write_csv(Path(tmp) / "table.csv", rows)
        csv_text = (Path(tmp) / "table.csv").read_text()
    return [
        Output(results.parent / "table.md", table, results.name),
        Output(results.parent / "table.csv", csv_text, results.name),
    ]


def _dit_bench_outputs(results: Path, data: Mapping[str, Any]) -> list[Output]:
    """``table.md`` and ``table.csv`` beside a DiT bench's ``results.json`` (``genunlearn bench mnist-dit``)."""
    from genunlearn.experiments.bench import read_bench_audit
    from genunlearn.experiments.dit_bench import csv_rows, render_table, settings_from

    audit = read_bench_audit(results.parent)
    settings = settings_from(dict(data))
    table = render_table(
        data["rows"], data["original"], settings, data["title"], audit=audit, retrained=data.get("retrained")
    )
    table += "\n"
    return _table_outputs(results, table, csv_rows(data["rows"]))


def _kind_outputs(results: Path, data: Mapping[str, Any]) -> list[Output]:
    """``table.md`` and ``table.csv`` beside a comparison's or a sample-level run's ``results.json``."""
    if data["kind"] == "i2i":
        from genunlearn.experiments.i2i_bench import render_table as render_i2i

        return [Output(results.parent / "table.md", render_i2i(dict(data)), results.name)]
    if data["kind"] == "compare":
        from genunlearn.experiments.compare import csv_rows, render_table

        table, rows = render_table(dict(data)), csv_rows(dict(data))
    else:
        from genunlearn.experiments.samples import _csv, render_samples

        table, rows = render_samples(dict(data)), _csv(dict(data))
    return _table_outputs(results, table, rows)


def _sweep_outputs(cells_path: Path) -> list[Output]:
    from genunlearn.experiments.sweep_summary import read_cells, sweep_hold, write_summary

    cells = read_cells(cells_path)
    if not cells:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        write_summary(cells, tmp, sweep_hold(cells))
        md, csv_text = (Path(tmp) / "summary.md").read_text(), (Path(tmp) / "summary.csv").read_text()
    return [
        Output(cells_path.parent / "summary.md", md, cells_path.name),
        Output(cells_path.parent / "summary.csv", csv_text, cells_path.name),
    ]


def _derived(path: Path) -> list[Output]:
    name = path.name
    if name == "results.json":
        data = load_data(path)
        if isinstance(data, Mapping) and data.get("kind") in ("compare", "samples", "i2i"):
            return _kind_outputs(path, data)
        if isinstance(data, Mapping) and {"rows", "settings", "original", "title"} <= set(data):
            if "guidance_scale" in data["settings"]:
                return _dit_bench_outputs(path, data)
            if "attributes" in data["settings"]:  # genunlearn bench celeba64
                from genunlearn.experiments.bench import read_bench_audit
                from genunlearn.experiments.celeba_bench import render_results

                audit = read_bench_audit(path.parent)
                return [Output(path.parent / "table.md", render_results(dict(data), audit=audit) + "\n", name)]
            return _bench_outputs(path)
    elif name == "cells.jsonl":
        return _sweep_outputs(path)
    elif name == "independent_monitor.json":
        return [Output(path.parent / "independent_monitor.md", render_independent_monitor(load_data(path)), name)]
    elif name == "summary.json":
        data = load_data(path)
        if isinstance(data, Mapping) and {"vae", "classifier", "generated", "fid"} <= set(data):
            from genunlearn.experiments.celeba import render_report

            return [Output(path.parent / "report.md", render_report(dict(data)), name)]
    elif name == "audit.json":
        from genunlearn.experiments.audit import render_audit

        return [Output(path.parent / "audit.md", render_audit(load_data(path)), name)]
    elif name == "evaluation.json":
        from genunlearn.experiments.model_eval import evaluation_markdown

        return [Output(path.parent / "evaluation.md", evaluation_markdown(load_data(path)), name)]
    return []


_SKIP_DIRS = {"__pycache__", "node_modules", "build", "dist", "runs", "site-packages", "venv"}


def _walk(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS and not d.endswith(".egg-info")
        )
        for f in sorted(filenames):
            yield Path(dirpath) / f


_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def _mask_code(text: str) -> tuple[str, list[str]]:
    """Replace code spans and fenced blocks (examples of markers, not markers) by placeholders, keeping lines."""
    spans: list[str] = []

    def sub(m: re.Match) -> str:
        spans.append(m.group(0))
        return f"\x00{len(spans) - 1}" + "\x01\n" * m.group(0).count("\n") + "\x00"

    return _CODE.sub(sub, text), spans


def _unmask_code(text: str, spans: list[str]) -> str:
    return re.sub(r"\x00(\d+)(?:\x01\n)*\x00", lambda m: spans[int(m.group(1))], text)


def render_document(path: Path, root: Path) -> str:
    """The markdown file ``path`` with its generated blocks and quoted values regenerated.

    Markers inside code spans and fenced code blocks are examples, not markers: they are left alone.
    """
    text, code = _mask_code(path.read_text())
    aliases = {m["alias"]: m["path"] for m in _SOURCE.finditer(text)}
    values = _Values(root, aliases)

    def block(m: re.Match) -> str:
        try:
            spec = shlex.split(m["spec"])
        except ValueError as exc:
            raise ReportError(f"{path}: bad generated-block marker {m['spec']!r}: {exc}") from None
        if not spec or spec[0] != m["name"]:
            raise ReportError(f"{path}: block 'begin generated: {m['spec']}' ends with 'end generated: {m['name']}'")
        if spec[0] not in GENERATORS:
            raise ReportError(f"{path}: unknown generator {spec[0]!r} (known: {', '.join(sorted(GENERATORS))})")
        try:
            body = GENERATORS[spec[0]][0](root, spec[1:])
        except ReportError as exc:
            raise ReportError(f"{path}: {exc}") from None
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ReportError(f"{path}: generator {spec[0]!r} failed on its data: {exc!r}") from None
        return m["begin"] + body + m["end"]

    def value(m: re.Match) -> str:
        try:
            return f"<!-- v {m['spec']} -->{values.render(m['spec'])}<!-- /v -->"
        except ReportError as exc:
            line = text.count("\n", 0, m.start()) + 1
            raise ReportError(f"{path}:{line}: {exc}") from None

    text = _BLOCK.sub(block, text)
    return _unmask_code(_VALUE.sub(value, text), code)


def has_markers(text: str) -> bool:
    """Whether a markdown text has generated blocks or quoted values."""
    return "<!-- begin generated:" in text or "<!-- v " in text


def collect(root: str | Path, paths: Sequence[str | Path] = ()) -> list[Output]:
    """Every output the report regenerates under ``root`` (limited to ``paths`` if given)."""
    root = Path(root).resolve()
    wanted = [Path(p).resolve() for p in paths]

    def selected(p: Path) -> bool:
        return not wanted or any(p == w or w in p.parents for w in wanted)

    outputs: list[Output] = []
    for f in _walk(root):
        if f.suffix in (".json", ".jsonl"):
            outs = [o for o in _derived(f) if selected(o.path) or selected(f)]
            outputs += outs
        elif f.suffix == ".md" and selected(f):
            text = f.read_text()
            if has_markers(text):
                outputs.append(Output(f, render_document(f, root), "generated blocks"))
    return outputs


@dataclass
class Difference:
    """The first line where a committed file and its regeneration differ."""

    path: Path
    line: int
    committed: str | None
    expected: str | None

    def __str__(self) -> str:
        if self.committed is None and self.line == 0:
            return f"{self.path}: missing (regenerate with `genunlearn report`)"
        return (
            f"{self.path}:{self.line}: committed text differs from its data (regenerate with `genunlearn report`)\n"
            f"  committed: {self.committed!r}\n  from data: {self.expected!r}"
        )


def first_difference(path: Path, expected: str) -> Difference | None:
    """``None`` if ``path`` holds ``expected``, else where they first differ."""
    if not path.is_file():
        return Difference(path, 0, None, None)
    committed = path.read_text()
    if committed == expected:
        return None
    a, b = committed.splitlines(), expected.splitlines()
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x != y:
            return Difference(path, i + 1, x, y)
    return Difference(path, len(a), "(trailing newline differs)", "")


def find_root(start: str | Path = ".") -> Path:
    """The nearest directory at or above ``start`` with a ``pyproject.toml`` (the repository root), else ``start``."""
    start = Path(start).resolve()
    return next((d for d in (start, *start.parents) if (d / "pyproject.toml").is_file()), start)


def run_report(
    root: str | Path | None = None, paths: Sequence[str | Path] = (), check: bool = False
) -> list[Difference]:
    """Regenerate (or with ``check``, only compare) every output under ``root`` (default: the repository
    root above the working directory); returns the differences found."""
    diffs = []
    for out in collect(find_root() if root is None else root, paths):
        d = first_difference(out.path, out.text)
        if d is None:
            continue
        diffs.append(d)
        if not check:
            from genunlearn.checkpoints import atomic_write_text

            atomic_write_text(out.path, out.text)
    return diffs


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m genunlearn.report [--check] [--root DIR] [PATHS]`` (the same as ``genunlearn report``)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m genunlearn.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--root", default=None, help="repository root (default: found above the working directory)")
    args = ap.parse_args(argv)
    try:
        diffs = run_report(args.root, args.paths, check=args.check)
    except GenUnlearnError as exc:
        print(f"error: {exc}")
        return 2
    for d in diffs[:1] if args.check else diffs:
        print(d if args.check else f"updated {d.path}")
    return 1 if (args.check and diffs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
