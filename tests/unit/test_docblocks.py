"""The docs' example runner (tests/docblocks.py): what it reads in the markdown, how a page's blocks share a shell."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.docblocks import Page, blocks

PAGE = """# A page

<!-- not run: needs a GPU -->
```sh
vidqueue worker --device cuda:0
```

```sh
cd "$(mktemp -d)"
export GREETING=hello
NAME=fox
```

```text
not run: shown only
```

```sh
echo "$GREETING $NAME from $PWD" > out.txt
curl -s http://127.0.0.1:8000/healthz || true
```

```python
import os
print(os.environ["GREETING"], open("out.txt").read().split()[1])
```

```sh
VIDQUEUE_EMULATOR_LATENCY_S=20 scripts/serve --port 9000   # a server
```
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "page.md"
    path.write_text(text)
    return path


def page(tmp_path: Path, text: str) -> Page:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return Page(write(tmp_path, text), env, tmp_path, "http://127.0.0.1:1", tmp_path)


def test_a_block_after_a_not_run_comment_is_not_run_and_keeps_its_reason(tmp_path: Path) -> None:
    found = blocks(write(tmp_path, PAGE))
    assert [(b.line, b.language, b.not_run) for b in found][:2] == [(4, "sh", "needs a GPU"), (8, "sh", None)]
    assert [b.runs for b in found] == [False, True, False, True, True, True]


def test_a_block_whose_last_command_serves_is_a_server(tmp_path: Path) -> None:
    assert [b.starts_server for b in blocks(write(tmp_path, PAGE))] == [False, False, False, False, False, True]


def test_variables_exports_and_the_folder_carry_from_block_to_block(tmp_path: Path) -> None:
    runner = page(tmp_path, PAGE.split("```sh\nVIDQUEUE_EMULATOR")[0])
    outcomes = runner.run_all()
    assert [o.returncode for _, o in outcomes] == [0, 0, 0], [o.stderr for _, o in outcomes]
    assert outcomes[-1][1].stdout == "hello fox\n"
    assert runner.folder != tmp_path and (runner.folder / "out.txt").read_text().startswith("hello fox from /")


def test_a_block_runs_after_the_ones_above_it_once_each(tmp_path: Path) -> None:
    runner = page(tmp_path, "```sh\necho one >> log\n```\n\n```sh\necho two >> log\n```\n")
    second = runner.blocks[1]
    runner.run(second)
    runner.run(second)
    runner.run_all()
    assert (tmp_path / "log").read_text() == "one\ntwo\n"


def test_a_failing_command_fails_its_block(tmp_path: Path) -> None:
    runner = page(tmp_path, "```sh\nfalse\necho not reached\n```\n\n```sh\nmissing-program | cat\n```\n")
    first, second = (o for _, o in runner.run_all())
    assert first.returncode != 0 and first.stdout == ""
    assert second.returncode != 0  # pipefail: a pipeline fails when any part does


def test_the_default_server_address_is_the_test_servers(tmp_path: Path) -> None:
    runner = page(tmp_path, '```python\nprint("http://127.0.0.1:8000/api")\n```\n')
    assert runner.run_all()[0][1].stdout == "http://127.0.0.1:1/api\n"
