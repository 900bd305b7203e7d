"""The controls of the dock widget, laid out; no behaviour beyond their own enabling (see :mod:`.widget`).

The settings (encoder, device, support mode, refine, the finer segmentation settings, fine-tuning) are
magicgui widgets built from the core's parameter dataclasses (:mod:`.settings_form`), placed here through
their ``.native`` Qt widgets. The layer pickers, the scope and the buttons are plain Qt: they choose
napari layers (kept in step with the viewer by the widget), a slice range and actions, which are not
fields of a parameter dataclass.
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, QSize, Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from .settings_form import SettingsForm

SCOPES = {"all slices": "all", "current slice": "current", "slice range": "range"}


class Panel:
    """Builds the controls into ``parent`` (a QWidget) and keeps them as attributes."""

    def __init__(self, parent: QWidget, encoders: list[str]):
        scroll = _scroll_area(parent)
        root = QVBoxLayout(scroll.widget())

        data = QGroupBox("Data", parent)
        form = QFormLayout(data)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image layer to segment (slices along its first axis).")
        self.support_combo = QComboBox()
        self.support_combo.setToolTip("The Labels layer you paint: every slice with paint is a support slice.")
        self.new_support_button = QPushButton("New")
        self.new_support_button.setToolTip("Add an empty 'support' Labels layer over the image, ready to paint.")
        row = QHBoxLayout()
        row.addWidget(self.support_combo, 1)
        row.addWidget(self.new_support_button)
        form.addRow("Image", self.image_combo)
        form.addRow("Support", row)
        self.restore_button = _button("Restore painting", "Add the painting autosaved for this scan as a new "
                                      "Labels layer (enabled when there is one).")
        self.restore_button.setEnabled(False)
        form.addRow(self.restore_button)
        self.box_button = _button("Box \u2192 paint", "Draw rectangles around organs or lesions (a 'boxes' layer in "
                                  "rectangle mode): LiteMedSAM paints each object into the support with its selected "
                                  "label, on unpainted pixels only (Ctrl+Z undoes it).")
        form.addRow(self.box_button)
        root.addWidget(data)

        settings = QGroupBox("Settings", parent)
        column = QVBoxLayout(settings)
        self.settings = SettingsForm(encoders)  # magicgui widgets from SegmentationParams / FineTuneParams
        column.addWidget(self.settings.main.native)
        self.model_label = QLabel("")
        self.model_label.setWordWrap(True)
        column.addWidget(self.model_label)
        self.more_settings = QCollapsible("More settings", expandedIcon="\u25be", collapsedIcon="\u25b8")
        self.more_settings.layout().setContentsMargins(0, 0, 0, 0)  # in line with the rows above
        self.more_settings.addWidget(self.settings.more.native)
        column.addWidget(self.more_settings)
        root.addWidget(settings)
        self._label_width = _SameLabelWidth(scroll, self.settings.main.native, self.settings.more.native,
                                            self.settings.fine_tune.native)

        segment = QGroupBox("Segment", parent)
        form = QFormLayout(segment)
        self.compute_button = QPushButton("Compute features")
        self.compute_button.setToolTip("Run the encoder on every slice once (current and support slices first).")
        self.scope_combo = QComboBox()
        self.scope_combo.addItems(list(SCOPES))
        self.range_start = QSpinBox()
        self.range_stop = QSpinBox()
        row = QHBoxLayout()
        self.range_label = QLabel("slices")  # "images" for an image set (see image_sets.name_units)
        row.addWidget(self.range_label)
        row.addWidget(self.range_start)
        row.addWidget(QLabel("to"))
        row.addWidget(self.range_stop)
        self.segment_button = QPushButton("Segment")
        self.live_check = QCheckBox("Live: re-segment the visible slice after each stroke")
        self.heatmap_check = QCheckBox("Heatmaps (similarity to each class)")
        self.explain_check = QCheckBox("Explain: which painted slice a prediction looks like")
        self.explain_check.setToolTip("Hover (or Alt-click) the prediction: the status line names the painted slice "
                                      "and class it looks like, a cross marks the spot (Shift+J goes there and "
                                      "back); a layer colours each predicted pixel by the painted slice behind it.")
        form.addRow(self.compute_button)
        form.addRow("Segment", self.scope_combo)
        form.addRow(row)
        form.addRow(self.segment_button)
        form.addRow(self.live_check)
        form.addRow(self.heatmap_check)
        form.addRow(self.explain_check)
        root.addWidget(segment)

        self.accept_button = _button("Accept slice", "Copy the prediction of the visible slice into the support, "
                                     "so it counts as painted (Shift+A; Ctrl+Z undoes it).\n"
                                     "To correct a slice instead, just paint on it: the stroke starts from "
                                     "the prediction.")
        self.check_next_button = _button("Check next", "Go to the predicted slice the last Segment of all slices "
                                         "is least sure about, then the next (Shift+N); painted slices and "
                                         "those already checked are skipped.")
        self.check_next_button.setEnabled(False)
        root.addWidget(_button_group(parent, "Correct", self.accept_button, self.check_next_button))

        tune = QGroupBox("Fine-tune on the signed slices", parent)
        self.fine_tune_group = tune
        column = QVBoxLayout(tune)
        column.addWidget(self.settings.fine_tune.native)
        self.fine_tune_button = QPushButton("Fine-tune")
        self.fine_tune_button.setToolTip("Adapt to what you signed (painted, corrected, marked empty), then segment "
                                         "again. Default, image sets: 32 weights of LiteMedSAM's mask decoder, trained "
                                         "on its cached outputs; it gained little (BUSI 5-shot +0.007 and -0.010 on two "
                                         "seeds; LiteMedSAM's training data may include BUSI). "
                                         "Volumes: it adapts nothing unless 'Decoder on volumes' is ticked, as it "
                                         "made the masks worse on test MR scans (CHAOS-T2). The status line says "
                                         "what changed and how long it took. BENCHMARKS.md, ftaudit")
        self.reset_button = QPushButton("Reset weights")
        row = QHBoxLayout()
        row.addWidget(self.fine_tune_button)
        row.addWidget(self.reset_button)
        column.addLayout(row)
        root.addWidget(tune)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status_label = QLabel("Pick an image, paint a few slices of the support, press Segment.")
        self.status_label.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        # Progress, status and volumes stay in view under the scrolling controls: inside them, a 1000-px-high screen
        # showed half the status line, and none of it once the model line grew (session 15's walkthrough).
        footer = QVBoxLayout()
        footer.setContentsMargins(9, 0, 9, 6)
        parent.layout().addLayout(footer)
        row = QHBoxLayout()
        row.addWidget(self.progress_bar, 1)
        row.addWidget(self.cancel_button)
        footer.addLayout(row)
        footer.addWidget(self.status_label)
        self.volumes_label = QLabel("")  # per-class volume, slice range, painted/corrected/predicted (results.py)
        self.volumes_label.setWordWrap(True)
        self.volumes_label.setToolTip("Per class of the prediction: its volume (mL, from the scan's voxel spacing; "
                                      "a pixel area for images without one), the slices it spans and how many "
                                      "were painted, corrected from a prediction, or predicted.")
        footer.addWidget(self.volumes_label)

        self.export_button = _button("Export mask...", "Save the prediction as NIfTI, TIFF, PNG (one per slice) or NPY.")
        self.export_heatmaps_button = _button("Export heatmaps...", "Save one similarity map per class.")
        root.addWidget(_button_group(parent, "Export", self.export_button, self.export_heatmaps_button))
        self.save_bank_button = _button("Save prototypes...",
                                        "Save what was painted as a prototype bank (.fewshot) for other scans.")
        self.load_bank_button = _button("Load prototypes...",
                                        "Segment this image with a saved prototype bank; no painting needed.")
        root.addWidget(_button_group(parent, "Prototypes", self.save_bank_button, self.load_bank_button))
        root.addStretch(1)
        self.scope_combo.currentTextChanged.connect(self.update_visibility)
        self.update_visibility()

    def scope(self) -> str:
        return list(SCOPES.values())[max(self.scope_combo.currentIndex(), 0)]  # by position: texts vary

    def set_scope(self, scope: str) -> None:
        self.scope_combo.setCurrentIndex(list(SCOPES.values()).index(scope))

    def support_mode(self) -> str:
        """SegmentationParams.support_mode as chosen: "dense" or "scribble"."""
        return self.settings["support_mode"].value

    def set_support_mode(self, mode: str) -> None:
        self.settings["support_mode"].value = mode

    def set_layer_choices(self, images: list[str] | None, supports: list[str], support: str | None) -> None:
        """Refill the image list (None: leave it; else keeping the current image, else the first) without a
        change signal, and the support list with ``supports`` (the chosen image's) and ``support`` chosen
        (None: none). A change of the support is signalled (``currentTextChanged``), so what follows the
        support (live mode, autosave, the hint) follows it."""
        image = self.image_combo.currentText()
        if images is not None:
            _refill(self.image_combo, images, image if image in images else images[0] if images else None)
        before = self.support_combo.currentText()
        _refill(self.support_combo, supports, support)
        if self.support_combo.currentText() != before:
            self.support_combo.currentTextChanged.emit(self.support_combo.currentText())

    def set_slice_count(self, n_slices: int) -> None:
        """Bound the slice-range spin boxes to the chosen image's slices."""
        self.range_start.setMaximum(max(n_slices - 1, 0))
        self.range_stop.setMaximum(max(n_slices - 1, 0))

    def update_visibility(self, *_) -> None:
        """The range only for the "range" scope."""
        is_range = self.scope() == "range"
        self.range_start.setEnabled(is_range)
        self.range_stop.setEnabled(is_range)

    def job_controls(self) -> list[QWidget]:
        """Controls that would conflict with a running job (disabled meanwhile); a job keeps the settings
        it started with, so they wait for it too."""
        return [self.image_combo, self.new_support_button, self.settings.main.native, self.settings.more.native,
                self.settings.fine_tune.native, self.compute_button, self.segment_button, self.fine_tune_button,
                self.reset_button, self.save_bank_button, self.load_bank_button]


def _refill(combo: QComboBox, names: list[str], chosen: str | None) -> None:
    """Put ``names`` into ``combo`` with ``chosen`` current (None or not among them: none), silently."""
    combo.blockSignals(True)
    try:
        combo.clear()
        combo.addItems(names)
        combo.setCurrentIndex(names.index(chosen) if chosen in names else -1)
    finally:
        combo.blockSignals(False)


class _SameLabelWidth(QObject):
    """Gives the row labels of each magicgui container one width when it is shown: magicgui measures them
    with the application's font, napari's style sheet draws them wider, so the widest label would push its
    field out of line. ``scroll`` (the panel's scroll area) is then asked to fit the wider rows."""

    def __init__(self, scroll: QScrollArea, *containers: QWidget):
        super().__init__(scroll)
        self._scroll = scroll
        for container in containers:
            container.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Show:
            labels = watched.findChildren(QLabel)
            width = max((label.sizeHint().width() for label in labels), default=0)
            if any(label.minimumWidth() != width for label in labels):
                for label in labels:
                    label.setMinimumWidth(width)
                self._scroll.updateGeometry()
        return False


class _VerticalScroll(QScrollArea):
    """Scrolls its content up and down, never sideways: as wide as the content needs, as tall as it
    likes to be, and shorter (with a scroll bar) when the screen is."""

    def _margin(self) -> int:
        return self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()

    def minimumSizeHint(self) -> QSize:
        hint = self.widget().minimumSizeHint()
        return QSize(hint.width() + self._margin(), min(hint.height(), 120))

    def sizeHint(self) -> QSize:
        hint = self.widget().sizeHint()
        return QSize(hint.width() + self._margin(), hint.height())


def _scroll_area(parent: QWidget) -> QScrollArea:
    """A vertical scroll area filling ``parent``, for the controls: on a short screen (or with a long status
    line) the panel scrolls instead of squeezing its buttons."""
    outer = QVBoxLayout(parent)
    outer.setContentsMargins(0, 0, 0, 0)
    scroll = _VerticalScroll(parent)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QScrollArea.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(QWidget())
    outer.addWidget(scroll)
    return scroll


def _button(text: str, tooltip: str) -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(tooltip)
    return button


def _button_group(parent: QWidget, title: str, *buttons: QPushButton) -> QGroupBox:
    """A titled box with `buttons` side by side."""
    box = QGroupBox(title, parent)
    row = QHBoxLayout(box)
    for button in buttons:
        row.addWidget(button)
    return box
