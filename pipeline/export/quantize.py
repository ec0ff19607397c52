"""The detection network in INT8 (ONNX Runtime or OpenVINO) and as OpenVINO's FP32 IR, for the screen bundle.

INT8 is static post-training quantization by the libraries themselves, calibrated on letterboxed images of the
training data: ONNX Runtime's ``quantize_static`` and NNCF's ``nncf.quantize``. The outputs keep the FP32
network's dynamic batch and image size. The settings, chosen on 2 Xeon cores with VNNI and AMX (YOLO11n, batch 8):

* The head's decoding stays in float: the Detect module's own operations (the DFL, the box arithmetic, the class
  Sigmoid and the final Concat of boxes and scores); its convolutions are quantized. Quantized, the final Concat
  puts boxes in pixels and scores in [0, 1] on one INT8 scale, which rounds every score to 0, and a quantized DFL
  alone cost a third of a small model's mAP50. NNCF gets the ignored scope ultralytics' own OpenVINO INT8 export
  gives it, and ONNX Runtime the same nodes.
* ONNX Runtime: QDQ format, uint8 activations and int8 weights per tensor, MinMax calibration, every op type it
  can quantize. Its fast x86 kernels take uint8 activations (int8 ones ran at half the FP32 speed); quantizing
  only the convolutions gained nothing (a Dequantize/Quantize pair around every SiLU); per-channel weights,
  reduced range, Percentile or Entropy calibration and the QOperator format were neither more accurate nor
  faster, and ``quant_pre_process`` changed nothing (its symbolic shape inference fails on these graphs).
  It is 1.3-1.6x as fast as FP32, short of OpenVINO's INT8: the float DFL Softmax stays (a sixth of the FP32
  time at 320 px) and a quantized SiLU (QLinearSigmoid, QLinearMul) costs more than the float one ORT fuses.
* OpenVINO: NNCF's MIXED preset (symmetric weights, asymmetric activations), as ultralytics uses, on the graph
  OpenVINO's converter would make (each SiLU one Swish), with the activations' ranges from their minima and
  maxima over all images (as ONNX Runtime's MinMax): NNCF's default, each image's range averaged over the
  images, clips, and moved boxes 13x as far from FP32's. 1.8-2.1x as fast as ONNX Runtime's FP32.

* The ``embedding`` output (the backbone's pooled features, `pipeline.inference.embedding`) stays in float too: its
  pooling nodes are left out of quantization in both, so the drift check's embeddings stay close to FP32's.

The libraries report usage unless told not to (`block_telemetry`, which every function here calls first).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.inference.embedding import EMBEDDING_PREFIX
from pipeline.messages import UserError, first_line
from pipeline.telemetry import block_telemetry

if TYPE_CHECKING:
    import numpy as np


class QuantizeError(UserError):
    """A quantization or conversion failed; the message is one line naming the file and the library's reason."""


def onnx_int8(fp32: Path, out: Path, samples: Sequence[np.ndarray]) -> Path:
    """``fp32`` (an ONNX file of ultralytics' exporter) quantized to INT8 by ONNX Runtime into ``out``, calibrated
    on ``samples`` (network inputs: float32, (1, 3, H, W), in [0, 1]). Settings: see the module's docstring."""
    block_telemetry()
    model = _onnx_graph(fp32)
    inputs = _checked(samples)
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            sample = next(self._feeds, None)
            return None if sample is None else {input_name: sample}

    input_name = model.graph.input[0].name
    excluded = _kept_float([(node.name, node.op_type) for node in model.graph.node])
    del model
    with _written(out) as partial, _quiet(f"{fp32.name}: ONNX Runtime quantization failed"):
        quantize_static(
            str(fp32),
            str(partial),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=False,
            reduce_range=False,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=excluded,
        )
    return out


def openvino_ir(fp32_onnx: Path, out_xml: Path) -> Path:
    """``fp32_onnx`` as OpenVINO IR in FP32 (``out_xml`` and the ``.bin`` beside it), as OpenVINO's converter would
    write it but without the converter (and its telemetry). Weights stay FP32 (no FP16 compression)."""
    model = _openvino_model(fp32_onnx)
    return _save_ir(model, out_xml, f"{fp32_onnx.name}: OpenVINO could not write the IR")


def openvino_int8(fp32_onnx: Path, out_xml: Path, samples: Sequence[np.ndarray]) -> Path:
    """``fp32_onnx`` quantized to INT8 by NNCF as OpenVINO IR (``out_xml`` and its ``.bin``), calibrated on all of
    ``samples`` (as `onnx_int8`'s), with the head's decoding left in float as ultralytics' exporter leaves it."""
    inputs = _checked(samples)
    model = _openvino_model(fp32_onnx)
    with _quiet(f"{fp32_onnx.name}: NNCF quantization failed"):  # importing nncf imports torch, which may warn
        try:
            import nncf
        except ImportError:
            raise QuantizeError("NNCF is not installed (pip install nncf)") from None
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        level = logging.getLogger("nncf").level
        nncf.set_log_level(logging.ERROR)  # its handler holds the real stdout, past any redirection
        try:
            ops = [(op.get_friendly_name(), op.get_type_name()) for op in model.get_ordered_ops()]
            quantized = nncf.quantize(
                model,
                nncf.Dataset(inputs),
                preset=nncf.QuantizationPreset.MIXED,
                subset_size=len(inputs),  # all of them, not NNCF's default of 300
                ignored_scope=nncf.IgnoredScope(names=_kept_float(ops)),
                advanced_parameters=AdvancedQuantizationParameters(
                    activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX  # see the module's doc
                ),
            )
        finally:
            nncf.set_log_level(level)
    return _save_ir(quantized, out_xml, f"{fp32_onnx.name}: OpenVINO could not write the INT8 IR")


def _kept_float(ops: Sequence[tuple[str, str]]) -> list[str]:
    """The operations left out of quantization: the head's decoding and the embedding's pooling (see the module's
    docstring)."""
    return _head_decoding(ops) + [name for name, _ in ops if name.startswith(EMBEDDING_PREFIX)]


def _head_decoding(ops: Sequence[tuple[str, str]]) -> list[str]:
    """The names of the detection head's decoding operations in an ultralytics export, whose node names follow
    the modules (``/model.23/dfl/conv/Conv``): the head's own operations and its DFL's, found from the class
    Sigmoid, the network's last. Its convolutions (``/model.23/cv2.0/...``) are not among them. Empty for a
    graph not named so."""
    sigmoids = [name for name, kind in ops if kind == "Sigmoid"]
    head = sigmoids[-1].rpartition("/")[0] + "/" if sigmoids else ""
    if head.strip("/") == "":
        return []
    return [
        name
        for name, _ in ops
        if name.startswith(head) and ("/" not in name[len(head) :] or name.startswith(f"{head}dfl/"))
    ]


def _checked(samples: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The calibration inputs as contiguous float32 arrays, or a QuantizeError saying what is wrong with them."""
    import numpy as np

    arrays = [np.ascontiguousarray(sample, dtype=np.float32) for sample in samples]
    if not arrays:
        raise QuantizeError("INT8 calibration needs at least one image of the training data")
    wrong = next((a.shape for a in arrays if a.ndim != 4 or a.shape[1] != 3), None)
    if wrong is not None:
        raise QuantizeError(f"INT8 calibration images must be network inputs of shape (1, 3, H, W), not {wrong}")
    return arrays


def _onnx_graph(path: Path) -> Any:
    if not path.is_file():
        raise QuantizeError(f"{path}: no such ONNX file")
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: one line naming it
        raise QuantizeError(f"{path}: not a readable ONNX file ({first_line(exc)})") from None


def _openvino_model(onnx_file: Path) -> Any:
    """``onnx_file`` read by OpenVINO's runtime (its shapes stay dynamic) and given the graph transformations
    OpenVINO's converter applies (the same calls, without the converter's telemetry): they fuse each SiLU's
    Sigmoid and Multiply into one Swish, without which NNCF quantizes both of the Multiply's inputs."""
    if not onnx_file.is_file():
        raise QuantizeError(f"{onnx_file}: no such ONNX file")
    block_telemetry()
    try:
        import openvino as ov
        from openvino._offline_transformations import apply_fused_names_cleanup, apply_moc_transformations
    except ImportError:
        raise QuantizeError("OpenVINO is not installed (pip install openvino nncf)") from None
    with _quiet(f"{onnx_file}: OpenVINO cannot read it"):
        model = ov.Core().read_model(str(onnx_file))
        apply_moc_transformations(model, cf=False, smart_reshape=True)
        apply_fused_names_cleanup(model)
    return model


def _save_ir(model: Any, out_xml: Path, failure: str) -> Path:
    import openvino as ov

    out_xml.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_xml.parent, prefix=".ir-") as tmp:
        with _quiet(failure):
            ov.save_model(model, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
        os.replace(Path(tmp) / "model.bin", out_xml.with_suffix(".bin"))
        os.replace(Path(tmp) / "model.xml", out_xml)  # last: an .xml is only ever beside its own .bin
    return out_xml


@contextlib.contextmanager
def _written(out: Path) -> Iterator[Path]:
    """A temporary path beside ``out`` that becomes ``out`` when the block succeeds: whole or absent."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".int8-") as tmp:
        partial = Path(tmp) / out.name
        yield partial
        os.replace(partial, out)


@contextlib.contextmanager
def _quiet(failure: str) -> Iterator[None]:
    """The block's library output kept from the terminal (prints, progress bars, log records, native
    stdout/stderr), and any exception it raises turned into a one-line QuantizeError starting with ``failure``."""
    previous_disable = logging.root.manager.disable
    logging.disable(logging.WARNING)  # ONNX Runtime's quantizer warns on the root logger, dozens of lines
    try:
        with (
            _native_output_hidden(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            yield
    except QuantizeError:
        raise
    except Exception as exc:  # noqa: BLE001 - a library's failure, as the one line the command prints
        raise QuantizeError(f"{failure}: {first_line(exc)}") from exc
    finally:
        logging.disable(previous_disable)


@contextlib.contextmanager
def _native_output_hidden() -> Iterator[None]:
    """File descriptors 1 and 2 pointed at /dev/null for the block (the libraries' C++ warnings write there)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
