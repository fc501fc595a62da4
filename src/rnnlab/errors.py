"""Errors a user can cause and fix. Entry points print them without a traceback."""


class RnnlabError(Exception):
    """Base class: the message says what was wrong, where, and what to do."""


class ConfigError(RnnlabError, ValueError):
    """A config value is out of range or inconsistent; the message names the key."""


class InputError(RnnlabError, ValueError):
    """A prediction input cannot be encoded (e.g. a character outside the vocabulary)."""


class DataError(RnnlabError, ValueError):
    """A data file is missing, malformed or inconsistent."""


def require(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError for `key` unless `condition` holds; keeps argument checks one line each."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


def require_one_of(value: object, choices: tuple, key: str) -> None:
    """ConfigError for `key` unless `value` is one of `choices`."""
    require(value in choices, key, f"must be one of {choices}, got {value!r}")


def require_positive(value: float | None, key: str, *, null: bool = False) -> None:
    """ConfigError for `key` unless `value` is > 0 (or, with `null`, None)."""
    allowed = (null and value is None) or (value is not None and value > 0)
    require(allowed, key, f"must be positive{' or null' if null else ''}, got {value}")


class CheckpointError(RnnlabError, ValueError):
    """A checkpoint is missing, unreadable, not rnnlab's, or names something it may not build."""


def quote(text: str, limit: int = 80) -> str:
    """`text` quoted for a message, cut after `limit` characters: messages quote user input, and
    one input line can be a whole file pasted by mistake."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
