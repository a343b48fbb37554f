"""User-facing errors. Every message says what is wrong and how to fix it; CLIs print it without a traceback."""


class ViChatError(Exception):
    """Base class for errors that are the user's input, not a bug."""


class UnknownVariantError(ViChatError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class VariantUnavailableError(ViChatError):
    """The variant exists but cannot run here (weights offline, adapter missing...)."""


class SettingsError(ViChatError, ValueError):
    """A generation or training setting is out of range; the message names it and its range."""


class PromptError(ViChatError, ValueError):
    """Empty prompt, or a prompt the model cannot take."""


class DataError(ViChatError, ValueError):
    """Malformed data file; the message names the file and the line."""
