"""velvet: 3D volumetric vision-language pretraining for CT (VELVET-Med).

``import velvet`` is deliberately light: heavy dependencies (MONAI, transformers, Lightning) are
imported only when the attribute that needs them is first used (PEP 562 module ``__getattr__``).
"""

from __future__ import annotations

from velvet._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> "module:attribute", resolved on first access
_LAZY: dict[str, str] = {
    "read_volume": "velvet.data.io:read_volume",
    "Volume": "velvet.data.io:Volume",
    "inspect_volume": "velvet.data.inspect:inspect_volume",
    "PreprocessContract": "velvet.data.contract:PreprocessContract",
    "create_transforms": "velvet.data.transforms:create_transforms",
    "read_manifest": "velvet.data.manifest:read_manifest",
    "TriBertTokenizer": "velvet.data.tokenization:TriBertTokenizer",
    "split_sentences": "velvet.data.reports:split_sentences",
    "VelvetModel": "velvet.models.velvet:VelvetModel",
    "create_model": "velvet.models.create:create_model",
    "list_models": "velvet.models.config:list_models",
    "from_pretrained": "velvet.models.pretrained:from_pretrained",
    "save_pretrained": "velvet.models.pretrained:save_pretrained",
    "list_pretrained": "velvet.hub:list_pretrained",
    # the loader lives with the models; velvet.hub only downloads (it never imports velvet.models)
    "load_pretrained": "velvet.models.pretrained:from_pretrained",
    "register_pretrained": "velvet.hub:register_pretrained",
    "evaluate": "velvet.evaluation.protocols:evaluate",
    "zero_shot": "velvet.evaluation.zeroshot:zero_shot",
}

__all__ = ["__version__", *sorted(_LAZY)]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
