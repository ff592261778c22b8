"""The exception type of cardiac-sr.

Every problem a user can cause (a missing file, a corrupt DICOM, a bad
param) raises :class:`CardiacSRError` with a message that names the file or
key and says what is wrong.  The command line prints the message without a
traceback and exits with status 2.
"""


class CardiacSRError(ValueError):
    """A user-facing error: the message names the file or key and the problem."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or a kill) during long work; the message says what was kept.  Exit status 130."""
