"""tools/packaged_models.py: a second run does nothing, and a file that differs from the manifest
stops the install with the target folder left as it was."""

import pytest

import packaged_models


def test_pip_download_args_select_the_archive():
    assert packaged_models.pip_download_args("scrfd-0.3.0.tar.gz") == ["--no-binary", ":all:"]
    assert packaged_models.pip_download_args(
        "mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    ) == ["--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux_2_17_x86_64"]


def test_install_then_nothing_to_do(tmp_path, capsys):
    target = tmp_path / "set"
    packaged_models.install(target)
    assert "installed 8 files" in capsys.readouterr().out
    mtimes = {p: p.stat().st_mtime_ns for p in target.rglob("*")}
    packaged_models.install(target)
    assert "already in" in capsys.readouterr().out
    assert mtimes == {p: p.stat().st_mtime_ns for p in target.rglob("*")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"], "no temporary folder left"


def test_a_mismatch_installs_nothing(tmp_path, monkeypatch, capsys):
    text = packaged_models.MANIFEST.read_text()
    good = next(e["sha256"] for e in packaged_models.entries() if e["name"] == "face_mesh_topology.json")
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(text.replace(good, "0" * 64))
    monkeypatch.setattr(packaged_models, "MANIFEST", manifest)

    target = tmp_path / "set"
    target.mkdir()
    (target / "mine.txt").write_text("kept")
    with pytest.raises(packaged_models.InstallError, match="face_mesh_topology.json"):
        packaged_models.install(target)
    assert "MISMATCH" in capsys.readouterr().out
    assert [p.name for p in target.iterdir()] == ["mine.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.toml", "set"]
