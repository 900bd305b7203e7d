"""The napari side of napari-fewshot: dock widget, workers, layer bookkeeping, npe2 readers/writer/samples.

Thin by design: it turns clicks into calls of :mod:`napari_fewshot.core` and results into layers.
Importing this package imports neither torch nor Qt; the modules below import them when napari
asks for a contribution (see ``napari_fewshot/napari.yaml``):

- ``widget``:  :class:`~napari_fewshot.plugin.widget.FewShotWidget`, the "Few-shot segmentation" dock widget.
- ``session``: one segmenter (and its feature cache) per image layer.
- ``workers``: the core's generators run in napari ``thread_worker`` threads.
- ``layers``:  result -> ``prediction`` / ``NAME (K): cosine similarity`` heatmap layers, colours, class names.
- ``image_sets``: folders of 2D images of different sizes as one padded layer (crop for the core, pad back).
- ``readers``, ``writers``, ``samples``: npe2 contributions.
"""

# Metadata keys the plugin puts on layers (plain strings so every module agrees without imports).
VOLUME_KEY = "napari_fewshot_volume"  # io.Volume the layer came from (affine, spacing, source grid)
CLASS_NAMES_KEY = "napari_fewshot_class_names"  # {label value: name}
ROLE_KEY = "napari_fewshot_role"  # "prediction" | "heatmap" | "reference" | "support"
IMAGE_SET_KEY = "napari_fewshot_image_set"  # io.image_sets.ImageSetInfo of a padded image-set layer
SUPPORT_OF_KEY = "napari_fewshot_support_of"  # support: unique_id of the image layer it was made for
EMPTY_SLICES_KEY = "napari_fewshot_empty_slices"  # support: sorted slice indices checked free of every class
