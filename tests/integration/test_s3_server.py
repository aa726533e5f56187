"""The server with its media in an S3-compatible bucket: inputs and results stored there, presigned URLs out."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.s3server import S3Server, s3_server_fixture  # noqa: F401
from tests.support import Server, decode_video, fast_env, free_port, run_cli, wait_for

pytestmark = pytest.mark.slow

BUCKET = "vq-media"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Iterator[Server]:
    s3_server.make_bucket(BUCKET)
    env = fast_env(VIDQUEUE_S3_ENDPOINT_URL=s3_server.endpoint_url, **s3_server.env)
    srv = Server(
        tmp_path_factory.mktemp("s3") / "data",
        free_port(),
        env,
        workers=1,
        args=["--storage", f"s3://{BUCKET}/prod/"],
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 80, 40)).save(out, "PNG")
    return out.getvalue()


def test_inputs_and_results_live_in_the_bucket_and_come_back_through_presigned_urls(
    server: Server, s3_server: S3Server
) -> None:
    image = _png(640, 360)
    with server.client() as api:
        resp = api.post(
            "/requests",
            json={
                "model": "kling-v2-5-turbo",
                "payload": {"prompt": "a fox", "image": base64.b64encode(image).decode()},
            },
        )
        assert resp.status_code == 200, resp.text
        rid = resp.json()["request_id"]
        body = wait_for(api, rid)
    assert body["status"] == "success", body
    keys = {o["Key"] for o in s3_server.client().list_objects_v2(Bucket=BUCKET, Prefix="prod/")["Contents"]}
    stored = {f"prod/requests/{rid}/{name}" for name in ("input.png", "video.mp4", "thumbnail.jpg")}
    assert stored <= keys
    assert s3_server.client().get_object(Bucket=BUCKET, Key=f"prod/requests/{rid}/input.png")["Body"].read() == image
    outcome = body["outcome"]
    video_url = outcome["media_urls"][0]["url"]
    assert video_url.startswith(s3_server.endpoint_url) and "X-Amz-Signature=" in video_url
    video = httpx.get(video_url, timeout=30)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert decode_video(video.content) == (120, 1280, 720)  # the image's 16:9, long side 1280
    thumb = httpx.get(outcome["thumbnail_image_url"], timeout=30)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).format == "JPEG"


def test_a_missing_bucket_stops_the_server_at_start_with_a_clear_error(tmp_path: Path, s3_server: S3Server) -> None:
    out = run_cli(
        "serve",
        "--data-dir",
        str(tmp_path / "data"),
        "--port",
        str(free_port()),
        "--storage",
        "s3://no-such-bucket/x",
        env={"VIDQUEUE_S3_ENDPOINT_URL": s3_server.endpoint_url, **s3_server.env},
    )
    assert out.returncode == 2
    assert "no-such-bucket" in out.stderr and "does not exist" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_a_bad_storage_url_names_the_rule(tmp_path: Path) -> None:
    out = run_cli("worker", "--data-dir", str(tmp_path / "data"), "--storage", "s3://UPPER_case/x")
    assert out.returncode == 1
    assert "storage 's3://UPPER_case/x'" in out.stderr and "lowercase" in out.stderr
