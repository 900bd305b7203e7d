"""A still window while a job computes: napari's animated activity indicator at a tenth of its speed.

Every frame of an animation in the window (napari's "in progress" GIF in the status bar: 33 frames a second; a
QProgressBar in its busy state) makes Qt compose the whole window again, and with the canvas in it that composition
is OpenGL. Where OpenGL is software (llvmpipe: virtual machines, remote desktops, Xvfb) one animation costs ~1.2 CPU-s
every 3 s, 40 % of a core, taken from the segmentation on a 2-core laptop (session 21: the 512 x 512 window's
correction waited that long for a core). So the widget's own bar never shows the busy animation (runner.py), and
while one of our jobs has a bar in napari's activity dock its indicator turns at ``SPEED_PERCENT`` of its speed:
still moving, ~3 frames a second. The speed comes back when the job's bar closes.

The indicator is found by what it is (a QLabel playing napari's ``loading.gif``), not by napari's private
attribute names; where a napari version has none, nothing changes.
"""

from __future__ import annotations

SPEED_PERCENT = 10


def activity_movies() -> list:
    """The QMovie of every label in the application's windows that plays napari's loading GIF."""
    from qtpy.QtWidgets import QApplication, QLabel

    app = QApplication.instance()
    movies = []
    for window in app.topLevelWidgets() if app is not None else ():
        for label in window.findChildren(QLabel):
            movie = label.movie()
            if movie is not None and movie.fileName().endswith("loading.gif"):
                movies.append(movie)
    return movies


def slow_activity_indicator(slow: bool) -> None:
    """napari's activity indicator at SPEED_PERCENT of its speed (``slow``) or at its own again."""
    for movie in activity_movies():
        movie.setSpeed(SPEED_PERCENT if slow else 100)
