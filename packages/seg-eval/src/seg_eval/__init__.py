"""seg-eval: how seg measures every method, here and for users.

Subpackages (import what you need; nothing heavy is imported here):

- :mod:`seg_eval.world`: the synthetic world (deterministic images, captions and ground truth; COCO and VOC
  layouts), the project's benchmark and the default data of ``seg demo``.
- :mod:`seg_eval.metrics`: streaming confusion-matrix mIoU / pixel accuracy, Hungarian-matched mIoU, mask AP,
  ReCLIP++'s bias scores.
- :mod:`seg_eval.datasets`: readers of the standard benchmarks in their released layouts, layout detection.
- :mod:`seg_eval.presets`: the published evaluation protocols as data.
- :mod:`seg_eval.evaluator`: run any ``Segmenter`` over a dataset under a preset and write ``results.json``.
"""

from seg_eval.__about__ import __version__

__all__ = ["__version__"]
