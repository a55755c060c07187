"""Models as artefacts: the model registry folder, ``ceap train`` (``ceap.ml.train``) and the
check that keeps programs and models in agreement (``ceap.ml.checks``)."""

from ceap.ml.artefacts import Artefact, FeatureSpec, ModelMeta, ModelRef, ModelRegistry, parse_ref
from ceap.ml.deps import MissingDependency

__all__ = ["Artefact", "FeatureSpec", "MissingDependency", "ModelMeta", "ModelRef", "ModelRegistry",
           "parse_ref"]
