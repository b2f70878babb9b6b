"""Analyses of trained Vision Transformers, as in section 4.5 of the ViT paper
(Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image
Recognition at Scale", ICLR 2021, arXiv:2010.11929):

- ``attention_rollout``: which patches the output draws on (Abnar & Zuidema
  2020; the paper's figure 6 and appendix D.8).
- ``mean_attention_distance``: how far each head attends, in pixels (figure 7
  right, figure 11).
- ``pos_embed_similarity``: cosine similarity of the position embeddings
  (figure 7 center, figure 10).
- ``patch_filter_components``: principal components of the patch-embedding
  filters (figure 7 left).
- ``plot_*``: each of these drawn to a PNG, with its numbers written next to it.

These take ViTs and hybrid ViTs (anything with ``attention_maps`` and
``grid_size``) and refuse a CNN with a one-line ``UserError``. The error
analysis (``gallery``) takes any classifier:

- ``predict_split``, ``error_summary``, ``confident_mistakes``: predictions,
  confidences and the numbers of ``vitlab eval`` over a labelled split, and
  the most confident mistakes;
- ``plot_gallery``, ``plot_per_class``, ``plot_confusion_matrix``: images with
  their predictions (wrong ones in red), per-class accuracy, the confusion
  matrix in counts or row-normalised.

Results are CPU tensors. Matplotlib is imported by the plotting functions
only; they draw with ``fonts()`` (a font list with per-glyph fallback, so
class names in any script render where a font for it is installed).
``analyze_checkpoint`` (``vitlab analyze``) writes all of them and
``report.md`` / ``report.html`` (``report``).
"""

from ._common import NotAnalysable
from .distance import mean_attention_distance
from .filters import patch_filter_components
from ..metrics import error_summary, predict_split
from .gallery import confident_mistakes, plot_confusion_matrix, plot_gallery, plot_per_class
from ..plotting import font_families, fonts
from .plots import plot_attention_distance, plot_filter_components, plot_pos_embed_similarity, plot_rollout
from .posembed import pos_embed_similarity
from .rollout import attention_rollout

__all__ = ["NotAnalysable", "attention_rollout", "mean_attention_distance", "pos_embed_similarity",
           "patch_filter_components", "plot_rollout", "plot_attention_distance", "plot_pos_embed_similarity",
           "plot_filter_components", "predict_split", "error_summary", "confident_mistakes", "plot_gallery",
           "plot_per_class", "plot_confusion_matrix", "fonts", "font_families"]
