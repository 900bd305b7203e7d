"""The widget's Image and Support pickers: what each offers, and which support follows an image.

A support layer belongs to the image it was made for (:func:`.layers.owner_of`). The Support picker
offers the chosen image's own supports and the unowned Labels layers of its shape (e.g. opened from a
file, for the user to pick), never another image's support, even of the same shape. When the image
changes, the support becomes the image's own (the one last chosen for it, else its newest) or none:
never the previous image's. Any other refill (a layer added, removed, renamed) keeps both choices.
"""

from __future__ import annotations

from napari.layers import Image

from . import layers


class LayerPickers:
    """Keeps ``widget.ui``'s image and support lists in step with the viewer's layers; owned by the widget."""

    def __init__(self, widget):
        self.viewer, self.ui = widget.viewer, widget.ui
        self._widget = widget
        self._chosen: dict[int, str] = {}  # id(image layer) -> name of the support last chosen for it
        # Connected before anything else follows the image: the support has followed it when they hear of it.
        self.ui.image_combo.currentTextChanged.connect(lambda *_: self.refresh(image_switched=True))
        self.ui.support_combo.currentTextChanged.connect(self._remember)

    def refresh(self, image_switched: bool = False) -> None:
        """Refill both pickers: the current image (else the first) and its supports, the current support kept
        unless the image changed."""
        images = layers.image_choices(self.viewer)
        name = self.ui.image_combo.currentText()
        image = self._image(name if name in images else images[0] if images else "")
        keep = None if image_switched or name not in images else self.ui.support_combo.currentText()
        offered, chosen = layers.support_choices(self.viewer, image, keep, self._chosen.get(id(layers.unwrap(image))))
        self.ui.set_layer_choices(None if image_switched else images, offered, chosen)  # not inside the image's signal

    def forget(self, layer) -> None:
        """``layer`` left the viewer."""
        self._chosen.pop(id(layers.unwrap(layer)), None)

    def _remember(self, *_) -> None:
        image, support = layers.unwrap(self._widget.image_layer), self._widget.support_layer
        if image is not None and support is not None:
            self._chosen[id(image)] = support.name

    def _image(self, name: str) -> Image | None:
        layer = self.viewer.layers[name] if name and name in self.viewer.layers else None
        return layer if isinstance(layer, Image) else None
