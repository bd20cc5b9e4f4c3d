"""The ``pyfuse`` command.

  pyfuse demo [--qat]                   fuse the built-in model with pyfuse and torch, compare
  pyfuse explain [MODULE:FACTORY] ...   what would fuse, and near misses
  pyfuse fuse [MODULE:FACTORY] ...      fuse a model, optionally save it (--out)
  pyfuse bench ...                      the standard benchmark table
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import sys
import time
from collections.abc import Callable, Sequence
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


def _load_model(spec: str | None, qat: bool) -> Any:
    import torch

    if spec is None:
        from .models import default_model

        model = default_model()
    else:
        mod_name, sep, attr = spec.partition(":")
        if not sep or not mod_name or not attr:
            raise CliError(f"model must be given as PKG.MODULE:FACTORY, got {spec!r}")
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise CliError(f"cannot load {spec!r}: {e}") from None
        model = factory()
        if not isinstance(model, torch.nn.Module):
            raise CliError(f"{spec} returned {type(model).__name__}, not an nn.Module")
    model.train(qat)
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 (any tracing failure is one line for the user)
        raise CliError(f"cannot trace the model with torch.fx: {type(e).__name__}: {e}") from None


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
        out, report = pyfuse.fuse(b, args.qat, backend_config=backend, return_report=True)
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
        and all(torch.equal(v, out.state_dict()[k]) for k, v in ref_out.state_dict().items()),
    }
    (x,) = example_inputs()
    with torch.no_grad():
        checks["outputs"] = torch.equal(ref_out.eval()(x), out.eval()(x))
    n_nodes = len(traced.graph.nodes)
    print(f"model: built-in ResNet-18-style, {n_nodes} FX nodes, "
          f"{'QAT' if args.qat else 'eval'}, backend {args.backend}")
    print(f"fused {len(report.fused)} chains:")
    for f in report.fused:
        print(f"  {f.pattern:<40} {', '.join(f.modules):<48} -> {f.fused_type}")
    for s in report.skipped:
        print(f"  skipped {s.pattern} at {', '.join(s.nodes)}: {s.reason}")
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(f"reference fuse: {med['reference'] * 1e3:8.2f} ms (median of {args.repeats})")
    print(f"pyfuse fuse:    {med['pyfuse'] * 1e3:8.2f} ms  ({med['reference'] / med['pyfuse']:.1f}x faster)")
    ok = all(checks.values())
    print("identical to the reference: " + ("yes" if ok else "NO") + " ("
          + ", ".join(f"{k} {'ok' if v else 'DIFFERS'}" for k, v in checks.items()) + ")")
    return 0 if ok else 1


def _cmd_explain(args: argparse.Namespace) -> int:
    import pyfuse

    gm = _load_model(args.model, args.qat)
    result = pyfuse.explain(gm, args.qat, _backend(args.backend))
    print(json.dumps(result.as_dict(), indent=2) if args.json else result)
    return 0


def _cmd_fuse(args: argparse.Namespace) -> int:
    import torch

    import pyfuse

    gm = _load_model(args.model, args.qat)
    n_before = len(gm.graph.nodes)
    out, report = pyfuse.fuse(gm, args.qat, backend_config=_backend(args.backend), return_report=True)
    saved_as = "GraphModule"
    if args.out:
        try:
            torch.save(out, args.out)
        except Exception:  # noqa: BLE001 (torch cannot pickle some GraphModules)
            torch.save({"code": out.code, "state_dict": out.state_dict()}, args.out)
            saved_as = "dict of code and state_dict (torch could not pickle the GraphModule)"
    if args.json:
        print(json.dumps({
            "nodes_before": n_before,
            "nodes_after": len(out.graph.nodes),
            "fused": [vars(f) for f in report.fused],
            "skipped": [vars(s) for s in report.skipped],
            "out": args.out,
        }, indent=2))
    else:
        print(f"fused {len(report.fused)} chains; {n_before} -> {len(out.graph.nodes)} nodes")
        for f in report.fused:
            print(f"  {f.pattern:<40} {', '.join(f.modules)} -> {f.fused_type}")
        for s in report.skipped:
            print(f"  skipped {s.pattern} at {', '.join(s.nodes)}: {s.reason}")
        if args.out:
            print(f"saved to {args.out}: {saved_as}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from .bench import main as bench_main

        return bench_main(argv[1:])
    parser = argparse.ArgumentParser(prog="pyfuse", description="Exact, fast FX fusion.")
    sub = parser.add_subparsers(dest="cmd")
    demo = sub.add_parser("demo", help="fuse the built-in model with pyfuse and torch, compare")
    demo.add_argument("--repeats", type=int, default=5)
    for name, p in [("demo", demo),
                    ("explain", sub.add_parser("explain", help="what would fuse, and near misses")),
                    ("fuse", sub.add_parser("fuse", help="fuse a model"))]:
        if name != "demo":
            p.add_argument("model", nargs="?", help="PKG.MODULE:FACTORY returning an nn.Module")
            p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--qat", action="store_true", help="QAT fusion (model in train mode)")
        p.add_argument("--backend", choices=BACKENDS, default="native")
    sub.choices["fuse"].add_argument("--out", help="save the fused GraphModule (torch.save)")
    sub.add_parser("bench", help="benchmark table (see pyfuse bench --help)")
    args = parser.parse_args(argv or ["demo"])
    handlers = {"demo": _cmd_demo, "explain": _cmd_explain, "fuse": _cmd_fuse}
    try:
        return handlers[args.cmd or "demo"](args)
    except CliError as e:
        print(f"pyfuse: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
