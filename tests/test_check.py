"""`ltxtrain check`: accepts good datasets, rejects bad ones with the cause named, writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ltxtrain.cli import main
from ltxtrain.intake.limits import IntakeLimits
from ltxtrain.jobs import check
from ltxtrain.sampledata import make_dataset_zip, write_image, write_video

ROOT = Path(__file__).resolve().parents[1]


def run_check(capsys, write_request, payload, endpoint="t2v"):
    code = main(["check", endpoint, write_request(payload)])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def video_zip(tmp_path_factory):
    d = tmp_path_factory.mktemp("vz")
    return make_dataset_zip(str(d / "videos.zip"), kind="video", n=3, seconds=1.0, fps=25, width=160, height=96)


def test_accepts_video_dataset(capsys, write_request, video_zip):
    code, out = run_check(capsys, write_request, {"training_data_url": video_zip, "number_of_frames": 17,
                                                  "trigger_phrase": "zzstyle"})
    assert code == 0 and out["accepted"] is True
    assert [s["name"] for s in out["samples"]] == ["clip_000.mp4", "clip_001.mp4", "clip_002.mp4"]
    assert all(s["kind"] == "video" and s["caption"].startswith("zzstyle ") for s in out["samples"])
    assert out["skipped"] == []


def test_accepts_image_dataset_via_file_url(capsys, write_request, tmp_path):
    z = make_dataset_zip(str(tmp_path / "images.zip"), kind="image", n=2, width=64, height=48)
    code, out = run_check(capsys, write_request, {"training_data_url": Path(z).as_uri()})
    assert code == 0 and [s["kind"] for s in out["samples"]] == ["image", "image"]


def test_subprocess_cli_prints_json_and_exit_code(write_request, video_zip):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "platform")}
    ok = subprocess.run([sys.executable, "-m", "ltxtrain.cli", "check", "t2v",
                         write_request({"training_data_url": video_zip, "number_of_frames": 9})],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout)["accepted"] is True
    bad = subprocess.run([sys.executable, "-m", "ltxtrain.cli", "check", "t2v",
                          write_request({"training_data_url": video_zip, "rank": 3}, "bad.json")],
                         capture_output=True, text=True, env=env, timeout=120)
    out = json.loads(bad.stdout)
    assert bad.returncode == 2 and out["status"] == 422 and out["errors"][0]["loc"] == ["body", "rank"]


def _zip(path: Path, entries: dict[str, bytes | str]) -> str:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            if isinstance(data, str) and os.path.exists(data):
                z.write(data, name)
            else:
                z.writestr(name, data)
    return str(path)


def test_rejects_mixed_images_and_videos(capsys, write_request, tmp_path):
    write_video(str(tmp_path / "a.mp4"), 1.0, 25, 64, 64)
    write_image(str(tmp_path / "b.png"), 64, 64)
    z = _zip(tmp_path / "mixed.zip", {"a.mp4": str(tmp_path / "a.mp4"), "b.png": str(tmp_path / "b.png")})
    code, out = run_check(capsys, write_request, {"training_data_url": z})
    assert code == 2 and out["status"] == 422
    msg = out["errors"][0]["msg"]
    assert "only videos or only images" in msg and "a.mp4" in msg and "b.png" in msg


def test_rejects_more_than_1000_media_files(capsys, write_request, tmp_path):
    png = tmp_path / "p.png"
    write_image(str(png), 8, 8)
    data = png.read_bytes()
    z = _zip(tmp_path / "many.zip", {f"img_{i:04d}.png": data for i in range(1001)})
    code, out = run_check(capsys, write_request, {"training_data_url": z})
    assert code == 2 and "1001 media files" in out["errors"][0]["msg"] and "1000" in out["errors"][0]["msg"]


def test_rejects_non_zip(capsys, write_request, tmp_path):
    f = tmp_path / "data.zip"
    f.write_text("this is not a zip")
    code, out = run_check(capsys, write_request, {"training_data_url": str(f)})
    assert code == 2 and out["errors"][0]["loc"][:2] == ["body", "training_data_url"]
    assert "zip" in out["errors"][0]["msg"]


def test_rejects_empty_archive(capsys, write_request, tmp_path):
    z = _zip(tmp_path / "empty.zip", {"__MACOSX/._a.mp4": b"x", ".hidden": b"y"})
    code, out = run_check(capsys, write_request, {"training_data_url": z})
    assert code == 2 and "no files" in out["errors"][0]["msg"]


def test_rejects_escaping_entry_and_writes_nothing_outside(capsys, write_request, tmp_path):
    z = _zip(tmp_path / "evil.zip", {"ok.txt": b"caption", "../../escaped.txt": b"gotcha"})
    req = write_request({"training_data_url": z})
    before = set(os.listdir(tmp_path))
    code = main(["check", "t2v", req])
    out = json.loads(capsys.readouterr().out)
    assert code == 2 and "../../escaped.txt" in json.dumps(out["errors"])
    assert set(os.listdir(tmp_path)) == before and not (tmp_path.parent / "escaped.txt").exists()


def test_rejects_oversized_archive_with_bounded_memory(tmp_path):
    import tracemalloc

    from ltxtrain.api.errors import RequestError

    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("clip.mp4", "w") as fh:
            chunk = b"\0" * (1 << 20)
            for _ in range(64):
                fh.write(chunk)
    tracemalloc.start()
    with pytest.raises(RequestError) as info:
        check("t2v", {"training_data_url": str(big)}, limits=IntakeLimits(max_extracted_bytes=8 << 20))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "training_data_url" in json.dumps(info.value.to_json()) and peak < 16 << 20


def test_too_short_clip_is_skipped_by_name_and_auto_scale_uses_it(capsys, write_request, tmp_path):
    write_video(str(tmp_path / "long.mp4"), 1.2, 25, 64, 64, seed=1)
    write_video(str(tmp_path / "short.mp4"), 0.5, 25, 64, 64, seed=2)
    z = _zip(tmp_path / "d.zip", {"long.mp4": str(tmp_path / "long.mp4"), "short.mp4": str(tmp_path / "short.mp4")})
    code, out = run_check(capsys, write_request, {"training_data_url": z, "number_of_frames": 25})
    assert code == 0 and [s["name"] for s in out["samples"]] == ["long.mp4"]
    assert out["skipped"][0]["name"] == "short.mp4" and "too short" in out["skipped"][0]["reason"]
    code, out = run_check(capsys, write_request, {"training_data_url": z, "number_of_frames": 25,
                                                  "auto_scale_input": True})
    assert code == 0 and [s["name"] for s in out["samples"]] == ["long.mp4", "short.mp4"]


def test_all_clips_too_short_is_422_with_skips(capsys, write_request, tmp_path):
    write_video(str(tmp_path / "s.mp4"), 0.4, 25, 64, 64)
    z = _zip(tmp_path / "d.zip", {"s.mp4": str(tmp_path / "s.mp4")})
    code, out = run_check(capsys, write_request, {"training_data_url": z, "number_of_frames": 25})
    assert code == 2 and out["skipped"][0]["name"] == "s.mp4"


def test_unreadable_media_is_named(capsys, write_request, tmp_path):
    z = _zip(tmp_path / "d.zip", {"clips/broken.mp4": b"\0\1\2 definitely not a video"})
    code, out = run_check(capsys, write_request, {"training_data_url": z})
    assert code == 2 and out["errors"][0]["loc"] == ["body", "training_data_url", "clips/broken.mp4"]


def test_missing_request_file_and_unknown_endpoint(capsys, write_request, video_zip):
    assert main(["check", "t2v", "/nonexistent/request.json"]) == 2
    assert "not found" in json.loads(capsys.readouterr().out)["errors"][0]["msg"]
    code, out = run_check(capsys, write_request, {"training_data_url": video_zip}, endpoint="nope")
    assert code == 2 and out["errors"][0]["loc"] == ["endpoint"]


def test_strict_urls_refuse_local_paths_for_services(capsys, write_request, video_zip):
    code = main(["check", "t2v", write_request({"training_data_url": video_zip}), "--strict-urls"])
    out = json.loads(capsys.readouterr().out)
    assert code == 2 and out["errors"][0]["loc"][:2] == ["body", "training_data_url"]
