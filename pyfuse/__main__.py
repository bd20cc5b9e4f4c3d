"""The ``pyfuse`` command.

  pyfuse demo [--qat]                   fuse the built-in model with pyfuse and torch, compare
  pyfuse explain [MODULE:FACTORY] ...   what would fuse, and near misses (--html: the map)
  pyfuse fuse [MODULE:FACTORY] ...      fuse a model, optionally save it (--out)
  pyfuse bench [--flow pt2e] ...       the benchmark tables (FX flow, or the export flow)

MODULE is imported from the current directory first (or --app-dir DIR), then from
the installed packages, as uvicorn and gunicorn import an app; FACTORY is called
with no arguments (or used as is if it is an nn.Module). Nodes are named the same
way in every output: in forward order, module paths for submodule calls, node
names otherwise.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BACKENDS = ("native", "fbgemm", "qnnpack", "x86", "onednn", "tensorrt", "executorch")


class CliError(Exception):
    """A one-line error for the user."""


def _backend(name: str) -> Any:
    import torch.ao.quantization.backend_config.utils  # noqa: F401 (the builders use it unimported)
    from torch.ao.quantization import backend_config as bc

    if name == "executorch":
        from torch.ao.quantization.backend_config.executorch import (
            get_executorch_backend_config,
        )

        return get_executorch_backend_config()
    getter: Callable[[], Any] = getattr(bc, f"get_{name}_backend_config")
    return getter()


def _import_factory(spec: str, app_dir: str | None) -> Any:
    """The object `spec` (``MODULE:ATTR``) names, imported as uvicorn and gunicorn
    do: from `app_dir` (default: the current directory) first, then the installed
    packages. ``path/to/file.py:ATTR`` imports that file's directory's module."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise CliError(
            f"model must be given as MODULE:FACTORY (e.g. models:resnet50), got {spec!r}"
        )
    if mod_name.endswith(".py"):
        path = Path(mod_name)
        app_dir, mod_name = str(path.parent), path.stem
    where = Path(app_dir or ".").resolve()
    if not where.is_dir():
        raise CliError(f"--app-dir {app_dir!r} is not a directory")
    sys.path.insert(0, str(where))
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (
            mod_name == e.name or mod_name.startswith(e.name + ".")
        ):
            origin = "" if app_dir else " (the current directory)"
            raise CliError(
                f"cannot load {spec!r}: no module {e.name!r} in {where}{origin} or in the "
                "installed packages; run pyfuse where the file is, or pass --app-dir DIR"
            ) from None
        raise CliError(
            f"cannot load {spec!r}: importing {mod_name!r} failed: {e}"
        ) from None
    except Exception as e:  # noqa: BLE001 (the user's module failed: one line for the user)
        raise CliError(
            f"cannot load {spec!r}: importing {mod_name!r} failed: {type(e).__name__}: {e}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CliError(
                f"cannot load {spec!r}: {mod_name!r} ({getattr(module, '__file__', None)}) "
                f"has no attribute {attr!r}"
            ) from None
    return obj


def _load_model(spec: str | None, qat: bool, app_dir: str | None = None) -> Any:
    import torch

    if spec is None:
        from .models import default_model

        model = default_model()
    else:
        factory = _import_factory(spec, app_dir)
        model = factory if isinstance(factory, torch.nn.Module) else factory()
        if not isinstance(model, torch.nn.Module):
            raise CliError(f"{spec} returned {type(model).__name__}, not an nn.Module")
    model.train(qat)
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 (any tracing failure is one line for the user)
        raise CliError(
            f"cannot trace the model with torch.fx: {type(e).__name__}: {e}"
        ) from None


def _cmd_demo(args: argparse.Namespace) -> int:
    import torch
    from torch.ao.quantization.fx.fuse import fuse as reference_fuse

    import pyfuse

    from .models import example_inputs

    traced = _load_model(None, args.qat)
    backend = _backend(args.backend)
    times: dict[str, list[float]] = {"reference": [], "pyfuse": []}
    ref_out = out = None
    for _ in range(args.repeats):  # interleaved, fresh copies: both mutate their input
        a, b = copy.deepcopy(traced), copy.deepcopy(traced)
        t0 = time.perf_counter()
        ref_out = reference_fuse(a, args.qat, backend_config=backend)
        t1 = time.perf_counter()
        out, report = pyfuse.fuse(
            b, args.qat, backend_config=backend, return_report=True
        )
        t2 = time.perf_counter()
        times["reference"].append(t1 - t0)
        times["pyfuse"].append(t2 - t1)
    assert ref_out is not None
    assert out is not None
    checks = {
        "code": ref_out.code == out.code,
        "modules": [(n, type(m)) for n, m in ref_out.named_modules()][1:]
        == [(n, type(m)) for n, m in out.named_modules()][1:],
        "state_dict": list(ref_out.state_dict()) == list(out.state_dict())
        and all(
            torch.equal(v, out.state_dict()[k]) for k, v in ref_out.state_dict().items()
        ),
    }
    (x,) = example_inputs()
    with torch.no_grad():
        checks["outputs"] = torch.equal(ref_out.eval()(x), out.eval()(x))
    n_nodes = len(traced.graph.nodes)
    print(
        f"model: built-in ResNet-18-style, {n_nodes} FX nodes, "
        f"{'QAT' if args.qat else 'eval'}, backend {args.backend}"
    )
    print(f"fused {len(report.fused)} chains:")
    _print_report(report)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(
        f"reference fuse: {med['reference'] * 1e3:8.2f} ms (median of {args.repeats})"
    )
    print(
        f"pyfuse fuse:    {med['pyfuse'] * 1e3:8.2f} ms  ({med['reference'] / med['pyfuse']:.1f}x faster)"
    )
    ok = all(checks.values())
    print(
        "identical to the reference: "
        + ("yes" if ok else "NO")
        + " ("
        + ", ".join(f"{k} {'ok' if v else 'DIFFERS'}" for k, v in checks.items())
        + ")"
    )
    return 0 if ok else 1


def _print_report(report: Any) -> None:
    from .report import fusion_lines, skipped_lines

    print("\n".join(fusion_lines(report.fused)))
    if report.skipped:
        print(f"{len(report.skipped)} skipped:")
        print("\n".join(skipped_lines(report.skipped)))


def _cmd_explain(args: argparse.Namespace) -> int:
    import pyfuse

    gm = _load_model(args.model, args.qat, args.app_dir)
    result = pyfuse.explain(gm, args.qat, _backend(args.backend))
    if args.html:
        title = f"pyfuse fusion map: {args.model or 'built-in model'}"
        try:
            Path(args.html).write_text(result.to_html(title), encoding="utf-8")
        except OSError as e:
            raise CliError(f"cannot write {args.html}: {e.strerror or e}") from None
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(result)
        if args.html:
            print(f"fusion map: {args.html}")
    return 0


def _cmd_fuse(args: argparse.Namespace) -> int:
    import torch

    import pyfuse

    gm = _load_model(args.model, args.qat, args.app_dir)
    n_before = len(gm.graph.nodes)
    out, report = pyfuse.fuse(
        gm, args.qat, backend_config=_backend(args.backend), return_report=True
    )
    saved_as = "GraphModule"
    if args.out:
        try:
            torch.save(out, args.out)
        except Exception:  # noqa: BLE001 (torch cannot pickle some GraphModules)
            torch.save({"code": out.code, "state_dict": out.state_dict()}, args.out)
            saved_as = (
                "dict of code and state_dict (torch could not pickle the GraphModule)"
            )
    if args.json:
        print(
            json.dumps(
                {
                    "nodes_before": n_before,
                    "nodes_after": len(out.graph.nodes),
                    "fused": [vars(f) for f in report.fused],
                    "skipped": [vars(s) for s in report.skipped],
                    "out": args.out,
                },
                indent=2,
            )
        )
    else:
        print(
            f"fused {len(report.fused)} chains; {n_before} -> {len(out.graph.nodes)} nodes"
        )
        _print_report(report)
        if args.out:
            print(f"saved to {args.out}: {saved_as}")
    return 0


def _cmd_fold(args: argparse.Namespace) -> int:
    from .export.cli import run_fold

    def load(spec: str) -> Any:
        import torch

        factory = _import_factory(spec, args.app_dir)
        return factory if isinstance(factory, torch.nn.Module) else factory()

    return run_fold(args, load)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``pyfuse`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from .bench import main as bench_main

        return bench_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="pyfuse", description="Exact, fast FX fusion."
    )
    sub = parser.add_subparsers(dest="cmd")
    demo = sub.add_parser(
        "demo", help="fuse the built-in model with pyfuse and torch, compare"
    )
    demo.add_argument("--repeats", type=int, default=5)
    for name, p in [
        ("demo", demo),
        ("explain", sub.add_parser("explain", help="what would fuse, and near misses")),
        ("fuse", sub.add_parser("fuse", help="fuse a model")),
    ]:
        if name != "demo":
            p.add_argument(
                "model",
                nargs="?",
                help="MODULE:FACTORY returning an nn.Module "
                "(MODULE from the current directory, then the installed packages)",
            )
            p.add_argument(
                "--app-dir",
                metavar="DIR",
                help="import MODULE from DIR instead of the current directory",
            )
            p.add_argument(
                "--json", action="store_true", help="machine-readable output"
            )
        p.add_argument(
            "--qat", action="store_true", help="QAT fusion (model in train mode)"
        )
        p.add_argument("--backend", choices=BACKENDS, default="native")
    sub.choices["fuse"].add_argument(
        "--out", help="save the fused GraphModule (torch.save)"
    )
    sub.choices["explain"].add_argument(
        "--html",
        metavar="FILE",
        help="write the fusion map: one self-contained HTML page of the graph",
    )
    from .export.cli import add_fold_parser

    add_fold_parser(sub)
    sub.add_parser(
        "bench", help="benchmark tables, FX or pt2e flow (see pyfuse bench --help)"
    )
    args = parser.parse_args(argv or ["demo"])
    handlers = {
        "demo": _cmd_demo,
        "explain": _cmd_explain,
        "fuse": _cmd_fuse,
        "fold": _cmd_fold,
    }
    try:
        return handlers[args.cmd or "demo"](args)
    except CliError as e:
        print(f"pyfuse: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into a reader that stopped (| head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
