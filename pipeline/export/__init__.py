"""A screen bundle for a line PC: the network (ONNX or OpenVINO IR, FP32 or INT8) beside its screen.json."""
