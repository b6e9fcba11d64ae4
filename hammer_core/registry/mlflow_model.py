"""MLflow "model from code" entry point: MLflow runs this file to build the pyfunc (no pickle)."""

from mlflow.models import set_model

from hammer_core.registry.serving import HammerFunctionCaller

set_model(HammerFunctionCaller())
