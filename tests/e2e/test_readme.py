"""The README's Python and command-line examples, run as written against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import av

from tests.support import running_server

README = Path(__file__).resolve().parents[2] / "README.md"


def example(section: str, language: str) -> str:
    """The first ``language`` code block under the README heading ``section``."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    match = re.search(rf"```{language}\n(.*?)```", text[start : end if end > 0 else None], re.S)
    assert match, f"no {language} block under '{section}'"
    return match.group(1)


def frames_and_size(path: Path) -> tuple[int, int, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(stream)), stream.codec_context.width, stream.codec_context.height


def test_the_five_line_python_example_makes_a_video(tmp_path: Path) -> None:
    code = example("Python SDK", "python")
    assert len(code.splitlines()) <= 5
    with running_server(tmp_path) as server:
        assert server.key is not None
        env = {**os.environ, "VIDQUEUE_BASE_URL": server.url, "VIDQUEUE_API_KEY": server.key}
        env.pop("GMI_API_KEY", None)
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
    assert out.returncode == 0, out.stderr
    request_id, status, url = out.stdout.split()
    assert status == "success"
    assert url.startswith(server.url + "/media/")
    assert len(request_id) == 36
    assert frames_and_size(tmp_path / "fox.mp4") == (120, 1280, 720)


def test_the_command_line_example_makes_a_video_and_lists_it(tmp_path: Path) -> None:
    script = example("Command-line client", "sh")
    # The example runs from a checkout, where .venv is the environment this test runs in.
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    with running_server(tmp_path / "srv") as server:
        assert server.key is not None
        env = {**os.environ, "VIDQUEUE_BASE_URL": server.url, "KEY": server.key}
        env.pop("VIDQUEUE_API_KEY", None)
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode == 0, out.stderr
    assert frames_and_size(tmp_path / "fox.mp4") == (120, 720, 1280)
    assert "saved" in out.stdout and "fox.mp4" in out.stdout
    assert "Kling-Text2Video-V2-Master" in out.stdout and "success" in out.stdout  # the list's row


def test_the_configuration_example_is_a_valid_config(tmp_path: Path) -> None:
    from vidqueue.config import load_settings

    path = tmp_path / "vidqueue.toml"
    path.write_text(example("Configuration", "toml"))
    settings = load_settings(path, env={})
    assert settings.engine_for("kling-v2-5-turbo") == "kling"
    assert settings.engine_for("Kling-Text2Video-V2-Master") == "emulator"  # no keys in this environment
    assert settings.engines.kling.base_url == "https://api-singapore.klingai.com"
    assert settings.engines.kling.max_video_bytes == 1024**3


def test_the_diffusers_examples_are_valid_configs() -> None:
    import tomllib

    from vidqueue.bootstrap import catalog_for
    from vidqueue.config import Settings

    text = README.read_text()
    start = text.index("\n## Self-hosted generation: open-weight models with diffusers\n")
    blocks = re.findall(r"```toml\n(.*?)```", text[start : text.find("\n## ", start + 1)], re.S)
    assert len(blocks) == 3
    declared, fast_modes, worked = (tomllib.loads(block) for block in blocks)
    # The few-step keys are shown on their own; they go on a declared model such as the first block's.
    declared["models"]["my-wan"].update(fast_modes["models"]["my-wan"])
    for model_id, tree in (("my-wan", declared), ("wan-fast", worked)):
        settings = Settings.model_validate(tree)  # what load_settings does with a config file's tables
        route = settings.models[model_id]
        assert settings.engine_for(model_id) == "diffusers" and route.guidance == 1.0 and route.lora
        params = {p.name: p for p in catalog_for(settings).get(model_id).params}
        assert (params["num_inference_steps"].default, params["num_inference_steps"].max) == (4, 8)
