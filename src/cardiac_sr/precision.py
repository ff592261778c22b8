"""Reduced-precision inference: ``cardiac-sr predict --precision bf16`` (and ``assess``, to measure it).

``bf16`` clones the generator with Keras' ``mixed_bfloat16`` policy: its convolutions run in bfloat16
(oneDNN's AVX512-BF16 / AMX kernels where the CPU has them) with float32 weights, while the bicubic
path of the global skip (``baseline``) and the final sum (``global_skip``) stay float32, so bfloat16's
8-bit mantissa rounds only the small learnt detail, never the image itself.  Its cost in quality is
measured with ``assess`` on the Sunnybrook studies (docs/operations.md); ``fp32`` (the default) is the
exact path, bit-identical to the model as trained.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
FLOAT32_LAYERS = ("baseline", "global_skip")  # the image path: bicubic of the input and the sum


def cpu_has_bf16() -> bool | None:
    """Whether this CPU has bfloat16 instructions (``avx512_bf16`` or AMX); None where it cannot be told."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def with_precision(model, precision: str):
    """``model`` itself for ``fp32``; for ``bf16`` a clone with the same weights whose layers compute in
    bfloat16, except :data:`FLOAT32_LAYERS`.  Its outputs are float32."""
    if precision == "fp32":
        return model
    import keras

    if precision != "bf16":
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if cpu_has_bf16() is False:
        log.warning("--precision bf16: this CPU has no bfloat16 instructions (avx512_bf16/amx); TensorFlow "
                    "emulates them and this will likely be slower than fp32")

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float32" if layer.name in FLOAT32_LAYERS else "mixed_bfloat16"
        return layer.__class__.from_config(config)

    reduced = keras.models.clone_model(model, clone_function=clone)
    reduced.set_weights(model.get_weights())
    log.info("precision bf16: convolutions in bfloat16, the bicubic path and the output sum in float32")
    return reduced
