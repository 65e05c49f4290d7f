"""Execution providers: names, availability checks that fail loudly, per-node placement.

onnxruntime only warns and silently runs on CPU when asked for an absent provider; edgeslim
refuses instead, naming what to install, and disables the CPU fallback for non-CPU providers
(`session.disable_cpu_ep_fallback`) so a graph that would partly fall back fails visibly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeslim import artifacts
from edgeslim.errors import InputError, ProviderUnavailable

CPU = "CPUExecutionProvider"
PROVIDERS: dict[str, tuple[str, str]] = {
    # short name: (onnxruntime provider, what to install)
    "cpu": ("CPUExecutionProvider", "onnxruntime"),
    "cuda": ("CUDAExecutionProvider", "pip install 'edgeslim[gpu]' (onnxruntime-gpu) on a machine with CUDA"),
    "tensorrt": (
        "TensorrtExecutionProvider",
        "pip install 'edgeslim[gpu]' (onnxruntime-gpu) with TensorRT libraries",
    ),
    "openvino": (
        "OpenVINOExecutionProvider",
        "onnxruntime-openvino in its own environment (it ships its own onnxruntime module): "
        "see tools/bench_openvino.sh",
    ),
    "dnnl": ("DnnlExecutionProvider", "an onnxruntime build with oneDNN"),
    "xnnpack": ("XnnpackExecutionProvider", "an onnxruntime build with XNNPACK"),
    "coreml": ("CoreMLExecutionProvider", "onnxruntime on macOS"),
    "directml": ("DmlExecutionProvider", "onnxruntime-directml on Windows"),
    "qnn": ("QNNExecutionProvider", "onnxruntime-qnn"),
}


def known(name: str) -> str:
    """The short name of a provider given by short name (openvino) or onnxruntime name
    (OpenVINOExecutionProvider); InputError listing the known ones otherwise."""
    for key, (full, _) in PROVIDERS.items():
        if name in (key, full):
            return key
    listed = ", ".join(f"{k} ({v[0]})" for k, v in PROVIDERS.items() if k != "cpu")
    raise InputError(f"unknown execution provider '{name}': edgeslim knows {listed}")


def resolve(ep: str) -> str:
    """Short name (cpu, cuda, ...) -> available onnxruntime provider name, or a loud error."""
    import onnxruntime as ort

    if ep not in PROVIDERS:
        raise InputError(f"unknown execution provider '{ep}': choose one of {', '.join(PROVIDERS)}")
    name, install = PROVIDERS[ep]
    available = ort.get_available_providers()
    if name in available:
        return name
    for device in _plugin_devices():
        if device.ep_name == name:
            return name
    raise ProviderUnavailable(
        f"{name} is not available in onnxruntime {ort.__version__} (available: {', '.join(available)}): "
        f"to use it, install {install.removeprefix('pip install ')}"
    )


def facts(ep: str) -> dict[str, Any]:
    """What a measurement on `ep` depends on: the onnxruntime provider, its build and devices.

    Resolving `ep` raises resolve()'s loud error when it is absent, so a recipe that names a
    GPU provider fails when its plan is made, before any step runs (fingerprint.inputs)."""
    import onnxruntime as ort

    name = resolve(ep)
    devices = [
        f"{d.device.vendor}:{d.device.vendor_id}:{d.device.device_id}"
        for d in _plugin_devices()
        if d.ep_name == name
    ]
    return {"provider": name, "onnxruntime": ort.__version__, "device": ort.get_device(), "devices": devices}


def _plugin_devices() -> list[Any]:
    import onnxruntime as ort

    get = getattr(ort, "get_ep_devices", None)
    return list(get()) if get else []


def register_plugin(name: str, library: Path) -> str:
    """Register a plugin EP library (onnxruntime-ep-* packages) under its onnxruntime provider
    `name`; it must find a device whose EP carries that name."""
    import onnxruntime as ort

    if not library.is_file():
        raise InputError(f"EP library {library} not found: give the path of the plugin's shared library")
    try:
        # a relative path would be looked up beside onnxruntime's own libraries
        ort.register_execution_provider_library(name, str(library.resolve()))
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise InputError(f"EP library {library} could not be registered as {name} ({first})") from None
    devices = [d for d in _plugin_devices() if d.ep_name == name]
    if not devices:
        raise ProviderUnavailable(
            f"plugin EP '{name}' registered but found no device on this machine "
            "(e.g. the OpenVINO plugin accepts Intel devices only)"
        )
    return name


def session(
    model: Path,
    ep: str = CPU,
    threads: int | None = None,
    timing: bool = False,
    allow_fallback: bool = False,
    profile_prefix: str | None = None,
) -> Any:
    """The one InferenceSession factory: `ep` (built-in by name, plugin EPs by their devices),
    `threads` intra-op threads (None: onnxruntime's choice), quiet logging; `timing` adds one
    inter-op thread and no spinning; no silent CPU fallback for other EPs unless allowed."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if timing:
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if ep != CPU and not allow_fallback:
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if ep not in ort.get_available_providers():  # a registered plugin EP
        options.add_provider_for_devices([d for d in _plugin_devices() if d.ep_name == ep], {})
        return ort.InferenceSession(str(model), options)
    chain = [ep, CPU] if allow_fallback and ep != CPU else [ep]
    return ort.InferenceSession(str(model), options, providers=chain)


def node_placement(
    model: Path, ep: str, feeds: dict[str, Any], allow_fallback: bool = False
) -> dict[str, int]:
    """Nodes per execution provider, from one profiled run (a partial fall-back shows here)."""

    with artifacts.scratch("profile") as tmp:
        sess = session(model, ep, 1, True, allow_fallback, profile_prefix=str(tmp / "profile"))
        names = {i.name for i in sess.get_inputs()}
        sess.run(None, {k: v for k, v in feeds.items() if k in names})
        events = json.loads(Path(sess.end_profiling()).read_text())
    placed: dict[str, set[str]] = {}
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "provider" in args:
            placed.setdefault(args["provider"], set()).add(event["name"].removesuffix("_kernel_time"))
    return {provider: len(nodes) for provider, nodes in sorted(placed.items())}
