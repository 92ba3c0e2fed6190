"""Command line: `python -m benchmarks [--quick | --tiny | --shared] [options]`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path

from .adapters import Adapter
from .report import from_json, markdown, targets, targets_table, write_all
from .workloads import ROOT, BenchmarkError, Config, run

DEFAULT_OUT = ROOT / "benchmarks" / "out"
DEFAULT_RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="size 1,000 only (under a minute)")
    mode.add_argument("--tiny", action="store_true", help="smoke test: size 50, no timing claims")
    mode.add_argument(
        "--shared",
        action="store_true",
        help="only the shared mode (a write that publishes images.json) against seed and a raw images.json "
        "write, at 1,000, 10,000 and 100,000; merges its section into RESULTS.md",
    )
    p.add_argument("--sizes", help="comma-separated store sizes, e.g. 1000,10000")
    p.add_argument("--repeat", type=int, help="repetitions per measurement (default 3; tiny 1)")
    p.add_argument("--fsync", choices=("on", "off", "both"), default="both")
    p.add_argument("--impl", help="comma-separated implementations (default: journalstore,seed,sqlite)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default benchmarks/out)")
    p.add_argument("--workdir", type=Path, help="where stores are built (default OUT/work; must be a real disk)")
    p.add_argument(
        "--results",
        type=Path,
        help="RESULTS.md to regenerate, with results.png beside it (default: benchmarks/RESULTS.md "
        "for a full run, none otherwise; --shared merges its section into it instead)",
    )
    p.add_argument("--no-results", action="store_true", help="do not regenerate RESULTS.md")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="measure nothing: re-render the tables, plot and RESULTS.md from a results.json",
    )
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> Config:
    kw: dict[str, object] = {}
    if args.repeat is not None:
        if args.repeat < 1:
            raise SystemExit("--repeat must be at least 1")
        kw["repeat"] = args.repeat
    kw["fsync_modes"] = {"on": (True,), "off": (False,), "both": (False, True)}[args.fsync]
    if args.impl:
        kw["impls"] = tuple(i.strip() for i in args.impl.split(",") if i.strip())
    kw["workdir"] = str(args.workdir or args.out / "work")
    if args.tiny:
        cfg = Config.tiny(**kw)
    elif args.quick:
        cfg = Config.quick(**kw)
    elif args.shared:
        cfg = Config.shared(**kw)
    else:
        cfg = Config.full(**kw)
    if args.sizes:
        sizes = tuple(int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip())
        if not sizes or min(sizes) < 1:
            raise SystemExit("--sizes must be positive integers")
        cfg = cfg.with_(sizes=sizes, mode=cfg.mode if cfg.mode in ("tiny", "shared") else "custom")
    return cfg


def main(argv: list[str] | None = None, adapters: Mapping[str, type[Adapter]] | None = None) -> int:
    """Run the harness; 0 on success, 1 if an implementation returned wrong data."""
    args = parse_args(argv)
    cfg = config_from(args)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.render is not None:
        results = from_json(json.loads(args.render.read_text()))
        cfg = results.config
    else:
        try:
            results = run(cfg, adapters, None if args.quiet else progress)
        except BenchmarkError as exc:
            print(f"benchmark FAILED: {exc}", file=sys.stderr)
            return 1
    results_md: Path | None = args.results
    default_sizes = cfg.mode == "full" or (cfg.mode == "shared" and cfg.sizes == Config.shared().sizes)
    if results_md is None and default_sizes and not args.no_results:
        results_md = DEFAULT_RESULTS
    if args.no_results:
        results_md = None
    written = write_all(results, args.out, results_md)
    print(markdown(results))
    found = targets(results)
    if found:
        print("## Targets\n")
        print(targets_table(found))
        print()
    for what, path in written.items():
        print(f"wrote {what}: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
