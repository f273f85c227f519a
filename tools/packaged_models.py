#!/usr/bin/env python3
"""Installs (or checks) the packaged model set: the files that the `[[packaged]]` entries of
models/manifest.toml describe, made from two PyPI packages only (see models/README.md,
"Packaged set").

    packaged_models.py [--check] DIR

Every entry names a PyPI archive (package, version, file name, sha256) and a member of it. The
member is either copied unchanged or turned into the file by the command in `made_with`
(tools/convert_tflite.py or tools/mesh_topology.py, run as `TOOL MEMBER DEST ARGS...`).

- Nothing to do (exit 0) when every file in DIR has the manifest's size and sha256.
- Otherwise pip downloads the archives (kept, verified, in .deps/packaged-sources/ so a rerun
  downloads nothing), checks their sha256 and the members', builds the whole set in a
  temporary folder beside DIR, checks every file against the manifest, and only then replaces
  DIR with it (DIR is replaced whole). Any mismatch stops with an error and leaves DIR as it
  was.
- `--check` only reports, exit 1 when something is missing or differs.

The check needs only Python's standard library; building needs .deps/venv-models (see
scripts/install-packaged-models.sh).
"""

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "models" / "manifest.toml"
CACHE = ROOT / ".deps" / "packaged-sources"


class InstallError(Exception):
    pass


def entries():
    with open(MANIFEST, "rb") as f:
        return tomllib.load(f)["packaged"]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def state(directory, entry):
    """'ok', 'missing' or a description of the difference."""
    path = Path(directory) / entry["name"]
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != entry["size"]:
        return f"size {size}, expected {entry['size']}"
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        return f"sha256 {digest}, expected {entry['sha256']}"
    return "ok"


def line(entry, status):
    return f"  {entry['name']:<34} {entry['size']:>9} B  {entry['sha256'][:12]}  {status}"


def pip_download_args(archive):
    """pip's selection flags that fetch exactly `archive` (an sdist or one wheel)."""
    if archive.endswith(".whl"):
        _name, _version, python, _abi, platform = archive[: -len(".whl")].split("-")
        return ["--only-binary=:all:", "--python-version", f"{python[2]}.{python[3:]}",
                "--platform", platform.split(".")[0]]
    return ["--no-binary", ":all:"]


def archive(entry):
    """The verified archive of an entry's package, downloaded once into CACHE."""
    path = CACHE / entry["archive"]
    if path.is_file() and sha256_file(path) == entry["archive_sha256"]:
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    spec = f"{entry['package']}=={entry['version']}"
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        print(f"packaged models: pip download {spec} ({entry['archive']})", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--no-deps", *pip_download_args(entry["archive"]), "-d", tmp, spec],
            check=True,
        )
        got = Path(tmp) / entry["archive"]
        if not got.is_file():
            raise InstallError(f"pip download {spec} gave {sorted(os.listdir(tmp))}, not {entry['archive']}")
        digest = sha256_file(got)
        if digest != entry["archive_sha256"]:
            raise InstallError(f"{entry['archive']}: sha256 {digest}, the manifest says {entry['archive_sha256']}")
        os.replace(got, path)
    return path


def member(entry):
    """The bytes of an entry's member, checked against `member_sha256`."""
    path = archive(entry)
    name = entry["member"]
    try:
        if path.name.endswith(".whl"):
            with zipfile.ZipFile(path) as z:
                data = z.read(name)
        else:
            with tarfile.open(path, "r:gz") as t:
                data = t.extractfile(name).read()
    except (KeyError, AttributeError):
        raise InstallError(f"{path.name} has no member {name}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["member_sha256"]:
        raise InstallError(f"{path.name}:{name}: sha256 {digest}, the manifest says {entry['member_sha256']}")
    return data


def build(entry, dest):
    """Writes the entry's file to `dest`."""
    data = member(entry)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if "made_with" not in entry:
        dest.write_bytes(data)
        return
    tool, *args = shlex.split(entry["made_with"])
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / Path(entry["member"]).name
        src.write_bytes(data)
        subprocess.run([sys.executable, str(ROOT / tool), str(src), str(dest), *args], check=True)


def install(directory):
    directory = Path(directory).resolve()
    todo = entries()
    states = {e["name"]: state(directory, e) for e in todo}
    if all(s == "ok" for s in states.values()):
        for e in todo:
            print(line(e, "ok"))
        print(f"packaged models: all {len(todo)} files already in {directory}")
        return
    directory.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # mkdtemp makes it private; the set is not
    try:
        for e in todo:
            build(e, work / e["name"])
        bad = [(e, state(work, e)) for e in todo]
        for e, s in bad:
            source = f"{e['package']} {e['version']}: {e['member']}"
            print(line(e, f"ok  ({source})" if s == "ok" else f"MISMATCH {s}  ({source})"))
        bad = [e["name"] for e, s in bad if s != "ok"]
        if bad:
            raise InstallError(
                f"{', '.join(bad)} differ from models/manifest.toml; nothing was installed "
                "(a changed converter or package version? see models/README.md)"
            )
        old = directory.with_name(f".{directory.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        if directory.exists():
            os.rename(directory, old)
        os.rename(work, directory)
        shutil.rmtree(old, ignore_errors=True)
        print(f"packaged models: installed {len(todo)} files in {directory}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check(directory):
    ok = True
    for e in entries():
        s = state(directory, e)
        ok &= s == "ok"
        print(line(e, s))
    return ok


def main():
    args = sys.argv[1:]
    check_only = "--check" in args
    args = [a for a in args if a != "--check"]
    if len(args) != 1:
        sys.exit("usage: packaged_models.py [--check] DIR")
    if check_only:
        sys.exit(0 if check(args[0]) else 1)
    try:
        install(args[0])
    except (InstallError, subprocess.CalledProcessError) as e:
        sys.exit(f"packaged models: FAILED: {e}")


if __name__ == "__main__":
    main()
