"""Which models to serve: TF Serving's ModelServerConfig text proto, or --model_name/--model_base_path.

Relative ``base_path`` values (TF Serving itself only accepts absolute ones) are resolved
against the directory of the config file, so ``deploy/models.local.config`` works from any
working directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ModelSpecConfig:
    """One model to serve.

    Attributes:
        name: the model name clients use (``/v1/models/<name>``).
        base_path: directory holding integer version subdirectories.
        policy: ``latest`` / ``all`` / ``specific``.
        num_versions: for ``latest``, how many of the highest versions to serve.
        versions: for ``specific``, the versions to serve.
        labels: version label -> version (``/v1/models/<name>/labels/<label>``).
    """

    name: str
    base_path: Path
    policy: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()
    labels: dict[str, int] = field(default_factory=dict)


class ConfigError(ValueError):
    """The model config file or flags are invalid; the message says where."""


def parse_model_config_text(text: str, base_dir: Path | None = None, source: str = "<config>") -> list[ModelSpecConfig]:
    """Parse a ModelServerConfig text proto into ModelSpecConfig entries.

    Args:
        text: the text proto (``model_config_list { config { ... } }``).
        base_dir: directory that relative ``base_path`` values resolve against (None: keep).
        source: file name for error messages.

    Raises:
        ConfigError: on a parse error, a non-tensorflow platform, a missing name/base path,
            duplicate names, or an unsupported ``custom_model_config``.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    cfg = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as exc:
        raise ConfigError(f"{source}: not a valid ModelServerConfig text proto: {exc}") from exc
    if cfg.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{source}: expected a model_config_list (custom_model_config is not supported)")
    out: list[ModelSpecConfig] = []
    seen: set[str] = set()
    for i, mc in enumerate(cfg.model_config_list.config):
        where = f"{source}: config #{i + 1}"
        if not mc.name:
            raise ConfigError(f"{where}: missing name")
        if mc.name in seen:
            raise ConfigError(f"{where}: duplicate model name {mc.name!r}")
        seen.add(mc.name)
        if not mc.base_path:
            raise ConfigError(f"{where} ({mc.name}): missing base_path")
        if mc.model_platform and mc.model_platform != "tensorflow":
            raise ConfigError(f"{where} ({mc.name}): model_platform {mc.model_platform!r} is not supported (only 'tensorflow')")
        base = Path(mc.base_path)
        if not base.is_absolute() and base_dir is not None:
            base = (base_dir / base).resolve()
        spec = ModelSpecConfig(name=mc.name, base_path=base)
        which = mc.model_version_policy.WhichOneof("policy_choice")
        if which == "all":
            spec.policy = "all"
        elif which == "specific":
            spec.policy = "specific"
            spec.versions = tuple(sorted(mc.model_version_policy.specific.versions))
            if not spec.versions:
                raise ConfigError(f"{where} ({mc.name}): specific version policy lists no versions")
        elif which == "latest":
            spec.num_versions = mc.model_version_policy.latest.num_versions or 1
        spec.labels = dict(mc.version_labels)
        out.append(spec)
    if not out:
        raise ConfigError(f"{source}: model_config_list has no models")
    return out


def load_model_config_file(path: str | Path) -> list[ModelSpecConfig]:
    """Read ``--model_config_file``; relative base paths resolve against the file's directory."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read --model_config_file {p}: {exc}") from exc
    return parse_model_config_text(text, base_dir=p.resolve().parent, source=str(p))
