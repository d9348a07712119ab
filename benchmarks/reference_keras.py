"""The reference implementation: the course ConvNet in Keras 3 on TensorFlow, layer for layer.

    Input 64x64x3 -> Conv2D 96 4x4 same + ReLU -> MaxPool 3/2 same -> Conv2D 192 5x5 same + ReLU
    -> MaxPool 3/2 same -> Conv2D 288 3x3 -> Conv2D 288 3x3 -> Conv2D 256 3x3 (same + ReLU)
    -> MaxPool 3/2 same -> Flatten (L5, 16,384) -> Dropout 0.5 -> Dense 2048 ReLU (L6)
    -> Dropout 0.5 -> Dense 2048 ReLU (L7) -> Dense num_classes (logits)

trained with Adam(learning_rate=1e-4, amsgrad=True) on sparse categorical cross-entropy, batch 100.
TensorFlow is a benchmark-only extra (``pip install -e ".[bench]"``): nothing in ``neuralcodes`` imports
this module, and the harness skips the Keras column when TensorFlow is missing.

``torch_pooling=True`` replaces Keras' 'same' pooling (pads one pixel at the bottom/right) by PyTorch's
``MaxPool2d(3, 2, padding=1)`` (one pixel on every side, written as zero padding, which equals -inf
padding after a ReLU): the only layer whose windows differ between the two implementations, so with it
the PyTorch weights copied over must give the same outputs (tests/benchmarks/test_bench_smoke.py).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from benchmarks.timing import Clock

# Quiet TensorFlow's C++ start-up banner; must be set before the import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

LAYERS = ("L5", "L6", "L7")


def tensorflow_missing() -> str | None:
    """Why the Keras column cannot run here, or None when it can."""
    try:
        import keras
        import tensorflow as tf
    except ImportError as exc:
        return f'TensorFlow/Keras not installed ({exc.name or exc}): pip install -e ".[bench]" for the Keras column'
    if int(keras.__version__.split(".")[0]) < 3:
        return f'Keras {keras.__version__} found; the reference needs Keras 3 (pip install -e ".[bench]")'
    if keras.backend.backend() != "tensorflow":
        return f"Keras runs on {keras.backend.backend()}; set KERAS_BACKEND=tensorflow"
    del tf
    return None


def versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__}


def build_reference_convnet(
    num_classes: int = 190, dropout: float = 0.5, torch_pooling: bool = False
) -> Any:
    """The course ConvNet as a Keras functional model whose outputs are logits; layers named conv1..fc8."""
    import keras
    from keras import layers

    def pool(x: Any, name: str) -> Any:
        if torch_pooling:
            x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
            return layers.MaxPooling2D(3, strides=2, padding="valid", name=name)(x)
        return layers.MaxPooling2D(3, strides=2, padding="same", name=name)(x)

    inputs = keras.Input((64, 64, 3), name="image")
    x = layers.Conv2D(96, 4, padding="same", activation="relu", name="conv1")(inputs)
    x = pool(x, "pool1")
    x = layers.Conv2D(192, 5, padding="same", activation="relu", name="conv2")(x)
    x = pool(x, "pool2")
    x = layers.Conv2D(288, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.Conv2D(288, 3, padding="same", activation="relu", name="conv4")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu", name="conv5")(x)
    x = pool(x, "pool5")
    l5 = layers.Flatten(name="L5")(x)
    x = layers.Dropout(dropout, name="drop6")(l5)
    l6 = layers.Dense(2048, activation="relu", name="L6")(x)
    x = layers.Dropout(dropout, name="drop7")(l6)
    l7 = layers.Dense(2048, activation="relu", name="L7")(x)
    logits = layers.Dense(num_classes, name="fc8")(l7)
    return keras.Model(inputs, logits, name="course_convnet")


def code_extractor(model: Any) -> Any:
    """One model giving L5, L6 and L7 from one forward pass (the cheapest way Keras can extract all three)."""
    import keras

    return keras.Model(
        model.inputs, [model.get_layer(name).output for name in LAYERS], name="codes"
    )


def compile_for_training(model: Any, lr: float = 1e-4) -> Any:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr, amsgrad=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _seeded(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)


def train_throughput(
    steps: int, batch: int, warmup: int = 2, num_classes: int = 190, seed: int = 0
) -> dict[str, Any]:
    """images/s of ``train_on_batch`` (forward + backward + Adam amsgrad) on one fixed random batch."""
    _seeded(seed)
    model = compile_for_training(build_reference_convnet(num_classes))
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 64, 64, 3), dtype=np.float32)
    y = rng.integers(0, num_classes, batch)
    for _ in range(warmup):  # the first call traces the step function
        model.train_on_batch(x, y)
    with Clock() as clock:
        for _ in range(steps):
            loss = model.train_on_batch(x, y)
    return {
        **clock.figures(steps * batch),
        "steps": steps,
        "batch": batch,
        "final_loss": float(np.asarray(loss).reshape(-1)[0]),
        "precision": "fp32",
        "jit_compile": bool(model.jit_compile),
        **versions(),
    }


def infer_throughput(
    batches: int, batch: int, warmup: int = 1, num_classes: int = 190, seed: int = 0
) -> dict[str, Any]:
    """images/s of L2-normalised L5/L6/L7 codes: one forward pass per batch (dropout off), numpy normalisation."""
    _seeded(seed)
    extractor = code_extractor(build_reference_convnet(num_classes))
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 64, 64, 3), dtype=np.float32)
    for _ in range(warmup):
        extractor.predict_on_batch(x)
    with Clock() as clock:
        for _ in range(batches):
            codes = [np.asarray(c) for c in extractor.predict_on_batch(x)]
            codes = [c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12) for c in codes]
    return {
        **clock.figures(batches * batch),
        "batches": batches,
        "batch": batch,
        "dims": [int(c.shape[1]) for c in codes],
        "precision": "fp32",
        **versions(),
    }


def copy_torch_weights(keras_model: Any, torch_model: Any) -> None:
    """Load a ``NeuralCodesConvNet``'s weights into ``keras_model`` (conv OIHW -> HWIO, dense transposed).

    fc6 also changes its input order: PyTorch flattens (C, H, W), Keras (H, W, C).
    """
    state = {k: v.detach().float().cpu().numpy() for k, v in torch_model.state_dict().items()}
    convs = [
        k[: -len(".weight")] for k in state if k.startswith("features.") and k.endswith(".weight")
    ]
    for name, prefix in zip(("conv1", "conv2", "conv3", "conv4", "conv5"), convs, strict=True):
        keras_model.get_layer(name).set_weights(
            [state[f"{prefix}.weight"].transpose(2, 3, 1, 0), state[f"{prefix}.bias"]]
        )
    fc6 = state["fc6.weight"].reshape(2048, 256, 8, 8).transpose(0, 2, 3, 1).reshape(2048, -1)
    keras_model.get_layer("L6").set_weights([fc6.T, state["fc6.bias"]])
    keras_model.get_layer("L7").set_weights([state["fc7.weight"].T, state["fc7.bias"]])
    keras_model.get_layer("fc8").set_weights([state["fc8.weight"].T, state["fc8.bias"]])


def compare_with_torch(seed: int = 0, batch: int = 4) -> dict[str, Any]:
    """Copy a ``NeuralCodesConvNet``'s weights into the Keras network and compare L5/L6/L7/logits (dropout off).

    Returns the largest absolute difference per layer with PyTorch's pooling windows (``torch_pooling``)
    and with Keras' own 'same' pooling, plus both models' parameter counts per layer.
    """
    import torch

    from neuralcodes.models.convnet import NeuralCodesConvNet

    torch.manual_seed(seed)
    net = NeuralCodesConvNet(190).eval()
    x = np.random.default_rng(seed).random((batch, 64, 64, 3), dtype=np.float32)
    with torch.inference_mode():
        ours = net.forward_features(
            torch.from_numpy(x).permute(0, 3, 1, 2), ("L5", "L6", "L7", "logits")
        )
    ours = {k: v.numpy() for k, v in ours.items()}
    # Ours flattens L5 in (C, H, W) order, Keras in (H, W, C): compare L5 in Keras' order.
    ours["L5"] = ours["L5"].reshape(batch, 256, 8, 8).transpose(0, 2, 3, 1).reshape(batch, -1)
    out: dict[str, Any] = {}
    for pooling in ("torch_pooling", "keras_same_pooling"):
        import keras

        model = build_reference_convnet(190, torch_pooling=pooling == "torch_pooling")
        copy_torch_weights(model, net)
        probe = keras.Model(
            model.inputs, [model.get_layer(n).output for n in LAYERS] + [model.output]
        )
        theirs = dict(
            zip(
                (*LAYERS, "logits"),
                (np.asarray(t) for t in probe([x], training=False)),
                strict=True,
            )
        )
        out[pooling] = {k: float(np.abs(theirs[k] - ours[k]).max()) for k in theirs}
        out["scale"] = {k: float(np.abs(v).max()) for k, v in ours.items()}
    out["keras_parameters"] = {
        layer.name: int(layer.count_params()) for layer in model.layers if layer.count_params()
    }
    out["torch_parameters"] = {
        name: int(sum(p.numel() for p in module.parameters()))
        for name, module in net.named_modules()
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear)
    }
    return out


if __name__ == "__main__":
    import json
    import sys

    if sys.argv[1:] != ["--compare"]:
        raise SystemExit("usage: python -m benchmarks.reference_keras --compare")
    # One process for the whole check (TensorFlow takes seconds to import): then one tiny step of each measurement.
    result = compare_with_torch()
    result["train_step"] = train_throughput(steps=1, batch=2, warmup=1)
    result["infer_step"] = infer_throughput(batches=1, batch=2, warmup=0)
    print(json.dumps(result))
