"""The errors unseen raises for people: one line that names the file or field and what was expected."""


class UnseenError(Exception):
    """Base class: the CLI prints the message on one line and exits with code 2."""


class ConfigError(UnseenError):
    """A config file, key or value is wrong (`model.embedding_dim: expected an integer, got 'x'`)."""


class DatasetError(UnseenError):
    """Data is missing, malformed or inconsistent (`CUB_200_2011/images.txt: line 17: expected '<id> <path>'`)."""


class CheckpointError(UnseenError):
    """A checkpoint or run directory cannot be read or does not match the config."""
