"""YOLO weights as an MLflow pyfunc model (what ``runs:/<id>/model`` loads).

MLflow's own loader (``mlflow.pyfunc.load_model``, ``mlflow models serve``) unpickles this class from
``python_model.pkl``, so load models from a store you trust that way. The pipeline itself never does:
it downloads the ``weights`` artifact and loads it under safe loading (`pipeline.tracking.registry.model_weights`).
"""

from __future__ import annotations

import mlflow
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ParamSchema, ParamSpec


class YoloPyfuncModel(mlflow.pyfunc.PythonModel):
    """YOLO weights as an MLflow pyfunc model: image paths (or one image array) in, one row per detection out.

    ``params``: ``conf`` (score threshold, default 0.25) and ``imgsz`` (default: the training size).
    """

    COLUMNS = ["source", "class_id", "class_name", "confidence", "x0", "y0", "x1", "y1"]
    # Inputs are paths or arrays, outputs a DataFrame: nothing MLflow's type-hint validation can describe.
    _skip_type_hint_validation = True

    @staticmethod
    def signature() -> ModelSignature:
        return ModelSignature(
            inputs=None,
            outputs=None,
            params=ParamSchema([ParamSpec("conf", "double", 0.25), ParamSpec("imgsz", "long", 0)]),
        )

    def load_context(self, context):
        from pipeline.checkpoints import trained_imgsz
        from pipeline.yolo_env import configure_ultralytics

        configure_ultralytics()  # the checkpoint itself loads under the safe-loading policy
        from ultralytics import YOLO

        self.model = YOLO(context.artifacts["weights"], task="detect")
        self.imgsz = trained_imgsz(self.model)

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would build a schema from them
        import numpy as np
        import pandas as pd

        params = params or {}
        if isinstance(model_input, pd.DataFrame):
            sources = [str(v) for v in model_input.iloc[:, 0]]
        elif isinstance(model_input, np.ndarray):
            sources = [model_input]
        else:
            sources = [str(v) for v in model_input]
        conf = float(params.get("conf", 0.25))
        imgsz = int(params.get("imgsz") or self.imgsz)
        rows = []
        for index, source in enumerate(sources):
            label = source if isinstance(source, str) else str(index)
            for result in self.model.predict(source, conf=conf, imgsz=imgsz, verbose=False):
                boxes = result.boxes
                for xyxy, score, cls in zip(boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist()):
                    rows.append([label, int(cls), result.names[int(cls)], score, *xyxy])
        return pd.DataFrame(rows, columns=self.COLUMNS)
