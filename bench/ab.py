"""Two commits' hot paths side by side, interleaved in one run: is a change no slower?

    python -m bench.ab --before b94892e [--after HEAD] [--reps 5] [--images 256] [--rounds 8]

Each commit is checked out in a git worktree of its own and imported from there (a
``ringserve`` package of links to that tree's folders goes first on ``PYTHONPATH``, so this
checkout's editable install is not used); ``bench/edge_cost.py`` of this checkout measures each
side in a fresh process: a node's item in process, a router's item through its gRPC link, and
Extract streams end to end (see that file). The sides alternate, and the order flips every
repetition (AB, BA, AB...), so drift of a shared machine falls on both. Reports each measure's
median with min-max and the ratio after/before of the medians. Writes
bench/results/ab.{json,md}, or ab-NAME.{json,md} with ``--name``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# import name -> folder, as pyproject.toml's package-dir maps them
PACKAGES = {"contract": "protos", "server": "server", "router": "router", "client": "client", "local": "local",
            "runtime": "runtime", "search": "search"}
MEASURES = (("node_us", "node: one item in process, microseconds", False),
            ("router_us", "router: one item through its link, microseconds (wall)", False),
            ("e2e_items_s", "end to end through the router, items/s", True))


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def checkout(rev: str, into: Path) -> Path:
    """A worktree of ``rev`` and, beside it, the ``ringserve`` package of links that imports it."""
    tree = into / f"tree-{rev}"
    git("worktree", "add", "--detach", str(tree), rev)
    shim = into / f"shim-{rev}" / "ringserve"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("")
    for name, folder in PACKAGES.items():
        if (tree / folder).is_dir():
            (shim / name).symlink_to(tree / folder)
    return tree


def side(tree: Path, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": f"{tree.parent / ('shim-' + tree.name.removeprefix('tree-'))}:{tree}"}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "edge_cost.py"), "--images", str(args.images),
                          "--rounds", str(args.rounds), "--window", str(args.window)],
                         cwd=tree, env=env, check=True, capture_output=True, text=True, timeout=900)
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    code = Path(measured.pop("code")).resolve()
    if not code.is_relative_to(tree.resolve()):
        raise RuntimeError(f"the side of {tree.name} ran {code}, not its own tree's code: check PYTHONPATH")
    return measured


def run(args: argparse.Namespace) -> dict:
    revs = {"before": git("rev-parse", "--short", args.before), "after": git("rev-parse", "--short", args.after)}
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="ringserve-ab-") as tmp:
        trees = {name: checkout(rev, Path(tmp)) for name, rev in revs.items()}
        try:
            for rep in range(args.reps):
                for name in (("before", "after") if rep % 2 == 0 else ("after", "before")):
                    runs[name].append(side(trees[name], args))
                    print(f"rep {rep + 1}/{args.reps} {name} ({revs[name]}): {runs[name][-1]}", file=sys.stderr)
        finally:
            for tree in trees.values():
                git("worktree", "remove", "--force", str(tree))
    table = {}
    for key, _, _ in MEASURES:
        before, after = ([r[key] for r in runs[n]] for n in ("before", "after"))
        table[key] = {"before": report.spread(before), "after": report.spread(after),
                      "ratio": statistics.median(after) / statistics.median(before)}
    return {"revs": revs, "runs": runs, "table": table}


def markdown(meta: dict, result: dict, args: argparse.Namespace) -> str:
    revs = result["revs"]
    lines = [f"# {revs['before']} against {revs['after']}: the hot path, interleaved", "", report.header(meta),
             f"{args.reps} runs a side, alternating (the order flips each run); {args.images} distinct images, L1 hits "
             f"only, {args.rounds} rounds a run, {args.window} items at once through the router. Each cell: "
             "median (min-max).", "",
             f"| measure | before ({revs['before']}) | after ({revs['after']}) | after / before | better is |",
             "| --- | --- | --- | --- | --- |"]
    for key, label, higher in MEASURES:
        row = result["table"][key]
        lines.append(f"| {label} | {report.cell(row['before'])} | {report.cell(row['after'])} | "
                     f"{row['ratio']:.3f} | {'higher' if higher else 'lower'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="the commit to compare against")
    p.add_argument("--after", default="HEAD", help="the commit with the change")
    p.add_argument("--reps", type=int, default=5, help="runs a side")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--name", default="", help="results go to bench/results/ab-NAME.{json,md}")
    args = p.parse_args(argv)
    meta = report.provenance(argv, module="bench.ab")
    result = run(args)
    RESULTS.mkdir(exist_ok=True)
    stem = f"ab-{args.name}" if args.name else "ab"
    (RESULTS / f"{stem}.json").write_text(json.dumps({**meta, **result}, indent=1))
    (RESULTS / f"{stem}.md").write_text(markdown(meta, result, args))
    print(markdown(meta, result, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
