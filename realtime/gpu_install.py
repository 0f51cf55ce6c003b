"""Install the CUDA build of ONNX Runtime in place of the CPU one: ``python -m emotion_monitor.realtime.gpu_install``.

``onnxruntime`` (the CPU build, a base dependency) and ``onnxruntime-gpu`` are two distributions that write the same
``onnxruntime`` module. An extra can only add a distribution, never remove a base dependency, so ``pip install
.[gpu]`` would leave both installed and whichever pip wrote last owns the module. This command makes the venv hold
exactly one: it removes both, installs ``onnxruntime-gpu`` (with NVIDIA's CUDA/cuDNN wheels when ``--cuda-libs``),
restores the CPU build if that install fails, and checks the result in a fresh interpreter (docs/gpu.md).

Runs pip as ``sys.executable -m pip``, so it changes the environment it is run from. Imports no onnxruntime
itself: a module left half-written by two distributions must not stop the repair.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

PROG = "gpu_install"
DEFAULT_SPEC = "onnxruntime-gpu>=1.21"
"""1.21 is the first release with ``onnxruntime.preload_dlls`` (CUDA/cuDNN from NVIDIA's pip wheels)."""
RUNTIMES = ("onnxruntime", "onnxruntime-gpu")


@dataclass(frozen=True)
class GpuInstallOptions:
    """spec: the onnxruntime-gpu requirement; cuda_libs: add its ``[cuda,cudnn]`` extras (NVIDIA's CUDA 13 and
    cuDNN 9 wheels, about 2.5 GB) for machines without a system CUDA; dry_run: print the pip commands only."""

    spec: str = DEFAULT_SPEC
    cuda_libs: bool = False
    dry_run: bool = False


def requirement(options: GpuInstallOptions) -> str:
    """The pip requirement installed: ``spec`` with the ``[cuda,cudnn]`` extras when ``cuda_libs``."""
    if not options.cuda_libs:
        return options.spec
    name, sep, rest = options.spec.partition("onnxruntime-gpu")
    return f"{name}onnxruntime-gpu[cuda,cudnn]{rest}" if sep else options.spec


def pip_commands(options: GpuInstallOptions) -> list[list[str]]:
    """The pip calls, in order: remove both runtimes (their shared files too), then install the GPU one."""
    pip = [sys.executable, "-m", "pip"]
    return [[*pip, "uninstall", "-y", *RUNTIMES], [*pip, "install", requirement(options)]]


def installed_cpu_version() -> str | None:
    """The installed CPU ``onnxruntime`` version, restored if the GPU install fails."""
    import importlib.metadata

    try:
        return importlib.metadata.version("onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        return None


def install_gpu_runtime(options: GpuInstallOptions) -> int:
    """Replace the runtime (``pip_commands``), then ``check_gpu_runtime`` in a new interpreter; exit status."""
    commands = pip_commands(options)
    if options.dry_run:
        print("\n".join(" ".join(c) for c in commands))
        return 0
    previous = installed_cpu_version()
    uninstall, install = commands
    if subprocess.run(uninstall).returncode != 0:
        print(f"{PROG}: error: {' '.join(uninstall[1:])} failed", file=sys.stderr)
        return 2
    if subprocess.run(install).returncode != 0:
        restored = f"onnxruntime=={previous}" if previous else "onnxruntime"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", restored])
        print(
            f"{PROG}: error: pip could not install {requirement(options)}; put back {restored}",
            file=sys.stderr,
        )
        return 2
    return subprocess.run(
        [sys.executable, "-m", "emotion_monitor.realtime.gpu_install", "--check"]
    ).returncode


def check_gpu_runtime() -> int:
    """One line: the installed runtime offers CUDA and is the only distribution of the module (exit 0), or what is
    wrong (exit 2). Says also whether CUDA's libraries load here (not an error: the GPU may be elsewhere)."""
    import onnxruntime as ort

    from emotion_monitor.realtime.providers import (
        CUDA,
        cuda_library_error,
        no_cuda_build_reason,
        onnxruntime_distributions,
        prepare_cuda_libraries,
    )

    dists = onnxruntime_distributions()
    if len(dists) != 1 or CUDA not in ort.get_available_providers():
        print(f"{PROG}: error: {no_cuda_build_reason()}", file=sys.stderr)
        return 2
    prepare_cuda_libraries()
    libraries = cuda_library_error() or "load"
    print(
        f"{PROG}: {dists[0]} offers {', '.join(ort.get_available_providers())}; CUDA libraries: {libraries}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m emotion_monitor.realtime.{PROG}",
        description="Replace the CPU onnxruntime by onnxruntime-gpu in this environment (one distribution only).",
    )
    p.add_argument("--cuda-libs", action="store_true", help="also install NVIDIA's CUDA and cuDNN wheels")
    p.add_argument(
        "--spec", default=DEFAULT_SPEC, help=f"onnxruntime-gpu requirement (default: {DEFAULT_SPEC!r})"
    )
    p.add_argument("--dry-run", action="store_true", help="print the pip commands, change nothing")
    p.add_argument("--check", action="store_true", help="only check the installed runtime")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.check:
        return check_gpu_runtime()
    return install_gpu_runtime(GpuInstallOptions(args.spec, args.cuda_libs, args.dry_run))


if __name__ == "__main__":
    sys.exit(main())
