"""The one exception type users see.

Every failure the user can fix (a missing file, a support of the wrong shape, an encoder whose
weights are not on this machine) is raised as :class:`FewShotError` with a message that is one
plain sentence. The CLI prints it without a traceback; the napari widget shows it as a
notification. Anything else escaping the core is a bug.
"""


class FewShotError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""


class ReadError(FewShotError):
    """A file could not be read as an image or label map."""


class WriteError(FewShotError):
    """A result could not be written where the user asked."""
