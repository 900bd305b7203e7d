"""The Qt controls of the dock widget, laid out; no behaviour beyond their own enabling (see :mod:`.widget`)."""

from __future__ import annotations

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
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

from ..core.config import FineTuneParams

SCOPES = {"all slices": "all", "current slice": "current", "slice range": "range"}
SUPPORT_MODES = {"painted slices are complete": "dense", "scribbles (background painted)": "scribble"}
DEVICES = ("auto", "cpu", "cuda", "mps")


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

        model = QGroupBox("Model", parent)
        form = QFormLayout(model)
        self.encoder_combo = QComboBox()
        self.encoder_combo.addItems(encoders)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.model_label = QLabel("")
        self.model_label.setWordWrap(True)
        form.addRow("Encoder", self.encoder_combo)
        form.addRow("Device", self.device_combo)
        form.addRow(self.model_label)
        root.addWidget(model)

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
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(list(SUPPORT_MODES))
        self.mode_combo.setToolTip(
            "Complete: on a painted slice every unpainted pixel is background (paint whole organs).\n"
            "Scribbles: paint background with its own label; unpainted pixels are left to the model\n"
            "(needed for a single 2D image).")
        self.background_spin = QSpinBox()
        self.background_spin.setRange(1, 65535)
        self.background_spin.setValue(1)
        self.background_spin.setPrefix("background label ")
        self.background_spin.setToolTip("The label value you paint background with, in scribble mode.")
        mode_row = QHBoxLayout()
        mode_row.addWidget(self.mode_combo, 1)
        mode_row.addWidget(self.background_spin)
        self.segment_button = QPushButton("Segment")
        self.live_check = QCheckBox("Live: re-segment the visible slice after each stroke")
        self.heatmap_check = QCheckBox("Heatmaps (similarity to each class)")
        self.refine_check = QCheckBox("Refine with LiteMedSAM (outlines redrawn from boxes)")
        self.refine_check.setTristate(True)
        self.refine_check.setCheckState(Qt.CheckState.PartiallyChecked)
        self.refine_check.setToolTip(
            "Each predicted organ or lesion becomes a box for LiteMedSAM, which redraws its outline.\n"
            "Half-checked (default): where it was measured to help at an acceptable cost\n"
            "(2D images and image sets; a volume only on a GPU).\n"
            "Checked: always. Unchecked: never.")
        form.addRow(self.compute_button)
        form.addRow("Support", mode_row)
        form.addRow("Segment", self.scope_combo)
        form.addRow(row)
        form.addRow(self.segment_button)
        form.addRow(self.live_check)
        form.addRow(self.heatmap_check)
        form.addRow(self.refine_check)
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

        tune = QGroupBox("Fine-tune the encoder on the support", parent)
        form = QFormLayout(tune)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 10_000)
        self.steps_spin.setValue(FineTuneParams().steps)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(6)
        self.lr_spin.setRange(1e-6, 1.0)
        self.lr_spin.setSingleStep(1e-5)
        self.lr_spin.setValue(FineTuneParams().learning_rate)
        self.fine_tune_button = QPushButton("Fine-tune")
        self.reset_button = QPushButton("Reset weights")
        row = QHBoxLayout()
        row.addWidget(self.fine_tune_button)
        row.addWidget(self.reset_button)
        form.addRow("Steps", self.steps_spin)
        form.addRow("Learning rate", self.lr_spin)
        form.addRow(row)
        root.addWidget(tune)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status_label = QLabel("Pick an image, paint a few slices of the support, press Segment.")
        self.status_label.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(self.progress_bar, 1)
        row.addWidget(self.cancel_button)
        root.addLayout(row)
        root.addWidget(self.status_label)

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
        self.mode_combo.currentTextChanged.connect(self.update_visibility)
        self.update_visibility()

    def scope(self) -> str:
        return list(SCOPES.values())[max(self.scope_combo.currentIndex(), 0)]  # by position: texts vary

    def set_scope(self, scope: str) -> None:
        self.scope_combo.setCurrentIndex(list(SCOPES.values()).index(scope))

    def support_mode(self) -> str:
        return SUPPORT_MODES[self.mode_combo.currentText()]

    def refine(self) -> bool | None:
        """RefineParams.enabled from the Refine check box: True, False, or None (the measured default)."""
        state = self.refine_check.checkState()
        return None if state == Qt.CheckState.PartiallyChecked else state == Qt.CheckState.Checked

    def set_support_mode(self, mode: str) -> None:
        self.mode_combo.setCurrentText(next(k for k, v in SUPPORT_MODES.items() if v == mode))

    def set_layer_choices(self, images: list[str], supports: list[str]) -> None:
        """Refill the image and support lists, keeping the current choices (else a layer named "support"),
        without emitting change signals."""
        for combo, names, prefer in ((self.image_combo, images, None), (self.support_combo, supports, "support")):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            keep = current if current in names else prefer if prefer in names else None
            if keep:
                combo.setCurrentText(keep)
            combo.blockSignals(False)

    def set_slice_count(self, n_slices: int) -> None:
        """Bound the slice-range spin boxes to the chosen image's slices."""
        self.range_start.setMaximum(max(n_slices - 1, 0))
        self.range_stop.setMaximum(max(n_slices - 1, 0))

    def update_visibility(self, *_) -> None:
        """The range only for the "range" scope; the background label only in scribble mode."""
        is_range = self.scope() == "range"
        self.range_start.setEnabled(is_range)
        self.range_stop.setEnabled(is_range)
        self.background_spin.setVisible(self.support_mode() == "scribble")

    def job_controls(self) -> list[QWidget]:
        """Controls that would conflict with a running job (disabled meanwhile)."""
        return [self.image_combo, self.new_support_button, self.encoder_combo, self.device_combo,
                self.mode_combo, self.background_spin,
                self.compute_button, self.segment_button, self.fine_tune_button, self.reset_button,
                self.steps_spin, self.lr_spin, self.save_bank_button, self.load_bank_button]


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
