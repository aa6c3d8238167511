"""Generator weight files: ours (weights + the settings to rebuild the model) and the authors'
released `*_net_G_A.pth` (a DataParallel state dict). Both load with `weights_only=True`.

The package ships one model of ours, trained by this code (`assets/enlightengan-cpu.pt`, half
precision, with a JSON card beside it saying what it was trained on and how it scores): it is what
`enhance`, the Ray batch job and `eval table` use when no weights are given."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs
import torch

from enlighten_ray.errors import BadInputError, reason
from enlighten_ray.io.atomic import atomic_output
from enlighten_ray.models.generator import EnlightenGenerator

if TYPE_CHECKING:
    from enlighten_ray.io.storage import Location

__all__ = [
    "DEFAULT_WEIGHTS",
    "FORMAT",
    "ModelInfo",
    "find_generator_file",
    "is_uri",
    "load_generator",
    "read_card",
    "read_generator_file",
    "save_generator",
    "weights_id",
]

FORMAT = "enlighten-ray-generator"
GENERATOR_FILE = "generator.pt"
DEFAULT_WEIGHTS = Path(__file__).parents[1] / "assets" / "enlightengan-cpu.pt"


def is_uri(path: str | Path | None) -> bool:
    """A weights location on a store pyarrow opens (s3://, gs://, file://, ...) rather than a local path."""
    return path is not None and "://" in str(path)


def save_generator(
    model: EnlightenGenerator, path: str | Path, meta: dict[str, Any] | None = None, half: bool = False
) -> str | Path:
    """Write our generator file atomically: {format, version, config, state_dict, meta}. `half`
    stores floating-point tensors in fp16 (half the size; loading casts them back to fp32).
    A URI is uploaded whole once written (an object appears only when complete)."""
    if is_uri(path):
        from enlighten_ray.io.storage import Location, stored  # PyAV comes with storage: only for URIs

        loc = Location(str(path))
        with stored(loc, loc.root) as tmp:
            save_generator(model, tmp, meta, half)
        return str(path)
    model = getattr(model, "module", model)  # accept a DDP-wrapped model
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    payload = {
        "format": FORMAT,
        "version": 1,
        "config": {"width": model.width, "align_corners": model.align_corners, "prior": model.prior},
        "state_dict": state,
        "meta": dict(meta or {}),
    }
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_card(weights: str | Path) -> dict[str, Any]:
    """The JSON card beside a weights file (`x.pt` -> `x.json`), or {} when it has none."""
    card = Path(weights).with_suffix(".json")
    if not card.is_file():
        return {}
    try:
        return json.loads(card.read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(card, f"cannot read the model card beside the weights ({exc})") from exc


def _remote_generator_file(loc: Location) -> str:
    """find_generator_file on a store: the file itself, a checkpoint's or the newest checkpoint's."""
    try:
        kind = loc.fs.get_file_info(loc.root).type
        if kind == pafs.FileType.File:
            return loc.root
        if kind == pafs.FileType.NotFound:
            raise BadInputError(loc.uri, "no such weights file or directory")
        if loc.is_file(loc.path(GENERATOR_FILE)):
            return loc.path(GENERATOR_FILE)
        files = [PurePosixPath(p) for p in loc.listing()]
    except OSError as exc:
        raise BadInputError(loc.uri, f"cannot read ({reason(exc)})") from exc
    found = sorted(
        (p for p in files if p.name == GENERATOR_FILE and p.parent.name.startswith("checkpoint_")),
        key=lambda p: p.parent.name,
    )
    if not found:
        raise BadInputError(loc.uri, f"no {GENERATOR_FILE} in this directory or its checkpoints")
    return str(found[-1])


@contextlib.contextmanager
def _fetched(uri: str) -> Iterator[tuple[Path, str]]:
    """A weights URI as a local copy (with its card beside it) and the URI of the file it names."""
    from enlighten_ray.io.storage import Location  # PyAV comes with storage: only for URIs

    loc = Location(uri)
    remote = _remote_generator_file(loc)
    with tempfile.TemporaryDirectory(prefix="enlighten-weights-") as tmp:
        local = Path(tmp) / PurePosixPath(remote).name
        card = str(PurePosixPath(remote).with_suffix(".json"))
        for src, dst in [(remote, local)] + ([(card, local.with_suffix(".json"))] if loc.is_file(card) else []):
            try:
                with loc.fs.open_input_stream(src) as f, open(dst, "wb") as out:
                    shutil.copyfileobj(f, out, 1 << 20)
            except OSError as exc:
                raise BadInputError(loc.show(src), f"cannot download ({reason(exc)})") from exc
        yield local, loc.show(remote)


def find_generator_file(path: str | Path | None) -> Path:
    """None is the shipped model; a file is itself; a checkpoint directory holds `generator.pt`;
    a run directory's newest checkpoint (Ray names them `checkpoint_<timestamp>`, which sorts by
    time) is used."""
    if path is None:
        if not DEFAULT_WEIGHTS.is_file():
            raise BadInputError(DEFAULT_WEIGHTS, "the shipped model is missing from this install: give --weights")
        return DEFAULT_WEIGHTS
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise BadInputError(path, "no such weights file or directory")
    if (path / GENERATOR_FILE).is_file():
        return path / GENERATOR_FILE
    found = sorted(path.glob(f"**/checkpoint_*/{GENERATOR_FILE}"), key=lambda p: p.parent.name)
    if not found:
        raise BadInputError(path, f"no {GENERATOR_FILE} in this directory or its checkpoints")
    return found[-1]


def _official_to_ours(state: dict[str, torch.Tensor], path: Path) -> tuple[dict[str, torch.Tensor], int]:
    """Strip DataParallel's `module.`; torch 0.3 files predate BatchNorm's num_batches_tracked."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if "conv1_1.weight" not in state:
        raise BadInputError(path, "not a generator file: no conv1_1.weight (is this a discriminator?)")
    width = int(state["conv1_1.weight"].shape[0])
    for key in [k for k in state if k.endswith(".running_mean")]:
        state.setdefault(key.replace("running_mean", "num_batches_tracked"), torch.tensor(0))
    return state, width


def _looks_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip (PyTorch >= 1.6) or, before, a pickle (protocol 2: 0x80 0x02)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise BadInputError(path, f"cannot read ({reason(exc)})") from exc
    return head.startswith(b"PK\x03\x04") or head.startswith(b"\x80\x02")


def read_generator_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str, dict[str, Any]]:
    """(state_dict, model config, origin "ours"/"official", meta) of a weights file."""
    path = Path(path)
    if not _looks_like_torch_file(path):
        raise BadInputError(path, "not a PyTorch weights file (neither a torch.save zip nor a legacy pickle)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's message advises weights_only=False: never here
        raise BadInputError(path, "holds Python objects beyond tensors (code), so it was refused") from exc
    except Exception as exc:
        raise BadInputError(path, f"cannot read as PyTorch weights ({reason(exc)})") from exc
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        state, config = obj.get("state_dict"), obj.get("config")
        if not isinstance(state, dict) or not isinstance(config, dict):
            raise BadInputError(path, "an enlighten-ray generator file without its state_dict or config")
        return state, dict(config), "ours", dict(obj.get("meta") or {})
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, width = _official_to_ours(obj, path)
        return state, {"width": width, "align_corners": True}, "official", {}
    raise BadInputError(path, "not an enlighten-ray generator file nor a released *_net_G_A.pth state dict")


@dataclass(frozen=True)
class ModelInfo:
    """What a generator file is, as torchvision's `Weights` carries its meta."""

    path: str
    origin: str  # "ours" (enlighten-ray's file) or "official" (the authors' *_net_G_A.pth)
    config: dict[str, Any]  # the generator's arguments (width, align_corners, prior: absent = none)
    params: int
    id: str  # sha256 prefix of the file: names what was made with it
    meta: dict[str, Any]  # what the training run recorded (epoch, step, vgg, ...)
    card: dict[str, Any]  # the JSON card beside the file (the shipped model's), or {}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def weights_id(path: str | Path) -> str:
    """sha256 prefix of a weights file: names what was made with it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def load_generator(
    path: str | Path | None = None, map_location: str | torch.device = "cpu"
) -> tuple[EnlightenGenerator, ModelInfo]:
    """The generator in eval mode and what it is; `path` None is the shipped model. A URI
    (s3://bucket/run, gs://.../generator.pt) is read through the same storage layer as the data."""
    if is_uri(path):
        with _fetched(str(path)) as (local, remote):
            try:
                model, info = load_generator(local, map_location)
            except BadInputError as exc:  # name the object, not its temporary local copy
                raise BadInputError(remote, exc.reason) from exc
        return model, dataclasses.replace(info, path=remote)
    file = find_generator_file(path)
    state, config, origin, meta = read_generator_file(file)
    try:
        model = EnlightenGenerator(**config)
    except (TypeError, ValueError) as exc:
        raise BadInputError(file, f"its generator config {config} is not one this version builds ({exc})") from exc
    missing, unexpected = _key_mismatch(model, state)
    if missing or unexpected:
        raise BadInputError(
            file,
            f"weights do not fit the generator: missing keys {missing or '[]'}, unexpected keys {unexpected or '[]'}",
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # same keys, other shapes
        raise BadInputError(file, f"weights do not fit the generator: {str(exc).splitlines()[-1].strip()}") from exc
    info = ModelInfo(
        path=str(file),
        origin=origin,
        config=config,
        params=sum(p.numel() for p in model.parameters()),
        id=weights_id(file),
        meta=meta,
        card=read_card(file),
    )
    return model.to(map_location).eval(), info


def _key_mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)
