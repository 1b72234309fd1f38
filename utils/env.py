"""The machine a notebook runs on: device, dtype, seeds, threads, Colab, versions, peak memory. Every notebook's setup cell."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import random
import subprocess
import sys

import numpy as np
import torch

from utils.config import REPO_ROOT, Profile, get_profile

LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers", "ipywidgets")
# Left out of the Colab setup cell's install: Colab already has torch, jupyter and
# ipywidgets 7 (reinstalling torch would pull a second multi-GB build), and the test tools
# (pytest, the browser driver playwright) are not needed to run the notebooks.
COLAB_SKIP = ("torch", "jupyterlab", "ipykernel", "ipywidgets", "pytest", "pytest-timeout", "pytest-xdist",
              "nbclient", "nbformat", "playwright")
# Added to it: Colab's preinstalled diffusers and gradio require huggingface-hub < 2, and
# the newest transformers would pull 2.x; transformers 5.22+ also works with 1.x (>= 1.31).
COLAB_CONSTRAINTS = ("huggingface-hub<2",)


FLAG_VALUES = {"1": True, "true": True, "0": False, "false": False}


def env_flag(name: str, default: bool = False) -> bool:
    """An on/off environment switch: 1/true or 0/false (any case); unset or empty: `default`.

    Anything else is a ValueError naming the variable: `=no` or `=off` must not read as on
    (a plain "is it set?" test would), nor `=yes` silently as off.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    value = FLAG_VALUES.get(raw.lower())
    if value is None:
        raise ValueError(f"environment variable {name}={raw!r} is not a switch value; set it to "
                         "1 or true (on), 0 or false (off), or unset it")
    return value


def in_colab() -> bool:
    """True inside Google Colab (its kernel has the google.colab module)."""
    return "google.colab" in sys.modules


def pick_device() -> torch.device:
    """CUDA if present, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def native_bf16(device: torch.device | str | int | None = None) -> bool:
    """True when the GPU computes bf16 in hardware: compute capability 8.0+ (Ampere, Hopper...).

    `torch.cuda.is_bf16_supported()` also counts emulation by default and says True on a
    T4 (capability 7.5), where bf16 runs emulated and slow; the capability does not.
    """
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def pick_dtype(device: torch.device | str | None = None) -> torch.dtype:
    """bf16 on GPUs with native bf16 (Ampere+), fp16 on older ones (a T4), fp32 on MPS and CPU."""
    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cuda":
        return torch.bfloat16 if native_bf16(device) else torch.float16
    return torch.float32


def needs_grad_scaler(dtype: torch.dtype) -> bool:
    """fp16 needs loss scaling (a GradScaler) so small gradients do not underflow; bf16 does not."""
    return dtype == torch.float16


def set_seed(seed: int = 42) -> None:
    """Seed Python, NumPy and torch (all devices) so a rerun gives the same numbers on a CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run a block with n intra-op CPU threads (None: leave torch's setting alone).

    Generating one token at a time, or timing small steps, on a busy 2-core CPU: a second
    thread waits more than it helps (measured in notebooks 08 and 11: 3.1 s with one thread
    against 11 s with two for 8 prompts x 40 tokens on the tiny model).
    """
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def library_versions(names=LIBRARIES) -> dict[str, str]:
    """Installed versions of the libraries the course depends on ('missing' if absent)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def gpu_summary() -> str:
    """One line naming the GPU and its memory, or saying there is none."""
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    props = torch.cuda.get_device_properties(0)
    return f"{props.name}, {props.total_memory / 2**30:.1f} GiB"


def describe(profile: Profile | str | None = None) -> dict:
    """Print and return profile, device, dtype, GPU and library versions (the setup cell's printout)."""
    profile = get_profile(profile)
    device = pick_device()
    info = {
        "profile": profile.name,
        "model": profile.model.base_description,
        "data": "data/sample (offline)" if profile.data.source == "sample" else "Hugging Face hub",
        "device": device.type,
        "dtype": str(pick_dtype(device)).replace("torch.", ""),
        "gpu": gpu_summary(),
        "colab": in_colab(),
        **library_versions(),
    }
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    need = profile.model.min_gpu_memory_gb
    if need and device.type != "cuda":
        print(f"note: the {profile.name} profile is meant for a GPU with >= {need:g} GB;"
              " on this machine use POET_PROFILE=tiny")
    return info


def colab_requirements(path=REPO_ROOT / "requirements.txt") -> list[str]:
    """The requirement lines a Colab runtime still needs: all but torch, Jupyter and test tools."""
    wanted = []
    for line in open(path, encoding="utf-8"):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = line.split(";")[0]
        for sep in "<>=!~[ ":
            name = name.split(sep)[0]
        if name.lower() not in COLAB_SKIP:
            wanted.append(line)
    return wanted


def install_colab_requirements(run=None) -> list[str]:
    """pip-install what Colab lacks, never torch, keeping huggingface-hub < 2; returns the command."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", *colab_requirements(), *COLAB_CONSTRAINTS]
    (run or subprocess.run)(cmd, check=True)
    return cmd


# ---------------------------------------------------------------- memory of this process


def current_rss() -> int:
    """Resident memory of this process now, in bytes (Linux /proc; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss()


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """Peak resident memory of this process, in bytes: VmHWM on Linux, else ru_maxrss.

    ru_maxrss is not enough on Linux: it also keeps the peak of the parent's memory that a
    fork copied before the exec, so a child of a big notebook kernel would report the kernel.
    """
    try:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024  # "VmHWM:   123456 kB"
    except (OSError, StopIteration):
        import resource  # POSIX only: macOS here (ru_maxrss in bytes), Linux without /proc

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def peak_memory_mb() -> float:
    """Peak GPU memory allocated by torch (CUDA), else this process's peak resident memory, in MiB."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss() / 2**20
