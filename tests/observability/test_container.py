"""The Dockerfile and compose.yaml, read and checked against the code (no image can be built here:
no registry is reachable). Every command is a real `videobot` command line, parsed by the CLI's own
parser; every VIDEOBOT_* / provider variable exists in the settings; ports and volumes match the
settings; the health check asks for a path the process serves."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from bot.cli import build_parser
from pydantic import AliasChoices

from bot.config import (
    ComfyUISettings, CoreSettings, DiscordSettings, FalSettings, FluxSettings, GoogleSettings, KlingSettings,
    LocalProviderSettings, OpenAISettings, ReplicateSettings, RunwaySettings, SlackSettings,
)
from bot.observability.server import PATHS

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {
    "VIDEOBOT_LOCAL_": LocalProviderSettings, "VIDEOBOT_": CoreSettings, "OPENAI_": OpenAISettings, "RUNWAYML_": RunwaySettings,
    "BFL_": FluxSettings, "FAL_": FalSettings, "SLACK_": SlackSettings, "DISCORD_": DiscordSettings, "COMFYUI_": ComfyUISettings,
    "GOOGLE_": GoogleSettings, "KLING_": KlingSettings, "REPLICATE_": ReplicateSettings,
}
#: Variables of the images we build on, not ours.
FOREIGN = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}


def _aliases() -> set[str]:
    """Variables a setting is also read from (GEMINI_API_KEY, GOOGLE_GENAI_USE_VERTEXAI...)."""
    names: set[str] = set()
    for section in SECTIONS.values():
        for field in section.model_fields.values():
            alias = field.validation_alias
            choices = alias.choices if isinstance(alias, AliasChoices) else [alias] if isinstance(alias, str) else []
            names |= {c.upper() for c in choices if isinstance(c, str)}
    return names


def is_setting(name: str) -> bool:
    for prefix, section in SECTIONS.items():
        if name.startswith(prefix) and name[len(prefix):].lower() in section.model_fields:
            return True
    return name in _aliases()


def parse_dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in parse_dockerfile():
        if word == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def instruction(word: str) -> list[str]:
    return [rest for w, rest in parse_dockerfile() if w == word]


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_dockerfile_slim_python_non_root_init_no_downloads() -> None:
    (base,) = instruction("FROM")
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base), base
    (user,) = instruction("USER")
    assert user not in ("root", "0") and not user.startswith("0:")
    entry = json.loads(instruction("ENTRYPOINT")[0])
    assert entry[0].endswith("tini") and entry[1] == "--" and entry[2] == "videobot"
    runs = " ".join(instruction("RUN"))
    assert "tini" in runs
    # Nothing fetched at build time but Debian and PyPI packages: no browsers, no curl | sh.
    for banned in ("playwright install", "chromium", "curl ", "wget ", "git clone"):
        assert banned not in runs, banned
    assert "pip install" in runs and " ." in runs  # the project, from this checkout


def test_dockerfile_variables_volumes_ports_and_health_check_match_the_settings() -> None:
    env = dockerfile_env()
    for name in env:
        assert name in FOREIGN or is_setting(name), f"{name} is not a setting"
    volumes = json.loads(instruction("VOLUME")[0])
    assert env["VIDEOBOT_DATA_DIR"] in volumes and env["VIDEOBOT_MEDIA_DIR"] in volumes
    exposed = {int(p) for p in instruction("EXPOSE")[0].split()}
    assert int(env["VIDEOBOT_METRICS_PORT"]) in exposed
    assert SlackSettings.model_fields["http_port"].default in exposed
    (check,) = instruction("HEALTHCHECK")
    command = json.loads(check.split("CMD", 1)[1])
    served = [p for p in PATHS if p in " ".join(command)]
    assert served == ["/healthz"], command
    assert "VIDEOBOT_METRICS_PORT" in " ".join(command)
    # The default CMD is a real command line too.
    build_parser().parse_args(json.loads(instruction("CMD")[0]))


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".env", ".venv", "data", ".git"):
        assert entry in ignored


def test_compose_runs_real_commands_with_real_settings() -> None:
    spec = compose()
    services = spec["services"]
    assert {"postgres", "gateway", "worker", "web"} <= set(services)
    assert services["worker"]["deploy"]["replicas"] == 2
    parser = build_parser()
    roles = {}
    for name in ("gateway", "worker", "web"):
        service = services[name]
        args = parser.parse_args(service["command"])  # SystemExit (fails the test) if not a real command line
        roles[name] = (args.command, getattr(args, "role", None))
        assert service["env_file"] == ".env"
        for variable in service["environment"]:
            assert is_setting(variable), f"{name}: {variable} is not a setting"
        assert "media:/media" in service["volumes"]
        media_dir = service["environment"].get("VIDEOBOT_MEDIA_DIR", dockerfile_env()["VIDEOBOT_MEDIA_DIR"])
        assert media_dir == "/media"
        assert service["environment"]["VIDEOBOT_DATABASE_URL"].startswith("postgresql://")
    assert roles == {"gateway": ("run", "gateway"), "worker": ("run", "worker"), "web": ("web", None)}
    assert set(spec["volumes"]) == {"media", "pgdata"}


def test_compose_ports_match_the_settings_they_publish() -> None:
    services = compose()["services"]
    gateway, web = services["gateway"], services["web"]
    assert f"{gateway['environment']['SLACK_HTTP_PORT']}:{gateway['environment']['SLACK_HTTP_PORT']}" in gateway["ports"]
    args = build_parser().parse_args(web["command"])
    assert str(args.port) == web["environment"]["VIDEOBOT_WEB_PORT"]
    assert f"{args.port}:{args.port}" in web["ports"]


@pytest.mark.parametrize("name", ["VIDEOBOT_NOPE", "SLACK_HTTP_PORTS"])
def test_the_variable_check_can_fail(name: str) -> None:
    assert not is_setting(name)


def test_env_example_documents_the_service_settings_and_names_only_real_ones() -> None:
    text = (ROOT / ".env.example").read_text()
    names = re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.M)
    assert [n for n in names if not is_setting(n)] == ["PROMETHEUS_MULTIPROC_DIR"]  # prometheus-client's own
    for name in ("VIDEOBOT_METRICS_PORT", "VIDEOBOT_METRICS_HOST", "VIDEOBOT_LOG_FORMAT"):
        assert name in names
