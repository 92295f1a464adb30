"""Segmentation inference: segment a scan on its own grid, write the label map, draw overlays.

The model is :class:`velvet.models.segmentation.SegmentationModel`, trained by
:class:`velvet.tasks.segmentation.SegmentationTask`; the metrics are
:mod:`velvet.metrics.segmentation`.
"""

from velvet._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "SegmentationResult": "velvet.segmentation.inference:SegmentationResult",
    "load_segmentation_model": "velvet.segmentation.inference:load_segmentation_model",
    "segment_file": "velvet.segmentation.inference:segment_file",
    "write_segmentation": "velvet.segmentation.output:write_segmentation",
    "save_overlay": "velvet.segmentation.overlay:save_overlay",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
